"""The embedding pipeline: scans -> windows -> batches -> a frozen encoder -> the store."""

from clearbench.embedding.pipeline import DEFAULT_WINDOWS, EmbedSummary, embed

__all__ = ["DEFAULT_WINDOWS", "EmbedSummary", "embed"]
