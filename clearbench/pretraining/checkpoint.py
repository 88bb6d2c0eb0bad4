"""The training checkpoint: everything needed to continue a run exactly where it stopped.

One file, ``checkpoint.pt`` in the run folder, holds the online network (backbone, projector, predictor),
the momentum encoder, the optimizer, the gradient scaler, the number of optimizer steps done, the random
generator states of every rank, and the settings. It is written atomically (a temporary file, then a
rename), so a run killed while saving keeps its previous checkpoint. It holds only tensors and plain Python
values, so it loads with ``torch.load(weights_only=True)``.

The data order needs no state of its own: the sampler's permutation and every augmentation are seeded by
``(seed, epoch, position)``, so a resumed run sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clearbench.atomic import open_atomic
from clearbench.errors import InputError

FORMAT = "clearbench-pretrain/1"
CHECKPOINT = "checkpoint.pt"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` that replaces ``path`` whole, so a run killed while saving keeps its last checkpoint."""
    with open_atomic(path) as fh:
        torch.save(obj, fh)


def rng_state() -> dict[str, Any]:
    """This process's generator states (torch CPU and CUDA, numpy's global, Python's), as plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a training checkpoint onto the CPU (tensors only, no pickle) and check it is one of ours.

    The CPU, because generator states must be CPU tensors; ``load_state_dict`` moves the rest to the device.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"cannot read the pretraining checkpoint ({exc}); move it away to start over") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(path, f"not a clearbench pretraining checkpoint (format {FORMAT})")
    return ckpt
