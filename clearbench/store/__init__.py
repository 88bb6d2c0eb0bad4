"""The embedding store (LanceDB under ``CLEARBENCH_HOME/store``): tables of slice vectors, read back as bags."""

from clearbench.store.bags import Bags
from clearbench.store.db import connect
from clearbench.store.embeddings import (
    DimensionMismatchError,
    EmbeddingStore,
    EmbeddingTable,
    NonFiniteEmbeddingError,
    ProvenanceMismatchError,
    ScanEmbeddings,
    TableNotFoundError,
    check_vectors,
)

__all__ = [
    "Bags",
    "DimensionMismatchError",
    "EmbeddingStore",
    "EmbeddingTable",
    "NonFiniteEmbeddingError",
    "ProvenanceMismatchError",
    "ScanEmbeddings",
    "TableNotFoundError",
    "check_vectors",
    "connect",
]
