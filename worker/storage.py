"""Files on disk under TUNESMITH_HOME: one folder per job (`jobs/<id>/`), written atomically
(model/representation/files.py), and removed on the expiry schedule.

A reader (the API serving a download, or a re-delivered task writing the same file again) sees
either no file or the whole file, never half of one, and never two copies.
"""
import errno
import os
import shutil
import time
from pathlib import Path

from model.representation.files import atomic_write

# A write refused for these reasons is the server's storage, not the request: it passes when space
# is freed (or the file system is made writable again), so the answer is "try again later".
STORAGE_ERRNOS = {errno.ENOSPC: "full", errno.EDQUOT: "over its quota", errno.EROFS: "read-only"}


def storage_problem(exc: BaseException) -> str | None:
    """None, or what is wrong with the storage when `exc` is a write it refused ("full", ...)."""
    return STORAGE_ERRNOS.get(exc.errno) if isinstance(exc, OSError) else None


def storage_check(home, probe_bytes: int = 4096) -> dict:
    """Whether `home` takes a write now: a small file written (atomically, as every job file is) and
    removed. {"status": "ok" | "full" | "read-only" | ..., "free_mb": ...}."""
    try:
        stats = os.statvfs(home)
        free_mb = round(stats.f_bavail * stats.f_frsize / 2**20, 1)
    except OSError:
        free_mb = None
    probe = Path(home) / f".probe-{os.getpid()}"
    try:
        atomic_write(probe, b"\0" * probe_bytes)
        probe.unlink()
        status = "ok"
    except OSError as exc:
        status = storage_problem(exc) or f"unwritable ({type(exc).__name__})"
    return {"status": status, "free_mb": free_mb}


def job_dir(home, job_id: str) -> Path:
    return Path(home) / "jobs" / job_id


def artifact_name(index: int, ext: str) -> str:
    """A melody file in its job folder (written by worker/generation.py, served by service/downloads.py)."""
    return f"melody-{index}.{ext}"


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
