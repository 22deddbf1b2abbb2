"""The JSON API under /api/v1: submit melody and training jobs, read and cancel jobs, list
models and choose the default.

Views validate, have the job runtime store a record and publish the job id (by task name:
`worker.Runtime.submit`), and answer 202 with the job's URL; they never wait on a worker. The
work itself is in worker/.
"""
import base64
import binascii
import hmac
import json
from functools import wraps

from flask import Blueprint, abort, current_app, jsonify, request, url_for

from service.schemas import MelodyRequest, RequestInvalid, TrainingRequest, validate_request
from worker import FINISHED, atomic_write, new_job_id, public_record

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def runtime():
    """This app's job runtime (worker.Runtime): job records, the model registry, storage, the queue."""
    return current_app.extensions["tunesmith"]


def require_token(view):
    """Bearer-token check for training and admin endpoints (open when no token is set)."""
    @wraps(view)
    def checked(*args, **kwargs):
        token = current_app.config["TUNESMITH_TOKEN"]
        if token:
            given = request.headers.get("Authorization", "")
            if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())):
                response = jsonify(error="this endpoint needs 'Authorization: Bearer <token>'")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response, 401
        return view(*args, **kwargs)
    return checked


def submit(kind: str, params: dict, job_id=None, **fields):
    """Queue the job (a broker error propagates: the app answers 503); answer 202 with its URL."""
    record = runtime().submit(kind, params, job_id=job_id, **fields)
    status_url = url_for("api.get_job", job_id=record["id"])
    response = jsonify(id=record["id"], status_url=status_url, state="queued")
    return response, 202, {"Location": status_url}


def json_body() -> dict:
    body = request.get_json(silent=True)
    if body is None and request.get_data():
        raise RequestInvalid([{"field": "(body)", "message": "the request body is not valid JSON",
                               "allowed": "a JSON object"}])
    return {} if body is None else body


@bp.post("/melodies")
def create_melodies():
    req = validate_request(MelodyRequest, json_body())
    models = runtime().models
    name = req.model or models.default_name()
    if models.path(name) is None:
        usable = [m["name"] for m in models.list() if m["available"]]
        raise RequestInvalid([{"field": "model", "message": f"model {name!r} is not registered or has no checkpoint",
                               "allowed": "one of: " + (", ".join(usable) or "(no usable model yet)")}])
    if isinstance(req.primer, str):
        _decode_base64(req.primer, "primer")
    params = {**req.model_dump(), "model": name}
    return submit("melody", params)


@bp.post("/training-jobs")
@require_token
def create_training_job():
    upload = None
    if request.mimetype == "multipart/form-data":
        body = {k: _form_value(v) for k, v in request.form.items()}
        if "file" in request.files:
            upload = request.files["file"].read()
            body["data_base64"] = "(uploaded file)"
    else:
        body = json_body()
    req = validate_request(TrainingRequest, body)
    if upload is None and req.data_base64 is not None:
        upload = _decode_base64(req.data_base64, "data_base64")
    if upload is not None and not upload.startswith(b"PK\x03\x04"):
        raise RequestInvalid([{"field": "data", "message": "the uploaded data is not a zip file",
                               "allowed": "a zip of .mid/.midi files"}])
    models = runtime().models
    if req.name and models.name_taken(req.name):
        return jsonify(error=f"a model named {req.name!r} is already registered"), 409

    job_id = new_job_id()
    params = req.model_dump(exclude={"data_base64"})
    if upload is not None:
        atomic_write(runtime().job_dir(job_id) / "upload.zip", upload)
        params["data"] = f"upload.zip ({len(upload)} bytes)"
    elif not params["data"].startswith("music21:"):
        params["data"] = "music21:" + params["data"]
    params["name"] = req.name or f"job-{job_id[:8]}"
    training = {"epoch": 0, "epochs": req.epochs, "step": 0, "history": [],
                "tokens_per_s": None, "eta_s": None, "model": None}
    return submit("training", params, job_id=job_id, training=training)


@bp.get("/jobs/<job_id>")
def get_job(job_id):
    record = runtime().jobs.get(job_id)
    if record is None:
        abort(404, f"no job {job_id!r} (unknown or expired)")
    return jsonify(public_record(record))


@bp.delete("/jobs/<job_id>")
def cancel_job(job_id):
    """Cancel a queued job (the worker skips it) or a running one (it stops at its next check)."""
    store = runtime().jobs
    record = store.get(job_id)
    if record is None:
        abort(404, f"no job {job_id!r} (unknown or expired)")
    if record["state"] in FINISHED or not store.cancel(job_id):
        record = store.get(job_id)
        return jsonify(error=f"job already {record['state']}", job=public_record(record)), 409
    runtime().count_state(record["kind"], "cancelled")
    try:
        runtime().revoke(job_id)
    except Exception:                    # the record already says cancelled; workers check it
        current_app.logger.warning("could not broadcast revoke for %s", job_id)
    return jsonify(public_record(store.get(job_id)))


@bp.get("/models")
def list_models():
    models = runtime().models
    return jsonify(models=models.list(), default=models.default_name())


@bp.post("/models/<name>/default")
@require_token
def make_default(name):
    models = runtime().models
    if models.path(name) is None:
        abort(404, f"no model {name!r}")
    models.set_default(name)
    return jsonify(default=name, model=models.get(name))


def _decode_base64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestInvalid([{"field": field, "message": f"{field} is not valid base64",
                               "allowed": "base64 text (RFC 4648)"}]) from None


def _form_value(text: str):
    """A multipart form field: JSON when it parses (numbers), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text
