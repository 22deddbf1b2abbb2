"""Reading melodies: music21 streams and MIDI files turned into token ids.

The input side of ``model.representation.tokens``: ``encode_stream`` takes the melody line of a music21 score
with its bars; ``encode_midi`` reads a MIDI file (``load_midi``), picks its melody among the
instruments (``extract_melody``) and quantizes it to the grid. Both end in
``MelodyTokenizer.encode_notes``; writing MIDI and MusicXML stays in ``model.representation.tokens``.
"""
from __future__ import annotations

import io
import os

from model.representation.notation import END_MARKER, parse_meter
from model.representation.tokens import MelodyTokenizer, Note, monophonic


# --- music21 -------------------------------------------------------------------------------------

def encode_stream(tokenizer: MelodyTokenizer, stream) -> list[int]:
    """A music21 stream -> ids. Takes the top part (the melody line of a score); ties are merged,
    grace notes dropped, a chord gives its top note. Bars follow the source measures: a short
    first measure is a pickup (padded with leading rests), a short last one is padded with
    rests; two short measures that add up to a bar (a bar split by a repeat) become one bar;
    another odd-length measure becomes a bar of the meter with its length (a TS change) or,
    if no supported meter fits, a ValueError. A stream without measures is barred by its
    first time signature from its first note. A stream without a meter raises ValueError."""
    from music21 import meter as m21meter, stream as m21stream
    part = stream
    if isinstance(stream, m21stream.Score):
        if not stream.parts:
            raise ValueError("music21 score has no parts")
        part = stream.parts[0]
    spq = tokenizer.config.steps_per_quarter
    if not part.recurse().getElementsByClass(m21meter.TimeSignature):
        raise ValueError("music21 stream has no time signature (free meter)")
    measures = [m for m in part.getElementsByClass(m21stream.Measure)]
    if measures:                            # bars from the measures before ties are merged
        shift, meters = _bar_layout(tokenizer, measures)
    else:
        ts = part.recurse().getElementsByClass(m21meter.TimeSignature)[0]
        shift, meters = 0, [(0, ts.ratioString)]
    notes = []
    for n in part.stripTies(inPlace=False).flatten().notes:
        if n.duration.isGrace or n.quarterLength <= 0:
            continue
        pitch = max(p.ps for p in n.pitches)
        start = round((float(n.offset) + shift) * spq)
        end = round((float(n.offset + n.quarterLength) + shift) * spq)
        notes.append(Note(round(pitch), start, max(end, start + 1)))
    if not notes and not measures:         # measures of rests are a (silent) tune, nothing is not
        raise ValueError("music21 stream holds no notes")
    bars = len(meters) if measures else None
    changes = [(b, m) for b, m in meters if b == 0 or m != meters[b - 1][1]] if measures else meters
    return tokenizer.encode_notes(notes, changes, bars=bars)


def _bar_layout(tokenizer: MelodyTokenizer, measures) -> tuple[float, list[tuple[int, str]]]:
    """(pickup shift in quarters, [(bar_index, meter)] for every bar) from music21 measures."""
    spq = tokenizer.config.steps_per_quarter
    info = []                               # (offset steps, actual steps, nominal steps, meter)
    for m in measures:
        ts = m.timeSignature or m.getContextByClass("TimeSignature")
        meter = ts.ratioString if ts is not None else "4/4"
        info.append((round(float(m.offset) * spq), round(float(m.duration.quarterLength) * spq),
                     round(float(m.barDuration.quarterLength) * spq), meter))
    while info and info[-1][1] == 0:        # empty trailing measures
        info.pop()
    if not info:
        raise ValueError("music21 stream has no measures with content")
    shift = info[0][2] - info[0][1] if info[0][1] < info[0][2] else 0
    bars, i, step = [], 0, 0
    while i < len(info):
        offset, actual, nominal, meter = info[i]
        if i and offset + shift != step:
            raise ValueError(f"measure {i} starts at step {offset + shift}, expected {step}")
        if meter not in tokenizer.config.meters:  # music21 marks odd bars with their own meter (24/4, 1/16)
            fit = _meter_of_length(tokenizer, actual, meter)
            if fit is None:
                raise ValueError(f"bar {i} has meter {meter}: not supported and no supported meter fits")
            bars.append(fit)
            step += actual
        elif actual == nominal or (i == 0 and actual < nominal) or (i == len(info) - 1 and actual < nominal):
            bars.append(meter)
            step += nominal
        elif i + 1 < len(info) and actual + info[i + 1][1] == nominal and info[i + 1][3] == meter:
            bars.append(meter)              # a bar split in two, e.g. by a repeat sign
            step += nominal
            i += 1
        else:
            fit = _meter_of_length(tokenizer, actual, meter)
            if fit is None:
                raise ValueError(f"irregular bar {i}: {actual / spq} quarters in {meter}, no supported meter fits")
            bars.append(fit)
            step += actual
        i += 1
    return shift / spq, list(enumerate(bars))


def _meter_of_length(tokenizer: MelodyTokenizer, steps: int, meter: str) -> str | None:
    """A supported meter whose bar holds ``steps``, preferring the denominator of ``meter``."""
    den = parse_meter(meter)[1]
    for d in (den, 8, 4, 2, 16, 1):
        num = steps * d / (4 * tokenizer.config.steps_per_quarter)
        if num == int(num) and f"{int(num)}/{d}" in tokenizer.config.meters:
            return f"{int(num)}/{d}"
    return None


# --- MIDI ----------------------------------------------------------------------------------------

def encode_midi(tokenizer: MelodyTokenizer, midi) -> list[int]:
    """A MIDI file (pretty_midi.PrettyMIDI, path or bytes) -> ids, through ``extract_melody``.

    Onsets and offsets are quantized to the grid in MIDI ticks (tempo does not matter); step 0
    is the first downbeat. Meters come from the file's time signatures (default 4/4); a change
    inside a bar takes effect at the next barline. A ``tunesmith:end`` text event sets the end.
    """
    pm = load_midi(midi)
    spq, res = tokenizer.config.steps_per_quarter, pm.resolution
    to_step = lambda seconds: round(pm.time_to_tick(seconds) * spq / res)  # noqa: E731
    markers = [to_step(t.time) for t in pm.text_events if t.text == END_MARKER]
    melody = extract_melody(pm)
    if not melody and not markers:                  # only our own all-rest tunes may be empty
        raise ValueError("MIDI file holds no pitched notes outside the drum channel")
    notes = []
    for n in melody:
        start, end = to_step(n.start), to_step(n.end)
        notes.append(Note(n.pitch, start, max(end, start + 1)))
    notes = monophonic(notes)
    end_step = max((n.end for n in notes), default=0)
    if markers:
        end_step = max(end_step, markers[-1])
    changes = sorted((to_step(ts.time), f"{ts.numerator}/{ts.denominator}") for ts in pm.time_signature_changes)
    if not changes or changes[0][0] > 0:
        changes.insert(0, (0, "4/4"))
    meters, bar, start = [], 0, 0                   # walk the bars, switching meter at barlines
    while start < end_step or bar == 0:
        due = [m for s, m in changes if s <= start]
        m = due[-1]
        if not meters or meters[-1][1] != m:
            tokenizer.meter_id(m)
            meters.append((bar, m))
        start += tokenizer.bar_steps(m)
        bar += 1
    return tokenizer.encode_notes(notes, meters, bars=bar)


def load_midi(midi):
    """PrettyMIDI | path | bytes -> PrettyMIDI; broken or unreadable files raise ValueError."""
    import pretty_midi
    if isinstance(midi, pretty_midi.PrettyMIDI):
        return midi
    if isinstance(midi, (bytes, bytearray)):
        if not midi:
            raise ValueError("MIDI data is empty")
        source, name = io.BytesIO(bytes(midi)), "MIDI data"
    elif isinstance(midi, (str, os.PathLike)):
        source, name = os.fspath(midi), f"MIDI file {os.fspath(midi)}"
        if not os.path.isfile(source):
            raise ValueError(f"{name} does not exist")
    else:
        raise ValueError(f"midi must be PrettyMIDI, a path or bytes, got {type(midi).__name__}")
    try:
        return pretty_midi.PrettyMIDI(source)
    except Exception as e:      # mido raises OSError, EOFError, KeyError, ValueError, IndexError ...
        reason = str(e) or "unexpected end of data"
        raise ValueError(f"{name} is not a readable MIDI file ({type(e).__name__}: {reason})") from e


def extract_melody(pm) -> list:
    """The melodic line of a MIDI file, as a monophonic list of pretty_midi.Note (seconds).

    Rule: drum instruments are ignored. Candidates are the pitched instruments that sound during
    at least a quarter of the span from the first onset to the last offset (any instrument); the
    candidate with the highest mean pitch is the melody (ties: more notes). Within it a skyline
    keeps one note at a time: at each onset the highest note; a note starting under a
    still-sounding higher note is dropped; a higher note cuts the one sounding before it.
    """
    pitched = [i for i in pm.instruments if not i.is_drum and i.notes]
    if not pitched:
        return []
    span = (max(n.end for i in pitched for n in i.notes) - min(n.start for i in pitched for n in i.notes)) or 1.0
    candidates = [i for i in pitched if 4 * _sounding_time(i.notes) >= span] or pitched
    melody = max(candidates, key=lambda i: (sum(n.pitch for n in i.notes) / len(i.notes), len(i.notes)))
    out = []
    for n in sorted(melody.notes, key=lambda n: (n.start, -n.pitch)):
        if n.end <= n.start:
            continue
        if out and n.start < out[-1].end:
            if n.start == out[-1].start or n.pitch <= out[-1].pitch:
                continue                            # under a higher sounding note
            out[-1].end = n.start                   # a higher note cuts the one before
        out.append(type(n)(n.velocity, n.pitch, n.start, n.end))
    return out


def _sounding_time(notes) -> float:
    """Length of the union of the notes' intervals, in seconds."""
    total, reach = 0.0, float("-inf")
    for n in sorted(notes, key=lambda n: n.start):
        if n.end > reach:
            total += n.end - max(n.start, reach)
            reach = n.end
    return total
