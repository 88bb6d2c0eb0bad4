"""Lesion-enhanced contrastive learning (LECL, paper section 3.2): the lesion crop and the λ loss.

On a slice with an annotated lesion, the momentum branch sees a random crop centred on the lesion and the
base branch sees the whole slice, so the positive pair teaches "this lesion belongs to this slice". The
paper's Eq. 4 can also weight the lesion slices as negatives: it adds ``λ · Σ_j ψ(q, l_j)`` over the keys
``l_j`` of the lesion slices in the (all-gathered) batch to the InfoNCE denominator. λ = 0 ("LECL-0") keeps
only the lesion-centred crops; the paper found it the best setting.

Decisions where the paper is silent, and how they compare with CLEAR's code (``src/LECL/moco``):

- The positive key of a lesion slice is **left out** of ``Σ_j`` for its own query. It already sits in the
  numerator and in the InfoNCE sum; counting it again would push a lesion slice away from its own view by
  ``λ``, which contradicts the positive pair. CLEAR's code excludes it too (the diagonal is set to -inf).
- The term is ``λ · exp(sim / τ)`` exactly as Eq. 4 writes it. CLEAR's code instead adds ``exp(λ · sim / τ)``
  (it scales the logits); the two agree only at λ = 1.
- A batch without lesion slices has no term (``Σ_j`` over an empty set is 0) and the loss is plain InfoNCE.
- The crop is centred on the box centre and shifted back inside the image when it would cross the border,
  so it always contains the centre and never needs padding. (CLEAR's code reads DeepLesion's ``x1, y1, x2,
  y2`` as left, bottom, right, top, so it centres on the corner ``(x1, y2)``, and lets the crop leave the image.)
"""

from __future__ import annotations

import math

import torch

from clearbench.pretraining.losses import contrastive_logits, info_nce, positive_index


def lecl_info_nce(
    q: torch.Tensor,
    keys: torch.Tensor,
    tau: float,
    lesion: torch.Tensor,
    lam: float,
    offset: int = 0,
) -> torch.Tensor:
    """The LECL loss (paper Eq. 4) of local queries against all keys, times ``2 * tau`` like InfoNCE.

    ``lesion`` is a bool vector over the gathered keys ``(M,)``: True where the key is of a lesion slice.
    The positive of ``q[i]`` is ``keys[offset + i]`` and is not counted again in the λ term.
    """
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    if lesion.shape != (keys.shape[0],):
        raise ValueError(f"lesion mask has shape {tuple(lesion.shape)}, expected ({keys.shape[0]},)")
    cols = lesion.nonzero().squeeze(1)
    if lam == 0 or cols.numel() == 0:
        return info_nce(q, keys, tau, offset)
    logits = contrastive_logits(q, keys, tau)
    pos_col = positive_index(q.shape[0], offset, logits.device)
    positive = logits.gather(1, pos_col[:, None]).squeeze(1)
    lesion_terms = logits[:, cols] + math.log(lam)
    lesion_terms = lesion_terms.masked_fill(cols[None, :] == pos_col[:, None], float("-inf"))
    denominator = torch.logsumexp(torch.cat([logits, lesion_terms], dim=1), dim=1)
    return (denominator - positive).mean() * (2.0 * tau)


def lesion_crop(
    box: tuple[float, float, float, float],
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """A random crop ``(top, left, h, w)`` centred on the box ``(x1, y1, x2, y2)``, inside the image.

    The area is a uniform fraction ``scale`` of the image and the aspect ratio log-uniform in ``ratio``
    (as in RandomResizedCrop); the crop is then centred on the pixel holding the box centre and shifted
    back inside the image if needed, which keeps that pixel inside. A centre outside the image (a box
    drawn past the border) is first clamped to the nearest pixel.
    """
    lo, hi = scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"lesion crop scale must satisfy 0 < min <= max <= 1, got {scale}")
    u = torch.rand(2, generator=generator).tolist()
    area = (lo + (hi - lo) * u[0]) * height * width
    aspect = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
    w = min(max(round(math.sqrt(area * aspect)), 1), width)
    h = min(max(round(math.sqrt(area / aspect)), 1), height)
    x1, y1, x2, y2 = box
    cx = min(max(math.floor((x1 + x2) / 2), 0), width - 1)
    cy = min(max(math.floor((y1 + y2) / 2), 0), height - 1)
    left = min(max(cx - w // 2, 0), width - w)
    top = min(max(cy - h // 2, 0), height - h)
    return top, left, h, w
