"""The chunked selective scan is the plain recurrence: outputs and every gradient within 1e-4."""

from __future__ import annotations

import pytest
import torch

import clearbench.encoders.selective_scan as ss
from clearbench.encoders.selective_scan import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
)

BATCH, GROUPS, PER_GROUP, N_STATE, LENGTH = 2, 2, 3, 4, 50


def _inputs(seed: int = 0, softplus: bool = True, length: int = LENGTH, steep: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    channels = GROUPS * PER_GROUP
    # Without softplus, delta is used as given and must be positive (a step size), as in mamba-ssm.
    shape = (BATCH, channels, length)
    delta = torch.randn(*shape, generator=g) if softplus else torch.rand(*shape, generator=g)
    return {
        "u": torch.randn(BATCH, channels, length, generator=g),
        "delta": delta,
        "A": -torch.exp(torch.randn(channels, N_STATE, generator=g)) * steep,
        "B": torch.randn(BATCH, GROUPS, N_STATE, length, generator=g),
        "C": torch.randn(BATCH, GROUPS, N_STATE, length, generator=g),
        "D": torch.randn(channels, generator=g),
        "delta_bias": 0.1 * torch.randn(channels, generator=g),
    }


def _run(scan, inputs: dict[str, torch.Tensor], softplus: bool, **kw) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    y = scan(**leaves, delta_softplus=softplus, **kw)
    weights = torch.linspace(-1, 1, y.numel()).reshape(y.shape)  # a loss that weighs every output differently
    (y * weights).sum().backward()
    return y.detach(), {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("softplus", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 7, 16, 64])  # 50 tokens: ragged last chunk, and one chunk > L
@pytest.mark.parametrize("tiled", [True, False], ids=["per-sequence", "whole-batch"])  # the CPU and GPU layouts
def test_chunked_scan_matches_the_recurrence_forward_and_backward(chunk_size, softplus, tiled, monkeypatch):
    monkeypatch.setattr(ss, "_tile_per_sequence", lambda u: tiled)
    inputs = _inputs(softplus=softplus)
    y_ref, g_ref = _run(selective_scan_reference, inputs, softplus)
    y, g = _run(selective_scan_chunked, inputs, softplus, chunk_size=chunk_size)
    assert y.dtype == torch.float32 and y.shape == (BATCH, GROUPS * PER_GROUP, LENGTH)
    assert (y - y_ref).abs().max() < 1e-4
    with torch.no_grad():  # the in-place inference path
        y_inference = selective_scan_chunked(**inputs, delta_softplus=softplus, chunk_size=chunk_size)
        assert (y_inference - y_ref).abs().max() < 1e-4
    for name in ("u", "delta", "A", "B", "C", "D", "delta_bias"):
        assert g[name].shape == inputs[name].shape
        assert (g[name] - g_ref[name]).abs().max() < 1e-4, name


@pytest.mark.parametrize("steep", [1.0, 3.0, 100.0])
def test_steep_decay_is_split_or_solved_in_float64_and_stays_exact(steep):
    """Channels that forget within a few tokens would overflow the closed form in float32: such a chunk is
    cut in two, or run in float64, and cut shorter when the decay is too steep even for that."""
    inputs = _inputs(seed=1, steep=steep)
    dt = torch.nn.functional.softplus(inputs["delta"] + inputs["delta_bias"][:, None])
    A = inputs["A"].reshape(GROUPS, PER_GROUP, N_STATE)
    spans = ss._safe_spans(dt.reshape(BATCH, GROUPS, PER_GROUP, LENGTH), A, 16)
    assert sum(size for size, _ in spans) == LENGTH
    if steep == 1.0:  # a little too steep: chunks cut in two float32 pieces
        assert len(spans) > 4 and {dtype for _, dtype in spans} == {torch.float32}
    elif steep == 3.0:  # float64 is enough for whole chunks; the last 2 tokens are gentle enough for float32
        assert spans == [(16, torch.float64)] * 3 + [(2, torch.float32)]
    else:  # some channels forget within a token or two: shorter float64 pieces
        assert len(spans) > 20 and torch.float64 in {dtype for _, dtype in spans}
    y_ref, g_ref = _run(selective_scan_reference, inputs, True)
    y, g = _run(selective_scan_chunked, inputs, True, chunk_size=16)
    assert torch.isfinite(y).all() and (y - y_ref).abs().max() < 1e-4
    assert all(torch.isfinite(g[k]).all() and (g[k] - g_ref[k]).abs().max() < 1e-4 for k in g)
    with torch.no_grad():
        assert (selective_scan_chunked(**inputs, delta_softplus=True, chunk_size=16) - y_ref).abs().max() < 1e-4


def test_ungrouped_B_and_C_are_one_group():
    inputs = _inputs(seed=2)
    inputs["B"], inputs["C"] = inputs["B"][:, 0], inputs["C"][:, 0]  # (batch, N, L)
    y = selective_scan_chunked(**inputs, delta_softplus=True, chunk_size=8)
    one_group = {**inputs, "B": inputs["B"][:, None], "C": inputs["C"][:, None]}
    assert torch.equal(y, selective_scan_chunked(**one_group, delta_softplus=True, chunk_size=8))
    assert (y - selective_scan_reference(**one_group, delta_softplus=True)).abs().max() < 1e-4


def test_autocast_does_not_lower_the_scan_precision():
    inputs = _inputs(seed=3)
    exact = selective_scan_chunked(**inputs, delta_softplus=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = selective_scan_chunked(**inputs, delta_softplus=True)
    assert under_autocast.dtype == torch.float32 and torch.equal(under_autocast, exact)


def test_cpu_tensors_never_import_mamba_ssm(monkeypatch):
    """With mamba-ssm installed, CPU tensors still take the torch scan (its import needs CUDA)."""

    def cuda_only():
        raise AssertionError("mamba_ssm must not be imported for CPU tensors")

    monkeypatch.setattr(ss, "mamba_ssm_installed", lambda: True)
    monkeypatch.setattr(ss, "_mamba_ssm_scan", cuda_only)
    inputs = _inputs(seed=4)
    assert torch.equal(
        selective_scan(**inputs, delta_softplus=True), selective_scan_chunked(**inputs, delta_softplus=True)
    )


def test_the_mamba_ssm_kernel_gets_its_documented_arguments(monkeypatch):
    """The CUDA branch, with a stand-in for mamba-ssm's selective_scan_fn (no GPU here)."""
    calls = []

    def kernel(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False):
        calls.append({"B": B, "delta_bias": delta_bias, "softplus": delta_softplus, "z": z})
        return selective_scan_reference(u, delta, A, B, C, D, delta_bias, delta_softplus).half()

    monkeypatch.setattr(ss, "_kernel_applies", lambda u: True)
    monkeypatch.setattr(ss, "_mamba_ssm_scan", lambda: kernel)
    inputs = _inputs(seed=5)
    inputs["B"], inputs["C"] = inputs["B"][:, 0], inputs["C"][:, 0]  # ungrouped (batch, N, L): given (batch, 1, N, L)
    y = selective_scan(**inputs, delta_softplus=True)
    assert len(calls) == 1 and calls[0]["B"].shape == (BATCH, 1, N_STATE, LENGTH) and calls[0]["softplus"]
    assert calls[0]["z"] is None and torch.equal(calls[0]["delta_bias"], inputs["delta_bias"])
    assert y.dtype == torch.float32


def test_bad_shapes_are_refused():
    inputs = _inputs()
    with pytest.raises(ValueError, match="G dividing"):
        selective_scan_chunked(**{**inputs, "B": torch.randn(BATCH, 4, N_STATE, LENGTH)})
    with pytest.raises(ValueError, match="selective scan shapes"):
        selective_scan_chunked(**{**inputs, "delta": inputs["delta"][..., :-1]})
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan_chunked(**inputs, chunk_size=0)
