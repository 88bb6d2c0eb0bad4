"""CT-CLIP's image tower: the CTViT volume transformer and the projection into CT-CLIP's joint space.

CT-CLIP (Hamamci et al., 2024; code and weights CC-BY-NC-SA) has no PyPI package and its code hard-codes
CUDA, so this is our own implementation of the architecture. Its parameter names are those of the image part
of the published ``CT-CLIP_v2.pt`` (a flat CTCLIP state dict): ``visual_transformer.*`` is the
:class:`CTViT`, ``to_visual_latent.weight`` the projection. The text tower, ``to_visual_latent_extra`` and the
parts of CTViT that the image embedding never runs (the ``to_pixels*`` decoder and the unused first-frame
patch embedding) are dropped when a checkpoint is read; see :meth:`CTCLIPFamily.adapt_state_dict`.

How a volume ``(B, 1, 240, 480, 480)`` (depth, height, width) becomes a 512-d vector:

1. 10 x 20 x 20 voxel patches -> LayerNorm -> Linear -> LayerNorm: a 24 x 24 x 24 grid of 512-d tokens;
2. a spatial transformer over the 576 tokens of each 10-slice slab, with a continuous relative position
   bias (an MLP of the log-distance between patches), then a temporal transformer over the 24 tokens along
   depth at each in-plane position; each layer starts with a PEG (a depthwise 3x3x3 convolution that gives
   the tokens their position);
3. vector quantisation: every token becomes its nearest codebook entry by cosine similarity. CT-CLIP's image
   features are these codebook vectors, so the lookup is part of the encoder;
4. mean over depth, flatten in (h, w, d) order with d fastest, a bias-free Linear to 512, L2-normalise.

Two upstream quirks are reproduced on purpose, since the published weights were trained with them:

- the PEG always reshapes its input with the video shape ``(b, t, h, w)``; in the temporal transformer the
  sequence is laid out ``(b h w) t``, so the convolution sees the same numbers arranged with mixed axes;
- attention keys and values are computed from the layer input *before* the attention LayerNorm (only the
  queries see the normalised input).

Volume axes: CT-CLIP reads CT-RATE NIfTI files with nibabel and feeds ``(z, axis 0, axis 1)`` of the
nibabel array. For a NIfTI written from DICOM, nibabel's axis 0 runs along the image columns and axis 1 along
the rows, so a :class:`~clearbench.scans.scan.Scan` ``[Z, Y, X]`` (rows = Y, columns = X) is fed as
``[Z, X, Y]`` (``transpose_in_plane = true``, the default). No flips are applied: CT-CLIP's scripts do not
reorient either. Whether every CT-RATE volume follows that convention is not documented upstream; the
setting can be turned off in a card.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import nn

from clearbench.encoders.base import VolumeEncoder
from clearbench.encoders.family import EncoderSpec, Family, StateDict
from clearbench.encoders.volume_prep import centre_crop_or_pad, resize_trilinear
from clearbench.errors import ClearbenchError
from clearbench.scans.scan import Scan
from clearbench.settings import Settings


class CTCLIPParams(Settings):
    """A ``ctclip`` card's ``[params]`` (:class:`CTViT`'s arguments and the latent size); the defaults are the
    published CT-CLIP (scripts/run_zero_shot.py, ct_lipro_train.py)."""

    dim: PositiveInt = 512
    codebook_size: PositiveInt = 8192
    image_size: PositiveInt = 480
    patch_size: PositiveInt = 20
    temporal_patch_size: PositiveInt = 10
    spatial_depth: PositiveInt = 4
    temporal_depth: PositiveInt = 4
    dim_head: PositiveInt = 32
    heads: PositiveInt = 8
    dim_latent: PositiveInt = 512


CTCLIP_PARAMS: dict[str, Any] = CTCLIPParams().model_dump()

# scripts/data_inference_nii.py: clip, resample, divide, crop or pad with -1.
CTCLIP_PREPROCESSING: dict[str, Any] = {
    "hu_range": [-1000.0, 1000.0],
    "spacing": [1.5, 0.75, 0.75],  # mm: depth, then in-plane
    "divisor": 1000.0,
    "shape": [240, 480, 480],  # depth, height, width of the model input
    "pad_value": -1.0,
    "transpose_in_plane": True,  # Scan [Z, Y, X] -> CT-CLIP [Z, X, Y]; see the module docstring
}


# -- building blocks ---------------------------------------------------------------------------------------
class BiasFreeLayerNorm(nn.Module):
    """LayerNorm with a learned gain and a fixed zero bias (stored as the buffer ``beta``, as upstream)."""

    beta: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta)


class PEG(nn.Module):
    """Position-encoding generator: a depthwise 3x3x3 convolution over the token grid, causal in its first axis.

    The sequence ``(n, l, dim)`` is reshaped to ``grid = (b, t, h, w)`` whatever its layout; in the temporal
    transformer that mixes the axes, which is what CT-CLIP's weights expect.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dsconv = nn.Conv3d(dim, dim, 3, groups=dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int, int]) -> torch.Tensor:
        y = x.reshape(*grid, x.shape[-1]).permute(0, 4, 1, 2, 3)
        y = F.pad(y, (1, 1, 1, 1, 2, 0))  # w and h on both sides; the first grid axis only before (causal)
        y = self.dsconv(y)
        return y.permute(0, 2, 3, 4, 1).reshape(x.shape)


class Attention(nn.Module):
    """Multi-head self-attention with L2-normalised queries and keys (learned per-channel scales, fixed scale 8).

    Keys and values come from the un-normalised input; only queries pass through ``norm`` (upstream quirk).
    """

    def __init__(self, dim: int, dim_head: int, heads: int, scale: float = 8.0) -> None:
        super().__init__()
        self.heads = heads
        self.scale = scale
        inner = dim_head * heads
        self.norm = BiasFreeLayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        n, length, _ = x.shape
        q = self.to_q(self.norm(x))
        k, v = self.to_kv(x).chunk(2, dim=-1)
        q, k, v = (t.reshape(n, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        mask = bias.to(q.dtype) if bias is not None else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.to_out(out.transpose(1, 2).reshape(n, length, -1))


class GEGLU(nn.Module):
    """Gated GELU: half the channels gate the other half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


def feed_forward(dim: int, mult: float = 4.0, dropout: float = 0.0) -> nn.Sequential:
    """LayerNorm -> Linear -> GEGLU -> Dropout -> Linear; keys ``0.*``, ``1.weight``, ``4.weight``."""
    inner = int(mult * (2 / 3) * dim)
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner * 2, bias=False),
        GEGLU(),
        nn.Dropout(dropout),
        nn.Linear(inner, dim, bias=False),
    )


def _block(dim: int, dim_head: int, heads: int, ff_mult: float) -> nn.ModuleList:
    """One layer ``[PEG, attention, None, feed-forward]`` (see :class:`Transformer`)."""
    block = nn.ModuleList([PEG(dim), Attention(dim, dim_head, heads)])
    block.add_module("2", None)  # upstream's cross-attention slot, empty in CTViT
    block.add_module("3", feed_forward(dim, ff_mult))
    return block


class Transformer(nn.Module):
    """Pre-norm blocks of PEG -> attention -> feed-forward, each residual, then a final LayerNorm.

    Layer ``i`` is a list ``[PEG, attention, None, feed-forward]``: slot 2 is upstream's cross-attention, which
    CTViT never has, so the keys read ``layers.{i}.{0,1,3}``.
    """

    def __init__(self, dim: int, depth: int, dim_head: int, heads: int, ff_mult: float = 4.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_block(dim, dim_head, heads, ff_mult) for _ in range(depth))
        self.norm_out = BiasFreeLayerNorm(dim)

    def forward(
        self, x: torch.Tensor, grid: tuple[int, int, int, int], attn_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        for layer in self.layers:
            peg, attn, _, ff = cast(nn.ModuleList, layer)
            x = peg(x, grid) + x
            x = attn(x, attn_bias) + x
            x = ff(x) + x
        return self.norm_out(x)


class ContinuousPositionBias(nn.Module):
    """Attention bias from an MLP of the signed log-distance between two patches (Swin v2 style).

    Only ``(2h-1)(2w-1)`` distinct offsets exist among ``(hw)^2`` pairs, so the MLP runs once per offset and
    the result is gathered; the numbers are those of running it on every pair, at a fraction of the cost.
    """

    def __init__(self, dim: int, heads: int, layers: int = 2) -> None:
        super().__init__()
        self.net = nn.ModuleList([nn.Sequential(nn.Linear(2, dim), nn.LeakyReLU(0.1))])
        for _ in range(layers - 1):
            self.net.append(nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.1)))
        self.net.append(nn.Linear(dim, heads))

    def forward(self, h: int, w: int) -> torch.Tensor:
        """The bias ``(heads, h*w, h*w)`` for patches in row-major order."""
        device = next(self.net.parameters()).device
        dy = torch.arange(-(h - 1), h, device=device)
        dx = torch.arange(-(w - 1), w, device=device)
        offsets = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).float()
        feats = torch.sign(offsets) * torch.log(offsets.abs() + 1)
        for layer in self.net:
            feats = layer(feats)
        ys = torch.arange(h, device=device).repeat_interleave(w)
        xs = torch.arange(w, device=device).repeat(h)
        table = feats[ys[:, None] - ys[None, :] + h - 1, xs[:, None] - xs[None, :] + w - 1]
        return table.permute(2, 0, 1)


class CosineCodebook(nn.Module):
    """The codebook buffers of vector-quantize-pytorch 1.1.2's ``CosineSimCodebook`` (one codebook)."""

    initted: torch.Tensor
    cluster_size: torch.Tensor
    embed: torch.Tensor

    def __init__(self, dim: int, codebook_size: int) -> None:
        super().__init__()
        self.register_buffer("initted", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(1, codebook_size))
        self.register_buffer("embed", F.normalize(torch.randn(1, codebook_size, dim), dim=-1))


class VectorQuantize(nn.Module):
    """Nearest codebook entry by cosine similarity; returns the stored entry, with a straight-through gradient.

    Frozen use only: the codebook's EMA updates, dead-code replacement and commitment loss of training are
    not implemented. Runs in float32 even under autocast, as upstream does, so that bfloat16 rounding cannot
    change which entry wins.
    """

    _CHUNK = 4096  # tokens per similarity matrix, to bound memory at 4096 x codebook_size floats

    def __init__(self, dim: int, codebook_size: int) -> None:
        super().__init__()
        self._codebook = CosineCodebook(dim, codebook_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., dim)`` -> quantised ``(..., dim)`` float32 and codebook indices ``(...)``."""
        embed = self._codebook.embed[0]
        with torch.autocast(x.device.type, enabled=False):
            flat = x.reshape(-1, x.shape[-1]).float()
            unit_codes = F.normalize(embed.float(), dim=-1)
            indices = torch.cat(
                [(F.normalize(chunk, dim=-1) @ unit_codes.T).argmax(dim=-1) for chunk in flat.split(self._CHUNK)]
            )
            quantized = embed.float()[indices]
            if self.training:
                quantized = flat + (quantized - flat).detach()
        return quantized.reshape(*x.shape[:-1], -1), indices.reshape(x.shape[:-1])


class Patchify(nn.Module):
    """``(b, c, t*pt, h*p, w*p)`` -> ``(b, t, h, w, c*pt*p*p)``, patch values ordered (c, pt, p, p)."""

    def __init__(self, temporal_patch_size: int, patch_size: int) -> None:
        super().__init__()
        self.pt, self.p = temporal_patch_size, patch_size

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, c, f, hh, ww = video.shape
        pt, p = self.pt, self.p
        x = video.reshape(b, c, f // pt, pt, hh // p, p, ww // p, p)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(b, f // pt, hh // p, ww // p, c * pt * p * p)


# -- the encoder ---------------------------------------------------------------------------------------------
class CTViT(nn.Module):
    """CT-CLIP's 3D ViT encoder (keys as under ``visual_transformer.`` in ``CT-CLIP_v2.pt``, decoder omitted).

    ``forward(video)`` maps ``(b, channels, depth, image_size, image_size)`` to the quantised token grid
    ``(b, depth / temporal_patch_size, image_size / patch_size, image_size / patch_size, dim)``.
    """

    def __init__(
        self,
        *,
        dim: int,
        codebook_size: int,
        image_size: int,
        patch_size: int,
        temporal_patch_size: int,
        spatial_depth: int,
        temporal_depth: int,
        dim_head: int = 64,
        heads: int = 8,
        channels: int = 1,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size = image_size
        self.patch_size = patch_size
        self.temporal_patch_size = temporal_patch_size
        self.spatial_rel_pos_bias = ContinuousPositionBias(dim, heads)
        patch_dim = channels * temporal_patch_size * patch_size * patch_size
        self.to_patch_emb = nn.Sequential(
            Patchify(temporal_patch_size, patch_size),
            nn.LayerNorm(patch_dim),
            nn.Linear(patch_dim, dim),
            nn.LayerNorm(dim),
        )
        self.enc_spatial_transformer = Transformer(dim, spatial_depth, dim_head, heads)
        self.enc_temporal_transformer = Transformer(dim, temporal_depth, dim_head, heads)
        self.vq = VectorQuantize(dim, codebook_size)

    @property
    def grid_size(self) -> int:
        """Patches along each in-plane axis."""
        return self.image_size // self.patch_size

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """The token grid ``(b, t, h, w, dim)`` before quantisation."""
        if video.ndim != 5 or tuple(video.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"CTViT expects (b, c, depth, {self.image_size}, {self.image_size}), got {tuple(video.shape)}"
            )
        if video.shape[2] % self.temporal_patch_size:
            raise ValueError(f"CTViT input depth {video.shape[2]} is not a multiple of {self.temporal_patch_size}")
        tokens = self.to_patch_emb(video)
        b, t, h, w, d = tokens.shape
        grid = (b, t, h, w)
        bias = self.spatial_rel_pos_bias(h, w)
        x = self.enc_spatial_transformer(tokens.reshape(b * t, h * w, d), grid, attn_bias=bias)
        x = x.reshape(b, t, h, w, d).permute(0, 2, 3, 1, 4).reshape(b * h * w, t, d)
        x = self.enc_temporal_transformer(x, grid)  # the PEG reads this (b h w) t layout as (b, t, h, w)
        return x.reshape(b, h, w, t, d).permute(0, 3, 1, 2, 4)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """The quantised token grid ``(b, t, h, w, dim)`` (what upstream returns with ``return_encoded_tokens``)."""
        tokens, _ = self.vq(self.encode(video))
        return tokens


class CTCLIPImageEncoder(nn.Module):
    """CTViT plus ``to_visual_latent``: a volume ``(b, 1, depth, H, W)`` -> an L2-normalised ``(b, dim_latent)``."""

    def __init__(self, ctvit: CTViT, dim_latent: int) -> None:
        super().__init__()
        self.visual_transformer = ctvit
        dim = ctvit.enc_spatial_transformer.norm_out.gamma.shape[0]
        self.to_visual_latent = nn.Linear(ctvit.grid_size**2 * dim, dim_latent, bias=False)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        tokens = self.visual_transformer(video)  # (b, t, h, w, d)
        pooled = tokens.mean(dim=1).flatten(1)  # (b, h*w*d), d fastest
        return F.normalize(self.to_visual_latent(pooled.to(self.to_visual_latent.weight.dtype)), dim=-1)


def build_ctclip_image_encoder(*, dim_latent: int, **ctvit_params: int) -> CTCLIPImageEncoder:
    """CT-CLIP's image tower, randomly initialised: ``**CTCLIP_PARAMS`` is the published configuration.

    ``ctvit_params`` are :class:`CTViT`'s arguments. Loads the image part of a CTCLIP state dict as is: keys
    ``visual_transformer.*`` (CTViT, without ``to_pixels*``, ``to_patch_emb_first_frame.*``, attention
    ``context_norm.*`` and the empty ``null_kv``, none of which the image embedding runs) and
    ``to_visual_latent.weight``.
    """
    return CTCLIPImageEncoder(CTViT(**ctvit_params), dim_latent)


# -- preprocessing -----------------------------------------------------------------------------------------------
def ctclip_preprocess(
    hu: np.ndarray, spacing: tuple[float, float, float], settings: Mapping[str, Any] = CTCLIP_PREPROCESSING
) -> torch.Tensor:
    """A HU volume ``[Z, Y, X]`` with spacing ``(z, y, x)`` mm -> CT-CLIP's input volume ``[D, H, W]`` float32.

    Clip to ``hu_range``, resample trilinearly to ``spacing``, divide by ``divisor``, then centre crop or pad
    to ``shape`` with ``pad_value``: CT-CLIP's ``data_inference_nii.py``, in float32 instead of float64.
    """
    lo, hi = (float(v) for v in settings["hu_range"])
    volume = torch.from_numpy(np.asarray(hu)).float().clamp_(lo, hi)
    spacing_zyx = tuple(float(s) for s in spacing)
    if settings["transpose_in_plane"]:
        volume = volume.transpose(1, 2)
        spacing_zyx = (spacing_zyx[0], spacing_zyx[2], spacing_zyx[1])
    volume = resize_trilinear(volume, spacing_zyx, [float(s) for s in settings["spacing"]])
    volume = volume / float(settings["divisor"])
    return centre_crop_or_pad(volume, [int(s) for s in settings["shape"]], float(settings["pad_value"]))


class CTCLIPEncoder(VolumeEncoder):
    """CT-CLIP's image embedding of a whole scan: 512-d, L2-normalised."""

    def __init__(self, spec: EncoderSpec, model: CTCLIPImageEncoder) -> None:
        super().__init__(spec.name, spec.dim, model, spec.device, spec.provenance)
        self.settings = dict(spec.preprocessing)

    def preprocess(self, scan: Scan) -> torch.Tensor:
        return ctclip_preprocess(scan.hu, scan.spacing, self.settings)[None, None]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)


# -- the family ------------------------------------------------------------------------------------------------------
_PREFIXES = ("visual_transformer.", "to_visual_latent.")
_UNUSED = ("visual_transformer.to_pixels", "visual_transformer.to_patch_emb_first_frame.")


class CTCLIPFamily(Family):
    """CT-CLIP's CTViT image tower (our implementation), 512-d per volume."""

    name: ClassVar[str] = "ctclip"
    kind: ClassVar = "volume"
    params_model: ClassVar[type[Settings]] = CTCLIPParams
    default_preprocessing: ClassVar[Mapping[str, Any]] = CTCLIP_PREPROCESSING

    def output_dim(self, params: Mapping[str, Any]) -> int:
        return int(params["dim_latent"])

    def adapt_state_dict(self, state_dict: StateDict, params: Mapping[str, Any]) -> StateDict:
        """Keep the image tower of a CTCLIP state dict; drop the parts its embedding never runs.

        ``null_kv`` is dropped only when empty (CTViT's self-attention has no null key/values); a non-empty one
        would change the attention, so it is refused rather than ignored.
        """
        kept: StateDict = {}
        for key, value in state_dict.items():
            if not key.startswith(_PREFIXES) or key.startswith(_UNUSED) or ".context_norm." in key:
                continue
            if key.endswith(".null_kv"):
                if value.numel():
                    raise ClearbenchError(
                        f"checkpoint key {key} holds {tuple(value.shape)} null key/values; "
                        "CT-CLIP's image encoder has none, so this is not a CT-CLIP checkpoint"
                    )
                continue
            kept[key] = value
        return kept

    def infer_params(self, state_dict: StateDict, params: Mapping[str, Any]) -> dict[str, Any]:
        """Width, codebook, heads, depths and latent size from the checkpoint; patch and image size from the card.

        Whatever the checkpoint lacks stays as the card says; the strict load then names the missing keys.
        """
        out = dict(params)
        vt = "visual_transformer."

        def shape(key: str, axis: int) -> int | None:
            return int(state_dict[key].shape[axis]) if key in state_dict else None

        bias_net = sorted(int(k.split(".")[3]) for k in state_dict if k.startswith(f"{vt}spatial_rel_pos_bias.net."))
        found = {
            "dim": shape(f"{vt}to_patch_emb.2.weight", 0),
            "codebook_size": shape(f"{vt}vq._codebook.embed", 1),
            "heads": shape(f"{vt}spatial_rel_pos_bias.net.{bias_net[-1]}.weight", 0) if bias_net else None,
            "dim_latent": shape("to_visual_latent.weight", 0),
        }
        inner = shape(f"{vt}enc_spatial_transformer.layers.0.1.to_q.weight", 0)
        if inner is not None and found["heads"]:
            found["dim_head"] = inner // found["heads"]
        for part in ("spatial", "temporal"):
            prefix = f"{vt}enc_{part}_transformer.layers."
            layers = {int(k[len(prefix) :].split(".")[0]) for k in state_dict if k.startswith(prefix)}
            found[f"{part}_depth"] = max(layers) + 1 if layers else None
        out.update({k: v for k, v in found.items() if v is not None})
        return out

    def build(self, params: Mapping[str, Any]) -> nn.Module:
        return build_ctclip_image_encoder(**params)

    def wrap(self, model: nn.Module, spec: EncoderSpec) -> VolumeEncoder:
        assert isinstance(model, CTCLIPImageEncoder)
        ctvit = model.visual_transformer
        depth, height, width = (int(s) for s in spec.preprocessing["shape"])
        if (height, width) != (ctvit.image_size, ctvit.image_size) or depth % ctvit.temporal_patch_size:
            raise ClearbenchError(
                f"encoder '{spec.name}': preprocessing shape {[depth, height, width]} does not fit CTViT "
                f"(in-plane {ctvit.image_size}x{ctvit.image_size}, depth a multiple of {ctvit.temporal_patch_size}); "
                "fix [preprocessing] shape or [params] in its card"
            )
        return CTCLIPEncoder(spec, model)
