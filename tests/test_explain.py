"""``clearbench explain``: the figure's artists, and the plots and hit rates of a real synthetic DeepLesion run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from deeplesion_runs import ENCODERS
from PIL import Image

from clearbench.cli import main
from clearbench.errors import ClearbenchError
from clearbench.explaining.api import attention_hit_rate, explain, rate_of, run_hit_rate
from clearbench.explaining.plot import attention_figure, save_figure
from clearbench.explaining.source import ScanAttention


def _scan(
    fold: int = 0, keys: tuple[int, ...] = (3, 11), scan_id: str = "000001_01_01", seed: int = 0
) -> ScanAttention:
    rng = np.random.default_rng(seed)
    n = 16
    attention = rng.random(3 * n)
    return ScanAttention(
        scan_id=scan_id,
        patient_id="000001",
        fold=fold,
        labels=("liver", "lung"),
        y_true=np.array([1.0, 0.0], np.float32),
        prob=np.array([0.8, 0.1], np.float32),
        attention=attention / attention.sum(),
        window=np.array(["abdomen"] * n + ["lung"] * n + ["bone"] * n, dtype=object),
        slice_idx=np.tile(np.arange(n), 3),
        key_slices=keys,
    )


def test_figure_has_one_line_per_window_and_a_marker_per_key_slice(tmp_path: Path) -> None:
    scan = _scan()
    fig = attention_figure(scan, encoder="enc", task="task1", k=2, rate=rate_of(scan, 2))
    lines = fig.axes[0].get_lines()
    windows = [line for line in lines if str(line.get_gid()).startswith("window:")]
    assert [line.get_gid() for line in windows] == ["window:abdomen", "window:lung", "window:bone"]
    for line, name in zip(windows, ("abdomen", "lung", "bone"), strict=True):
        rows = scan.window == name
        assert np.array_equal(line.get_xdata(), scan.slice_idx[rows])
        assert np.allclose(line.get_ydata(), scan.attention[rows])
    markers = [line for line in lines if line.get_gid() == "key-slice"]
    assert sorted(line.get_xdata()[0] for line in markers) == [3, 11]
    assert "hit rate" in fig.axes[0].get_title(loc="left") and "liver*" in fig.axes[0].get_title(loc="left")
    path = save_figure(fig, tmp_path / "a" / "plot.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (800, 340)


def test_figure_without_key_slices_has_no_markers() -> None:
    fig = attention_figure(_scan(keys=()), encoder="enc", task="task1", k=2)
    assert not [line for line in fig.axes[0].get_lines() if line.get_gid() == "key-slice"]


def test_run_hit_rate_averages_folds_first() -> None:
    uniform = _scan(fold=0)
    uniform = ScanAttention(**{**uniform.__dict__, "attention": np.full(48, 1 / 48)})
    peaked = _scan(fold=1, scan_id="000002_01_01")
    at_key = np.zeros(48)
    at_key[3] = 1.0
    peaked = ScanAttention(**{**peaked.__dict__, "attention": at_key})
    rate = run_hit_rate([uniform, peaked], k=2)
    assert rate is not None
    chance = 10 / 16  # slices 1..5 and 9..13 of 16
    assert rate.hit == pytest.approx((chance + 1.0) / 2)
    assert rate.chance == pytest.approx(chance)
    assert (rate.n_folds, rate.n_scans) == (2, 2)
    assert run_hit_rate([_scan(keys=())], k=2) is None


@pytest.mark.slow
def test_explain_plots_a_two_encoder_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], deeplesion_runs) -> None:
    store = deeplesion_runs.store
    capsys.readouterr()
    main(
        ["explain", "task1", "--encoder", ENCODERS[0], "--store", str(store), "--out", str(tmp_path / "all"), "--json"]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    plotted, summary = lines[:-1], lines[-1]["hit_rate"]
    assert plotted and all(Path(p["path"]).is_file() and 0 <= p["hit_rate"] <= 1 for p in plotted)
    assert 0 <= summary["hit"] <= 1 and 0 < summary["chance"] < 1 and summary["k"] == 2

    one = tmp_path / "one.png"
    main(
        [
            "explain",
            "task1",
            "-e",
            ENCODERS[0],
            "--store",
            str(store),
            "--scan",
            plotted[0]["scan_id"],
            "--fold",
            "1",
            "--out",
            str(one),
        ]
    )
    assert one.is_file() and "fold" in capsys.readouterr().out

    written = explain("task1", ENCODERS[1], store=store, out=tmp_path / "many", max_scans=3)
    assert len(written) == 3 and all(w.path.is_file() and w.rate is not None for w in written)
    assert len({w.scan_id for w in written}) == 3
    with pytest.raises(ClearbenchError, match="no test prediction"):
        explain("task1", ENCODERS[1], store=store, scan="no-such-scan")
    with pytest.raises(ClearbenchError, match="clearbench run task1 --encoder nobody"):
        explain("task1", "nobody", store=store)


@pytest.mark.slow
def test_hit_rate_is_a_leaderboard_column(deeplesion_runs) -> None:
    """The leaderboard's hit-rate columns equal the run's hit rate, and reach the terminal and CSV renderings."""
    from rich.console import Console

    from clearbench.leaderboards import leaderboard
    from clearbench.leaderboards.render import render, to_rich

    store = deeplesion_runs.store
    df = leaderboard("task1", store=store, n_boot=0)
    for encoder in ENCODERS:
        row = df.filter((pl.col("encoder") == encoder) & (pl.col("source") == "reproduced")).row(0, named=True)
        rate = attention_hit_rate("task1", encoder, store=store)
        assert rate is not None and rate.n_folds == row["n_folds"]
        assert row["hit_rate"] == pytest.approx(100 * rate.hit)
        assert row["hit_rate std"] == pytest.approx(100 * rate.hit_std)
        assert row["hit_chance"] == pytest.approx(100 * rate.chance)
    assert df.filter(pl.col("source") == "published")["hit_rate"].is_null().all()
    header = render([df], "csv").splitlines()[0].split(",")
    assert {"hit_rate", "hit_rate std", "hit_chance"} <= set(header)
    console = Console(width=400, record=True)
    console.print(to_rich(df))
    text = console.export_text()
    assert "hit % (chance)" in text and f"({df['hit_chance'][0]:.1f})" in text
    assert "hit_rate" not in leaderboard("task1", store=store, n_boot=0, hit_rate=False).columns
