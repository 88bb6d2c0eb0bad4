"""Heads trained on frozen embeddings (ABMIL, MLP), bags in memory, and the training loop."""
