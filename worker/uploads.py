"""Bounded checks of what users upload: a primer MIDI file, a zip of MIDI files to train on.

Workers run these before anything else touches the bytes, so a broken, huge or hostile file
becomes a failed job with a message, never a crashed worker or a hung job: sizes are checked
before reading, and each MIDI file goes through model/representation/midi_check.py (the checker the API and the
CLI use too), whose messages say what is wrong with the file; note counts and lengths are capped
before pretty_midi or music21 allocate anything by length.
"""
import re
import zipfile
from pathlib import Path

from model import MIDI_EXTENSIONS
from model.representation import midi_check
from model.representation.files import atomic_write
from model.representation.midi_check import MAX_NOTES, MAX_SECONDS, MAX_TICKS  # noqa: F401  (bounds, patched in tests)

MAX_MIDI_BYTES = 2 * 1024 * 1024        # one file of a training zip (a primer: model.generation.params.MAX_PRIMER_BYTES)
MAX_ZIP_FILES = 5000
MAX_ZIP_TOTAL = 256 * 1024 * 1024


class UploadInvalid(ValueError):
    """An upload that cannot be used; the message says why and what is allowed."""


def check_midi(data: bytes, what: str = "MIDI file", max_bytes: int | None = None) -> int:
    """model/representation/midi_check.py's check within this module's bounds (at most `max_bytes`, default
    MAX_MIDI_BYTES); return the note count or raise UploadInvalid."""
    try:
        summary = midi_check.check_midi(data, what, MAX_MIDI_BYTES if max_bytes is None else max_bytes,
                                        max_notes=MAX_NOTES, max_seconds=MAX_SECONDS)
    except midi_check.MidiInvalid as exc:
        raise UploadInvalid(str(exc)) from None
    return summary.notes


class Stopped(Exception):
    """`should_stop()` came true while unpacking (the job was cancelled)."""


def extract_midi_zip(zip_path, dest, should_stop=None) -> tuple[list[Path], list[tuple[str, str]]]:
    """Unpack the valid MIDI files of a zip into `dest` (flat, renamed, atomically).

    Returns (files kept, [(member name, why skipped)]). Raises UploadInvalid when the zip
    itself is unusable or holds no valid MIDI file, and Stopped when `should_stop()` comes true
    (it is asked between files).
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
            if should_stop is not None and should_stop():
                raise Stopped()
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
