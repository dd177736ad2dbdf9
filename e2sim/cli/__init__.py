"""The ``e2sim`` command line. :func:`entry` is the console script: it loads the command line (and
with it numpy, numba and the rest) inside its own guard, so that Ctrl-C at any moment, start-up
included, ends with one line and exit code 130."""

import sys


def entry() -> int:
    try:
        from e2sim.cli.main import main

        return main()
    except KeyboardInterrupt:
        print("e2sim: interrupted", file=sys.stderr)
        return 130
