"""Pretraining backbones with MoCo v3 and LECL (paper section 3), on one process or under ``torchrun``.

``clearbench.pretrain(arch, method, dataset, ...)`` trains the backbone of any encoder family that declares
pretraining (MambaOut, VMamba, the conv-stem ViT, or a plugin's) and registers it as an encoder card, so
``clearbench embed --encoder <card>`` can use it at once.

Modules: :mod:`.losses` (InfoNCE, all-gather), :mod:`.lecl` (the lesion crop and the λ loss),
:mod:`.moco` (projector, predictor, momentum encoder, schedules), :mod:`.augment` (the two views),
:mod:`.data` (slices from any dataset reader), :mod:`.backbones`, :mod:`.config`, :mod:`.distributed`,
:mod:`.checkpoint`, :mod:`.export` and :mod:`.run` (the loop).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clearbench.pretraining.config import PretrainConfig
    from clearbench.pretraining.run import PretrainResult, pretrain

# Imported on first use: the CLI reads PretrainConfig to build its options without importing torch.
_LAZY = {
    "PretrainConfig": "clearbench.pretraining.config",
    "PretrainResult": "clearbench.pretraining.run",
    "pretrain": "clearbench.pretraining.run",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clearbench.pretraining' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = ["PretrainConfig", "PretrainResult", "pretrain"]
