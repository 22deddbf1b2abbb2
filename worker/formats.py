"""A melody job's files beyond what it stores: rendered on first download, cached, never by a worker.

A generate job stores what it answers with (worker/generation.py): per melody its MIDI and its JSON
(tokens, notes, tempo). MusicXML (music21, ~70 ms a 16-bar melody and ~0.5 s the first time in a
process) and the zip of every file are rendered here the first time someone asks, in the process
that serves the download (the API's, service/downloads.py), and kept beside the stored files. No
generation waits for them. The WAV is rendered the same way from the MIDI (service/audio.py).

Caching is create-if-absent: a render is written to a temporary file that is then hard-linked to
its final name, which fails when another process got there first; that one's file is then served.
So every download of a file gives the same bytes, the first (which rendered it) included, although
two renders of MusicXML differ (music21 writes a random part id and the date).
"""
import io
import json
import os
import zipfile
from pathlib import Path

from model.files import atomic_write
from worker.storage import artifact_name

RENDERED = ("musicxml",)       # per melody; the zip is per job


def cached(path: Path, render) -> Path:
    """`path`, rendering it with `render() -> bytes` first when it does not exist yet."""
    if path.exists():
        return path
    data = render()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    atomic_write(temporary, data)
    try:
        os.link(temporary, path)            # fails if another process cached it meanwhile: keep theirs
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return path


def melody_file(folder: Path, index: int, ext: str) -> Path | None:
    """Melody `index`'s file in `ext`, rendered and cached when needed; None when there is no such melody."""
    path = folder / artifact_name(index, ext)
    source = folder / artifact_name(index, "json")
    if ext in RENDERED and not path.exists() and source.exists():
        return cached(path, lambda: render_musicxml(source.read_bytes()))
    return path if path.exists() else None


def render_musicxml(melody_json: bytes) -> bytes:
    from model import notation
    return notation.musicxml_bytes(notation.Score.from_melody_json(json.loads(melody_json)))


def job_zip(folder: Path, job_id: str, count: int) -> Path:
    """The zip of every melody of a job in every format (MIDI, MusicXML, JSON), cached."""
    def render():
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for index in range(count):
                for ext in ("mid", "musicxml", "json"):
                    zf.writestr(f"tunesmith-{job_id[:8]}-{index}.{ext}", melody_file(folder, index, ext).read_bytes())
        return archive.getvalue()
    return cached(folder / "melodies.zip", render)
