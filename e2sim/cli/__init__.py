"""The ``e2sim`` command line."""
