"""Chord symbols: the vocabulary, their pitch classes, a compact id, and progressions.

The vocabulary is the 12 roots x 4 qualities, 48 chords:

| quality | suffix | pitch classes over the root | e.g. |
|---|---|---|---|
| major | (none) | 0 4 7 | ``G``, ``Bb`` |
| minor | ``m`` | 0 3 7 | ``Am``, ``F#m`` |
| diminished | ``dim`` | 0 3 6 | ``Bdim`` |
| dominant seventh | ``7`` | 0 4 7 10 | ``D7`` |

Roots are the key names of ``model.representation.keys.PITCH_CLASSES`` (``C``, ``C#``, ``Db``, ...);
``min``/``maj``/``o`` are accepted for minor, major and diminished. A chord's ``id`` is
``root * 4 + quality`` (0..47), and ``UNKNOWN_CHORD_ID`` (48) stands for "no chord known" (the
network's chord input, when it has one, drops to it as the other conditions drop to "unknown").

A **progression** is bars of chords: ``"G C | D7 G"`` (bars separated by ``|``, the chords inside a
bar split it evenly, so this is two bars of two chords each), or a list whose items are bars (each
a chord or a string of chords: ``["G", "C", "D7 G"]``). It repeats when the melody is longer.
Nothing here imports torch or music21.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from model.representation.keys import PITCH_CLASSES

QUALITIES = ("major", "minor", "diminished", "dominant-seventh")
QUALITY_SUFFIXES = ("", "m", "dim", "7")           # how each quality is written after the root
QUALITY_INTERVALS = ((0, 4, 7), (0, 3, 7), (0, 3, 6), (0, 4, 7, 10))
_SUFFIX_ALIASES = {"": 0, "maj": 0, "M": 0, "m": 1, "min": 1, "-": 1, "dim": 2, "o": 2, "7": 3}
UNKNOWN_CHORD_ID = 4 * 12                          # 48: the chord vocabulary's "unknown"
MAX_PROGRESSION_CHORDS = 256                       # a request's progression, at most
# spelling of roots in output: sharps for the sharp side of the circle, flats for the rest
SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
FLAT_KEYS = frozenset({5, 10, 3, 8, 1})            # F Bb Eb Ab Db major (their relative minors: D G C F Bb)


def vocabulary_text() -> str:
    """What the vocabulary holds, for error messages."""
    return ("a root (C, C#, Db, D, ... B) followed by nothing (major), m (minor), dim (diminished) "
            "or 7 (dominant seventh), e.g. G, Am, F#m, Bb, D7, Bdim")


@dataclass(frozen=True)
class Chord:
    root: int       # pitch class 0..11
    quality: int    # index into QUALITIES

    @property
    def id(self) -> int:
        return self.root * 4 + self.quality

    @classmethod
    def from_id(cls, chord_id: int) -> Chord:
        if not 0 <= chord_id < UNKNOWN_CHORD_ID:
            raise ValueError(f"chord id must be in [0, {UNKNOWN_CHORD_ID - 1}], got {chord_id}")
        return cls(chord_id // 4, chord_id % 4)

    @property
    def pitch_classes(self) -> frozenset[int]:
        return frozenset((self.root + i) % 12 for i in QUALITY_INTERVALS[self.quality])

    def name(self, flats: bool = False) -> str:
        return (FLAT_NAMES if flats else SHARP_NAMES)[self.root] + QUALITY_SUFFIXES[self.quality]

    def __str__(self) -> str:
        return self.name(flats=self.root in (1, 3, 8, 10))


def spell_flats(tonic: int, mode: str) -> bool:
    """Whether a key writes its roots with flats (F, Bb, Eb, Ab, Db major and their relative minors)."""
    major_tonic = tonic if mode == "major" else (tonic + 3) % 12
    return major_tonic in FLAT_KEYS


def parse_chord(symbol: str) -> Chord:
    """'G', 'Am', 'F#m', 'Bb', 'D7', 'Bdim' -> Chord; anything else raises ValueError naming it."""
    text = symbol.strip() if isinstance(symbol, str) else symbol
    if isinstance(text, str) and text:
        root_len = 2 if len(text) > 1 and text[1] in "#b" else 1
        root, suffix = text[:root_len], text[root_len:]
        if root[0].upper() + root[1:] in PITCH_CLASSES and suffix in _SUFFIX_ALIASES:
            return Chord(PITCH_CLASSES[root[0].upper() + root[1:]], _SUFFIX_ALIASES[suffix])
    raise ValueError(f"unknown chord {symbol!r}: a chord is {vocabulary_text()}")


def parse_progression(progression: str | Sequence[str]) -> list[list[Chord]]:
    """``"G C | D7 G"`` or a list of bars -> bars of chords (see the module docstring)."""
    if isinstance(progression, str):
        bars = progression.split("|")
    elif isinstance(progression, (list, tuple)) and all(isinstance(b, str) for b in progression):
        bars = list(progression)
    else:
        raise ValueError(f"chords must be a string like 'G C | D7 G' or a list of bars like "
                         f"['G', 'C', 'D7 G'], got {progression!r}")
    out = [[parse_chord(s) for s in bar.split()] for bar in bars]
    if any(not bar for bar in out):
        raise ValueError(f"chords must have at least one chord in every bar ('G C | D7 G'), got {progression!r}")
    if sum(len(bar) for bar in out) > MAX_PROGRESSION_CHORDS:
        raise ValueError(f"chords must hold at most {MAX_PROGRESSION_CHORDS} chords, got "
                         f"{sum(len(bar) for bar in out)}")
    return out


def progression_text(bars: Sequence[Sequence[Chord]], flats: bool | None = None) -> str:
    """Bars of chords -> ``"G C | D7 G"`` (each root spelled by its own default unless ``flats``)."""
    return " | ".join(" ".join(str(c) if flats is None else c.name(flats) for c in bar) for bar in bars)


def chord_at(bars: Sequence[Sequence[Chord]], bar_index: int, position: int, bar_steps: int) -> Chord:
    """The chord sounding at grid ``position`` of bar ``bar_index`` (the progression repeats)."""
    bar = bars[bar_index % len(bars)]
    return bar[min(len(bar) - 1, position * len(bar) // bar_steps)]
