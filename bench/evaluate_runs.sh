#!/usr/bin/env bash
# Scores every model named on the command line on the Essen test split with `tunesmith evaluate`
# (the Kneser-Ney reference is fitted once and reused), writing runs/eval/<name>.json, then prints
# the model card's table. Usage: bash bench/evaluate_runs.sh runs/reference.pt runs/default-a.pt ...
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/eval
for model in "$@"; do
    name=$(basename "$model" .pt)
    ngram=(--ngram auto --ngram-out runs/eval/ngram.npz)
    [ -f runs/eval/ngram.npz ] && ngram=(--ngram runs/eval/ngram.npz)
    .venv/bin/tunesmith evaluate --model "$model" --data music21:essenFolksong --split test --quiet \
        "${ngram[@]}" > "runs/eval/$name.json"
done
.venv/bin/python bench/quality_table.py $(for m in "$@"; do echo "runs/eval/$(basename "$m" .pt).json"; done)
