"""A child process for kill tests: the real ``clearbench`` CLI, stopped at a chosen point to be SIGKILLed there.

    python kill_points.py fold-commit FOLD TABLE -- run TASK ...

runs the CLI; right after fold FOLD's rows reach results table TABLE (``run_predictions`` or ``run_metrics``,
both written before the fold's commit marker in ``run_folds``), it prints "paused" on stdout and waits.
"""

from __future__ import annotations

import sys
import time


def _pause_after_fold_rows(fold: int, table: str) -> None:
    from clearbench.store.results import ResultsStore

    real_add = ResultsStore._add

    def add_then_pause(self: ResultsStore, name: str, rows) -> None:
        real_add(self, name, rows)
        if name == table and rows.num_rows and set(rows["fold"].to_pylist()) == {fold}:
            print("paused", flush=True)
            time.sleep(3600)

    ResultsStore._add = add_then_pause  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    split = argv.index("--")
    point, args, cli = argv[0], argv[1:split], argv[split + 1 :]
    if point != "fold-commit":
        raise SystemExit(f"unknown kill point {point!r}")
    _pause_after_fold_rows(int(args[0]), args[1])
    from clearbench.cli import main as clearbench

    clearbench(cli)


if __name__ == "__main__":
    main(sys.argv[1:])
