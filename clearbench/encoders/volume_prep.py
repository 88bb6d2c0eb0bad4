"""Building blocks of 3D encoder preprocessing: resampling and centre crop-or-pad, in torch.

The volume encoders (CT-CLIP, Merlin) were trained on volumes prepared by their own scripts, and an
embedding is only comparable to the published one when the volume reaching the model is the same. The two
scripts resample differently, so both rules are here, each named for what it reproduces:

- :func:`resize_trilinear`: ``F.interpolate(mode="trilinear", align_corners=False)`` to a size of
  ``int(n * spacing / new_spacing)`` voxels (CT-CLIP's ``resize_array``);
- :func:`resample_spacing`: MONAI's ``Spacing`` for an axis-aligned volume, which keeps the centre of the
  first voxel fixed, makes ``round((n - 1) * spacing / new_spacing) + 1`` voxels and samples linearly with
  border padding (Merlin's ``Spacingd``). Written in plain torch so Merlin's preprocessing needs no MONAI.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def resize_trilinear(volume: torch.Tensor, spacing: Sequence[float], new_spacing: Sequence[float]) -> torch.Tensor:
    """Resample ``[D, H, W]`` from ``spacing`` to ``new_spacing`` (mm, same axis order) by resizing.

    The new size truncates ``n * spacing / new_spacing`` (as CT-CLIP does), with at least one voxel.
    """
    size = [max(1, int(n * s / t)) for n, s, t in zip(volume.shape, spacing, new_spacing, strict=True)]
    if list(volume.shape) == size:
        return volume
    out = F.interpolate(volume[None, None], size=size, mode="trilinear", align_corners=False)
    return out[0, 0]


def resample_spacing(volume: torch.Tensor, spacing: Sequence[float], new_spacing: Sequence[float]) -> torch.Tensor:
    """Resample an axis-aligned ``[A, B, C]`` volume to ``new_spacing`` the way MONAI's ``Spacing`` does.

    Output voxel ``i`` along an axis lies at ``i * new / old`` input voxels (the first voxel centre stays put);
    values are interpolated linearly along each axis in turn (trilinear is separable), and positions past the
    last voxel take its value (MONAI's default ``padding_mode="border"``).
    """
    out = volume
    for axis, (n, old, new) in enumerate(zip(volume.shape, spacing, new_spacing, strict=True)):
        if old == new:
            continue
        size = max(1, round((n - 1) * float(old) / float(new)) + 1)  # float(): numpy<2 rounds its scalars to floats
        positions = torch.arange(size, dtype=torch.float64) * (new / old)
        out = _linear_along(out, axis, positions.clamp_(0, n - 1))
    return out


def _linear_along(volume: torch.Tensor, axis: int, positions: torch.Tensor) -> torch.Tensor:
    """Sample ``volume`` at fractional ``positions`` (already inside ``[0, n-1]``) along one axis."""
    n = volume.shape[axis]
    lo = positions.floor().long().clamp_(0, n - 1)
    hi = (lo + 1).clamp_(max=n - 1)
    shape = [1] * volume.ndim
    shape[axis] = -1
    weight = (positions - lo).to(volume.dtype).view(shape).to(volume.device)
    lo, hi = lo.to(volume.device), hi.to(volume.device)
    below, above = volume.index_select(axis, lo), volume.index_select(axis, hi)
    return below + (above - below) * weight


def centre_crop_or_pad(
    volume: torch.Tensor, shape: Sequence[int], pad_value: float, *, monai: bool = False
) -> torch.Tensor:
    """Centre-crop each axis that is too long and centre-pad (with ``pad_value``) each that is too short.

    Padding puts ``(target - n) // 2`` before and the rest after. A crop starts at ``(n - target) // 2``
    (CT-CLIP), or with ``monai=True`` at ``n // 2 - target // 2`` (MONAI's ``CenterSpatialCrop``); the two agree
    for even targets and differ by one voxel for odd ones.
    """
    if len(shape) != volume.ndim:
        raise ValueError(f"target shape {tuple(shape)} does not match a {volume.ndim}-D volume")
    index = []
    for n, target in zip(volume.shape, shape, strict=True):
        start = (n // 2 - target // 2) if monai else (n - target) // 2
        start = max(start, 0)
        index.append(slice(start, min(start + target, n)))
    out = volume[tuple(index)]
    pads: list[int] = []
    for n, target in zip(reversed(out.shape), reversed(list(shape)), strict=True):
        missing = max(target - n, 0)
        pads += [missing // 2, missing - missing // 2]
    if any(pads):
        out = F.pad(out, pads, value=float(pad_value))
    return out.contiguous()
