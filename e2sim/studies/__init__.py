"""Studies over design points: one point (single), and sweeps over many."""
