"""Computation-skipping training policies. A policy changes what the kernels execute; the counts
that come out are what the accelerator model prices."""
