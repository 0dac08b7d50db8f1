"""`python -m rnnlab.bench`: the same command as `rnnlab bench`."""

import sys

from rnnlab.bench.cli import main

sys.exit(main(sys.argv[1:]))
