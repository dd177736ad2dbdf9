import sys

from e2sim.cli import entry

sys.exit(entry())
