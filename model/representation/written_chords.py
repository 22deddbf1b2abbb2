"""A melody brought to be harmonized: read from MIDI, or from a score with the chord symbols it
already carries (MusicXML ``<harmony>``, ABC's ``"G"``), read with music21.

``read_midi_melody`` and ``read_score_melody`` give the token ids, the tempo and (a score) the
written chords. A melody brought with its chords keeps them: ``tunesmith harmonize`` writes these instead of
estimating. Each symbol is mapped into the vocabulary of ``model.representation.chords`` by its
root and kind: dominant sevenths stay sevenths; other sevenths, sixths, suspensions and
extensions become their triad (``Am7`` -> Am, ``Cmaj7`` -> C, ``Bm7b5`` -> Bdim), as far as
music21 names a triad in them; a symbol with no triad (a bare ``C5``) counts as major.
Times are grid steps of the melody as ``parsing.encode_stream`` lays it out (a pickup padded to a
full bar shifts everything by the padding).
"""
from __future__ import annotations

from pathlib import Path

from model.representation.chords import Chord
from model.representation.midi_check import check_midi
from model.representation.parsing import encode_midi, encode_stream, load_midi

SCORE_SUFFIXES = (".musicxml", ".xml", ".mxl", ".abc")
MAX_SCORE_BYTES = 512 * 1024        # a MusicXML or ABC melody to harmonize

_KINDS = {"major": 0, "minor": 1, "diminished": 2, "dominant-seventh": 3, "dominant": 3,
          "major-seventh": 0, "minor-seventh": 1, "half-diminished-seventh": 2, "half-diminished": 2,
          "diminished-seventh": 2, "major-sixth": 0, "minor-sixth": 1}
_QUALITIES = {"major": 0, "minor": 1, "diminished": 2}


def vocabulary_chord(symbol) -> Chord:
    """A music21 ``harmony.ChordSymbol`` as the nearest chord of the vocabulary (the module docstring)."""
    kind = symbol.chordKind
    quality = _KINDS.get(kind)
    if quality is None:
        quality = _QUALITIES.get(symbol.quality, 0)
    return Chord(symbol.root().pitchClass, quality)


def written_chords(stream, steps_per_quarter: int) -> list[tuple[int, Chord]]:
    """(grid step, chord) of every chord symbol in the score's top part, in time order."""
    from music21 import harmony, stream as m21stream
    part = stream.parts[0] if isinstance(stream, m21stream.Score) and stream.parts else stream
    measures = list(part.getElementsByClass(m21stream.Measure))
    shift = 0.0
    if measures and measures[0].duration.quarterLength < measures[0].barDuration.quarterLength:
        shift = float(measures[0].barDuration.quarterLength - measures[0].duration.quarterLength)
    out = []
    for symbol in part.recurse().getElementsByClass(harmony.ChordSymbol):
        if isinstance(symbol, harmony.NoChord):
            continue
        step = round((float(symbol.getOffsetInHierarchy(part)) + shift) * steps_per_quarter)
        out.append((step, vocabulary_chord(symbol)))
    return sorted(out, key=lambda x: x[0])


def read_midi_melody(data: bytes, tokenizer, max_bytes: int) -> tuple[list[int], float]:
    """(token ids, tempo) of a MIDI melody, checked as a primer is (a MidiInvalid names 'melody';
    callers pass a primer's bound, ``model.generation.params.MAX_PRIMER_BYTES``)."""
    check_midi(data, "melody", max_bytes=max_bytes)
    return encode_midi(tokenizer, data), round(float(load_midi(data).get_tempo_changes()[1][0]), 2)


def read_score_melody(path, tokenizer) -> tuple[list[int], float, list[tuple[int, Chord]]]:
    """(token ids, tempo, written chords) of a MusicXML or ABC melody."""
    from music21 import converter, tempo
    size = Path(path).stat().st_size
    if size > MAX_SCORE_BYTES:
        raise ValueError(f"melody must be a score of at most {MAX_SCORE_BYTES} bytes, got {size}")
    stream = converter.parse(str(path))
    marks = list(stream.recurse().getElementsByClass(tempo.MetronomeMark))
    qpm = float(marks[0].getQuarterBPM()) if marks and marks[0].getQuarterBPM() else 120.0
    return encode_stream(tokenizer, stream), qpm, written_chords(stream, tokenizer.steps_per_quarter)
