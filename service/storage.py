"""Files on disk under TUNESMITH_HOME: one folder per job (`jobs/<id>/`), written
atomically, and removed on the expiry schedule.

Every artifact is written to a temporary file in the same folder and moved into place with
`os.replace`, so a reader (or a re-delivered task writing the same file again) sees either
no file or the whole file, never half of one, and never two copies.
"""
import os
import shutil
import tempfile
import time
from pathlib import Path


def job_dir(home, job_id: str) -> Path:
    return Path(home) / "jobs" / job_id


def artifact_name(index: int, ext: str) -> str:
    """A melody file in its job folder (written by worker/generation.py, served by service/downloads.py)."""
    return f"melody-{index}.{ext}"


def atomic_write(path, data: bytes) -> Path:
    """Write `data` to `path` all at once (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_copy(source, path) -> Path:
    """Copy a file into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, path)
    return path


def sweep_expired(home, job_exists, ttl: int, now: float | None = None) -> list[str]:
    """Remove job folders whose record has expired and that nobody wrote for `ttl` seconds.

    `job_exists(job_id) -> bool` asks the job store. Returns the removed job ids.
    """
    root = Path(home) / "jobs"
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    removed = []
    for folder in root.iterdir():
        if not folder.is_dir() or job_exists(folder.name):
            continue
        newest = max((p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime)
        if now - newest > ttl:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed
