"""Accelerator description: PE array, on-chip buffers, DRAM, clock."""

from e2sim.hw.accelerator import Accelerator, Buffer, Dram, PEArray, Sparsity, VectorUnit

__all__ = ["Accelerator", "Buffer", "Dram", "PEArray", "Sparsity", "VectorUnit"]
