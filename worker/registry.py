"""The model registry: named checkpoints under TUNESMITH_HOME/models, and which one is the
default for new requests.

    models/<name>/model.pt     the checkpoint (copied in atomically when a training job ends)
    models/<name>/meta.json    name, created, data, metrics, job
    models/default.json        {"name": ...}: the default model; absent = "default"

The shipped checkpoint (model/weights/default.pt, or TUNESMITH_DEFAULT_MODEL) is always
registered as "default". The registry lives on disk beside the job artifacts, so the API and
every worker that share TUNESMITH_HOME (one folder, or one Docker volume) see the same models;
a worker keys its loaded model by checkpoint path and modification time, so a new default
is picked up by the next task without restarting anything.

`checkpoint_problem(path)` says whether a checkpoint loads (for /readyz) and
`checkpoint_vocabulary(path)` what its tokenizer can write (pitch range, meters: for checking a
request when it arrives); both load it once per file version in a child process, so the process
that asks (the API) never imports torch.
"""
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import model                                  # the package root only: no torch here
from model import DEFAULT_MODEL_PATH
from model.files import atomic_copy, atomic_write

SHIPPED_NAME = "default"
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)


class ModelRegistry:
    def __init__(self, home, shipped_path=None):
        self.root = Path(home) / "models"
        self.shipped_path = Path(shipped_path) if shipped_path else DEFAULT_MODEL_PATH

    def valid_name(self, name: str) -> bool:
        return bool(_NAME_RE.match(name or ""))

    def path(self, name: str) -> Path | None:
        """The checkpoint of a registered model, or None."""
        if name == SHIPPED_NAME:
            return self.shipped_path if self.shipped_path.is_file() else None
        if not self.valid_name(name):
            return None
        path = self.root / name / "model.pt"
        return path if path.is_file() else None

    def default_name(self) -> str:
        try:
            name = json.loads((self.root / "default.json").read_text())["name"]
        except (OSError, ValueError, KeyError):
            return SHIPPED_NAME
        return name if self.path(name) else SHIPPED_NAME

    def set_default(self, name: str) -> None:
        if self.path(name) is None:
            raise KeyError(name)
        atomic_write(self.root / "default.json", json.dumps({"name": name}).encode())

    def get(self, name: str) -> dict | None:
        path = self.shipped_path if name == SHIPPED_NAME else self.path(name)
        if path is None:
            return None
        if name == SHIPPED_NAME:
            sidecar = path.with_suffix(".json")
            meta = _read_json(sidecar) if sidecar.is_file() else {}
            meta.setdefault("data", "music21:essenFolksong")
            meta.update(name=SHIPPED_NAME, shipped=True)
            meta.setdefault("created", _mtime_iso(path) if path.exists() else None)
        else:
            meta = _read_json(path.parent / "meta.json")
            meta["name"] = name
        meta["available"] = path.is_file()
        meta["default"] = name == self.default_name()
        return meta

    def list(self) -> list[dict]:
        names = [SHIPPED_NAME]
        if self.root.is_dir():
            names += sorted(p.name for p in self.root.iterdir()
                            if p.name != SHIPPED_NAME and (p / "model.pt").is_file())
        return [self.get(n) for n in names]

    def register(self, name: str, checkpoint, meta: dict) -> str:
        """Copy a checkpoint in under `name` (or `name-2`, ... when taken); returns the name used."""
        if not self.valid_name(name) or name == SHIPPED_NAME:
            raise ValueError(f"model name must match {NAME_PATTERN} and not be 'default', got {name!r}")
        job = meta.get("job")
        final, n = name, 1
        while (self.root / final / "model.pt").exists():
            if job and _read_json(self.root / final / "meta.json").get("job") == job:
                return final             # this job registered it already (a re-delivered task)
            n += 1
            final = f"{name}-{n}"
        folder = self.root / final
        atomic_copy(checkpoint, folder / "model.pt")
        meta = {**meta, "name": final, "created": meta.get("created") or _now_iso()}
        atomic_write(folder / "meta.json", json.dumps(meta, indent=1).encode())
        return final

    def name_taken(self, name: str) -> bool:
        return name == SHIPPED_NAME or (self.root / name / "model.pt").exists()


CHECK_TIMEOUT_S = 120
_checked: dict = {}          # (path, mtime) -> (None | error text, vocabulary | None); one load per file version
# argv[1]: the checkpoint; prints what its tokenizer can write (JSON), or why it does not load (and exits 1)
_LOAD_CHECKPOINT = """import json, sys
import torch
torch.set_num_threads(1)
from model.checkpoint import load_checkpoint
try:
    _, tokenizer, _ = load_checkpoint(sys.argv[1])
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(1)
c = tokenizer.config
print(json.dumps({"min_pitch": c.min_pitch, "max_pitch": c.max_pitch, "meters": list(c.meters)}))
"""


def _check(path) -> tuple[str | None, dict | None]:
    if path is None or not os.path.isfile(path):
        return "no checkpoint file", None
    key = (str(path), os.path.getmtime(path))
    if key not in _checked:
        try:       # run where the child finds the `model` package we import
            out = subprocess.run([sys.executable, "-c", _LOAD_CHECKPOINT, str(path)], capture_output=True,
                                 text=True, timeout=CHECK_TIMEOUT_S,
                                 cwd=Path(model.__file__).resolve().parent.parent)
        except subprocess.TimeoutExpired:  # not cached: a busy machine may load it next time
            return f"loading the checkpoint took over {CHECK_TIMEOUT_S} s", None
        # a broken file makes us not ready (its reason printed by the child), never crashes us
        if out.returncode == 0:
            _checked[key] = None, json.loads(out.stdout.strip().splitlines()[-1])
        else:
            _checked[key] = (out.stdout.strip() or out.stderr.strip()[-300:]
                             or f"the check exited with status {out.returncode}"), None
    return _checked[key]


def checkpoint_problem(path) -> str | None:
    """None when the checkpoint loads, else why not (cached per file version)."""
    return _check(path)[0]


def checkpoint_vocabulary(path) -> dict | None:
    """What the checkpoint's tokenizer can write, {"min_pitch", "max_pitch", "meters"} (None when it
    does not load), so that the API checks a request against the model without importing torch."""
    return _check(path)[1]


def _read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _mtime_iso(path) -> str:
    stamp = datetime.fromtimestamp(os.path.getmtime(path), timezone.utc)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
