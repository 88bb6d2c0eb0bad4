#!/bin/sh
# The demo: the whole clearbench pipeline on a built-in synthetic cohort, in a throwaway home.
# Usage: scripts/demo.sh DIR   (make demo passes .demo and sets CLEARBENCH_HOME=DIR/home)
set -eu
DIR=${1:-.demo}
rm -rf "$DIR"
mkdir -p "$DIR"

echo "== clearbench doctor"
clearbench doctor

echo "== clearbench synth deeplesion (120 series of phantom CT, 64 px)"
clearbench synth deeplesion --out "$DIR/deeplesion" --scans 120 --seed 0

echo "== clearbench scans deeplesion (every series read once: slices, spacing, labels, problems)"
clearbench scans --dataset deeplesion --root "$DIR/deeplesion"

echo "== clearbench embed hu-hist (every slice in the abdomen and lung windows -> LanceDB)"
clearbench embed --encoder hu-hist --dataset deeplesion --root "$DIR/deeplesion"
echo "== the same command again: every scan is already stored, so nothing is embedded twice"
clearbench embed --encoder hu-hist --dataset deeplesion --root "$DIR/deeplesion"

echo "== clearbench embed mambaout-femto-random (random-init MambaOut, the first 24 series: about 40 s on 2 CPU cores)"
clearbench embed --encoder mambaout-femto-random --dataset deeplesion --root "$DIR/deeplesion" --limit 24

echo "== clearbench store ls"
clearbench store ls

echo "== clearbench tasks"
clearbench tasks

echo "== clearbench run task1 (ABMIL on every encoder's embeddings: 20% test patients, 5-fold CV, up to 32 epochs)"
clearbench run task1 --root "$DIR/deeplesion"

echo "== clearbench run task1 again: the finished folds are reused, nothing is retrained"
clearbench run task1 --root "$DIR/deeplesion" --encoder hu-hist
