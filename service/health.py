"""Health endpoints: `/healthz` (this process answers) and `/readyz` (the broker answers, a
worker serves each queue, the default model loads, every generate worker has loaded and warmed it
(its heartbeat in Redis says so, worker/model_host.py), the storage folder takes a write), with the
reasons when not ready, and warnings that do not stop it being ready (a Redis that keeps nothing on disk).

The model check is the registry's (`worker.checkpoint_problem`): what a generate worker that
loaded the checkpoint said of it in Redis, else the checkpoint loaded in a child process, so the
API process never imports torch (it would add hundreds of MB to every gunicorn worker that answers
/readyz). While every generate worker is still loading the default, that child is not started:
it would compete with them for the CPU, and they say soon enough whether it loads. A generate
worker that said it is loading (before it answers on its queue) is waited for like one that answers."""
from flask import Blueprint, current_app, jsonify

from worker import checkpoint_problem, loaded_defaults, loading_workers, persistence_warning, storage_check, without_paths

bp = Blueprint("health", __name__)

QUEUES = ("generate", "train")


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    runtime = current_app.extensions["tunesmith"]
    reasons, checks = [], {}
    try:
        runtime.redis.ping()
        checks["broker"] = "ok"
    except Exception as exc:          # any failure to reach Redis means not ready
        current_app.logger.warning("readyz: broker unreachable: %s", exc)   # its address: the log's only
        checks["broker"] = f"unreachable ({type(exc).__name__})"
        reasons.append(f"broker unreachable ({type(exc).__name__})")
    warnings = []
    if checks["broker"] == "ok":
        checks["persistence"] = persistence_warning(runtime.redis) or "ok"
        if checks["persistence"] != "ok":
            warnings.append(checks["persistence"])
        served = runtime.queues_served(timeout=1.0)
        checks["workers"] = {q: sorted(w for w, qs in served.items() if q in qs) for q in QUEUES}
        reasons += [f"no worker answering on queue {q!r}" for q in QUEUES if not checks["workers"][q]]
    try:  # the registry lives in Redis: without it, check the shipped model
        name = runtime.models.default_name()
        path = runtime.models.path(name)
    except Exception:
        name, path = "default", None
    waiting, answering = [], checks.get("workers", {}).get("generate", [])
    if checks["broker"] == "ok":
        if answering:
            loaded = loaded_defaults(runtime.redis, runtime.jobs.prefix)
            checks["models_loaded"] = {w: loaded.get(w) for w in answering}
            waiting = [w for w, model in checks["models_loaded"].items() if model != name]
        # a worker loads its models before it answers on its queue: one that said so is waited for too
        loading = [w for w in loading_workers(runtime.redis, runtime.jobs.prefix) if w not in answering]
        if loading:
            checks["models_loading"] = loading
            waiting += loading
    if waiting and name not in checks.get("models_loaded", {}).values():  # no worker has it loaded yet
        checks["default_model"] = {"name": name, "status": "loading"}   # the workers will tell (see above)
    else:
        problem = checkpoint_problem(path or runtime.models.shipped_path,
                                     runtime.redis if checks["broker"] == "ok" else None, runtime.jobs.prefix)
        problem = problem and without_paths(problem)
        checks["default_model"] = {"name": name, "status": problem or "ok"}
        if problem:
            reasons.append(f"default model {name!r} not loadable: {problem}")
    checks["storage"] = storage_check(runtime.home)
    if checks["storage"]["status"] != "ok":
        reasons.append(f"storage {checks['storage']['status']}: new jobs and files cannot be written")
    if waiting:
        reasons.append(f"generate worker(s) {', '.join(waiting)} have not loaded the default model {name!r} yet")
    body = {"ready": not reasons, "reasons": reasons, "warnings": warnings, "checks": checks}
    return jsonify(body), 200 if not reasons else 503
