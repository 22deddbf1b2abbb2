"""Files written all at once: the one atomic-write helper every layer uses.

The bytes go to a temporary file in the same folder, are flushed to disk, and the file is moved
into place with ``os.replace``; so a reader, or a second writer doing the same (a re-delivered
task), sees the old file or the whole new one, never half of one, and a crash or Ctrl-C leaves
no partial file behind. Corpus caches and checkpoints (model/) and job artifacts, uploads and
registered models (worker/) are all written this way.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path, keep_existing: bool = False):
    """A binary file to write ``path``'s new content into; it replaces ``path`` when the block ends
    without an exception (and is removed when one is raised). ``keep_existing``: a file already at
    ``path`` stays as it is, inode and times (for content-addressed files, whose content is the same
    whoever wrote it first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # the usual permissions (umask)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if keep_existing:
            try:
                os.link(tmp, path)               # fails if the file exists: the first writer's stays
            except FileExistsError:
                pass
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path, data: bytes, keep_existing: bool = False) -> Path:
    """Write ``data`` to ``path`` all at once (``keep_existing``: see atomic_output); returns the path."""
    with atomic_output(path, keep_existing) as f:
        f.write(data)
    return Path(path)


def atomic_copy(source, path) -> Path:
    """Copy the file ``source`` to ``path`` all at once; returns the path."""
    with open(source, "rb") as src, atomic_output(path) as f:
        shutil.copyfileobj(src, f)
    return Path(path)
