"""Training: datasets, the graph executor and the training loop."""
