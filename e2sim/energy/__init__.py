"""Energy tables (energy per action, with sources) and the accounting of op costs into joules."""
