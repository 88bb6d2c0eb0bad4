"""Pretraining backbones with MoCo v3 and LECL (paper section 3), on one process or under ``torchrun``.

``clearbench.pretrain(arch, method, dataset, ...)`` trains a MambaOut, VMamba or conv-stem ViT backbone
and registers it as an encoder card, so ``clearbench embed --encoder <card>`` can use it at once.

Modules: :mod:`.losses` (InfoNCE, all-gather), :mod:`.lecl` (the lesion crop and the λ loss),
:mod:`.moco` (projector, predictor, momentum encoder, schedules), :mod:`.augment` (the two views),
:mod:`.data` (slices from any dataset reader), :mod:`.backbones`, :mod:`.config`, :mod:`.distributed`,
:mod:`.checkpoint`, :mod:`.export` and :mod:`.run` (the loop).
"""

from __future__ import annotations

from clearbench.pretraining.config import PretrainConfig
from clearbench.pretraining.run import PretrainResult, pretrain

__all__ = ["PretrainConfig", "PretrainResult", "pretrain"]
