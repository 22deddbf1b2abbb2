"""How a tune ends: the beat and strong beats of a meter, the tonic cadence as sampling masks, and
ending statistics for evaluation.

A **cadence** (``cadence="tonic"``) means the last note of the melody
- is the tonic (any octave) of the requested key, else of the primer's key signature, else of the
  key the melody has taken so far (Krumhansl-Schmuckler, ``model.evaluation.metrics.estimate_key``),
- starts on a strong beat of the last bar (``strong_positions``), and
- lasts at least one beat (``beat_steps``); only HOLD and REST follow it.

In the last bar of the template the masks go further and hold the cadence note to the barline, so a
requested cadence ends on a tonic that rings, as folk tunes end; a length range may still end
earlier, after any bar that meets the rule above (``ends_in_cadence``).

A **tonic pull** (``tonic_pull``, on by default) is the soft form: at the positions where the cadence
would have to start (the strong positions of the last bar that leave a beat) each row's tonic gets
``tonic_pull`` nats more, and while a tonic begun there sounds HOLD gets as much, so the
melody leans towards ending on a tonic that rings, without being made to; in
a length range, ending (EOS) gets the same after a bar that cadences. Sampling only: beam search
keeps its scores the masked log-probabilities. It is a sampling default chosen
on the valid split (the network alone ends on its own tonic far less often than the corpus does, see
docs/model-card.md), and ``tonic_pull=0`` turns it off.

``Cadence`` enforces this in the last bar with one (B, V) additive mask per step, never by editing
notes afterwards: before the last strong position that leaves a beat ("the cadence point") anything
goes; at the cadence point a row whose qualifying tonic does not sound any more must play one; after
it no new note starts, and the sounding tonic is held to the barline. ``ends_in_cadence``
checks a finished bar with the same rule (a length range ends only after such a bar).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from model.representation.keys import estimate_key
from model.representation.tokens import melody_notes
from model.representation.notation import parse_meter

CADENCES = ("none", "tonic")


def beat_steps(meter: str, steps_per_quarter: int) -> int:
    """Grid steps of one beat: a dotted quarter in compound x/8 meters (6/8, 9/8, 12/8), else 1/den."""
    num, den = parse_meter(meter)
    steps = steps_per_quarter * 4 // den
    if den == 8 and num % 3 == 0 and num > 3:
        steps *= 3
    return max(1, steps)


def strong_positions(meter: str, steps_per_quarter: int, bar_steps: int) -> list[int]:
    """Grid positions in the bar that count as strong: the downbeat, and the middle of the bar in
    meters of 4, 6, 8 or 12 (4/4, 6/8, 12/8, 4/2, ...)."""
    num, _ = parse_meter(meter)
    out = [0]
    if num in (4, 6, 8, 12) and bar_steps % 2 == 0:
        out.append(bar_steps // 2)
    return out


def cadence_point(meter: str, steps_per_quarter: int, bar_steps: int) -> tuple[list[int], int]:
    """(strong positions that leave at least a beat before the barline, the last of them)."""
    beat = beat_steps(meter, steps_per_quarter)
    feasible = [p for p in strong_positions(meter, steps_per_quarter, bar_steps) if bar_steps - p >= beat]
    return feasible, feasible[-1]


def ends_in_cadence(bar: Sequence[int], tokenizer, tonic_pc: int, meter: str) -> bool:
    """Whether a bar's step tokens end the tune on a cadence: last note the tonic, on a feasible strong
    position, held at least a beat (ties across the barline ignored: the bar is judged alone)."""
    S, spq = len(bar), tokenizer.steps_per_quarter
    feasible, _ = cadence_point(meter, spq, S)
    onsets = [i for i, t in enumerate(bar) if tokenizer.pitch_of(int(t)) is not None]
    if not onsets:
        return False
    start = onsets[-1]
    if start not in feasible or tokenizer.pitch_of(int(bar[start])) % 12 != tonic_pc:
        return False
    length = 1
    while start + length < S and int(bar[start + length]) == tokenizer.hold_id:
        length += 1
    return length >= beat_steps(meter, spq)


class Cadence:
    """Per-row cadence masks for the last bar of B melodies (see the module docstring).

    ``begin_bar(tonics)`` arms it with each row's tonic pitch class; then for every grid step
    ``mask(p)`` gives the (B, V) additive mask at position p and ``advance(p, chosen)`` records the
    chosen tokens. Rows can be reordered (beam search) with ``reorder(parent)``.
    """

    def __init__(self, tokenizer, meter: str, allowed_pitches: Sequence[int], batch: int):
        import torch  # sampling's dependency, kept out of the statistics functions' import
        self.torch, self.tok, self.B = torch, tokenizer, batch
        self.S = tokenizer.bar_steps(meter)
        self.beat = beat_steps(meter, tokenizer.steps_per_quarter)
        self.feasible, self.point = cadence_point(meter, tokenizer.steps_per_quarter, self.S)
        self.allowed = list(allowed_pitches)
        V = tokenizer.vocab_size
        self.note_cols = torch.tensor([tokenizer.note_id(p) for p in range(tokenizer.config.min_pitch,
                                                                               tokenizer.config.max_pitch + 1)])
        self.tonic_rows = None  # (B, V) 0 on each row's allowed tonic NOTE tokens, -inf elsewhere
        self.active = False
        self.length = [0] * batch  # length so far of the row's qualifying note while it sounds, 0 if none
        self.V = V

    def tonic_pitches(self, tonic_pc: int) -> list[int]:
        return [p for p in self.allowed if p % 12 == tonic_pc]

    def begin_bar(self, tonics: Sequence[int]) -> None:
        torch = self.torch
        rows = torch.full((self.B, self.V), float("-inf"))
        for b, pc in enumerate(tonics):
            pitches = self.tonic_pitches(pc)
            if not pitches:  # the range and key leave no tonic: params.validate prevents this for a given key
                pitches = self.allowed
            rows[b, [self.tok.note_id(p) for p in pitches]] = 0.0
        self.tonic_rows, self.tonics, self.active = rows, list(tonics), True
        self.length = [0] * self.B

    def mask(self, p: int):
        """(B, V) additive mask for the step at position p of the last bar."""
        torch, tok = self.torch, self.tok
        later = any(q > p for q in self.feasible)  # a cadence point is still ahead
        m = torch.zeros(self.B, self.V)
        if later:
            return m  # anything goes; a tonic here on a strong position may become the cadence
        for b in range(self.B):
            sounding = self.length[b] > 0  # a tonic that started on a feasible strong position still sounds
            if p == self.point and not sounding:
                m[b] = self.tonic_rows[b]  # must play the tonic now (the last chance with a beat left)
                continue
            m[b, self.note_cols] = float("-inf")  # no other note from here on...
            if p == self.point:
                m[b] = torch.maximum(m[b], self.tonic_rows[b])  # ...but the tonic may sound again here
            if sounding:
                m[b, tok.rest_id] = float("-inf")  # the cadence note rings to the end: hold it
        return m

    def advance(self, p: int, chosen: Sequence[int]) -> None:
        tok = self.tok
        for b, t in enumerate(chosen):
            pitch = tok.pitch_of(t)
            if pitch is not None:
                qualifies = p in self.feasible and pitch % 12 == self.tonics[b]
                self.length[b] = 1 if qualifies else 0
            elif t == tok.hold_id and self.length[b] > 0:
                self.length[b] += 1
            elif t == tok.rest_id:
                self.length[b] = 0
        return None

    def reorder(self, parent) -> None:
        idx = parent.tolist()
        self.length = [self.length[i] for i in idx]
        self.tonics = [self.tonics[i] for i in idx]
        self.tonic_rows = self.tonic_rows[parent]


class TonicPull:
    """Per-row tonic pull for the last bar of B melodies (see the module docstring): ``begin_bar(tonics)``
    with each row's tonic pitch class (None: no pull); then for every grid step ``bias(p)`` is the
    (B, V) additive bias at position p, or None where there is none, and ``advance(p, chosen)``
    records the chosen tokens. At the cadence points the tonic's NOTE tokens get ``pull`` nats; while
    a tonic begun at one of them sounds, HOLD gets ``pull * RING_SHARE`` (the tonic rings, as a
    cadence's does). ``tonic_columns`` is (12, V): 1 on the NOTE tokens of each pitch class."""

    RING_SHARE = 1.0  # HOLD's share of the pull while the tonic rings: chosen for the shipped model on the
    # valid split (docs/model-card.md, "Endings")

    def __init__(self, tokenizer, meter: str, pull: float, tonic_columns):
        self.pull, self.columns, self.tok = pull, tonic_columns, tokenizer
        self.at = frozenset(cadence_point(meter, tokenizer.steps_per_quarter, tokenizer.bar_steps(meter))[0])
        self.rows = self.tonics = self.ringing = self.ring = None

    def begin_bar(self, tonics: Sequence[int | None]) -> None:
        none = self.columns.new_zeros(self.columns.shape[1])
        self.rows = self.columns.new_empty(len(tonics), self.columns.shape[1])
        for b, pc in enumerate(tonics):
            self.rows[b] = self.columns[pc] * self.pull if pc is not None else none
        self.tonics, self.ringing = list(tonics), [False] * len(tonics)
        self.ring = self.rows.new_zeros(self.rows.shape)  # (B, V): HOLD's share on the rows whose tonic rings

    def bias(self, p: int):
        if self.rows is None:
            return None
        if p in self.at:
            return self.rows
        return self.ring if any(self.ringing) else None

    def advance(self, p: int, chosen: Sequence[int]) -> None:
        if self.ringing is None:
            return
        hold = self.tok.hold_id
        for b, t in enumerate(chosen):
            if t == hold:
                continue
            pitch = self.tok.pitch_of(t)
            # a new note: does it start the tonic at a cadence point? (a rest ends the ring)
            ringing = pitch is not None and p in self.at and pitch % 12 == self.tonics[b]
            if ringing != self.ringing[b]:
                self.ringing[b] = ringing
                self.ring[b, hold] = self.pull * self.RING_SHARE if ringing else 0.0


def pitch_class_columns(tokenizer):
    """(12, V) float: 1 on the NOTE tokens of each pitch class (``TonicPull``'s table)."""
    import torch
    cols = torch.zeros(12, tokenizer.vocab_size)
    for v in range(tokenizer.vocab_size):
        if tokenizer.pitch_of(v) is not None:
            cols[tokenizer.pitch_of(v) % 12, v] = 1.0
    return cols


# ---- ending statistics ---------------------------------------------------------------------------
def ending_statistics(melodies, tokenizer) -> dict:
    """How a set of tunes (token ids) ends: the share whose last note is the tonic of the tune's own
    estimated key, the final note's mean length in beats, the share of final notes starting on a strong
    beat, and the share of final notes longer than a beat (held to the end counts)."""
    tonic, strong, longer, lengths, count = 0, 0, 0, [], 0
    for ids in melodies:
        ids = [int(t) for t in ids]
        notes, _, _ = melody_notes(ids, tokenizer)
        if not notes:
            continue
        last_meter, bar_start, step = None, 0, 0
        for t in ids:  # the meter and grid offset of the last bar
            if tokenizer.meter_of(t) is not None:
                last_meter = tokenizer.meter_of(t)
            elif t == tokenizer.bar_id:
                bar_start = step
            elif tokenizer.is_step(t):
                step += 1
        final = notes[-1]
        S = tokenizer.bar_steps(last_meter)
        beat = beat_steps(last_meter, tokenizer.steps_per_quarter)
        count += 1
        tonic += final.pitch % 12 == estimate_key(notes)[0]
        pos = final.start - bar_start
        strong += pos in strong_positions(last_meter, tokenizer.steps_per_quarter, S)
        longer += final.end - final.start > beat
        lengths.append((final.end - final.start) / beat)
    if count == 0:
        return {"tunes": 0, "tonic_share": math.nan, "final_length_beats": math.nan,
                "final_on_strong_beat_share": math.nan, "final_longer_than_beat_share": math.nan}
    return {"tunes": count, "tonic_share": tonic / count, "final_length_beats": float(np.mean(lengths)),
            "final_on_strong_beat_share": strong / count, "final_longer_than_beat_share": longer / count}
