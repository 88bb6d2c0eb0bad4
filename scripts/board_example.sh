#!/bin/sh
# The example board committed in leaderboards/example/: a synthetic DeepLesion cohort embedded by two encoders
# that need no weights (hu-hist and a random-init MambaOut), task 1, then clearbench board.
# Usage: scripts/board_example.sh [WORKDIR] [OUT]   (make board-example passes .board-example and
# leaderboards/example, with CLEARBENCH_HOME=WORKDIR/home). Running it again reuses the cohort, the stored
# embeddings and the finished folds, so only the page and its plots are rewritten.
set -eu
DIR=${1:-.board-example}
OUT=${2:-leaderboards/example}
mkdir -p "$DIR"
ROOT="$DIR/deeplesion"

[ -f "$ROOT/DL_info.csv" ] || clearbench synth deeplesion --out "$ROOT" --scans 40 --seed 0
clearbench embed --encoder hu-hist --dataset deeplesion --root "$ROOT"
clearbench embed --encoder mambaout-femto-random --dataset deeplesion --root "$ROOT"
# 40 scans hold out about 4 test patients, under the task's minimum of 10: accepted here knowingly, for a small example.
clearbench run task1 --root "$ROOT" --threads 1 --min-test-patients 2
rm -rf "$OUT/index.html" "$OUT/plots"   # the README there is kept
clearbench board --out "$OUT" --plots 1 --root "$ROOT"
