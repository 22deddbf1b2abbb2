#!/usr/bin/env bash
# Reproduces the shipped model/weights/default.pt: the base recipe for 17 epochs, then 2 more
# epochs from its weights at a quarter of the learning rate (training is deterministic for a seed
# and a thread count, so each stage's thread count is part of the recipe). About 2.5 hours on 2 idle
# cores; each stage resumes after a stop with the same command plus --resume.
set -euo pipefail
cd "$(dirname "$0")/.."
tunesmith=.venv/bin/tunesmith
mkdir -p runs
$tunesmith train --data music21:essenFolksong --from-scratch --out runs/stage1.pt --threads 2 --epochs 17 "$@"
$tunesmith train --data music21:essenFolksong --init runs/stage1.pt --lr 5e-4 --epochs 2 --threads 1 \
    --out model/weights/default.pt "$@"
