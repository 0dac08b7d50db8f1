"""`python -m rnnlab.cli`: the rnnlab command."""

import sys

from rnnlab.cli import main

sys.exit(main())
