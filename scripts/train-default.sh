#!/usr/bin/env bash
# Reproduces the shipped model/weights/default.pt and the form table beside it:
# 1. the base recipe on Essen for 17 epochs, then 2 more from its weights at a quarter of the
#    learning rate (the model shipped before the form, chord and style inputs);
# 2. from those weights, the key, form, chord and style inputs grown at zero weight and trained on
#    Essen with the Irish and Scottish collections (music21:styles), up to 13 epochs at lr 1e-3,
#    halved after an epoch without a better valid loss (the best valid epoch is kept);
# 3. the short-term model refitted on the valid split, and the table of default forms per style.
# Training is deterministic for a seed and a thread count, so each stage's thread count is part of
# the recipe. Each stage resumes after a stop with the same command plus --resume.
set -euo pipefail
cd "$(dirname "$0")/.."
tunesmith=.venv/bin/tunesmith
mkdir -p runs
$tunesmith train --data music21:essenFolksong --from-scratch --out runs/stage1.pt --threads 2 --epochs 17 "$@"
$tunesmith train --data music21:essenFolksong --init runs/stage1.pt --lr 5e-4 --epochs 2 --threads 1 \
    --out runs/stage2.pt "$@"
$tunesmith train --data music21:styles --init runs/stage2.pt --key-inputs --form-inputs --chord-inputs \
    --style-inputs --lr 1e-3 --batch-size 64 --epochs 13 --patience 2 --lr-patience 0 --transpose=0,0 \
    --threads 2 --out model/weights/default.pt "$@"
$tunesmith short-term --model model/weights/default.pt
.venv/bin/python -m model.representation.form --data music21:styles --out model/weights/forms.json
