"""What a test run may not leave behind: files in the checkout that git does not track.

`untracked_files()` lists them (ignored ones included, so a cache git ignores still counts),
leaving out the code caches Python and numba keep beside the code (`__pycache__`) and the
tools' own folders (.venv, .pytest_cache, *.egg-info).
"""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_TRACES = ("__pycache__/", ".venv/", ".pytest_cache/", ".egg-info/")


def untracked_files(root=ROOT) -> set[str]:
    """Paths under `root` that git does not track, except code caches and tool folders."""
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "-z"],
                         cwd=root, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:               # not a git checkout (an unpacked source tree): nothing to compare
        return set()
    paths = set()
    for entry in out.stdout.split("\0"):
        if entry[:3] in ("?? ", "!! ") and not any(part in entry for part in NOT_TRACES):
            paths.add(entry[3:])
    return paths
