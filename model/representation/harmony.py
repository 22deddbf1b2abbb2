"""Chords under a melody: a hidden Markov model over the chord vocabulary, decoded with Viterbi.

**Harmonic rhythm.** One chord per half bar in meters whose bar has two strong halves (numerator 4, 6,
8 or 12: 4/4, 6/8, 12/8, 4/2, the meters where ``model.generation.endings.strong_positions`` has a
strong middle), else one chord per bar (2/4, 3/4, 3/8, 9/8, 5/4 ...); a bar shorter than its meter
(a pickup, a final bar cut short) gets one chord. ``harmonic_segments`` applies the rule.

**Emissions.** Each melody note adds its duration inside the segment, times ``onset_weight`` when it
sounds at the segment's start (the metrically strong point), to a 12-bin pitch-class histogram ``W``;
a chord of quality q on root r scores ``emission_scale * sum_pc W[pc] * log P(pc - r | q)``, where
``P(interval over the root | quality)`` is learned (Laplace-smoothed) from the melody against the true
chords of Bach's chorales (``model.representation.harmony_fit``).

**Transitions.** The hidden states are the 48 chords in key-relative terms (scale degree of the root
x quality, ``degree * 4 + quality``), one table for major keys and one for minor; the key is the
melody's own (``estimate_key``, Krumhansl-Schmuckler) unless given. Initial and transition
log-probabilities are counted on the chorales' training split (Laplace smoothing), not typed in.

The fitted tables are a small JSON file (``model/weights/harmony.json``, ``HarmonyModel.save``),
reproduced by ``python -m model.representation.harmony_fit --out model/weights/harmony.json``.
Nothing here imports torch or music21.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from model.representation.chords import UNKNOWN_CHORD_ID, Chord
from model.representation.keys import key_of_weights
from model.representation.notation import Score, parse_meter

HARMONY_PATH = Path(__file__).resolve().parents[1] / "weights" / "harmony.json"
MODES = ("major", "minor")
STATES = UNKNOWN_CHORD_ID     # 48 key-relative chords: degree * 4 + quality


class TimedNote(NamedTuple):
    pitch: int
    start: float    # quarter notes
    end: float


class Bar(NamedTuple):
    start: float    # quarter notes
    length: float
    meter: str


def bar_quarters(meter: str) -> float:
    num, den = parse_meter(meter)
    return num * 4 / den


def harmonic_segments(bars: Sequence[Bar]) -> list[tuple[float, float]]:
    """(start, end) in quarters of each chord's span (the rule in the module docstring)."""
    out = []
    for bar in bars:
        num, _ = parse_meter(bar.meter)
        full = abs(bar.length - bar_quarters(bar.meter)) < 1e-6
        if full and num in (4, 6, 8, 12):
            half = bar.start + bar.length / 2
            out += [(bar.start, half), (half, bar.start + bar.length)]
        else:
            out.append((bar.start, bar.start + bar.length))
    return out


def segment_histograms(notes: Sequence[TimedNote], segments, onset_weight: float) -> np.ndarray:
    """(T, 12) duration-and-metre-weighted pitch classes of the notes in each segment."""
    W = np.zeros((len(segments), 12))
    for t, (s, e) in enumerate(segments):
        for n in notes:
            overlap = min(n.end, e) - max(n.start, s)
            if overlap > 0:
                W[t, n.pitch % 12] += overlap * (onset_weight if n.start <= s + 1e-9 else 1.0)
    return W


def melody_key(notes: Sequence[TimedNote]) -> tuple[int, str]:
    weights = np.zeros(12)
    for n in notes:
        weights[n.pitch % 12] += n.end - n.start
    tonic, mode, _ = key_of_weights(weights)
    return tonic, mode


def absolute_chord(state: int, tonic: int) -> Chord:
    return Chord((state // 4 + tonic) % 12, state % 4)


def relative_state(chord: Chord, tonic: int) -> int:
    return ((chord.root - tonic) % 12) * 4 + chord.quality


@dataclass
class HarmonyModel:
    initial: np.ndarray                 # (2, 48) log P(first state | mode)
    transitions: np.ndarray             # (2, 48, 48) log P(next | previous, mode)
    emissions: np.ndarray               # (4, 12) log P(melody interval over the root | quality)
    onset_weight: float = 2.0
    emission_scale: float = 1.0
    provenance: dict = field(default_factory=dict)

    # ---- decoding -------------------------------------------------------------------------------
    def emission_scores(self, W: np.ndarray, tonic: int) -> np.ndarray:
        """(T, 48) log-scores of each key-relative state for the histograms W (T, 12)."""
        roots = (np.arange(STATES) // 4 + tonic) % 12                       # (48,) absolute roots
        quality = np.arange(STATES) % 4
        # table[s, pc] = log P(pc - root(s) | quality(s))
        table = self.emissions[quality[:, None], (np.arange(12)[None, :] - roots[:, None]) % 12]  # (48, 12)
        return self.emission_scale * W @ table.T

    def viterbi(self, scores: np.ndarray, mode: str) -> list[int]:
        """The most likely state path for the (T, 48) emission scores."""
        m = MODES.index(mode)
        trans = self.transitions[m]
        delta = self.initial[m] + scores[0]                                 # (48,)
        back = []
        for t in range(1, len(scores)):
            cand = delta[:, None] + trans                                   # (48 previous, 48 next)
            back.append(cand.argmax(0))
            delta = cand.max(0) + scores[t]
        path = [int(delta.argmax())]
        for ptr in reversed(back):
            path.append(int(ptr[path[-1]]))
        return path[::-1]

    def chords(self, notes: Sequence[TimedNote], bars: Sequence[Bar],
               key: tuple[int, str] | None = None) -> list[tuple[float, float, Chord]]:
        """(start, end, chord) for each harmonic segment of the bars (the module docstring)."""
        segments = harmonic_segments(bars)
        if not segments:
            return []
        tonic, mode = key if key is not None else melody_key(notes) if notes else (0, "major")
        W = segment_histograms(notes, segments, self.onset_weight)
        path = self.viterbi(self.emission_scores(W, tonic), mode)
        return [(s, e, absolute_chord(state, tonic)) for (s, e), state in zip(segments, path)]

    # ---- the file ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": "tunesmith-harmony-1", "states": "key-relative: degree * 4 + quality",
                "qualities": ["major", "minor", "diminished", "dominant-seventh"], "modes": list(MODES),
                "onset_weight": self.onset_weight, "emission_scale": self.emission_scale,
                "initial": np.round(self.initial, 5).tolist(),
                "transitions": np.round(self.transitions, 5).tolist(),
                "emissions": np.round(self.emissions, 5).tolist(), "provenance": self.provenance}

    @classmethod
    def from_dict(cls, d: dict) -> HarmonyModel:
        return cls(np.array(d["initial"]), np.array(d["transitions"]), np.array(d["emissions"]),
                   float(d["onset_weight"]), float(d["emission_scale"]), d.get("provenance", {}))

    @classmethod
    def load(cls, path=HARMONY_PATH) -> HarmonyModel:
        return cls.from_dict(json.loads(Path(path).read_text()))


def score_notes(score: Score) -> list[TimedNote]:
    """A score's melody notes in quarter notes."""
    spq = score.steps_per_quarter
    return [TimedNote(p, s / spq, e / spq) for p, s, e in score.notes]


def meter_at(score: Score, bar: int) -> str:
    """The meter of a score's bar."""
    return [m for b, m in score.meters if b <= bar][-1]


def score_bars(score: Score) -> list[Bar]:
    """A score's bars in quarter notes, each with its meter."""
    spq, starts = score.steps_per_quarter, score.bar_starts
    return [Bar(starts[i] / spq, (starts[i + 1] - starts[i]) / spq, meter_at(score, i)) for i in range(len(starts) - 1)]


def score_chord_steps(score: Score, model: HarmonyModel) -> list[tuple[int, int, Chord]]:
    """(start, end, chord) in grid steps of the estimated chords under a score's melody."""
    spq = score.steps_per_quarter
    return [(round(s * spq), round(e * spq), c) for s, e, c in model.chords(score_notes(score), score_bars(score))]


def most_notes_chords(notes: Sequence[TimedNote], bars: Sequence[Bar],
                      key: tuple[int, str] | None = None) -> list[tuple[float, float, Chord]]:
    """The baseline: per segment, the chord whose tones take up most of the melody's time there (no
    metric weighting, no transitions); ties go to a triad before the seventh, then to the chord
    whose root is nearest the key's tonic on the circle of fifths, then to major before minor."""
    segments = harmonic_segments(bars)
    tonic = key[0] if key is not None else melody_key(notes)[0] if notes else 0
    W = segment_histograms(notes, segments, onset_weight=1.0)
    out = []
    for (s, e), w in zip(segments, W):
        def rank(c: Chord):
            fifths = min((7 * (c.root - tonic)) % 12, (-7 * (c.root - tonic)) % 12)
            return (-sum(w[pc] for pc in c.pitch_classes), c.quality == 3, fifths, c.quality)
        out.append((s, e, min((Chord.from_id(i) for i in range(STATES)), key=rank)))
    return out
