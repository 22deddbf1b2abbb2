"""Is this MIDI file usable as a melody? One bounded check, torch-free (mido only), for every place
that takes MIDI from a user: the API checks a primer when the request arrives, the worker checks
the primer again and every file of a training zip (worker/uploads.py), and `tunesmith generate
--primer` checks its file (model/cli.py), so all of them accept and reject the same files.

    check_midi(data, what="primer", max_bytes=...) -> MidiSummary(notes, meters, ticks_per_beat)

raises `MidiInvalid` (a ValueError) whose message says what is wrong with the file and what would
do instead: truncated, no tracks, SMPTE timing, zero ticks per beat, type 2, a tempo of zero, notes
never released or of zero length, only drums... never a bare exception name, never empty. Sizes
and lengths are bounded before anything allocates by them (pretty_midi's MAX_TICK is 1e7).
"""
import io
import struct
from dataclasses import dataclass

MAX_MIDI_BYTES = 2 * 1024 * 1024
MAX_NOTES = 50_000
MAX_TICKS = 10_000_000                 # pretty_midi's own MAX_TICK
MAX_SECONDS = 3600
DRUM_CHANNEL = 9                       # MIDI channel 10, counted from 1


class MidiInvalid(ValueError):
    """A MIDI file that cannot be used; the message says why and what would do."""


@dataclass
class MidiSummary:
    notes: int                         # pitched notes with a note-off after their note-on
    meters: list                       # the time signatures it uses, "n/d", in order ([] = none: 4/4)
    ticks_per_beat: int


def check_midi(data: bytes, what: str = "MIDI file", max_bytes: int = MAX_MIDI_BYTES, max_notes: int = MAX_NOTES,
               max_seconds: float = MAX_SECONDS) -> MidiSummary:
    """Check `data` as a melody source within bounds; return its summary or raise MidiInvalid."""
    if not data:
        raise MidiInvalid(f"{what} is not a MIDI file (it is empty)")
    if len(data) > max_bytes:
        raise MidiInvalid(f"{what} must be at most {max_bytes} bytes, got {len(data)}")
    if not data.startswith(b"MThd"):
        raise MidiInvalid(f"{what} is not a MIDI file (it does not start with 'MThd')")
    kind, ticks_per_beat = _check_chunks(data, what)
    import mido
    try:
        midi = mido.MidiFile(file=io.BytesIO(data))
    except EOFError:
        raise MidiInvalid(f"{what} is not a readable MIDI file: it is truncated (a track ends in the middle "
                          "of an event)") from None
    except mido.midifiles.meta.KeySignatureError as exc:
        raise MidiInvalid(f"{what} has a key signature MIDI cannot name ({exc}); remove it or save the file "
                          "again") from None
    except (OSError, KeyError, ValueError, IndexError, TypeError, struct.error) as exc:
        raise MidiInvalid(f"{what} is not a readable MIDI file: it has a corrupt event ({_reason(exc)}); "
                          "save it again from a MIDI editor") from None
    counts, meters = _walk(midi, what)
    if counts["pitched"] > max_notes:
        raise MidiInvalid(f"{what} must have at most {max_notes} notes, got {counts['pitched']}")
    if counts["pitched"] == 0:
        raise MidiInvalid(f"{what} {_why_no_notes(counts)}")
    seconds = midi.length
    if seconds > max_seconds:
        raise MidiInvalid(f"{what} must be at most {max_seconds} s long, got {seconds:.0f} s")
    return MidiSummary(counts["pitched"], meters, ticks_per_beat)


def _check_chunks(data: bytes, what: str) -> tuple[int, int]:
    """The header and the chunk layout, read by hand: mido's own errors here are bare EOFErrors."""
    if len(data) < 14:
        raise MidiInvalid(f"{what} is not a readable MIDI file: it is truncated (its header has {len(data)} "
                          "of 14 bytes)")
    size, kind, tracks, division = struct.unpack(">LHHH", data[4:14])
    if size < 6:
        raise MidiInvalid(f"{what} is not a readable MIDI file: its header says {size} bytes, MIDI needs 6")
    if kind not in (0, 1, 2):
        raise MidiInvalid(f"{what} says it is MIDI format {kind}; MIDI files are format 0, 1 or 2")
    if kind == 2:
        raise MidiInvalid(f"{what} is a type 2 MIDI file (independent patterns); use type 0 or 1")
    if division & 0x8000:
        raise MidiInvalid(f"{what} uses SMPTE timing (frames per second) instead of ticks per beat; "
                          "save it with a tempo-based resolution such as 480 ticks per quarter note")
    if division == 0:
        raise MidiInvalid(f"{what} says 0 ticks per beat; a MIDI file needs a positive resolution "
                          "such as 480 ticks per quarter note")
    if tracks == 0:
        raise MidiInvalid(f"{what} has no tracks (its header counts 0): it holds no music")
    at, found = 8 + size, 0
    while at < len(data) and found < tracks:
        if len(data) - at < 8:
            raise MidiInvalid(f"{what} is not a readable MIDI file: it is truncated (it ends inside the header "
                              f"of track {found + 1})")
        name, length = struct.unpack(">4sL", data[at:at + 8])
        if length > len(data) - at - 8:
            raise MidiInvalid(f"{what} is not a readable MIDI file: it is truncated (track {found + 1} says "
                              f"{length} bytes but only {len(data) - at - 8} follow)")
        if name != b"MTrk":
            raise MidiInvalid(f"{what} is not a readable MIDI file: a {name.decode('latin-1')!r} chunk stands "
                              f"where track {found + 1} should be")
        at, found = at + 8 + length, found + 1
    if found < tracks:
        raise MidiInvalid(f"{what} is not a readable MIDI file: it is truncated (its header counts {tracks} "
                          f"tracks but it holds {found})")
    return kind, division


def _walk(midi, what: str) -> tuple[dict, list]:
    """Count notes by what happened to them; collect time signatures; check tempi and lengths."""
    counts = {"pitched": 0, "drums": 0, "unreleased": 0, "zero_length": 0}
    meters = []
    for number, track in enumerate(midi.tracks, 1):
        ticks, sounding = 0, {}
        for message in track:
            ticks += message.time
            if message.type == "set_tempo" and message.tempo <= 0:
                raise MidiInvalid(f"{what} sets a tempo of 0 microseconds per beat in track {number}; "
                                  "a tempo must be positive")
            elif message.type == "time_signature":
                if message.numerator < 1:
                    raise MidiInvalid(f"{what} has a time signature of {message.numerator}/{message.denominator} "
                                      f"in track {number}; a bar needs at least one beat")
                meter = f"{message.numerator}/{message.denominator}"
                if meter not in meters:
                    meters.append(meter)
            elif message.type == "note_on" and message.velocity > 0:
                sounding.setdefault((message.channel, message.note), []).append(ticks)
            elif message.type in ("note_off", "note_on"):
                starts = sounding.get((message.channel, message.note))
                if starts:
                    start = starts.pop(0)
                    kind = "drums" if message.channel == DRUM_CHANNEL else \
                        "pitched" if ticks > start else "zero_length"
                    counts[kind] += 1
        counts["unreleased"] += sum(len(s) for s in sounding.values())
        if ticks > MAX_TICKS:
            raise MidiInvalid(f"{what} is too long: track {number} runs {ticks} ticks, at most {MAX_TICKS} allowed")
    return counts, meters


def _why_no_notes(counts: dict) -> str:
    if counts["drums"] and not (counts["unreleased"] or counts["zero_length"]):
        return (f"has only drum notes ({counts['drums']} on MIDI channel 10); a melody needs pitched notes "
                "on another channel")
    reasons = []
    if counts["unreleased"]:
        reasons.append(f"{counts['unreleased']} never released (a note-on with no note-off after it)")
    if counts["zero_length"]:
        reasons.append(f"{counts['zero_length']} of zero length (the note-off at the same tick as the note-on)")
    if counts["drums"]:
        reasons.append(f"{counts['drums']} on the drum channel (MIDI channel 10)")
    if not reasons:
        return "has no notes"
    return ("has no usable notes: " + ", ".join(reasons) +
            "; each note needs a note-off some ticks after its note-on, on a channel other than 10")


def _reason(exc: Exception) -> str:
    """An exception as words a user can act on: its message, or what its kind means here."""
    text = str(exc).strip().strip("'\"")
    if isinstance(exc, KeyError):
        return f"an unknown message type ({text or 'unnamed'})"
    if isinstance(exc, IndexError):
        return "an event runs past the end of its track"
    return text or "an event mido cannot decode"
