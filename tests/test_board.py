"""``clearbench board``: the page, opened from a file in headless Debian chromium driven by playwright.

Two encoders' runs of two DeepLesion tasks on a synthetic cohort; the page must load with no console error
and no network request, show every task's rows, sort on a header click, switch metric to the numbers of
``clearbench.leaderboard``, and show each row's provenance. ``make test`` installs chromium as root when it is
missing; elsewhere the browser tests skip with the command that installs it (CI sets
CLEARBENCH_REQUIRE_BROWSER=1, which fails them instead).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from deeplesion_runs import ENCODERS, home_at

from clearbench.cli import main
from clearbench.errors import ClearbenchError
from clearbench.htmlboard.build import METRICS, board
from clearbench.htmlboard.page import embed_json, render_page
from clearbench.leaderboards import leaderboard

# Flags for a sandbox-less container with no network: no GPU, no QUIC, no first-run, sync, component or
# background fetches. playwright adds its own automation flags and a fresh --user-data-dir.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
N_BOOT = 100


def _unavailable(reason: str) -> None:
    message = f"{reason}; install it with: sudo apt-get install -y chromium (make test does it when run as root)"
    if os.environ.get("CLEARBENCH_REQUIRE_BROWSER"):
        pytest.fail(f"CLEARBENCH_REQUIRE_BROWSER is set but {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    chromium = shutil.which("chromium")
    if chromium is None:
        _unavailable("Debian's chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is missing (pip install 'clearbench[dev]')")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def built(deeplesion_runs, tmp_path_factory: pytest.TempPathFactory):
    """The board of both tasks, and what ``clearbench.leaderboard`` says for every task and metric."""
    out = tmp_path_factory.mktemp("board")
    with home_at(deeplesion_runs.home):
        result = board(out, store=deeplesion_runs.store, plots=2, n_boot=N_BOOT)
        expected = {
            task: {m: leaderboard(task, metric=m, store=deeplesion_runs.store, n_boot=N_BOOT) for m in METRICS}
            for task in deeplesion_runs.tasks
        }
    return result, expected


@pytest.fixture
def page(browser, built):
    result, _ = built
    page = browser.new_page()
    problems: list[str] = []
    requests: list[str] = []
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(result.path.resolve().as_uri())
    page.wait_for_selector("#board tbody tr.row")
    page.problems, page.requests = problems, requests
    yield page
    page.close()


def _cells(page, column: str) -> list[str]:
    return page.locator(f"#board tbody tr.row td[data-col='{column}']").all_inner_texts()


def _rows(page) -> list[tuple[str, str]]:
    rows = page.locator("#board tbody tr.row")
    return [
        (rows.nth(i).get_attribute("data-source"), rows.nth(i).get_attribute("data-encoder"))
        for i in range(rows.count())
    ]


def _cell_text(mean: float | None, std: float | None) -> str:
    return "–" if mean is None else f"{mean:.1f} ± {std:.1f}" if std is not None else f"{mean:.1f}"


def _number(text: str) -> float | None:
    m = re.match(r"-?\d+(\.\d+)?", text.strip())
    return float(m.group()) if m else None


@pytest.mark.slow
def test_page_loads_offline_with_no_errors(page, built) -> None:
    result, _ = built
    assert page.problems == []
    assert page.requests and all(u.startswith(("file://", "data:")) for u in page.requests), page.requests
    assert page.requests == [result.path.resolve().as_uri()]
    html = result.path.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html) and "@import" not in html


@pytest.mark.slow
def test_every_task_tab_has_the_expected_rows(page, built, deeplesion_runs) -> None:
    _, expected = built
    tabs = page.locator("#tabs button").all_inner_texts()
    assert tabs == [t for t in ("task1", "lesion-trio") if t in deeplesion_runs.tasks] and len(tabs) == 2
    for task in tabs:
        page.click(f"#tabs button[data-task='{task}']")
        df = expected[task]["auc"]
        assert _rows(page) == list(zip(df["source"], df["encoder"], strict=True))
        assert sorted(e for s, e in _rows(page) if s == "reproduced") == sorted(ENCODERS)
        page.uncheck("#show-published")
        assert _rows(page) == [(s, e) for s, e in zip(df["source"], df["encoder"], strict=True) if s != "published"]
        page.check("#show-published")
    assert any(
        s == "published"
        for s, _ in zip(expected["task1"]["auc"]["source"], expected["task1"]["auc"]["encoder"], strict=True)
    )


@pytest.mark.slow
def test_clicking_a_header_sorts_the_rows(page) -> None:
    page.click("#board th[data-col='average']")
    assert page.get_attribute("#board th[data-col='average']", "aria-sort") == "descending"
    values = [_number(t) for t in _cells(page, "average")]
    present = [v for v in values if v is not None]
    assert len(present) >= 3 and present == sorted(present, reverse=True)
    assert values[: len(present)] == present  # rows without a value come last
    page.click("#board th[data-col='average']")
    present = [v for v in (_number(t) for t in _cells(page, "average")) if v is not None]
    assert present == sorted(present)
    page.click("#board th[data-col='encoder']")
    assert page.get_attribute("#board th[data-col='encoder']", "aria-sort") == "ascending"
    names = [e for _, e in _rows(page)]
    assert names == sorted(names, key=lambda n: n.lower()) and len(set(names)) > 2


@pytest.mark.slow
def test_metric_switch_shows_the_leaderboard_api_numbers(page, built) -> None:
    _, expected = built
    shown: dict[str, list[str]] = {}
    for metric in METRICS:
        page.click(f"#metric button[data-metric='{metric}']")
        assert page.get_attribute(f"#metric button[data-metric='{metric}']", "aria-pressed") == "true"
        df = expected["task1"][metric]
        for column in ("average", "bone", "liver"):
            assert _cells(page, column) == [
                _cell_text(m, s) for m, s in zip(df[column], df[f"{column} std"], strict=True)
            ]
        shown[metric] = _cells(page, "average")
    assert shown["auc"] != shown["auprc"] != shown["f1"]


@pytest.mark.slow
def test_row_click_shows_provenance_and_plots(page, built) -> None:
    _, expected = built
    df = expected["task1"]["auc"].filter(pl.col("source") == "reproduced")
    row = df.row(0, named=True)
    page.click(f"#board tbody tr.row[data-run='{row['run_id']}'] td[data-col='encoder']")
    prov = page.locator(f"#board tbody tr.prov[data-run='{row['run_id']}']")
    assert prov.locator("dd[data-field='run id']").inner_text() == row["run_id"]
    assert prov.locator("dd[data-field='config hash']").inner_text() == row["config_hash"]
    assert prov.locator("dd[data-field='encoder card']").inner_text() == (row["card"] or "–")
    assert prov.locator("dd[data-field='clearbench version']").inner_text() == row["clearbench_version"]
    links = prov.locator(".plots a")
    assert links.count() == 2
    href = links.nth(0).get_attribute("href")
    assert href.startswith(f"plots/task1/{row['encoder']}/") and (built[0].path.parent / href).is_file()


@pytest.mark.slow
def test_hit_rate_column_matches_the_leaderboard(page, built) -> None:
    _, expected = built
    df = expected["task1"]["auc"]
    texts = _cells(page, "hit_rate")
    for text, source, hit, chance in zip(texts, df["source"], df["hit_rate"], df["hit_chance"], strict=True):
        if source == "published":
            assert text == ""
        else:
            assert text.startswith(f"{hit:.1f} ± ") and text.endswith(f"({chance:.1f})")


@pytest.mark.slow
def test_board_cli_reports_size_and_refuses_an_empty_store(built, deeplesion_runs, tmp_path: Path, capsys) -> None:
    result, _ = built
    assert 5_000 < result.size < 200_000
    assert sum(result.rows.values()) > 4 and all(p.is_file() for p in result.plots)
    with home_at(deeplesion_runs.home):
        main(
            [
                "board",
                "--store",
                str(deeplesion_runs.store),
                "--out",
                str(tmp_path / "b"),
                "--plots",
                "0",
                "--bootstrap",
                "0",
            ]
        )
    assert "KiB" in capsys.readouterr().out and (tmp_path / "b" / "index.html").is_file()
    with pytest.raises(ClearbenchError, match="no finished runs"):
        board(tmp_path / "empty", store=tmp_path / "no-store")


def test_embedded_json_cannot_close_its_script() -> None:
    text = embed_json({"x": "</script><script>alert(1)</script> & <b>"})
    assert "</" not in text and "<" not in text and "&" not in text
    page = render_page({"title": "<b>t</b>", "subtitle": "", "metrics": ["auc"], "tasks": []})
    assert "<b>t</b>" not in page and "&lt;b&gt;t&lt;/b&gt;" in page
