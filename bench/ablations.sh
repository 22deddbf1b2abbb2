#!/usr/bin/env bash
# The ablation runs of docs/model-card.md: each trains for the same 15-minute budget as the
# reference LSTM on the same Essen split and tokens, changing one thing at a time.
# The size row is the shipped recipe at 2x384 (runs/default-b, see the model card).
# Usage: bash bench/ablations.sh [outdir]   (default runs/); then evaluate each with
#   tunesmith evaluate --model runs/<name>.pt --data music21:essenFolksong --split test
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs}
mkdir -p "$out"
train() { name=$1; shift
    .venv/bin/tunesmith train --data music21:essenFolksong --out "$out/$name.pt" \
        --max-minutes 15 --epochs 100 --threads 1 --quiet "$@" > "$out/$name.log" 2>&1; }
# the reference of issue 3: 2x256 torch.nn.LSTM, embedding 64, Adam 2e-3, clip 1.0, windows of 128, batch 64
[ -f "$out/reference.pt" ] || train reference --no-position-inputs --transpose=0,0 --dropout 0
train plus-position --transpose=0,0 --dropout 0
train plus-position-transpose --transpose=-5,6 --dropout 0
train plus-position-transpose-dropout --transpose=-5,6
