"""RENA: resource-constrained network search with the simulator in the reward."""
