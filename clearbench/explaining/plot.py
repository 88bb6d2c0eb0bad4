"""The paper's Figure 4 for one scan: attention across slices, one line per window, key slices marked.

The figure is built as a bare :class:`matplotlib.figure.Figure` (no pyplot, so no global state and no
GUI backend) and saved separately, so that tests can check its artists: every window line carries the
gid ``window:<name>`` and every key-slice marker the gid ``key-slice``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from clearbench.explaining.hit_rate import ScanHitRate, near_key_slices
from clearbench.explaining.source import ScanAttention

# The paper's colours: abdomen blue, lung red; other windows take the next colours of the cycle.
_COLOURS = {"abdomen": "#1f5fbf", "lung": "#c0392b"}
_CYCLE = ("#2e8b57", "#8e44ad", "#d35400", "#7f8c8d")


def _label_line(scan: ScanAttention, shown: int = 6) -> str:
    """The highest label probabilities, true labels starred (long label lists are cut to ``shown``)."""
    order = np.argsort(-scan.prob)[:shown]
    parts = [f"{scan.labels[i]}{'*' if scan.y_true[i] >= 0.5 else ''} {scan.prob[i]:.2f}" for i in order]
    more = " …" if len(scan.labels) > shown else ""
    return "p (* true): " + "  ".join(parts) + more


def attention_figure(
    scan: ScanAttention, *, encoder: str, task: str, k: int, rate: ScanHitRate | None = None
) -> Figure:
    """Attention weight against slice index for each window, dotted lines at the key slices and a shaded
    band where attention counts as a hit (±k slices)."""
    fig = Figure(figsize=(8.0, 3.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    windows = list(dict.fromkeys(scan.window.tolist()))
    extra = iter(_CYCLE * (len(windows) // len(_CYCLE) + 1))
    for name in windows:
        rows = scan.window == name
        order = np.argsort(scan.slice_idx[rows], kind="stable")
        colour = _COLOURS.get(name) or next(extra)
        ax.plot(
            scan.slice_idx[rows][order],
            scan.attention[rows][order],
            color=colour,
            linewidth=1.4,
            marker=".",
            markersize=3,
            label=f"{name} window",
            gid=f"window:{name}",
        )
    if scan.key_slices:
        lo, hi = int(scan.slice_idx.min()), int(scan.slice_idx.max())
        band = near_key_slices(np.arange(lo, hi + 1), scan.key_slices, k)
        ax.fill_between(
            np.arange(lo, hi + 1),
            0,
            1,
            where=band,
            step="mid",
            transform=ax.get_xaxis_transform(),
            color="#f1c40f",
            alpha=0.18,
            linewidth=0,
            label=f"±{k} slices of a key slice",
            gid="hit-band",
        )
        for i, key in enumerate(scan.key_slices):
            ax.axvline(
                key, color="black", linestyle=":", linewidth=1.2, gid="key-slice", label="key slice" if i == 0 else None
            )
    ax.set_xlabel("slice index")
    ax.set_ylabel("attention (softmax over the bag)")
    ax.set_ylim(bottom=0)
    ax.margins(x=0.01)
    ax.legend(loc="upper right", fontsize=7, frameon=False)
    hit = ""
    if rate is not None:
        hit = f"   hit rate {100 * rate.overall.hit:.1f}% (chance {100 * rate.overall.chance:.1f}%)"
    ax.set_title(
        f"{task} · {encoder} · scan {scan.scan_id} · fold {scan.fold}{hit}\n{_label_line(scan)}", fontsize=8, loc="left"
    )
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (the Agg renderer; no display needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
