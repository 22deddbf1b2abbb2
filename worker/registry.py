"""The model registry: named checkpoints, and which one is the default for new requests.

With Redis (every Runtime: the API and each worker), the registry lives there, so workers on other
machines need nothing but REDIS_URL:

    <prefix>models                  hash: name -> meta JSON (name, created, data, metrics, job, sha256, bytes, styles)
    <prefix>models:default          the default model's name; absent = "default"
    <prefix>model-file:<sha256>     the checkpoint's bytes, stored once per content (no expiry)

and each process fetches a checkpoint by its content hash into its own
TUNESMITH_HOME/model-cache/<sha256>.pt the first time it needs it (checked against the hash,
written atomically), so a cached file never goes stale and a name always means the bytes that were
registered. Without Redis (``redis=None``: tools and tests), the same calls use files:

    models/<name>/model.pt     the checkpoint (copied in atomically when a training job ends)
    models/<name>/meta.json    name, created, data, metrics, job, styles
    models/default.json        {"name": ...}

and models registered that way under a home stay visible beside the Redis ones. The shipped
checkpoint (model/weights/default.pt, or TUNESMITH_DEFAULT_MODEL) is always registered as
"default"; every process has it from the package. A worker keys its loaded model by checkpoint path
and modification time, so a new default is picked up by the next task without restarting anything.

`checkpoint_problem(path)` says whether a checkpoint loads (for /readyz) and
`checkpoint_vocabulary(path)` what it can write (its tokenizer's pitch range and meters, its
network's styles: for checking a request when it arrives). A generate worker that has loaded a
checkpoint says so in Redis (`publish_vocabulary`: ``<prefix>checkpoint:<path>:<mtime>``), and given
a Redis client both read that first; otherwise they load it once per file version in a child
process, so the process that asks (the API) never imports torch. A model's styles are read
from its checkpoint when it is registered and kept in its meta (the shipped model's, and those of a
model registered before styles existed, when it is first described), so listing models loads
nothing; `get` and `list` describe each style (model/representation/styles.py).
"""
import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import model                                  # the package root only: no torch here
from model import DEFAULT_MODEL_PATH
from model.representation.files import atomic_copy, atomic_write
from model.representation.styles import STYLE_DESCRIPTIONS

SHIPPED_NAME = "default"
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)


class ModelRegistry:
    def __init__(self, home, shipped_path=None, redis=None, prefix: str = "tunesmith:"):
        self.root = Path(home) / "models"
        self.cache = Path(home) / "model-cache"
        self.shipped_path = Path(shipped_path) if shipped_path else DEFAULT_MODEL_PATH
        self.redis, self.prefix = redis, prefix

    # ---- Redis keys ------------------------------------------------------------------------------

    @property
    def _index(self) -> str:
        return f"{self.prefix}models"

    @property
    def _default_key(self) -> str:
        return f"{self.prefix}models:default"

    def _file_key(self, sha: str) -> str:
        return f"{self.prefix}model-file:{sha}"

    def _shared(self, name: str) -> dict | None:
        """A model's meta in Redis, or None."""
        if self.redis is None:
            return None
        raw = self.redis.hget(self._index, name)
        return json.loads(raw) if raw else None

    def _local(self, name: str) -> Path | None:
        path = self.root / name / "model.pt"
        return path if path.is_file() else None

    # ---- the calls -------------------------------------------------------------------------------

    def valid_name(self, name: str) -> bool:
        return bool(_NAME_RE.match(name or ""))

    def path(self, name: str) -> Path | None:
        """The checkpoint of a registered model on this machine's disk (fetched into the cache by
        content hash the first time), or None."""
        if name == SHIPPED_NAME:
            return self.shipped_path if self.shipped_path.is_file() else None
        if not self.valid_name(name):
            return None
        meta = self._shared(name)
        if meta is None:
            return self._local(name)
        return self._fetch(meta["sha256"])

    def _fetch(self, sha: str) -> Path | None:
        cached = self.cache / f"{sha}.pt"
        if cached.is_file():
            return cached
        data = self.redis.get(self._file_key(sha))
        if data is None or hashlib.sha256(data).hexdigest() != sha:
            return None          # gone or damaged in Redis: not available (never a wrong model)
        # two pool processes may fetch it at once: the first file stays, so its modification time
        # (part of a generate worker's key for a loaded model) does not change under a running batch
        return atomic_write(cached, data, keep_existing=True)

    def default_name(self) -> str:
        if self.redis is not None:
            name = self.redis.get(self._default_key)
            name = name.decode() if name else None
        else:
            try:
                name = json.loads((self.root / "default.json").read_text())["name"]
            except (OSError, ValueError, KeyError):
                name = None
        return name if name and self.name_taken(name) else SHIPPED_NAME

    def set_default(self, name: str) -> None:
        if self.path(name) is None:
            raise KeyError(name)
        if self.redis is not None:
            self.redis.set(self._default_key, name)
        else:
            atomic_write(self.root / "default.json", json.dumps({"name": name}).encode())

    def get(self, name: str) -> dict | None:
        if name == SHIPPED_NAME:
            path = self.shipped_path
            sidecar = path.with_suffix(".json")
            meta = _read_json(sidecar) if sidecar.is_file() else {}
            if "data" not in meta:  # what its checkpoint says it was trained on
                meta["data"] = (checkpoint_vocabulary(path) or {}).get("data")
            meta.update(name=SHIPPED_NAME, shipped=True)
            meta.setdefault("created", _mtime_iso(path) if path.exists() else None)
            meta["available"] = path.is_file()
        elif (shared := self._shared(name)) is not None:
            meta = dict(shared)
            meta["available"] = (self.cache / f"{meta['sha256']}.pt").is_file() \
                or bool(self.redis.exists(self._file_key(meta["sha256"])))
        elif (path := self._local(name)) is not None:
            meta = _read_json(path.parent / "meta.json")
            meta.update(name=name, available=True)
        else:
            return None
        meta["default"] = name == self.default_name()
        meta["styles"] = self._styles(name, meta)
        return meta

    def _styles(self, name: str, meta: dict) -> list[dict] | None:
        """The model's styles, each {"name", "description"}, in the network's id order: [] when it has
        no style input, None when its checkpoint is not here or does not load."""
        names = meta.get("styles")
        if names is None and meta["available"]:       # the shipped model, or registered before styles
            names = checkpoint_styles(self.path(name))
        if names is None:
            return None
        return [{"name": s, "description": STYLE_DESCRIPTIONS.get(s, s)} for s in names]

    def list(self) -> list[dict]:
        names = set()
        if self.redis is not None:
            names |= {n.decode() for n in self.redis.hkeys(self._index)}
        if self.root.is_dir():
            names |= {p.name for p in self.root.iterdir() if (p / "model.pt").is_file()}
        names.discard(SHIPPED_NAME)
        return [self.get(n) for n in [SHIPPED_NAME] + sorted(names)]

    def register(self, name: str, checkpoint, meta: dict) -> str:
        """Register a checkpoint under `name` (or `name-2`, ... when taken); returns the name used.
        A re-delivered job's second call returns the name its first call took."""
        if not self.valid_name(name) or name == SHIPPED_NAME:
            raise ValueError(f"model name must match {NAME_PATTERN} and not be 'default', got {name!r}")
        job = meta.get("job")
        styles = checkpoint_styles(checkpoint)          # what the registry says of the model without loading it
        meta = {**meta, "styles": styles} if styles is not None else meta
        if self.redis is None:
            return self._register_file(name, checkpoint, meta, job)
        data = Path(checkpoint).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        self.redis.set(self._file_key(sha), data, nx=True)   # the bytes first: a record never points at nothing
        atomic_write(self.cache / f"{sha}.pt", data, keep_existing=True)   # content-addressed: a copy in use stays
        final, n = name, 1
        while True:
            taken = self._shared(final)
            if taken is not None:
                if job and taken.get("job") == job:
                    return final
            elif self._local(final) is None:
                record = {**meta, "name": final, "created": meta.get("created") or _now_iso(),
                          "sha256": sha, "bytes": len(data)}
                if self.redis.hsetnx(self._index, final, json.dumps(record)):
                    return final
                continue  # another process took the name between our read and write: look again
            n += 1
            final = f"{name}-{n}"

    def _register_file(self, name: str, checkpoint, meta: dict, job) -> str:
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
        return name == SHIPPED_NAME or self._shared(name) is not None or self._local(name) is not None


CHECK_TIMEOUT_S = 120
PUBLISHED_TTL_S = 7 * 24 * 3600
_checked: dict = {}          # (path, mtime) -> (None | error text, vocabulary | None); one load per file version
# argv[1]: the checkpoint; prints what its tokenizer can write (JSON), or why it does not load (and exits 1)
_LOAD_CHECKPOINT = """import json, sys
import torch
torch.set_num_threads(1)
from model.network.checkpoint import load_checkpoint
try:
    model, tokenizer, ckpt = load_checkpoint(sys.argv[1])
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(1)
from worker.registry import vocabulary_of
print(json.dumps(vocabulary_of(tokenizer, model.config, ckpt.get("train_config"))))
"""


def vocabulary_of(tokenizer, network_config, train_config: dict | None) -> dict:
    """What a loaded checkpoint can write (``checkpoint_vocabulary``'s answer)."""
    c = tokenizer.config
    return {"min_pitch": c.min_pitch, "max_pitch": c.max_pitch, "meters": list(c.meters),
            "styles": list(network_config.styles) if network_config.style_dim else [],
            "data": (train_config or {}).get("data")}


def _published_key(prefix: str, path) -> str:
    return f"{prefix}checkpoint:{Path(path).resolve()}:{os.path.getmtime(path)!r}"


def publish_vocabulary(redis, prefix: str, path, vocabulary: dict) -> None:
    """A process that has loaded the checkpoint at ``path`` (a generate worker) says what it can
    write, so that the API's checks need not load it again."""
    redis.set(_published_key(prefix, path), json.dumps(vocabulary), ex=PUBLISHED_TTL_S)


def _check(path, redis=None, prefix: str = "tunesmith:") -> tuple[str | None, dict | None]:
    if path is None or not os.path.isfile(path):
        return "no checkpoint file", None
    key = (str(path), os.path.getmtime(path))
    if key not in _checked and redis is not None:
        published = redis.get(_published_key(prefix, path))
        if published is not None:
            _checked[key] = None, json.loads(published)
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


def checkpoint_problem(path, redis=None, prefix: str = "tunesmith:") -> str | None:
    """None when the checkpoint loads, else why not (cached per file version; with ``redis``, what
    a generate worker published of it first)."""
    return _check(path, redis, prefix)[0]


def checkpoint_vocabulary(path, redis=None, prefix: str = "tunesmith:") -> dict | None:
    """What the checkpoint can write, {"min_pitch", "max_pitch", "meters"} (its tokenizer's),
    "styles" (its network's style input, in id order; [] without one) and "data" (what it was
    trained on, None where it does not say), None when it does not load,
    so that the API checks a request against the model without importing torch (with ``redis``,
    what a generate worker published of it first)."""
    return _check(path, redis, prefix)[1]


def checkpoint_styles(path) -> list[str] | None:
    """The styles of the checkpoint's network ([] without a style input; None when it does not load)."""
    vocabulary = checkpoint_vocabulary(path)
    return None if vocabulary is None else vocabulary["styles"]


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
