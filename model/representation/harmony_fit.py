"""Fitting and scoring the chord HMM (``model.representation.harmony``) on Bach's chorales.

The truth at each harmonic segment is Bach's own chord: the first vertical of ``chordify`` in the
segment's first beat whose music21 quality is in the vocabulary (the vertical sounding at the
segment's start when none is: a passing or suspended tone on the beat then counts as Bach wrote it),
labelled by music21's root and quality (``chorales.label_vertical``). The key used to make the
training chords key-relative is that of all four parts (Krumhansl-Schmuckler on their pitch
classes); at decoding, as for any melody, the key is the soprano's own.

    python -m model.representation.harmony_fit --out model/weights/harmony.json

counts the tables on the training split for every setting of a small grid (onset weight, emission
scale, Laplace alpha), keeps the one with the best root accuracy on the valid split, and writes it.
The test split is scored once, by ``bench/harmony_bach.py``.
"""
from __future__ import annotations

import argparse
import itertools
from functools import lru_cache

import numpy as np

from model.representation.chords import Chord
from model.representation.chorales import label_vertical, load_chorales, split_chorales
from model.representation.files import atomic_write
from model.representation.harmony import (MODES, STATES, Bar, HarmonyModel, TimedNote, harmonic_segments,
                                          melody_key, most_notes_chords, relative_state, segment_histograms)
from model.representation.keys import key_of_weights

GRID = {"onset_weight": (1.0, 2.0, 4.0), "emission_scale": (0.5, 1.0, 2.0), "alpha": (0.1, 1.0)}


@lru_cache(maxsize=None)
def _label(names: tuple[str, ...]) -> tuple[int, int | None]:
    return label_vertical(list(names))


@lru_cache(maxsize=None)
def _pitch_class(name: str) -> int:
    from music21 import pitch
    return pitch.Pitch(name).pitchClass


class ChoraleView:
    """One chorale as the estimator sees it (soprano notes, bars) and as the truth is (labels, key)."""

    def __init__(self, chorale: dict):
        self.id = chorale["id"]
        self.notes = [TimedNote(p, s, s + d) for p, s, d in chorale["soprano"]]
        self.bars = [Bar(s, length, chorale["meter"]) for s, length in chorale["bars"]]
        self.segments = harmonic_segments(self.bars)
        verticals = chorale["verticals"]
        self.truth = [self._truth_at(s, verticals) for s, _ in self.segments]
        weights = np.zeros(12)
        for _, d, names in verticals:
            for n in names:
                weights[_pitch_class(n)] += d
        tonic, mode, _ = key_of_weights(weights)
        self.key = (tonic, mode)

    @staticmethod
    def _truth_at(s: float, verticals) -> tuple[int, int | None] | None:
        sounding = [v for v in verticals if v[0] <= s + 1e-9 < v[0] + v[1]]
        if not sounding:
            return None
        beat = [v for v in verticals if v[0] >= sounding[0][0] and v[0] < s + 1.0 - 1e-9]
        for v in beat:
            label = _label(tuple(v[2]))
            if label[1] is not None:
                return label
        return _label(tuple(sounding[0][2]))


def count_tables(views, onset_weight: float, alpha: float) -> HarmonyModel:
    """Initial, transition and emission tables counted on ``views`` with Laplace ``alpha``."""
    initial = np.full((2, STATES), alpha)
    trans = np.full((2, STATES, STATES), alpha)
    emis = np.full((4, 12), alpha)
    for v in views:
        m = MODES.index(v.key[1])
        W = segment_histograms(v.notes, v.segments, onset_weight)
        prev = None
        for t, label in enumerate(v.truth):
            if label is None or label[1] is None:
                prev = None
                continue
            root, q = label
            state = relative_state(Chord(root, q), v.key[0])
            if t == 0:
                initial[m, state] += 1
            if prev is not None:
                trans[m, prev, state] += 1
            emis[q] += np.roll(W[t], -root)             # pitch classes as intervals over the root
            prev = state
    return HarmonyModel(np.log(initial / initial.sum(-1, keepdims=True)),
                        np.log(trans / trans.sum(-1, keepdims=True)),
                        np.log(emis / emis.sum(-1, keepdims=True)), onset_weight)


def accuracy(views, estimate) -> dict:
    """Root and root+quality accuracy of ``estimate(notes, bars) -> [(start, end, Chord)]`` over every
    segment with a truth (a truth quality outside the vocabulary counts as a miss for root+quality)."""
    segments = roots = both = 0
    for v in views:
        for (_, _, chord), label in zip(estimate(v.notes, v.bars), v.truth):
            if label is None:
                continue
            segments += 1
            roots += chord.root == label[0]
            both += chord.root == label[0] and chord.quality == label[1]
    return {"chorales": len(views), "segments": segments, "root_accuracy": roots / max(segments, 1),
            "root_quality_accuracy": both / max(segments, 1)}


def choose(train, valid) -> tuple[HarmonyModel, list[dict]]:
    """The grid's setting with the best valid root accuracy (then root+quality); every row scored."""
    rows, best = [], None
    for w, scale, alpha in itertools.product(*GRID.values()):
        model = count_tables(train, w, alpha)
        model.emission_scale = scale
        score = accuracy(valid, model.chords)
        rows.append({"onset_weight": w, "emission_scale": scale, "alpha": alpha, **score})
        key = (score["root_accuracy"], score["root_quality_accuracy"])
        if best is None or key > best[0]:
            best = (key, model, alpha)
    model = best[1]
    model.provenance = {"data": "music21 Bach chorales (four parts), training split",
                        "split": "model.representation.chorales.split_chorales (seed 0, valid 0.1, test 0.2)",
                        "train_chorales": len(train), "valid_chorales": len(valid), "alpha": best[2],
                        "chosen_on": "valid root accuracy",
                        "command": "python -m model.representation.harmony_fit --out model/weights/harmony.json"}
    return model, rows


def views_by_split() -> dict[str, list[ChoraleView]]:
    return {k: [ChoraleView(c) for c in v] for k, v in split_chorales(load_chorales()).items()}


def baseline(notes, bars):
    return most_notes_chords(notes, bars, melody_key(notes))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="fit the chord HMM on Bach's chorales (train split), "
                                             "choose its settings on the valid split")
    ap.add_argument("--out", default="model/weights/harmony.json")
    args = ap.parse_args(argv)
    views = views_by_split()
    model, rows = choose(views["train"], views["valid"])
    for r in rows:
        print(r)
    import json
    atomic_write(args.out, json.dumps(model.to_dict()).encode())
    print("chosen:", model.onset_weight, model.emission_scale, model.provenance["alpha"],
          accuracy(views["valid"], model.chords), "baseline (valid):", accuracy(views["valid"], baseline))


if __name__ == "__main__":
    main()
