"""The embedding pipeline: scans -> windows -> batches -> a frozen encoder -> the store."""

from clearbench.embedding.pipeline import EmbedSummary, embed

__all__ = ["EmbedSummary", "embed"]
