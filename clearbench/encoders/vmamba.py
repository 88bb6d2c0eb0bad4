"""``vmamba``: the VMamba VSSM backbone (Liu et al., NeurIPS 2024) with its classifier head removed.

CLEAR builds ``VSSM()`` from MzeroMiko/VMamba with its defaults, replaces ``classifier.head`` with an identity
and embeds each slice as LayerNorm -> global average pool of the last stage (768-d). The upstream code no
longer runs that configuration on a CPU (its ``forward_type="v2"`` asks for a CUDA backend that a later
assertion forbids, and its cross-scan needs a CUDA device), so this module implements the same network:

- patch embedding: 4x4 conv, stride 4, then LayerNorm (channel-last);
- four stages of VSS blocks ``x + SS2D(LN(x))``, ``x + MLP(LN(x))``, joined by 2x2 stride-2 conv downsampling;
- SS2D: linear in-projection to ``x, z``; depthwise 3x3 conv + SiLU on ``x``; the 2D selective scan along
  four directions (row-major, column-major, and both reversed), merged back to the map; LayerNorm; gated
  by ``SiLU(z)``; linear out-projection. Each direction has its own projections, ``A``, ``D`` and ``dt``
  parameters, stored stacked as upstream does (``x_proj_weight``, ``dt_projs_weight``, ``A_logs``, ``Ds``).

Parameter names are VMamba's, so checkpoints load strictly: with the default configuration the backbone
has 42,953,376 parameters in 303 state-dict entries (43,722,376 with the 1000-class head). Accepted key
layouts (after the registry's unwrapping of ``{"model": ...}``/``{"state_dict": ...}`` and of the
``module.``/``module.base_encoder.`` prefixes of a MoCo training file):

- VMamba's current layout (``patch_embed.0``, ``layers.i.blocks.j.op``, ``classifier.norm``);
- its legacy names, renamed as ``VSSM._load_from_state_dict`` does: ``patch_embed.proj`` -> ``patch_embed.0``,
  ``patch_embed.norm`` -> ``patch_embed.2``, ``ln_1`` -> ``norm``, ``self_attention`` -> ``op``, top-level
  ``norm`` -> ``classifier.norm`` and ``head`` -> ``classifier.head``;
- ``classifier.head.*`` is dropped (a CLEAR file still holds its 3-layer MoCo projection MLP there).

The selective scan is :func:`clearbench.encoders.selective_scan.selective_scan`: mamba-ssm's CUDA kernel when
it is installed and the model runs on a GPU, else a chunked pure-PyTorch scan.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from timm.layers import DropPath, trunc_normal_
from torch import nn

from clearbench.encoders.family import StateDict
from clearbench.encoders.image import ImageSliceFamily
from clearbench.encoders.selective_scan import selective_scan
from clearbench.errors import ClearbenchError
from clearbench.settings import Settings


class VMambaParams(Settings):
    """A ``vmamba`` card's ``[params]``; the defaults are CLEAR's ``VSSM()`` (768-d)."""

    depths: list[PositiveInt] = Field(default_factory=lambda: [2, 2, 9, 2])
    dims: list[PositiveInt] = Field(default_factory=lambda: [96, 192, 384, 768])
    patch_size: PositiveInt = 4
    ssm_d_state: PositiveInt = 16
    ssm_ratio: PositiveFloat = 2.0
    ssm_dt_rank: PositiveInt | Literal["auto"] = "auto"  # "auto": ceil(dim / 16) per stage
    ssm_conv: PositiveInt = 3
    ssm_conv_bias: bool = True
    mlp_ratio: PositiveFloat = 4.0
    drop_path_rate: float = Field(default=0.1, ge=0, lt=1)


DEFAULTS: dict[str, Any] = VMambaParams().model_dump()

N_DIRECTIONS = 4  # row-major, column-major, and both reversed


# -- the four-direction scan over a 2D map ---------------------------------------------------------------
def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """A map ``(b, c, h, w)`` as four sequences ``(b, 4, c, h*w)``: rows, columns, rows reversed, columns reversed."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    forward = torch.stack([rows, cols], dim=1)
    return torch.cat([forward, forward.flip(-1)], dim=1)


def cross_merge(ys: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse bookkeeping of :func:`cross_scan`: four sequences ``(b, 4, c, h*w)`` summed back onto the
    map, as ``(b, c, h*w)`` in row-major order. ``cross_merge(cross_scan(x))`` is ``4 * x`` flattened."""
    b, _, c, _ = ys.shape
    forward = ys[:, :2] + ys[:, 2:].flip(-1)
    cols = forward[:, 1].reshape(b, c, w, h).transpose(2, 3).reshape(b, c, h * w)
    return forward[:, 0] + cols


# -- modules --------------------------------------------------------------------------------------------
class Permute(nn.Module):
    """A parameter-free permute, kept as a module so that the ``nn.Sequential`` indices match VMamba's keys."""

    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class SS2D(nn.Module):
    """VMamba's 2D selective-scan mixer (forward type v2, channel-last input ``(b, h, w, d_model)``)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        conv_bias: bool = True,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        k = N_DIRECTIONS
        d_inner = int(ssm_ratio * d_model)
        rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.d_state, self.d_inner, self.dt_rank = d_state, d_inner, rank

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=conv_bias)
        # Per direction: x -> (dt at low rank, B, C), and dt back to full width; stacked over directions.
        bound = d_inner**-0.5  # nn.Linear's default init, which upstream's stacked linears keep
        self.x_proj_weight = nn.Parameter(torch.empty(k, rank + 2 * d_state, d_inner).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, rank).uniform_(-(rank**-0.5), rank**-0.5))
        # dt = softplus(bias) starts log-uniform in [dt_min, dt_max]; the bias is its inverse softplus.
        dt = torch.exp(torch.rand(k, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real initialisation A = -(1..N), stored as log(-A); D = 1 (the skip connection).
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(a))
        self.Ds = nn.Parameter(torch.ones(k * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))
        y = self._scan_2d(x)
        return self.out_proj(self.out_norm(y).to(z.dtype) * F.silu(z))

    def _scan_2d(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, d_inner, h, w)`` -> ``(b, h, w, d_inner)`` float32: the selective scan in four directions."""
        b, d, h, w = x.shape
        k, n, r = N_DIRECTIONS, self.d_state, self.dt_rank
        xs = cross_scan(x)  # (b, k, d, L)
        proj = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(proj, [r, n, n], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        ys = selective_scan(
            xs.reshape(b, k * d, -1).float(),
            dts.reshape(b, k * d, -1).float(),
            -torch.exp(self.A_logs.float()),
            Bs.float(),
            Cs.float(),
            self.Ds.float(),
            delta_bias=self.dt_projs_bias.reshape(-1).float(),
            delta_softplus=True,
        )
        y = cross_merge(ys.reshape(b, k, d, -1), h, w)
        return y.transpose(1, 2).reshape(b, h, w, d)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    """``x + SS2D(LN(x))`` then ``x + MLP(LN(x))``, with stochastic depth on both branches."""

    def __init__(self, dim: int, drop_path: float, mlp_ratio: float, **ssm: Any) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.op = SS2D(dim, **ssm)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VSSM(nn.Module):
    """The VMamba backbone: ``(n, 3, H, W)`` -> ``(n, dims[-1])`` (final LayerNorm, then global average pool)."""

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 9, 2),
        dims: Sequence[int] = (96, 192, 384, 768),
        patch_size: int = 4,
        ssm_d_state: int = 16,
        ssm_ratio: float = 2.0,
        ssm_dt_rank: int | str = "auto",
        ssm_conv: int = 3,
        ssm_conv_bias: bool = True,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f"depths {list(depths)} and dims {list(dims)} need the same length")
        self.dims = [int(d) for d in dims]
        self.num_features = self.dims[-1]
        self.patch_embed = nn.Sequential(
            nn.Conv2d(in_chans, self.dims[0], patch_size, stride=patch_size),
            Permute(0, 2, 3, 1),
            nn.LayerNorm(self.dims[0]),
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        ssm = {
            "d_state": ssm_d_state,
            "ssm_ratio": ssm_ratio,
            "dt_rank": ssm_dt_rank,
            "d_conv": ssm_conv,
            "conv_bias": ssm_conv_bias,
        }
        self.layers = nn.ModuleList()
        start = 0
        for i, (depth, dim) in enumerate(zip(depths, self.dims, strict=True)):
            blocks = [VSSBlock(dim, rates[start + j], mlp_ratio, **ssm) for j in range(depth)]
            start += depth
            last = i == len(self.dims) - 1
            downsample = (
                nn.Identity()
                if last
                else nn.Sequential(
                    Permute(0, 3, 1, 2),
                    nn.Conv2d(dim, self.dims[i + 1], kernel_size=2, stride=2),
                    Permute(0, 2, 3, 1),
                    nn.LayerNorm(self.dims[i + 1]),
                )
            )
            self.layers.append(nn.Sequential(OrderedDict(blocks=nn.Sequential(*blocks), downsample=downsample)))
        self.classifier = nn.Sequential(
            OrderedDict(
                norm=nn.LayerNorm(self.num_features),
                permute=Permute(0, 3, 1, 2),
                avgpool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
                head=nn.Identity(),
            )
        )
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.classifier(x)


def _init_weights(m: nn.Module) -> None:
    """VSSM's init: truncated-normal linears with zero bias, unit LayerNorms (convs keep torch's default)."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def build_vmamba(**params: Any) -> VSSM:
    """A headless VMamba VSSM from family parameters (defaults: :data:`DEFAULTS`, CLEAR's ``VSSM()``).

    Loads VMamba's current key layout (``patch_embed.0``, ``layers.i.blocks.j.op.*``,
    ``layers.i.downsample.{1,3}``, ``classifier.norm``) with no classifier head; pass a published checkpoint
    through :func:`convert_vmamba_state_dict` first.
    """
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ClearbenchError(f"vmamba: unknown parameter(s) {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
    p = {**DEFAULTS, **params}
    return VSSM(
        depths=[int(d) for d in p["depths"]],
        dims=[int(d) for d in p["dims"]],
        patch_size=int(p["patch_size"]),
        ssm_d_state=int(p["ssm_d_state"]),
        ssm_ratio=float(p["ssm_ratio"]),
        ssm_dt_rank=p["ssm_dt_rank"],
        ssm_conv=int(p["ssm_conv"]),
        ssm_conv_bias=bool(p["ssm_conv_bias"]),
        mlp_ratio=float(p["mlp_ratio"]),
        drop_path_rate=float(p["drop_path_rate"]),
    )


# -- checkpoints ---------------------------------------------------------------------------------------
_LEGACY_RENAMES = (
    (re.compile(r"^patch_embed\.proj\."), "patch_embed.0."),
    (re.compile(r"^patch_embed\.norm\."), "patch_embed.2."),
    (re.compile(r"^(layers\.\d+\.blocks\.\d+\.)ln_1\."), r"\1norm."),
    (re.compile(r"^(layers\.\d+\.blocks\.\d+\.)self_attention\."), r"\1op."),
    (re.compile(r"^norm\."), "classifier.norm."),
    (re.compile(r"^head\."), "classifier.head."),
)
HEAD_PREFIX = "classifier.head."


def convert_vmamba_state_dict(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """A VMamba checkpoint's state dict in :func:`build_vmamba`'s layout: legacy names renamed, head dropped."""
    out: StateDict = {}
    for key, value in state_dict.items():
        name = key
        for pattern, replacement in _LEGACY_RENAMES:
            name = pattern.sub(replacement, name)
        if not name.startswith(HEAD_PREFIX):
            out[name] = value
    return out


_BLOCK_NORM = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.norm\.weight$")


def infer_vmamba_params(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture parameters read from a converted state dict (depths, dims, state size, ratios, conv)."""
    depths: dict[int, int] = {}
    dims: dict[int, int] = {}
    for key, value in state_dict.items():
        match = _BLOCK_NORM.match(key)
        if match:
            stage, block = int(match[1]), int(match[2])
            depths[stage] = max(depths.get(stage, 0), block + 1)
            dims[stage] = int(value.shape[0])
    if not depths or sorted(depths) != list(range(len(depths))):
        raise ClearbenchError(
            "vmamba: cannot read the stages from the checkpoint (no "
            "layers.<i>.blocks.<j>.norm.weight keys); is it a VMamba checkpoint?"
        )
    op = "layers.0.blocks.0.op."
    try:
        d_inner, d_state = state_dict[op + "A_logs"].shape[0] // N_DIRECTIONS, state_dict[op + "A_logs"].shape[1]
        conv = state_dict[op + "conv2d.weight"]
        hidden = state_dict["layers.0.blocks.0.mlp.fc1.weight"].shape[0]
        patch = state_dict["patch_embed.0.weight"].shape[-1]
    except KeyError as exc:
        raise ClearbenchError(
            f"vmamba: the checkpoint has no {exc.args[0]}; it is not a VMamba (forward type v2) checkpoint"
        ) from exc
    stage_dims = [dims[i] for i in range(len(dims))]
    ranks = [
        int(state_dict[f"layers.{i}.blocks.0.op.dt_projs_weight"].shape[-1])
        for i in range(len(dims))
        if f"layers.{i}.blocks.0.op.dt_projs_weight" in state_dict
    ]
    auto = [math.ceil(d / 16) for d in stage_dims]
    rank: int | str = "auto" if ranks == auto else ranks[0]
    if rank != "auto" and len(set(ranks)) != 1:
        raise ClearbenchError(f"vmamba: the checkpoint's dt ranks {ranks} are neither 'auto' nor one value")
    return {
        "depths": [depths[i] for i in range(len(depths))],
        "dims": stage_dims,
        "patch_size": int(patch),
        "ssm_d_state": int(d_state),
        "ssm_ratio": d_inner / stage_dims[0],
        "ssm_dt_rank": rank,
        "ssm_conv": int(conv.shape[-1]),
        "ssm_conv_bias": op + "conv2d.bias" in state_dict,
        "mlp_ratio": hidden / stage_dims[0],
    }


class VMambaFamily(ImageSliceFamily):
    """VMamba slices at 224 px with ImageNet statistics (the CLEAR extraction scripts' preprocessing)."""

    name: ClassVar[str] = "vmamba"
    heads: ClassVar[tuple[str, ...]] = (HEAD_PREFIX,)
    params_model: ClassVar[type[Settings]] = VMambaParams
    # ``clear``: VSSM()'s defaults, which CLEAR trained (768-d); ``micro``: a tiny VMamba for tests on a CPU.
    pretrain_variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "clear": {"depths": [2, 2, 9, 2], "dims": [96, 192, 384, 768]},
        "micro": {"depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128], "ssm_d_state": 4},
    }
    pretrain_default: ClassVar[str | None] = "clear"
    display_name: ClassVar[str | None] = "VMamba"

    def adapt_state_dict(self, state_dict: StateDict, params: Mapping[str, Any]) -> StateDict:
        return super().adapt_state_dict(convert_vmamba_state_dict(state_dict), params)

    def infer_params(self, state_dict: StateDict, params: Mapping[str, Any]) -> dict[str, Any]:
        return {**params, **infer_vmamba_params(state_dict)}

    def build(self, params: Mapping[str, Any]) -> nn.Module:
        return build_vmamba(**params)

    def output_dim(self, params: Mapping[str, Any]) -> int | None:
        return int(params["dims"][-1])
