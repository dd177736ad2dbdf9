"""Accelerator description: PE array, on-chip buffers, DRAM, clock."""

from e2sim.hw.accelerator import Accelerator, Buffer, Dram, PEArray, VectorUnit

__all__ = ["Accelerator", "Buffer", "Dram", "PEArray", "VectorUnit"]
