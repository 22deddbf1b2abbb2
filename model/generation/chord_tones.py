"""A melody over given chords: chord tones on the strong beats, as a mask or a soft pull.

A request's ``chords`` (a progression, ``model.representation.chords.parse_progression``) starts with
the first generated bar and repeats when the melody is longer; the chord at a grid step is the one
of ``chord_at`` (the chords inside a bar split it evenly). At the strong positions of the meter
(``model.generation.endings.strong_positions``: the downbeat, and the middle of the bar in meters of
4, 6, 8 or 12):

- ``chord_tones="strict"``: a note that starts there is a tone of the chord sounding there (every
  other NOTE token gets -inf; REST and HOLD stay, as the grammar allows them); with
  ``cadence="tonic"`` the cadence's own mask rules the last bar from its cadence point on, so a tune
  can end on its tonic over a chord without it;
- ``chord_tones="soft"`` (the default when chords are given): the chord's tones get
  ``CHORD_PULL`` nats more there, as ``TonicPull`` does for the ending. The shipped network has no
  chord input yet (it waits for a retrain), so this bias is the only thing telling it the chords;
- ``chord_tones="none"``: the chords are carried into the result and its harmonisation only.

The bias is the same for every row of a request, one (V,) vector per chord, added to the (B, V)
logits before temperature and the draw, for sampling and beam search alike.
"""
from __future__ import annotations

from model.generation.endings import cadence_point, strong_positions
from model.representation.chords import Chord, chord_at

CHORD_PULL = 5.0     # nats: the least pull whose strong-beat chord-tone share reaches real tunes' (docs/model-card.md, "Harmony")


class ChordTones:
    """``bias(bar, pos)``: the (V,) additive bias at grid position ``pos`` of generated bar ``bar``,
    or None where there is none. ``pc_columns`` is (12, V): 1 on the NOTE tokens of each pitch class."""

    def __init__(self, tokenizer, meter: str, progression, mode: str, pc_columns, cadence_bar: int | None = None):
        self.progression, self.mode, self.columns = progression, mode, pc_columns
        self.S = tokenizer.bar_steps(meter)
        self.strong = frozenset(strong_positions(meter, tokenizer.steps_per_quarter, self.S))
        # with a cadence, the last bar from its cadence point on is the cadence's (see the docstring)
        self.cadence_bar = cadence_bar
        self.cadence_from = cadence_point(meter, tokenizer.steps_per_quarter, self.S)[1]
        self.cache: dict[int, object] = {}

    def bias(self, bar: int, pos: int):
        if pos not in self.strong or (bar == self.cadence_bar and pos >= self.cadence_from):
            return None
        chord = chord_at(self.progression, bar, pos, self.S)
        if chord.id not in self.cache:
            self.cache[chord.id] = self._chord_bias(chord)
        return self.cache[chord.id]

    def _chord_bias(self, chord: Chord):
        tones = self.columns[sorted(chord.pitch_classes)].sum(0)           # (V,) 1 on the chord's NOTE tokens
        if self.mode == "strict":
            others = self.columns.sum(0) - tones                               # (V,) 1 on every other NOTE token
            return others.masked_fill(others > 0, float("-inf"))
        return tones * CHORD_PULL
