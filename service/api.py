"""The JSON API under /api/v1: submit melody and training jobs, read and cancel jobs, list
models and choose the default.

Views validate, have the job runtime store a record and publish the job id (by task name:
`worker.Runtime.submit`), and answer 202 with the job's URL. The work itself is in worker/.

One request for one melody: `POST /melodies` with `Prefer: wait=N` (RFC 7240, N up to MAX_WAIT_S)
answers, when the job finishes within N seconds, with the finished job (200, its result links) or,
with `Accept: audio/midi`, the first melody's MIDI itself; otherwise with the usual 202. It waits
on the job's event stream (service/events.py), never on Celery, and holds one of the process's
stream slots meanwhile (none free: it answers 202 at once, as without the preference).
"""
import base64
import binascii
import hashlib
import hmac
import io
import json
import re
import secrets
import zipfile
from functools import wraps
from pathlib import PurePosixPath

from flask import Blueprint, abort, current_app, jsonify, request, url_for

from model import MIDI_EXTENSIONS
from model.representation.styles import ANY
from model.training.recipe import MAX_RECIPE_TUNES, TOKENS_PER_TUNE, size_recipe
from service.admission import admit
from service.disk import check_room
from service.downloads import one_melody
from service.events import wait_for_end
from service.schemas import (TRAINING_DEFAULTS, HarmonizationRequest, MelodyRequest, RequestInvalid, TrainingRequest,
                             check_fits_model, check_primer_midi, validate_request)
from worker import FINISHED, checkpoint_vocabulary, job_work, new_job_id, public_record

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def runtime():
    """This app's job runtime (worker.Runtime): job records, the model registry, storage, the queue."""
    return current_app.extensions["tunesmith"]


def bearer_token() -> str | None:
    """The credentials of an `Authorization: Bearer <credentials>` header (the scheme in any case,
    RFC 7235), or None."""
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _same(given: str | None, secret: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), secret.encode())


def unauthorized(message: str):
    response = jsonify(error=message)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response, 401


def admin_refusal():
    """None when the request may use training and admin endpoints, else the response that refuses it.

    Fails closed: with no TUNESMITH_TOKEN configured these endpoints are refused (403) unless the
    operator opted in with TUNESMITH_OPEN=1."""
    token = current_app.config["TUNESMITH_TOKEN"]
    if token:
        if _same(bearer_token(), token):
            return None
        return unauthorized("this endpoint needs 'Authorization: Bearer <token>'")
    if current_app.config.get("TUNESMITH_OPEN"):
        return None
    return jsonify(error="training and admin endpoints are disabled: this server has no TUNESMITH_TOKEN "
                         "(set one, or TUNESMITH_OPEN=1 to leave them open)"), 403


def require_token(view):
    """Bearer-token check for training and admin endpoints (see `admin_refusal`)."""
    @wraps(view)
    def checked(*args, **kwargs):
        return admin_refusal() or view(*args, **kwargs)
    return checked


def client_id() -> str:
    """Who is asking, for fair shares and rate limits (service/admission.py): the holder of the
    service's token as such (a hash of it), anyone else by address. Only the configured token counts,
    so a made-up token per request does not make a new client."""
    token = current_app.config["TUNESMITH_TOKEN"]
    if token and _same(bearer_token(), token):
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return "address:" + (request.remote_addr or "unknown")


def cancel_hash(secret: str) -> str:
    """What a job record keeps of its cancel secret (the secret itself is shown once, at submit)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def submit(kind: str, params: dict, job_id=None, **fields):
    """Queue the job within the admission limits (service/admission.py: 503 or 429 beyond them; a
    broker error propagates: the app answers 503; so does a full disk, service/disk.py); answer 202
    with its URL and the job's cancel secret, which only this response ever shows."""
    check_room()
    secret = secrets.token_urlsafe(24)
    client, job_id = client_id(), job_id or new_job_id()
    if kind == "melody":
        admit(job_id, job_work(params), client)
    try:
        record = runtime().submit(kind, params, job_id=job_id, cancel_hash=cancel_hash(secret), client=client,
                                  **fields)
    except Exception:
        runtime().backlog.release(job_id)
        raise
    status_url = url_for("api.get_job", job_id=record["id"])
    response = jsonify(id=record["id"], status_url=status_url, state="queued", cancel_token=secret)
    return response, 202, {"Location": status_url}


MAX_JSON_DEPTH = 32            # a request is a flat object with short lists; deeper is an attack


def json_body() -> dict:
    """The request's JSON, parsed here rather than by Flask so that every failure is a 4xx: a body
    cut at MAX_CONTENT_LENGTH (a chunked body has no Content-Length to refuse it by) is 413, and
    broken or too deeply nested JSON (RecursionError in the parser or the validator) is 400."""
    data = request.get_data(cache=True)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit and len(data) >= limit:
        abort(413, f"the request body must be under {limit} bytes")
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
        too_deep = _depth(body) > MAX_JSON_DEPTH
    except RecursionError:                      # nested too deeply for the parser itself
        too_deep = True
    except ValueError:
        raise RequestInvalid([{"field": "(body)", "message": "the request body is not valid JSON",
                               "allowed": "a JSON object"}]) from None
    if too_deep:
        raise RequestInvalid([{"field": "(body)", "message": f"the request body nests deeper than {MAX_JSON_DEPTH} levels",
                               "allowed": "a JSON object with the fields in the API docs"}])
    return body


def _depth(value) -> int:
    """How deeply lists and objects nest in a parsed JSON value (without recursion)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                break
            todo += [(v, level + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


@bp.post("/melodies")
def create_melodies():
    req = validate_request(MelodyRequest, json_body())
    models = runtime().models
    name = req.model or models.default_name()
    if models.path(name) is None:
        usable = [m["name"] for m in models.list() if m["available"]]
        raise RequestInvalid([{"field": "model", "message": f"model {name!r} is not registered or has no checkpoint",
                               "allowed": "one of: " + (", ".join(usable) or "(no usable model yet)")}])
    primer_meters = []
    if isinstance(req.primer, str):
        primer_meters = check_primer_midi(_decode_base64(req.primer, "primer")).meters
    if (primer_meters or req.meter is not None or req.min_pitch is not None or req.max_pitch is not None
            or req.style not in (None, ANY)):
        # what only the model can tell: a generate worker's word for it, else loaded once (cached)
        vocabulary = checkpoint_vocabulary(models.path(name), runtime().redis, runtime().jobs.prefix)
        if vocabulary is not None:                               # a broken checkpoint: the job will say so
            check_fits_model(req, name, vocabulary, primer_meters)
    params = {**req.model_dump(), "model": name}
    wait_s = preferred_wait()
    slots = current_app.extensions["streams"] if wait_s else None
    if slots is None or not slots.acquire():
        return submit("melody", params)
    try:
        response, status, headers = submit("melody", params)
        record = wait_for_end(runtime(), response.get_json()["id"], wait_s)
    finally:
        slots.release()
    headers = {**headers, "Preference-Applied": f"wait={wait_s}", "Vary": "Prefer, Accept"}
    if record is None:                               # not finished in time: the usual answer
        return response, status, headers
    wants_midi = request.accept_mimetypes.best_match(["application/json", "audio/midi"]) == "audio/midi"
    if wants_midi and record["state"] == "succeeded":
        answer = one_melody(record["id"], 0, "mid")
        answer.headers.update(headers)
        return answer
    body = {**public_record(record), "cancel_token": response.get_json()["cancel_token"]}
    return jsonify(body), 422 if wants_midi else 200, headers


MAX_WAIT_S = 30
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


def preferred_wait() -> int | None:
    """N of a `Prefer: wait=N` header (RFC 7240; at most MAX_WAIT_S), or None."""
    found = _WAIT.search(", ".join(request.headers.getlist("Prefer")))
    return min(int(found.group(1)), MAX_WAIT_S) if found and int(found.group(1)) > 0 else None


@bp.post("/harmonizations")
def create_harmonization():
    """A user's MIDI melody, its chords estimated: a melody job that is given its melody, so its result
    and downloads are a melody job's (the MIDI with an accompaniment track, the chords in the JSON)."""
    req = validate_request(HarmonizationRequest, json_body())
    check_primer_midi(_decode_base64(req.melody, "melody"), "melody")
    return submit("melody", {"melody": req.melody, "harmonize": True, "model": None})


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
    if upload is not None:
        _check_zip(upload)
    models = runtime().models
    if req.name and models.name_taken(req.name):
        return jsonify(error=f"a model named {req.name!r} is already registered"), 409

    job_id = new_job_id()
    params = req.model_dump(exclude={"data_base64"})
    if upload is not None:
        # kept in Redis, the one store every host shares: the train worker may run on another machine
        runtime().files.keep(job_id, {"upload.zip": upload})
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
    """Cancel a queued job (the worker skips it) or a running one (it stops at its next check).
    Takes the job's own cancel secret (from its 202 answer) or the admin token, as a bearer token."""
    store = runtime().jobs
    record = store.get(job_id)
    if record is None:
        abort(404, f"no job {job_id!r} (unknown or expired)")
    given = bearer_token()
    own = record.get("cancel_hash") and given is not None and _same(cancel_hash(given), record["cancel_hash"])
    token = current_app.config["TUNESMITH_TOKEN"]
    admin = _same(given, token) if token else current_app.config.get("TUNESMITH_OPEN")
    if not (own or admin):
        return unauthorized("cancelling needs 'Authorization: Bearer <cancel_token>' (the cancel_token the "
                            "job's submission answered with) or the admin token")
    if record["state"] in FINISHED or not store.cancel(job_id):
        record = store.get(job_id)
        return jsonify(error=f"job already {record['state']}", job=public_record(record)), 409
    runtime().count_state(record["kind"], "cancelled")
    try:
        runtime().revoke(job_id)
    except Exception:                    # the record already says cancelled; workers check it
        current_app.logger.warning("could not broadcast revoke for %s", job_id)
    return jsonify(public_record(store.get(job_id)))


@bp.get("/training-recipe")
def training_recipe():
    """The recipes a training job would use on a corpus of about ``tunes`` tunes (``tokens``: default
    that many of Essen's mean length), fine-tuning the shipped model and from scratch, before it starts
    (model/training/recipe.py; the job's record holds the one it used, from the corpus it parsed)."""
    tunes = _count_arg("tunes", MAX_RECIPE_TUNES)
    tokens = _count_arg("tokens", MAX_RECIPE_TUNES * TOKENS_PER_TUNE, default=tunes * TOKENS_PER_TUNE)
    share = 1 - TRAINING_DEFAULTS["valid"] - TRAINING_DEFAULTS["test"]  # the training split's share
    tunes, tokens = max(1, round(tunes * share)), max(1, round(tokens * share))
    return jsonify(tunes=tunes, tokens=tokens, fine_tune=size_recipe(tunes, tokens, fine_tune=True),
                   from_scratch=size_recipe(tunes, tokens, fine_tune=False))


def _count_arg(name: str, highest: int, default: int | None = None) -> int:
    """A whole-number query argument from 1 to ``highest`` (required unless it has a default)."""
    text = request.args.get(name)
    if text is None and default is not None:
        return default
    if text is None or not text.isdigit() or not 1 <= int(text) <= highest:
        raise RequestInvalid([{"field": name, "message": f"{name} must be a whole number from 1 to {highest}, "
                               f"got {text!r}", "allowed": f"1 to {highest}"}])
    return int(text)


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


def _check_zip(upload: bytes) -> None:
    """What a training upload must be before it is queued: a readable zip holding some MIDI file
    (each file is checked by the worker, model/representation/midi_check.py)."""
    allowed = "a zip of " + "/".join(MIDI_EXTENSIONS) + " files"
    try:
        with zipfile.ZipFile(io.BytesIO(upload)) as archive:
            names = [m.filename for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError):
        raise RequestInvalid([{"field": "data", "message": "the uploaded data is not a zip file",
                               "allowed": allowed}]) from None
    if not names:
        raise RequestInvalid([{"field": "data", "message": "the uploaded zip is empty", "allowed": allowed}])
    if not any(PurePosixPath(n).suffix.lower() in MIDI_EXTENSIONS for n in names):
        raise RequestInvalid([{"field": "data", "message": f"the uploaded zip holds no MIDI file ({len(names)} "
                               f"other file(s), e.g. {names[0]!r})", "allowed": allowed}])


def _form_value(text: str):
    """A multipart form field: JSON when it parses (numbers), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text
