"""`python -m rnnlab`: the rnnlab command, for an environment whose scripts are not on PATH."""

import sys

from rnnlab.cli import run

sys.exit(run())
