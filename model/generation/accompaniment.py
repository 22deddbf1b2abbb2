"""Chords for a melody's score, and the accompaniment they make.

``score_chords`` estimates the chords under a ``Score`` (``model.representation.harmony``'s HMM, one
chord per harmonic segment); ``progression_chords`` lays a given progression over its bars instead
(a melody written over given chords keeps them). Either gives ``ChordSpan``s in grid steps, which
become MusicXML chord symbols (``chord_symbols``, for ``notation.musicxml_bytes``), ABC annotations
(``model.representation.abc``) and a second MIDI track (``accompanied_midi``); ``harmonized_bytes``
writes any of them:

the accompaniment plays, for each chord, its root as a bass note (C2..B2) on the chord's first beat,
held that beat, and the chord (its tones between F3 and E4) on each of the chord's other beats, held
most of a beat: oom-pah in 2/4 and 4/4, oom-pah-pah in 3/4, bass and chord in 6/8's two dotted
beats; a chord one beat long gets bass and chord together. Beats are ``endings.beat_steps``. The
melody's tracks are the bytes ``notation.midi_bytes`` writes, unchanged: the accompaniment is a
track appended after them, on MIDI channel 2.
"""
from __future__ import annotations

import io
import json
from typing import NamedTuple, Sequence

from model.generation.endings import beat_steps
from model.representation.abc import abc_text
from model.representation.chords import Chord, spell_flats
from model.representation.harmony import HarmonyModel, melody_key, meter_at, score_chord_steps, score_notes
from model.representation.notation import Score, midi_bytes, musicxml_bytes

BASS_LOW, CHORD_LOW = 36, 53       # C2: the bass octave's bottom; F3: the chord's lowest tone
VELOCITY_BASS, VELOCITY_CHORD = 70, 55
CHANNEL = 1                        # 0-based: MIDI channel 2
CHORD_SHARE = 0.75                 # a chord is held this share of its beat


class ChordSpan(NamedTuple):
    start: int      # grid steps
    end: int
    chord: Chord


def score_chords(score: Score, model: HarmonyModel | None = None) -> list[ChordSpan]:
    """The estimated chords under the score's melody."""
    return [ChordSpan(*span) for span in score_chord_steps(score, model or HarmonyModel.load())]


def progression_chords(score: Score, progression: Sequence[Sequence[Chord]], first_bar: int = 0) -> list[ChordSpan]:
    """A given progression laid over the score's bars from bar ``first_bar`` on (repeating)."""
    out, starts = [], score.bar_starts
    for bar in range(first_bar, len(starts) - 1):
        length = starts[bar + 1] - starts[bar]
        chords = progression[(bar - first_bar) % len(progression)]
        for k, chord in enumerate(chords):   # the chords inside a bar split it evenly
            out.append(ChordSpan(starts[bar] + k * length // len(chords),
                                 starts[bar] + (k + 1) * length // len(chords), chord))
    return _merged(out)


def written_spans(score: Score, written: Sequence[tuple[int, Chord]]) -> list[ChordSpan]:
    """Chords a score carried (``written_chords.written_chords``), each until the next or the end."""
    end = score.bar_starts[-1]
    steps = [s for s, _ in written] + [end]
    return _merged([ChordSpan(s, max(s + 1, min(nxt, end)), c) for (s, c), nxt in zip(written, steps[1:]) if s < end])


def melody_chords(score: Score, params) -> list[ChordSpan]:
    """A generated melody's chords: the request's progression from its first generated bar (after an
    included primer, counted as the bars beyond ``params.bars``: with a primer and a length range the
    progression starts at bar 0 of what the range left), else the estimated ones."""
    progression = params.progression()
    if progression is None:
        return score_chords(score)
    bars = len(score.bar_starts) - 1
    first = 0 if params.primer is None or not params.include_primer else max(0, bars - params.bars)
    return progression_chords(score, progression, first)


def _merged(spans: list[ChordSpan]) -> list[ChordSpan]:
    """Consecutive spans of one chord as one span (a chord symbol where the chord changes only)."""
    out: list[ChordSpan] = []
    for span in spans:
        if out and out[-1].chord == span.chord and out[-1].end == span.start:
            out[-1] = out[-1]._replace(end=span.end)
        else:
            out.append(span)
    return out


def key_flats(score: Score) -> bool:
    """Whether the melody's own key is written with flats."""
    notes = score_notes(score)
    return spell_flats(*melody_key(notes)) if notes else False


def chord_symbols(score: Score, spans: Sequence[ChordSpan]) -> list[tuple[int, str]]:
    """(grid step, symbol) where the chord changes, roots spelled in the melody's key."""
    flats = key_flats(score)
    return [(span.start, span.chord.name(flats)) for span in _merged(list(spans))]


def chords_json(score: Score, spans: Sequence[ChordSpan]) -> list[dict]:
    """The chords as JSON: symbol, start and end in beats (quarter notes)."""
    spq, symbols = score.steps_per_quarter, dict(chord_symbols(score, spans))
    return [{"chord": symbols[s.start], "start_beats": s.start / spq, "end_beats": s.end / spq}
            for s in _merged(list(spans))]


def harmonized_bytes(kind: str, score: Score, spans: Sequence[ChordSpan], melody_json: dict | None = None) -> bytes:
    """The melody with its chords as a file: ``midi`` (the accompaniment track), ``musicxml`` (chord
    symbols), ``abc`` (quoted chord symbols) or ``json`` (``melody_json``, else the notes, with ``chords`` added)."""
    if kind == "midi":
        return accompanied_midi(score, spans)
    if kind == "musicxml":
        return musicxml_bytes(score, chord_symbols(score, spans))
    if kind == "abc":
        return abc_text(score, chord_symbols(score, spans), flats=key_flats(score)).encode()
    spq = score.steps_per_quarter
    doc = dict(melody_json) if melody_json is not None else {
        "tempo": score.tempo, "meters": score.meters, "notes": [[p, s / spq, e / spq] for p, s, e in score.notes]}
    doc["chords"] = chords_json(score, spans)
    return json.dumps(doc, indent=1).encode()


def accompaniment_notes(score: Score, spans: Sequence[ChordSpan]) -> list[tuple[int, int, int, int]]:
    """(pitch, start step, end step, velocity) of the accompaniment (the pattern in the docstring)."""
    out = []
    for span in spans:
        bar = max(i for i, s in enumerate(score.bar_starts[:-1]) if s <= span.start)
        beat = beat_steps(meter_at(score, bar), score.steps_per_quarter)
        beats = list(range(span.start, span.end, beat))
        bass = BASS_LOW + span.chord.root
        out.append((bass, beats[0], min(beats[0] + beat, span.end), VELOCITY_BASS))
        tones = sorted(CHORD_LOW + (pc - CHORD_LOW) % 12 for pc in span.chord.pitch_classes)
        for b in beats[1:] if len(beats) > 1 else beats:
            end = min(b + max(1, round(beat * CHORD_SHARE)), span.end)
            out += [(p, b, end, VELOCITY_CHORD) for p in tones]
    return out


def accompanied_midi(score: Score, spans: Sequence[ChordSpan], program: int = 0) -> bytes:
    """``midi_bytes(score, program)`` with the accompaniment appended as a track of its own."""
    import mido
    melody = mido.MidiFile(file=io.BytesIO(midi_bytes(score, program)))
    tps = melody.ticks_per_beat // score.steps_per_quarter          # ticks per grid step
    events = []
    for pitch, start, end, velocity in accompaniment_notes(score, spans):
        events.append((start * tps, 1, pitch, velocity))
        events.append((end * tps, 0, pitch, 0))                      # at one tick, offs before ons
    track = mido.MidiTrack([mido.MetaMessage("track_name", name="accompaniment", time=0),
                            mido.Message("program_change", program=program, channel=CHANNEL, time=0)])
    tick = 0
    for at, _, pitch, velocity in sorted(events):
        track.append(mido.Message("note_on", note=pitch, velocity=velocity, channel=CHANNEL, time=at - tick))
        tick = at
    track.append(mido.MetaMessage("end_of_track", time=1))
    melody.tracks.append(track)
    buf = io.BytesIO()
    melody.save(file=buf)
    return buf.getvalue()
