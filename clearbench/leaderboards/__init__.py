"""Leaderboards: encoders compared fairly on one task, with CIs, paired tests and the paper's rows.

- :mod:`.stats`: patient-level bootstrap intervals and paired tests (no I/O);
- :mod:`.records`: the store's finished runs, one record per encoder;
- :mod:`.published`: the paper's Tables 1-3 and Supplementary Tables 1-4;
- :mod:`.table`: the leaderboard DataFrame (its columns are documented there);
- :mod:`.api`: ``leaderboard`` and ``leaderboard_overview``;
- :mod:`.render`: terminal, Markdown, CSV, LaTeX and JSON renderings.

The package is plural so that ``clearbench.leaderboard`` stays the function.
"""

from clearbench.leaderboards.api import leaderboard, leaderboard_overview, task_columns
from clearbench.leaderboards.table import label_columns, marks

__all__ = ["label_columns", "leaderboard", "leaderboard_overview", "marks", "task_columns"]
