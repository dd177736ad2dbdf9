"""The ``e2sim`` command line. :func:`entry` is the console script: it loads the command line (and
with it numpy, numba and the rest) inside its own guard, so that Ctrl-C at any moment, start-up
included, ends with one line and exit code 130. Once the command has finished, SIGINT and SIGTERM
are ignored: a signal during the interpreter's shutdown (which restores the default, fatal
handlers) cannot kill a process whose work is done."""

import signal
import sys


def entry() -> int:
    try:
        from e2sim.cli.main import main

        code = main()
    except KeyboardInterrupt:
        print("e2sim: interrupted", file=sys.stderr)
        code = 130
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    return code
