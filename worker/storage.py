"""Files on disk under TUNESMITH_HOME: one folder per job (`jobs/<id>/`), written atomically
(model/representation/files.py), and removed on the expiry schedule.

A reader (the API serving a download, or a re-delivered task writing the same file again) sees
either no file or the whole file, never half of one, and never two copies.
"""
import shutil
import time
from pathlib import Path



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
