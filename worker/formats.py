"""A melody job's files: where the API finds them, and those rendered on first download.

A generate job stores what it answers with (worker/generation.py): per melody its MIDI and its JSON
(tokens, notes, tempo). MusicXML (music21, ~70 ms a 16-bar melody and ~0.5 s the first time in a
process) and the zip of every file are rendered here the first time someone asks, in the process
that serves the download (the API's, service/downloads.py), and kept beside the stored files. No
generation waits for them. The WAV is rendered the same way from the MIDI (service/audio.py).

Caching is create-if-absent: a render is written to a temporary file that is then hard-linked to
its final name, which fails when another process got there first; that one's file is then served.
So every download of a file gives the same bytes, the first (which rendered it) included, although
two renders of MusicXML differ (music21 writes a random part id and the date).

A job's stored files are also kept in Redis (`<prefix>files:<id>`, zlib-compressed, with the job's
time to live; about 1 KB a 16-bar melody), so an API process on another machine than the worker
serves them: `fetch(name) -> bytes | None` reads them there, and the first download caches them in
the API's own TUNESMITH_HOME, which the API sweeps as the workers sweep theirs (service/downloads.py).
"""
import io
import json
import os
import zipfile
import zlib
from pathlib import Path

from model.representation.files import atomic_write
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


def stored_file(folder: Path, name: str, fetch=None) -> Path | None:
    """A file the job stored: on this disk, or fetched (from Redis) and cached here; None if neither."""
    path = folder / name
    if path.exists() or fetch is None:
        return path if path.exists() else None
    data = fetch(name)
    return None if data is None else cached(path, lambda: data)


def melody_file(folder: Path, index: int, ext: str, fetch=None) -> Path | None:
    """Melody `index`'s file in `ext`, fetched or rendered and cached when needed; None when there is
    no such melody."""
    if ext in RENDERED:
        path = folder / artifact_name(index, ext)
        if path.exists():
            return path
        source = stored_file(folder, artifact_name(index, "json"), fetch)
        return None if source is None else cached(path, lambda: render_musicxml(source.read_bytes()))
    return stored_file(folder, artifact_name(index, ext), fetch)


def render_musicxml(melody_json: bytes) -> bytes:
    """The melody's MusicXML, with its chord symbols when its JSON carries chords."""
    from model.representation import notation
    melody = json.loads(melody_json)
    score = notation.Score.from_melody_json(melody)
    symbols = [(round(c["start_beats"] * score.steps_per_quarter), c["chord"]) for c in melody.get("chords", ())]
    return notation.musicxml_bytes(score, symbols)


def job_zip(folder: Path, job_id: str, count: int, fetch=None) -> Path:
    """The zip of every melody of a job in every format (MIDI, MusicXML, JSON), cached."""
    def render():
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for index in range(count):
                for ext in ("mid", "musicxml", "json"):
                    zf.writestr(f"tunesmith-{job_id[:8]}-{index}.{ext}", melody_file(folder, index, ext, fetch).read_bytes())
        return archive.getvalue()
    return cached(folder / "melodies.zip", render)


class KeptFiles:
    """A job's stored files in Redis: `keep(job_id, {name: bytes})` (the worker), `fetcher(job_id)`
    (the API: the `fetch` of the functions above)."""

    def __init__(self, redis, prefix: str, ttl: int):
        self.redis, self.prefix, self.ttl = redis, prefix, int(ttl)

    def key(self, job_id: str) -> str:
        return f"{self.prefix}files:{job_id}"

    def keep(self, job_id: str, files: dict, pipe=None) -> None:
        """Keep the files in Redis (on `pipe`, a pipeline, when given: the caller executes it)."""
        if pipe is None:
            with self.redis.pipeline(transaction=False) as pipe:
                self.keep(job_id, files, pipe)
                pipe.execute()
            return
        pipe.hset(self.key(job_id), mapping={name: zlib.compress(data, 1) for name, data in files.items()})
        pipe.expire(self.key(job_id), self.ttl)

    def fetcher(self, job_id: str):
        def fetch(name: str) -> bytes | None:
            data = self.redis.hget(self.key(job_id), name)
            return None if data is None else zlib.decompress(data)
        return fetch
