"""One device resolution and one torchrun reader for embed, run and pretrain (clearbench.runtime)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from embed_doubles import NpyCohortReader, PoolEncoder, write_npy_cohort

from clearbench import runtime
from clearbench.embedding import embed
from clearbench.errors import ClearbenchError
from clearbench.pretraining.run import pretrain


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def outside_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_auto_is_the_cpu_without_a_gpu(no_gpu: None) -> None:
    assert runtime.resolve_device("auto") == torch.device("cpu")
    assert runtime.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_missing_gpu_is_one_message(no_gpu: None, device: str) -> None:
    with pytest.raises(ClearbenchError) as err:
        runtime.resolve_device(device)
    message = str(err.value)
    assert message.startswith(f"--device {device}: ") and "no CUDA device" in message and "--device cpu" in message


def test_a_bad_device_name_is_one_message() -> None:
    with pytest.raises(ClearbenchError, match="--device gpu0: not a torch device; use --device cpu"):
        runtime.resolve_device("gpu0")


def test_a_bare_cuda_is_this_ranks_gpu(two_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert runtime.resolve_device("cuda") == torch.device("cuda", 1)
    assert runtime.resolve_device("auto") == torch.device("cuda", 1)
    assert runtime.resolve_device("cuda", local_rank=2) == torch.device("cuda", 0)
    assert runtime.resolve_device("cuda:1", local_rank=0) == torch.device("cuda", 1)


def test_torchrun_environment(monkeypatch: pytest.MonkeyPatch, outside_torchrun: None) -> None:
    assert runtime.env_ranks() == runtime.Ranks(0, 1, 0)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert runtime.env_ranks() == runtime.Ranks(5, 8, 1)
    monkeypatch.setenv("WORLD_SIZE", "eight")
    with pytest.raises(ClearbenchError, match="WORLD_SIZE='eight' is not an integer"):
        runtime.env_ranks()


def test_a_world_of_one_needs_no_process_group(outside_torchrun: None, no_gpu: None) -> None:
    ctx = runtime.start("auto")
    assert (ctx.rank, ctx.world, ctx.device, ctx.is_main, ctx.active) == (0, 1, torch.device("cpu"), True, False)
    assert runtime.gather_objects(ctx, "x") == ["x"]
    assert runtime.all_mean(ctx, torch.tensor(2.5)) == 2.5
    runtime.barrier(ctx)
    runtime.close(ctx)
    assert not torch.distributed.is_initialized()


def test_embed_and_pretrain_refuse_a_missing_gpu_with_the_same_message(no_gpu: None, tmp_path: Path) -> None:
    """``clearbench run`` gives it too (tests/test_run_cli.py); none of them starts work first."""
    with pytest.raises(ClearbenchError) as expected:
        runtime.resolve_device("cuda")
    cohort = write_npy_cohort(tmp_path / "cohort", 2, seed=0)
    with pytest.raises(ClearbenchError) as embedded:
        embed(PoolEncoder(), NpyCohortReader(cohort), windows="lung", device="cuda", progress=False)
    with pytest.raises(ClearbenchError) as pretrained:
        pretrain("mambaout", root=str(tmp_path / "nowhere"), device="cuda")
    assert str(embedded.value) == str(pretrained.value) == str(expected.value)
