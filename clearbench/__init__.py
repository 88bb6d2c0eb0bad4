"""clearbench: frozen CT encoders, attention-MIL protocols and leaderboards (the CLEAR recipe).

The public Python API is re-exported lazily so that ``import clearbench`` stays fast: the CLI's
``--help`` must not pay for importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from clearbench.version import __version__

# name -> module that defines it; extended as parts of the API land.
_LAZY: dict[str, str] = {
    "Scan": "clearbench.scans.scan",
    "Lesion": "clearbench.scans.scan",
    "Window": "clearbench.scans.windows",
    "apply_window": "clearbench.scans.windows",
    "open_dataset": "clearbench.scans.registry",
    "embed": "clearbench.embedding",
    "EmbedSummary": "clearbench.embedding",
    "EmbeddingStore": "clearbench.store",
    "Bags": "clearbench.store",
    "load_encoder": "clearbench.encoders.registry",
    "list_cards": "clearbench.encoders.registry",
    "get_card": "clearbench.encoders.registry",
    "run_task": "clearbench.protocols.run",
    "load_task_split": "clearbench.protocols.run",
    "task_split": "clearbench.protocols.stored_split",
    "get_task": "clearbench.tasks.registry",
    "list_tasks": "clearbench.tasks.registry",
    "pretrain": "clearbench.pretraining",
    "run_demo": "clearbench.demo",
    "PretrainConfig": "clearbench.pretraining.config",
    "explain": "clearbench.explaining.api",
    "attention_hit_rate": "clearbench.explaining.api",
    "leaderboard": "clearbench.leaderboards",
    "leaderboard_overview": "clearbench.leaderboards",
    "label_columns": "clearbench.leaderboards",
    "board": "clearbench.htmlboard.build",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clearbench' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = ["__version__"]
__all__ += list(_LAZY)
