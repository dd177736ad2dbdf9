"""Reports: machine-readable dicts and human tables."""
