"""One HTML page with everything inline: its data as JSON, its script and its styles.

Nothing is fetched: no external script, font, style or image, and a Content-Security-Policy that forbids
any load but inline code and local images, so the page behaves the same opened from an e-mail attachment.
"""

from __future__ import annotations

import html
import json
from importlib.resources import files
from typing import Any

_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src file: data:"


def _static(name: str) -> str:
    return files("clearbench.htmlboard").joinpath("static").joinpath(name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` escaped, so no ``</script>`` in the
    data can end the element early."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(data: dict[str, Any]) -> str:
    """The board page for ``data`` (see :func:`clearbench.htmlboard.data.board_data`)."""
    title = html.escape(data.get("title", "clearbench leaderboards"))
    subtitle = html.escape(data.get("subtitle", ""))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{_static("board.css")}</style>
</head>
<body>
<h1>{title}</h1>
<p class="sub">{subtitle}</p>
<nav class="tabs" id="tabs" role="tablist"></nav>
<div class="controls">
  <span class="metric" id="metric" role="group" aria-label="metric"></span>
  <label><input type="checkbox" id="show-published" checked> published rows</label>
</div>
<div class="taskinfo" id="taskinfo"></div>
<table id="board"></table>
<p class="legend">Click a column header to sort, a row for its provenance. Bold: best in its group; underlined: second.
Reproduced rows tested on the same patients are ranked; rows apart could not be compared with them; published rows
are the paper's, never ranked against reproduced ones. Hit rate: share of attention within ±k slices of a key slice
(chance: what uniform attention would score).</p>
<script type="application/json" id="board-data">{embed_json(data)}</script>
<script>
{_static("board.js")}</script>
</body>
</html>
"""
