"""Scheduling ops on an accelerator: cycles, stalls and accesses per memory level."""
