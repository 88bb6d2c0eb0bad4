"""Merlin's image encoder (an inflated 3D ResNet-152) as a volume encoder: the 512-d contrastive embedding.

Merlin (Blankemeier et al., 2024; code MIT) pairs abdominal CT with reports and EHR codes. The CLEAR paper
embeds each volume with ``Merlin().model.encode_image(img)[0]``: the output of the 2048 -> 512 contrastive
head, not normalised. The architecture comes from the ``merlin-vlm`` package (the ``merlin`` extra), built
offline: ``Merlin()`` itself downloads its checkpoint, ImageNet ResNet weights and a text model, so this
module builds ``merlin.models.i3res.I3ResNet`` around an untrained torchvision ResNet-152 and loads the keys
under ``encode_image.i3_resnet.`` of the published checkpoint
(``i3_resnet_clinical_longformer_best_clip_04-02-2024_23-21-36_epoch_99.pt``).

Preprocessing is Merlin's MONAI pipeline (``merlin/data/monai_transforms.py``), reimplemented in torch so it
needs no MONAI at run time: orient to RAS, resample to 1.5 x 1.5 x 3 mm (MONAI ``Spacing`` rules), map
[-1000, 1000] HU to [0, 1] with clipping, pad with 0 and centre-crop to 224 x 224 x 160.

Volume axes: a :class:`~clearbench.scans.scan.Scan` is ``[Z, Y, X]`` in display orientation (rows anterior
-> posterior, columns patient right -> left, z inferior -> superior), which in RAS terms is ``(S, P, L)``.
Merlin's input ``(B, 1, H, W, D)`` is the RAS array, so ``H`` runs to the patient's right, ``W`` to anterior
and ``D`` to superior: the Scan is transposed to ``[X, Y, Z]`` and flipped along X and Y.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import Field, PositiveInt
from torch import nn

from clearbench.encoders.base import VolumeEncoder

if TYPE_CHECKING:
    from merlin.models.i3res import I3ResNet
from clearbench.encoders.family import EncoderSpec, Family, StateDict
from clearbench.encoders.volume_prep import centre_crop_or_pad, resample_spacing
from clearbench.errors import MissingExtraError
from clearbench.scans.scan import Scan
from clearbench.settings import Settings

# Merlin's released image encoder: ResNet-152 blocks, 1692 phenotype (EHR) classes.


class MerlinParams(Settings):
    """A ``merlin`` card's ``[params]``; the defaults are the published ResNet-152 model."""

    layers: list[PositiveInt] = Field(default_factory=lambda: [3, 8, 36, 3])  # Bottleneck blocks per stage
    class_nb: PositiveInt = 1692  # phenotype classes of the (unused) classifier the checkpoint holds


MERLIN_PARAMS: dict[str, Any] = MerlinParams().model_dump()

MERLIN_PREPROCESSING: dict[str, Any] = {
    "spacing": [1.5, 1.5, 3.0],  # mm along R, A, S
    "hu_range": [-1000.0, 1000.0],  # mapped to [0, 1], clipped
    "shape": [224, 224, 160],  # H, W, D of the model input
}


def build_merlin_image_encoder(*, layers: Sequence[int], class_nb: int) -> nn.Module:
    """Merlin's ``I3ResNet`` (conv heads) around an untrained ResNet with Bottleneck blocks ``layers``.

    ``**MERLIN_PARAMS`` is the published ResNet-152 model. Loads the keys under ``encode_image.i3_resnet.`` of
    a Merlin checkpoint, prefix stripped, including the unused phenotype ``classifier``. Needs the ``merlin``
    extra; without it, raises :class:`MissingExtraError`.
    """
    try:
        from merlin.models.i3res import I3ResNet
    except ImportError as exc:
        raise MissingExtraError("merlin", "Merlin's image encoder") from exc
    from torchvision.models.resnet import Bottleneck, ResNet

    return I3ResNet(ResNet(Bottleneck, list(layers)), class_nb=int(class_nb), conv_class=True)


def merlin_contrastive_embedding(net: I3ResNet, volume: torch.Tensor) -> torch.Tensor:
    """``I3ResNet`` on ``(B, 1, H, W, D)`` -> the contrastive embedding ``(B, 512)``.

    The same computation as the first output of ``I3ResNet.forward``, minus its per-layer activation
    checkpointing: that only saves memory when training, and its calls warn (and on future torch fail)
    because they leave ``use_reentrant`` unset.
    """
    x = volume.permute(0, 1, 4, 2, 3)  # depth becomes the inflated time axis
    x = x.expand(-1, 3, -1, -1, -1)  # grey into the three ImageNet input channels
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    x = net.contrastive_head(net.avgpool(x))  # (B, 512, 1, 1, 1)
    return x.flatten(2).mean(dim=2)


def merlin_preprocess(
    hu: np.ndarray, spacing: tuple[float, float, float], settings: Mapping[str, Any] = MERLIN_PREPROCESSING
) -> torch.Tensor:
    """A display-oriented HU volume ``[Z, Y, X]`` (spacing ``(z, y, x)`` mm) -> Merlin's ``[H, W, D]`` in [0, 1]."""
    volume = torch.from_numpy(np.asarray(hu)).float().permute(2, 1, 0).flip(0, 1)  # (S, P, L) -> RAS
    volume = resample_spacing(volume, (spacing[2], spacing[1], spacing[0]), [float(s) for s in settings["spacing"]])
    lo, hi = (float(v) for v in settings["hu_range"])
    volume = ((volume - lo) / (hi - lo)).clamp_(0.0, 1.0)
    return centre_crop_or_pad(volume, [int(s) for s in settings["shape"]], 0.0, monai=True)


class MerlinEncoder(VolumeEncoder):
    """Merlin's 512-d contrastive image embedding of a whole scan (not normalised, as CLEAR used it)."""

    def __init__(self, spec: EncoderSpec, model: nn.Module) -> None:
        super().__init__(spec.name, spec.dim, model, spec.device, spec.provenance)
        self.settings = dict(spec.preprocessing)

    def preprocess(self, scan: Scan) -> torch.Tensor:
        return merlin_preprocess(scan.hu, scan.spacing, self.settings)[None, None]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return merlin_contrastive_embedding(self.model, batch)


class MerlinFamily(Family):
    """Merlin's I3ResNet image encoder through the ``merlin-vlm`` package (the ``merlin`` extra)."""

    name: ClassVar[str] = "merlin"
    kind: ClassVar = "volume"
    extra: ClassVar[str | None] = "merlin"
    extra_modules: ClassVar[tuple[str, ...]] = ("merlin",)
    prefixes: ClassVar[tuple[str, ...]] = ("encode_image.i3_resnet.",)
    params_model: ClassVar[type[Settings]] = MerlinParams
    default_preprocessing: ClassVar[Mapping[str, Any]] = MERLIN_PREPROCESSING

    def output_dim(self, params: Mapping[str, Any]) -> int:
        return 512  # I3ResNet's contrastive head is fixed at 2048 -> 512

    def infer_params(self, state_dict: StateDict, params: Mapping[str, Any]) -> dict[str, Any]:
        """Blocks per stage from ``layer{i}.{j}.*`` and the phenotype classes from ``classifier.weight``."""
        out = dict(params)
        layers = []
        for stage in range(1, 5):
            prefix = f"layer{stage}."
            blocks = {int(k[len(prefix) :].split(".")[0]) for k in state_dict if k.startswith(prefix)}
            if not blocks:
                return out
            layers.append(max(blocks) + 1)
        out["layers"] = layers
        if "classifier.weight" in state_dict:
            out["class_nb"] = int(state_dict["classifier.weight"].shape[0])
        return out

    def build(self, params: Mapping[str, Any]) -> nn.Module:
        return build_merlin_image_encoder(**params)

    def wrap(self, model: nn.Module, spec: EncoderSpec) -> VolumeEncoder:
        return MerlinEncoder(spec, model)
