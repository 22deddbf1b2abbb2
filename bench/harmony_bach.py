"""The chord estimator on Bach's chorales: harmonise each soprano line, compare with Bach's own chords.

    nice -n 15 python bench/harmony_bach.py --out docs/results/harmony-bach.json

Scores the shipped tables (model/weights/harmony.json, fitted on the training split and chosen on the
valid split by ``python -m model.representation.harmony_fit``) on the held-out test chorales, beside
the most-notes baseline (``harmony.most_notes_chords``) and the same emissions without the learned
transitions (uniform tables), so the transitions' share shows. The truth at each segment is
``harmony_fit.ChoraleView``'s (Bach's chord at the segment's first beat, music21's root and quality).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from model.representation.files import atomic_write
from model.representation.harmony import STATES, HarmonyModel
from model.representation.harmony_fit import accuracy, baseline, views_by_split


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results/harmony-bach.json")
    ap.add_argument("--split", default="test", choices=("valid", "test"))
    args = ap.parse_args(argv)
    views = views_by_split()[args.split]
    model = HarmonyModel.load()
    flat = HarmonyModel(np.full((2, STATES), -np.log(STATES)), np.full((2, STATES, STATES), -np.log(STATES)),
                        model.emissions, model.onset_weight, model.emission_scale)
    result = {"split": args.split, "hmm": accuracy(views, model.chords),
              "most_notes_baseline": accuracy(views, baseline),
              "hmm_without_transitions": accuracy(views, flat.chords),
              "settings": {"onset_weight": model.onset_weight, "emission_scale": model.emission_scale,
                           **model.provenance},
              "command": f"nice -n 15 python bench/harmony_bach.py --split {args.split} --out {args.out}"}
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
