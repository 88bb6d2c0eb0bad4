"""Frozen image encoders: the Encoder interface, cards, the registry, weights and one module per family."""
