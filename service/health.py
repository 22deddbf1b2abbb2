"""Health endpoints: `/healthz` (this process answers) and `/readyz` (the broker answers, a
worker serves each queue, the default model loads), with the reasons when not ready.

The model check loads the checkpoint in a child process: the API process never imports torch
(it would add hundreds of MB to every gunicorn worker that answers /readyz)."""
import os
import subprocess
import sys
from pathlib import Path

from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)

QUEUES = ("generate", "train")
MODEL_CHECK_TIMEOUT_S = 120
_model_checks: dict = {}          # (path, mtime) -> None | error text; one load per file version
# argv[1]: the checkpoint; prints why it does not load (and exits 1), or nothing
_LOAD_CHECKPOINT = """import sys
import torch
torch.set_num_threads(1)
from model.checkpoint import load_checkpoint
try:
    load_checkpoint(sys.argv[1])
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(1)
"""


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    services = current_app.extensions["tunesmith"]
    reasons, checks = [], {}
    try:
        services.redis.ping()
        checks["broker"] = "ok"
    except Exception as exc:          # any failure to reach Redis means not ready
        checks["broker"] = f"unreachable: {exc}"
        reasons.append(f"broker unreachable: {exc}")
    if checks["broker"] == "ok":
        served = queues_served(current_app.extensions["celery"], timeout=1.0)
        checks["workers"] = {q: sorted(w for w, qs in served.items() if q in qs) for q in QUEUES}
        reasons += [f"no worker answering on queue {q!r}" for q in QUEUES if not checks["workers"][q]]
    name = services.models.default_name()
    problem = model_problem(services.models.path(name) or services.models.shipped_path)
    checks["default_model"] = {"name": name, "status": problem or "ok"}
    if problem:
        reasons.append(f"default model {name!r} not loadable: {problem}")
    body = {"ready": not reasons, "reasons": reasons, "checks": checks}
    return jsonify(body), 200 if not reasons else 503


def queues_served(celery_app, timeout=1.0) -> dict:
    """{worker name: set of queue names} from the workers that answer within `timeout`."""
    replies = celery_app.control.inspect(timeout=timeout).active_queues() or {}
    return {worker: {q["name"] for q in queues} for worker, queues in replies.items()}


def model_problem(path) -> str | None:
    """None when the checkpoint loads, else why not (cached per file version)."""
    if path is None or not os.path.isfile(path):
        return f"no checkpoint file at {path}"
    key = (str(path), os.path.getmtime(path))
    if key not in _model_checks:
        import model                   # the package root (no torch): where the child finds `model`
        try:
            out = subprocess.run([sys.executable, "-c", _LOAD_CHECKPOINT, str(path)], capture_output=True,
                                 text=True, timeout=MODEL_CHECK_TIMEOUT_S,
                                 cwd=Path(model.__file__).resolve().parent.parent)
        except subprocess.TimeoutExpired:  # not cached: a busy machine may load it next time
            return f"loading the checkpoint took over {MODEL_CHECK_TIMEOUT_S} s"
        # a broken file makes us not ready (its reason printed by the child), never crashes us
        _model_checks[key] = None if out.returncode == 0 else (
            out.stdout.strip() or out.stderr.strip()[-300:] or f"the check exited with status {out.returncode}")
    return _model_checks[key]
