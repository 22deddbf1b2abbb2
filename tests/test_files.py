"""model/representation/files.py: a file is replaced whole or not at all, and nothing temporary is left."""
import os
import stat

import pytest

from model.representation.files import atomic_copy, atomic_output, atomic_write


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path):
    path = atomic_write(tmp_path / "a" / "model.pt", b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old" and os.listdir(path.parent) == ["model.pt"]


def test_written_and_copied_files_have_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        written = atomic_write(tmp_path / "x.bin", b"data")
        copied = atomic_copy(written, tmp_path / "sub" / "y.bin")
    finally:
        os.umask(umask)
    assert copied.read_bytes() == b"data"
    for path in (written, copied):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644     # not mkstemp's 0600: the API reads what workers write
    assert sorted(os.listdir(tmp_path)) == ["sub", "x.bin"]


def test_keep_existing_leaves_the_first_file_as_it_was(tmp_path):
    """Two processes fetching the same content-addressed file: the second write keeps the first
    file's inode and times (a generate worker keys a loaded model on its modification time)."""
    path = tmp_path / "cache" / "abc.pt"
    atomic_write(path, b"same bytes", keep_existing=True)
    before = os.stat(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns - 10**9))  # older, so a replacement would show
    first = os.stat(path)
    atomic_write(path, b"same bytes", keep_existing=True)
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert path.read_bytes() == b"same bytes"
    assert [p.name for p in path.parent.iterdir()] == ["abc.pt"]          # no temporary file left
    atomic_write(path, b"new bytes")                                      # the default still replaces
    assert path.read_bytes() == b"new bytes" and os.stat(path).st_ino != first.st_ino
