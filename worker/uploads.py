"""Bounded checks of what users upload: a primer MIDI file, a zip of MIDI files to train on.

Workers run these before anything else touches the bytes, so a broken, huge or hostile file
becomes a failed job with a message, never a crashed worker or a hung job: sizes are checked
before reading, mido's many exception types are turned into one `UploadInvalid`, and note
counts and lengths are capped before pretty_midi or music21 allocate anything by length.
"""
import io
import re
import zipfile
from pathlib import Path

import mido

from model import MIDI_EXTENSIONS
from model.files import atomic_write

MAX_MIDI_BYTES = 2 * 1024 * 1024        # one file of a training zip (a primer: model.params.MAX_PRIMER_BYTES)
MAX_NOTES = 50_000
MAX_TICKS = 10_000_000                 # pretty_midi's own MAX_TICK
MAX_SECONDS = 3600
MAX_ZIP_FILES = 5000
MAX_ZIP_TOTAL = 256 * 1024 * 1024


class UploadInvalid(ValueError):
    """An upload that cannot be used; the message says why and what is allowed."""


def check_midi(data: bytes, what: str = "MIDI file", max_bytes: int | None = None) -> int:
    """Parse `data` with mido within bounds (at most `max_bytes`, default MAX_MIDI_BYTES); return
    its note count or raise UploadInvalid."""
    max_bytes = MAX_MIDI_BYTES if max_bytes is None else max_bytes
    if len(data) > max_bytes:
        raise UploadInvalid(f"{what} must be at most {max_bytes} bytes, got {len(data)}")
    if not data.startswith(b"MThd"):
        raise UploadInvalid(f"{what} is not a MIDI file (it does not start with 'MThd')")
    try:
        midi = mido.MidiFile(file=io.BytesIO(data))
    except (OSError, EOFError, KeyError, ValueError, IndexError, TypeError) as exc:
        raise UploadInvalid(f"{what} is not a readable MIDI file: {exc}") from None
    if midi.type == 2:
        raise UploadInvalid(f"{what} is a type 2 MIDI file (independent patterns); use type 0 or 1")
    notes = 0
    for track in midi.tracks:
        ticks = 0
        for message in track:
            ticks += message.time
            if message.type == "note_on" and message.velocity > 0:
                notes += 1
        if ticks > MAX_TICKS:
            raise UploadInvalid(f"{what} is too long: a track runs {ticks} ticks, at most {MAX_TICKS} allowed")
    if notes > MAX_NOTES:
        raise UploadInvalid(f"{what} must have at most {MAX_NOTES} notes, got {notes}")
    if notes == 0:
        raise UploadInvalid(f"{what} has no notes")
    seconds = midi.length
    if seconds > MAX_SECONDS:
        raise UploadInvalid(f"{what} must be at most {MAX_SECONDS} s long, got {seconds:.0f} s")
    return notes


def extract_midi_zip(zip_path, dest) -> tuple[list[Path], list[tuple[str, str]]]:
    """Unpack the valid MIDI files of a zip into `dest` (flat, renamed, atomically).

    Returns (files kept, [(member name, why skipped)]). Raises UploadInvalid when the zip
    itself is unusable or holds no valid MIDI file.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadInvalid(f"the upload is not a readable zip file: {exc}") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_ZIP_FILES:
            raise UploadInvalid(f"the zip must hold at most {MAX_ZIP_FILES} files, got {len(members)}")
        kept, skipped, total = [], [], 0
        for i, member in enumerate(members):
            name = member.filename
            if Path(name).suffix.lower() not in MIDI_EXTENSIONS or "__MACOSX" in name:
                skipped.append((name, f"not a {'/'.join(MIDI_EXTENSIONS)} file"))
                continue
            if member.file_size > MAX_MIDI_BYTES:
                skipped.append((name, f"larger than {MAX_MIDI_BYTES} bytes"))
                continue
            total += member.file_size
            if total > MAX_ZIP_TOTAL:
                raise UploadInvalid(f"the zip must unpack to at most {MAX_ZIP_TOTAL} bytes")
            try:
                with archive.open(member) as f:
                    data = f.read(MAX_MIDI_BYTES + 1)      # never trust the declared size
                check_midi(data, name)
            except UploadInvalid as exc:
                skipped.append((name, str(exc)))
                continue
            except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as exc:  # corrupt or encrypted
                skipped.append((name, f"cannot be read from the zip: {exc}"))
                continue
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)[-80:]
            kept.append(atomic_write(Path(dest) / f"{i:05d}-{safe}", data))
    if not kept:
        reasons = "; ".join(f"{n}: {why}" for n, why in skipped[:5])
        raise UploadInvalid(f"the zip holds no usable MIDI file ({len(skipped)} skipped{': ' + reasons if reasons else ''})")
    return kept, skipped
