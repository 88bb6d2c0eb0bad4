#!/bin/sh
# The demo: the whole clearbench pipeline on a built-in synthetic cohort, in a throwaway home.
# Usage: scripts/demo.sh DIR   (make demo passes .demo and sets CLEARBENCH_HOME=DIR/home)
set -eu
DIR=${1:-.demo}
rm -rf "$DIR"
mkdir -p "$DIR"

echo "== clearbench doctor"
clearbench doctor
