"""A score as ABC notation, with chord symbols as ABC's quoted annotations (``"G"C2 E2``).

The unit note length is one grid step (``L:1/16`` at 4 steps a quarter), so every duration is a
whole number of units; a note or rest that crosses a barline or a chord change is split there and
tied (rests simply split), so each chord symbol stands before the note or rest where it starts.
Accidentals are written on every altered note (sharps, or flats in a flat key) and a natural
cancels one written earlier in the bar, since ABC carries an accidental to the end of the bar.
The key line is ``K:C`` (ABC's default: no key signature), so nothing depends on a key estimate.
Nothing here imports music21 (tests read the text back with it).
"""
from __future__ import annotations

from typing import Sequence

from model.representation.notation import Score

LETTERS_SHARP = ("C", "^C", "D", "^D", "E", "F", "^F", "G", "^G", "A", "^A", "B")
LETTERS_FLAT = ("C", "_D", "D", "_E", "E", "F", "_G", "G", "_A", "A", "_B", "B")


def abc_pitch(pitch: int, flats: bool, altered: dict) -> str:
    """MIDI pitch -> ABC (C = middle C, c an octave up, C, an octave down); ``altered``: the letters
    (with octave) given an accidental earlier in this bar, updated here."""
    name = (LETTERS_FLAT if flats else LETTERS_SHARP)[pitch % 12]
    accidental, letter = name[:-1], name[-1]
    octave = pitch // 12 - 5                                  # 0 for C4..B4
    key = (letter, octave)
    if not accidental and altered.get(key):
        accidental = "="                                     # cancel an accidental earlier in the bar
    altered[key] = accidental not in ("", "=")
    if octave >= 1:
        text = letter.lower() + "'" * (octave - 1)
    else:
        text = letter + "," * -octave
    return accidental + text


def _length(units: int) -> str:
    return "" if units == 1 else str(units)


def abc_text(score: Score, chord_symbols: Sequence[tuple[int, str]] = (), title: str = "Tunesmith",
             flats: bool = False) -> str:
    """The score as an ABC tune (the module docstring); ``chord_symbols``: (grid step, symbol)."""
    spq, starts = score.steps_per_quarter, score.bar_starts
    symbols = dict(chord_symbols)
    meters = dict(score.meters)
    head = [f"X:1", f"T:{title}", f"M:{score.meters[0][1] if score.meters else '4/4'}", f"L:1/{4 * spq}",
            f"Q:1/4={score.tempo:g}", "K:C"]
    sounding = {}                                             # grid step -> (pitch, note start, note end)
    for pitch, s, e in score.notes:
        for step in range(s, e):
            sounding[step] = (pitch, s, e)
    body = []
    for bar in range(len(starts) - 1):
        if bar in meters and bar > 0:
            body.append(f"[M:{meters[bar]}]")
        altered: dict = {}
        cuts = sorted({starts[bar], starts[bar + 1], *(t for t in symbols if starts[bar] < t < starts[bar + 1]),
                       *(s for _, s, _ in score.notes if starts[bar] < s < starts[bar + 1]),
                       *(e for _, _, e in score.notes if starts[bar] < e < starts[bar + 1])})
        for a, b in zip(cuts, cuts[1:]):
            token = f'"{symbols[a]}"' if a in symbols else ""
            if a in sounding:
                pitch, _, end = sounding[a]
                token += abc_pitch(pitch, flats, altered) + _length(b - a) + ("-" if end > b else "")
            else:
                token += "z" + _length(b - a)
            body.append(token)
        body.append("|" if bar < len(starts) - 2 else "|]")
    lines, line = [], []
    for token in body:                                        # four bars a line
        line.append(token)
        if token.startswith("|") and sum(t.startswith("|") for t in line) == 4:
            lines.append(" ".join(line))
            line = []
    if line:
        lines.append(" ".join(line))
    return "\n".join(head + lines) + "\n"
