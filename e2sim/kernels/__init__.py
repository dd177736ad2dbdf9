"""Numba kernels. They import only numpy and numba; validation lives in their Python callers."""
