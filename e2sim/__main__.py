import sys

from e2sim.cli.main import main

sys.exit(main())
