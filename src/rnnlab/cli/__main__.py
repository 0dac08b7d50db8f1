"""`python -m rnnlab.cli`: the rnnlab command."""

import sys

from rnnlab.cli import run

sys.exit(run())
