"""Self-describing checkpoints: everything needed to rebuild and to explain a melody network.

A checkpoint is a ``torch.save`` of a dict of plain types and tensors (so it loads with
``weights_only=True``): ``format``, ``network_config``, ``tokenizer_config``, ``vocab``, ``model``
(the state_dict), ``code_version`` and whatever the writer adds (training writes ``epoch``,
``step``, ``metrics``, ``history``, ``train_config``, ``data``, and in its resume file also
``optimizer``, ``scheduler``, ``rng``). Files are written atomically (temporary file + rename),
so a crash or Ctrl-C never leaves a half-written checkpoint behind.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import torch

from model import DEFAULT_MODEL_PATH
from model.representation.files import atomic_output
from model.network.melody import MelodyNetwork, NetworkConfig
from model.representation.tokens import MelodyTokenizer

FORMAT = "tunesmith-melody-1"


def code_version() -> str:
    """``git describe`` of the source tree when it is a git checkout, else the package version."""
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:
            out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=root,
                                 capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return "git:" + out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        from importlib.metadata import version
        return "tunesmith " + version("tunesmith")
    except Exception:  # not installed (running from a source tree without git)
        return "unknown"


def plain(value):
    """Turn numpy scalars/arrays, tuples and paths into types ``weights_only`` loading accepts."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def save_checkpoint(path, model: MelodyNetwork, tokenizer: MelodyTokenizer, *, state_dict=None,
                    **fields) -> Path:
    """Write ``model`` + ``tokenizer`` + ``fields`` to ``path`` atomically; returns the path.

    ``state_dict`` replaces the model's current weights in the file (training stores its best
    weights this way). Tensors in ``fields`` (optimizer state, RNG state) are kept as tensors;
    everything else is converted to plain Python types.
    """
    path = Path(path)
    ckpt = {
        "format": FORMAT,
        "network_config": plain(model.config.to_dict()),
        "tokenizer_config": plain(tokenizer.to_dict()),
        "vocab": list(tokenizer.vocab),
        "model": {k: v.detach().clone() for k, v in (state_dict or model.state_dict()).items()},
        "code_version": code_version(),
    }
    for key, value in fields.items():
        ckpt[key] = value if _has_tensors(value) else plain(value)
    return _write_atomic(path, ckpt)


def update_checkpoint(path, **fields) -> Path:
    """Set (plain, tensor-free) ``fields`` in the checkpoint at ``path``, atomically; the rest stays."""
    ckpt = read_checkpoint(path)
    ckpt.update({key: plain(value) for key, value in fields.items()})
    return _write_atomic(Path(path), ckpt)


def _write_atomic(path: Path, ckpt: dict) -> Path:
    with atomic_output(path) as f:  # readers see the old file or the new one
        torch.save(ckpt, f)
    return path


def _has_tensors(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        return any(_has_tensors(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_tensors(v) for v in value)
    return False


def read_checkpoint(path) -> dict:
    """The checkpoint dict, on the CPU; raises FileNotFoundError or ValueError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files, foreign formats
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a Tunesmith checkpoint (format must be {FORMAT!r}, got {found!r})")
    return ckpt


def load_checkpoint(path=None, *, weights: str = "model") -> tuple[MelodyNetwork, MelodyTokenizer, dict]:
    """Rebuild (network in eval mode, tokenizer, checkpoint dict) from a file (default: the shipped model).

    ``weights`` names the state_dict to load (``"model"``; resume files also hold ``"last_model"``).
    """
    ckpt = read_checkpoint(DEFAULT_MODEL_PATH if path is None else path)
    tokenizer = MelodyTokenizer.from_dict(ckpt["tokenizer_config"])
    if list(ckpt["vocab"]) != tokenizer.vocab:
        raise ValueError("the checkpoint's vocabulary does not match its tokenizer config "
                         "(the token format changed since it was trained)")
    model = MelodyNetwork(NetworkConfig.from_dict(ckpt["network_config"]))
    model.load_state_dict(ckpt[weights])
    model.eval()
    return model, tokenizer, ckpt
