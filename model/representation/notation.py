"""A decoded melody as files: MIDI (pretty_midi) and MusicXML (music21), without torch.

``Score`` is what the two writers need of a melody, in plain values: its grid notes, the meter at
bar 0 and at every change, the grid step where each bar starts (plus the end of the last bar), the
grid's resolution and the tempo. ``MelodyTokenizer.score(ids, qpm)`` builds one from token ids; a
worker stores it with the melody (``to_dict``) so that any process, the API's included, can write
the files later without the tokenizer or the network (worker/formats.py).

Trailing all-rest bars survive MIDI: the MIDI file carries a text event ``tunesmith:end`` at the
final barline, which ``model.representation.parsing.encode_midi`` reads back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

END_MARKER = "tunesmith:end"


def parse_meter(meter: str) -> tuple[int, int]:
    """'6/8' -> (6, 8); raises ValueError on anything else."""
    try:
        num, den = (int(x) for x in str(meter).split("/"))
    except ValueError:
        raise ValueError(f"meter must look like '3/4', got {meter!r}") from None
    if num < 1 or den not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"meter must be n/d with n >= 1 and d a power of two up to 32, got {meter!r}")
    return num, den


@dataclass(frozen=True)
class Score:
    """notes: (pitch, start, end) in grid steps; meters: (bar index, meter); bar_starts: grid step of
    every bar start plus the end of the last bar; tempo in quarter notes per minute."""
    notes: tuple[tuple[int, int, int], ...]
    meters: tuple[tuple[int, str], ...]
    bar_starts: tuple[int, ...]
    steps_per_quarter: int
    tempo: float = 120.0

    def to_dict(self) -> dict:
        return {"notes": [list(n) for n in self.notes], "meters": [list(m) for m in self.meters],
                "bar_starts": list(self.bar_starts), "steps_per_quarter": self.steps_per_quarter,
                "tempo": self.tempo}

    @classmethod
    def from_melody_json(cls, melody: dict) -> "Score":
        """The score of a melody's JSON (``Melody.to_json``: its token names, grid and tempo), read
        the way ``MelodyTokenizer.score`` reads the token ids: NOTE starts a note, HOLD continues it
        (across barlines too), any other step ends it; BAR starts a bar, TS sets its meter."""
        notes, meters, starts = [], [], []
        step, bar, pitch, start = 0, -1, None, 0
        for name in melody["tokens"]:
            if name == "BAR":
                bar += 1
                starts.append(step)
            elif name.startswith("TS_"):
                meters.append((max(bar, 0), name[3:]))
            elif name in ("REST", "HOLD") or name.startswith("NOTE_"):    # a grid step
                if name != "HOLD" and pitch is not None:
                    notes.append((pitch, start, step))
                    pitch = None
                if name.startswith("NOTE_"):
                    pitch, start = int(name[5:]), step
                step += 1
        if pitch is not None:
            notes.append((pitch, start, step))
        return cls(tuple(notes), tuple(meters), tuple(starts + [step]), int(melody["steps_per_quarter"]),
                   float(melody["tempo"]))

    @classmethod
    def from_dict(cls, d: dict) -> "Score":
        return cls(tuple(tuple(n) for n in d["notes"]), tuple((int(b), str(m)) for b, m in d["meters"]),
                   tuple(d["bar_starts"]), int(d["steps_per_quarter"]), float(d["tempo"]))


def _check_tempo(qpm: float) -> None:
    if not 0 < qpm <= 1000:
        raise ValueError(f"qpm must be in (0, 1000], got {qpm}")


def midi(score: Score, program: int = 0):
    """The score as pretty_midi.PrettyMIDI: one instrument, a tempo, time signatures and an end marker."""
    import pretty_midi
    _check_tempo(score.tempo)
    if not 0 <= program <= 127:
        raise ValueError(f"program must be in [0, 127], got {program}")
    spq, qpm = score.steps_per_quarter, score.tempo
    pm = pretty_midi.PrettyMIDI(resolution=spq * math.ceil(480 / spq), initial_tempo=float(qpm))
    sec = 60.0 / (qpm * spq)                          # seconds per grid step
    inst = pretty_midi.Instrument(program=program, name="melody")
    inst.notes = [pretty_midi.Note(90, pitch, start * sec, end * sec) for pitch, start, end in score.notes]
    pm.instruments.append(inst)
    for bar, m in score.meters:
        num, den = parse_meter(m)
        pm.time_signature_changes.append(pretty_midi.TimeSignature(num, den, score.bar_starts[bar] * sec))
    pm.text_events.append(pretty_midi.Text(END_MARKER, score.bar_starts[-1] * sec))
    return pm


def midi_bytes(score: Score, program: int = 0) -> bytes:
    """The score as a type-1 MIDI file, the bytes ``midi(score, program).write`` gives (pretty_midi's
    layout, which it writes through mido: a timing track with tempo, time signatures and the end
    marker, then the melody's track, note-ons in running status), encoded here from the grid
    directly: every event falls on a whole tick, so there is nothing to convert from seconds, and a
    worker writes a melody's MIDI in a small fraction of pretty_midi's (or mido's) time."""
    _check_tempo(score.tempo)
    if not 0 <= program <= 127:
        raise ValueError(f"program must be in [0, 127], got {program}")
    spq, qpm = score.steps_per_quarter, score.tempo
    resolution = spq * math.ceil(480 / spq)
    tps = resolution // spq                                   # ticks per grid step
    tick_scale = 60.0 / (qpm * resolution)                    # pretty_midi's seconds per tick, same float steps
    tempo = int(6e7 / (60.0 / (tick_scale * resolution)))     # microseconds per quarter note
    # each event: (tick, order at that tick, its bytes); written with its delta time below
    signatures = [(score.bar_starts[bar] * tps, parse_meter(m)) for bar, m in score.meters]
    timing = [(0, 1, _meta(0x51, bytes((tempo >> 16, tempo >> 8 & 0xFF, tempo & 0xFF))))]
    if not signatures or min(t for t, _ in signatures) > 0:
        timing.append((0, 2, _time_signature(4, 4)))
    for tick, (num, den) in signatures:
        timing.append((tick, 2, _time_signature(num, den)))
    timing.append((score.bar_starts[-1] * tps, 5, _meta(0x01, END_MARKER.encode("latin1"))))
    notes = [(0, 0, _meta(0x03, b"melody")), (0, 1, bytes((0xC0, program)))]   # track name, program (channel 0)
    for pitch, start, end in score.notes:   # at one tick, note-ons (velocity 0 = off) by pitch, then velocity
        notes.append((start * tps, 2 + pitch * 256 + 90, bytes((0x90, pitch, 90))))
        notes.append((end * tps, 2 + pitch * 256, bytes((0x90, pitch, 0))))
    out = bytearray(b"MThd" + (6).to_bytes(4, "big") + b"\x00\x01\x00\x02" + resolution.to_bytes(2, "big"))
    for events in (timing, notes):
        track, tick, running = bytearray(), 0, None
        for at, _, event in sorted(events, key=lambda e: e[:2]):
            track += _variable_int(at - tick)
            if event[0] == running:                           # running status: the status byte is implied
                track += event[1:]
            else:
                track += event
                running = event[0] if event[0] < 0xF0 else None
            tick = at
        track += b"\x01\xff\x2f\x00"                          # end of track, a tick after the last event
        out += b"MTrk" + len(track).to_bytes(4, "big") + track
    return bytes(out)


def _variable_int(value: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits a byte, most significant first, the high bit on all but the last."""
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(reversed(groups))


def _meta(kind: int, data: bytes) -> bytes:
    return bytes((0xFF, kind)) + _variable_int(len(data)) + data


def _time_signature(num: int, den: int) -> bytes:
    """Numerator, log2 of the denominator, 24 MIDI clocks a click, 8 32nd notes a quarter (mido's defaults)."""
    return _meta(0x58, bytes((num, int(math.log(den, 2)), 24, 8)))


def musicxml_bytes(score: Score, chord_symbols=()) -> bytes:
    """The score as MusicXML (through music21), with meters, tempo and tied notes across barlines;
    ``chord_symbols``: (grid step, symbol like 'Bb' or 'F#m7') pairs, written as ``<harmony>`` elements."""
    from fractions import Fraction

    from music21 import harmony, meter as m21meter, note as m21note, stream as m21stream, tempo
    from music21.musicxml.m21ToXml import GeneralObjectExporter
    _check_tempo(score.tempo)
    starts, spq = score.bar_starts, score.steps_per_quarter
    q = lambda steps: Fraction(steps, spq)  # noqa: E731
    part = m21stream.Part()
    part.insert(0, tempo.MetronomeMark(number=score.tempo))
    for bar, m in score.meters:
        part.insert(q(starts[bar]), m21meter.TimeSignature(m))
    step = 0
    for pitch, start, end in list(score.notes) + [(0, starts[-1], starts[-1] + 1)]:  # a sentinel closes the last rest
        if start > step:
            part.insert(q(step), m21note.Rest(quarterLength=q(start - step)))
        if start < starts[-1]:
            part.insert(q(start), m21note.Note(pitch, quarterLength=q(end - start)))
        step = end
    for step, symbol in chord_symbols:                      # music21 writes a flat as '-': Bb -> B-
        part.insert(q(step), harmony.ChordSymbol(symbol[0] + symbol[1:].replace("b", "-", 1)
                                                 if symbol[1:2] == "b" else symbol))
    score21 = m21stream.Score([part.makeNotation()])
    return GeneralObjectExporter(score21).parse()
