"""The Mamba selective scan (S6) that VMamba runs four times per block, in chunks, in pure PyTorch.

The recurrence, per channel ``d`` and state ``n``::

    h_t = exp(delta_t * A[d, n]) * h_{t-1} + delta_t * B_t[n] * u_t
    y_t = sum_n C_t[n] * h_t[n] + D[d] * u_t

A token-by-token Python loop is exact but costs a few small operations per token (3136 tokens per map at
VMamba's first stage): tens of thousands of kernel launches per image on a GPU. Here the sequence is cut
into chunks of ``chunk_size`` tokens and each chunk is solved in closed form: with
``E_t = A * (cumulative sum of delta inside the chunk)``, the decay from token ``s`` to token ``t``
factorises as ``exp(E_t) * exp(-E_s)``, so every state of the chunk is ``exp(E_t)`` times a cumulative
sum of ``exp(-E_s) * delta_s * B_s * u_s`` (plus the carried state): a handful of tensor operations per
chunk instead of one per token. Only the state at chunk boundaries is carried by a Python loop, which
runs ``L / chunk_size`` times.

Numerical safety: the factorised form needs ``exp(-E_s)``, which grows with the decay accumulated inside
a chunk. Each chunk's largest exponent is checked first. A chunk too steep for float32 (a channel that
forgets almost everything within it) is solved in float64, and cut into the longest pieces that float64
allows when even that is not enough (down to single tokens), so the result is always the exact
recurrence. Everything else is computed in float32 with autocast disabled. When gradients are needed each chunk is recomputed in the backward
(``torch.utils.checkpoint``), so training memory does not grow with the ``(L, K*D, N)`` state.

Speed (``benchmarks/bench_scan.py``): on a CPU both the loop and the chunks are bound by the ~``L*K*D*N``
exponentials and memory traffic, so the chunked scan is only modestly faster there (about 1.2x per scan on
one core); on a CPU it scans one (image, group) at a time to keep each chunk in cache. Its point is the
GPU without mamba-ssm, where it replaces ~25,000 launches per scan by ~1,000, and a short autograd graph.

On CUDA, when the optional ``mamba-ssm`` package is installed (``pip install 'clearbench[cuda]'``),
its fused kernel is used instead. mamba-ssm cannot even be imported on a machine without CUDA, so it is
looked up with ``importlib.util.find_spec`` and imported only when the tensors are on a GPU.

Shapes follow VMamba and mamba-ssm: ``u, delta (batch, K*D, L)``, ``A (K*D, N)``, ``B, C (batch, G, N, L)``
grouped (``G`` divides ``K*D``; VMamba uses one group per scan direction, ``G = K = 4``),
``D, delta_bias (K*D,)``.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# The largest |A * sum(delta)| allowed inside one chunk: exp(60) ~ 1e26 keeps every intermediate of the
# factorised form finite in float32 (max ~3e38) with room for the products with B, C and u. A steeper chunk
# is solved in float64 (max ~1.8e308), where exp(500) ~ 1e217 leaves the same room.
_MAX_EXPONENT = {torch.float32: 60.0, torch.float64: 500.0}

DEFAULT_CHUNK_SIZE = 32


@lru_cache(maxsize=1)
def mamba_ssm_installed() -> bool:
    """Whether the optional mamba-ssm package is present (without importing it: its import needs CUDA)."""
    return importlib.util.find_spec("mamba_ssm") is not None


def _kernel_applies(u: torch.Tensor) -> bool:
    return u.is_cuda and mamba_ssm_installed()


@lru_cache(maxsize=1)
def _mamba_ssm_scan() -> Callable[..., torch.Tensor] | None:
    """mamba-ssm's kernel, or None (with one warning) when the installed package cannot be imported."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError as exc:  # a broken optional accelerator must not stop an embedding run
        warnings.warn(
            f"mamba-ssm is installed but cannot be imported ({exc}); using the PyTorch scan. "
            "Reinstall it with pip install 'clearbench[cuda]'",
            stacklevel=3,
        )
        return None
    return selective_scan_fn


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Run the selective scan with the fastest available backend; returns ``(batch, K*D, L)`` float32.

    mamba-ssm's CUDA kernel when it is installed and ``u`` is on a GPU, otherwise :func:`selective_scan_chunked`.
    """
    scan = _mamba_ssm_scan() if _kernel_applies(u) else None
    if scan is not None:
        out = scan(
            u.float().contiguous(),
            delta.float().contiguous(),
            A.float().contiguous(),
            _grouped(B, u).float().contiguous(),
            _grouped(C, u).float().contiguous(),
            None if D is None else D.float(),
            z=None,
            delta_bias=None if delta_bias is None else delta_bias.float(),
            delta_softplus=delta_softplus,
        )
        return out.float()
    return selective_scan_chunked(u, delta, A, B, C, D, delta_bias, delta_softplus, chunk_size=chunk_size)


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """The chunked pure-PyTorch scan (differentiable through autograd); returns ``(batch, K*D, L)`` float32."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    with torch.autocast(device_type=u.device.type, enabled=False):
        u_, dt, A_, B_, C_ = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
        batch, groups, dg, length = u_.shape
        spans = _safe_spans(dt, A_, chunk_size)
        # For training, autograd would keep ~5 state-sized tensors per chunk (1.1 GB per image for one
        # VMamba scan at 224 px); recomputing each chunk in the backward keeps only its inputs.
        recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (u_, dt, A_, B_, C_))
        if _tile_per_sequence(u):
            # unbind, not indexing, keeps the backward linear (see _scan_sequence).
            images = []
            for u_b, dt_b, B_b, C_b in zip(u_.unbind(0), dt.unbind(0), B_.unbind(0), C_.unbind(0), strict=True):
                groups_out = []
                per_group = zip(u_b.unbind(0), dt_b.unbind(0), A_.unbind(0), B_b.unbind(0), C_b.unbind(0), strict=True)
                for u_g, dt_g, A_g, B_g, C_g in per_group:
                    one = _scan_sequence(
                        u_g[None, None], dt_g[None, None], A_g[None], B_g[None, None], C_g[None, None], spans, recompute
                    )
                    groups_out.append(one[0, 0])
                images.append(torch.stack(groups_out))
            y = torch.stack(images)
        else:
            y = _scan_sequence(u_, dt, A_, B_, C_, spans, recompute)
        y = y.reshape(batch, groups * dg, length)
        if D is not None:
            y = y + u.float() * D.float()[:, None]
    return y


def _tile_per_sequence(u: torch.Tensor) -> bool:
    """On a CPU, scan one (image, group) at a time so that a chunk's state block stays in cache: with a whole
    batch in one block the scan is memory-bound (2-3x slower at batch 8-32). A GPU wants few large launches."""
    return u.device.type == "cpu"


def _scan_sequence(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    spans: list[tuple[int, torch.dtype]],
    recompute: bool,
) -> torch.Tensor:
    """The chunk loop over one block of sequences (shapes as in :func:`_scan_chunk`); returns ``(b, G, Dg, L)``."""
    sizes = [size for size, _ in spans]
    # torch.split, not slicing: its backward is one concatenation, where each slice's backward would
    # write into a zero tensor of the full length (quadratic in L).
    chunks = zip(u.split(sizes, -1), dt.split(sizes, -1), B.split(sizes, -2), C.split(sizes, -2), strict=True)
    h = u.new_zeros(*u.shape[:-1], A.shape[-1])
    ys = []
    for (u_c, dt_c, B_c, C_c), (_, dtype) in zip(chunks, spans, strict=True):
        args = tuple(t.to(dtype) for t in (u_c, dt_c, A, B_c, C_c, h))
        if recompute:
            y, h = checkpoint(_scan_chunk, *args, use_reentrant=False)
        else:
            y, h = _scan_chunk_inference(*args)
        ys.append(y.float())
        h = h.float()
    return torch.cat(ys, dim=-1)


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """The plain recurrence, one token at a time: the ground truth for tests and the benchmark only."""
    u_, dt, A_, B_, C_ = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, groups, dg, length = u_.shape
    h = u_.new_zeros(batch, groups, dg, A_.shape[-1])
    ys = []
    # unbind, not indexing: its backward is one stack, where indexing would cost a full-length zero tensor per token.
    for u_t, dt_t, B_t, C_t in zip(u_.unbind(-1), dt.unbind(-1), B_.unbind(2), C_.unbind(2), strict=True):
        h = torch.exp(dt_t[..., None] * A_) * h + (dt_t * u_t)[..., None] * B_t[:, :, None, :]
        ys.append((h * C_t[:, :, None, :]).sum(-1))
    y = torch.stack(ys, dim=-1).reshape(batch, groups * dg, length)
    if D is not None:
        y = y + u.float() * D.float()[:, None]
    return y


def _grouped(BC: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``(batch, N, L)`` (one group) or ``(batch, G, N, L)`` -> ``(batch, G, N, L)``, with shape checks."""
    if BC.dim() == 3:
        BC = BC.unsqueeze(1)
    if BC.dim() != 4 or BC.shape[0] != u.shape[0] or BC.shape[-1] != u.shape[-1] or u.shape[1] % BC.shape[1]:
        raise ValueError(f"B and C must be (batch, G, N, L) with G dividing {u.shape[1]}, got {tuple(BC.shape)}")
    return BC


def _prepare(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
) -> tuple[torch.Tensor, ...]:
    """Float32 tensors split by group: u, dt ``(b, G, Dg, L)``, A ``(G, Dg, N)``, B, C ``(b, G, L, N)``."""
    B, C = _grouped(B, u), _grouped(C, u)
    if u.dim() != 3 or delta.shape != u.shape or A.shape[0] != u.shape[1] or B.shape != C.shape:
        raise ValueError(
            f"selective scan shapes: u {tuple(u.shape)}, delta {tuple(delta.shape)}, A {tuple(A.shape)}, "
            f"B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    batch, channels, length = u.shape
    groups, n_state = B.shape[1], B.shape[2]
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    split = (batch, groups, channels // groups, length)
    return (
        u.float().reshape(split),
        dt.reshape(split),
        A.float().reshape(groups, channels // groups, n_state),
        B.float().transpose(-1, -2),
        C.float().transpose(-1, -2),
    )


def _safe_spans(dt: torch.Tensor, A: torch.Tensor, chunk_size: int) -> list[tuple[int, torch.dtype]]:
    """The pieces to solve in closed form, in order, as (number of tokens, dtype): ``chunk_size`` tokens in
    float32, unless a chunk's decay is too steep for float32; then two float32 pieces, or float64 (not on
    Apple's MPS, which has none) cut shorter only where even float64's range would not do."""
    length = dt.shape[-1]
    n_chunks = -(-length // chunk_size)
    rate = A.detach().abs().amax(-1)  # (G, Dg): the fastest-forgetting state of each channel
    padded = F.pad(dt.detach(), (0, n_chunks * chunk_size - length))
    chunks = padded.reshape(*padded.shape[:-1], n_chunks, chunk_size)
    # The exponent range inside a chunk is measured from its first token, so that token does not count.
    steep = (chunks[..., 1:].sum(-1) * rate[..., None]).amax(dim=(0, 1, 2)) > _MAX_EXPONENT[torch.float32]
    wide = torch.float64 if dt.device.type != "mps" else torch.float32
    spans: list[tuple[int, torch.dtype]] = []
    for c, too_steep in enumerate(steep.tolist()):
        lo, hi = c * chunk_size, min((c + 1) * chunk_size, length)
        if too_steep:
            # Two float32 pieces are cheaper than one float64 chunk (twice the cost per element); beyond
            # that, float64's range saves the loop overhead of many short pieces.
            pieces = _split_until_safe(dt, rate, lo, hi, _MAX_EXPONENT[torch.float32])
            if len(pieces) <= 2 or wide == torch.float32:
                spans.extend((size, torch.float32) for size in pieces)
            else:
                spans.extend((size, wide) for size in _split_until_safe(dt, rate, lo, hi, _MAX_EXPONENT[wide]))
        else:
            spans.append((hi - lo, torch.float32))
    return spans


def _split_until_safe(dt: torch.Tensor, rate: torch.Tensor, lo: int, hi: int, limit: float) -> list[int]:
    """Cut ``[lo, hi)`` greedily into lengths: each piece ends just before the first token whose exponent,
    counted from the piece's first token, would pass ``limit`` in any channel. A piece's first token never
    counts, so every piece has at least one token and the loop ends."""
    sizes = []
    while lo < hi:
        reach = (dt[..., lo + 1 : hi].detach().cumsum(-1) * rate[..., None]).amax(dim=(0, 1, 2))
        over = torch.nonzero(reach > limit)
        end = hi if over.numel() == 0 else lo + 1 + int(over[0])
        sizes.append(end - lo)
        lo = end
    return sizes


def _scan_chunk(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk in closed form. u, dt ``(b, G, Dg, T)``; B, C ``(b, G, T, N)``; state h ``(b, G, Dg, N)``.

    With ``E_t = A * sum(dt[1..t]) <= 0`` (zero at the chunk's first token), the state after token ``t`` is
    ``h_t = exp(E_t) * (h' + sum_{s<=t} exp(-E_s) * B_s * dt_s * u_s)``, where ``h'`` is the carried state
    decayed by the first token: one cumulative sum instead of T sequential steps.
    Returns the chunk's outputs ``(b, G, Dg, T)`` and its last state.
    """
    gamma = (dt.cumsum(-1) - dt[..., :1])[..., None]
    decay = torch.exp(gamma * A[:, :, None, :])  # (b, G, Dg, T, N), in (0, 1]
    # exp(-E) rather than 1 / decay: the backward of a division squares the divisor, which underflows.
    growth = torch.exp(gamma * -A[:, :, None, :])
    inflow = (dt * u)[..., None] * B[:, :, None] * growth
    inflow[..., 0, :] += torch.exp(dt[..., :1] * A) * h
    states = decay * inflow.cumsum(-2)
    y = (states * C[:, :, None]).sum(-1)
    return y, states[..., -1, :]


def _scan_chunk_inference(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_scan_chunk` without autograd, in fewer passes over the state: in place, ``B / decay`` for
    ``B * exp(-E)`` (safe here, since ``decay >= exp(-_MAX_EXPONENT)``) and a fused multiply-sum over the state.
    This is the embedding path."""
    gamma = (dt.cumsum(-1) - dt[..., :1])[..., None]
    decay = torch.mul(gamma, A[:, :, None, :]).exp_()
    inflow = torch.div(B[:, :, None], decay).mul_((dt * u)[..., None])
    inflow[..., 0, :] += torch.exp(dt[..., :1] * A) * h
    states = inflow.cumsum_(-2).mul_(decay)
    return torch.linalg.vecdot(states, C[:, :, None]), states[..., -1, :]
