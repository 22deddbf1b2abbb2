"""The OpenAPI 3.1 document (`/api/v1/openapi.json`) and the API docs page (`/api/v1/docs`).

The document is built from the same pydantic models that validate requests (service/schemas.py)
plus the response models below, so it cannot drift from what the API accepts. The docs page is
Swagger UI served from the flask-openapi3-swagger package's bundled files: no CDN, works offline.
"""
import os
from typing import Any, Literal

import flask_openapi3_swagger
from flask import Blueprint, Response, jsonify, render_template_string, url_for
from pydantic import BaseModel, Field

from service.downloads import MEDIA_TYPES
from service.schemas import HarmonizationRequest, MelodyRequest, TrainingRequest
from worker import STATES

SWAGGER_DIR = os.path.join(os.path.dirname(flask_openapi3_swagger.__file__), "templates", "swagger")
bp = Blueprint("openapi", __name__, url_prefix="/api/v1", static_folder=SWAGGER_DIR,
               static_url_path="/docs/assets")


class JobAccepted(BaseModel):
    id: str
    status_url: str
    state: Literal["queued"]
    cancel_token: str = Field(description="the job's own cancel secret, shown only here: "
                              "DELETE the job with 'Authorization: Bearer <cancel_token>'")


class MelodyFiles(BaseModel):
    index: int
    midi: str
    musicxml: str
    json_: str = Field(alias="json")
    wav: str
    notes: int


class MelodyResult(BaseModel):
    seed: int
    model: str
    melodies: list[MelodyFiles]
    zip: str


class TrainingProgress(BaseModel):
    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int | None = None
    history: list[dict[str, Any]]
    tokens_per_s: float | None
    eta_s: float | None
    model: str | None


class JobRecord(BaseModel):
    id: str
    kind: Literal["melody", "training"]
    state: Literal[STATES]
    progress: float
    created_at: str
    started_at: str | None
    finished_at: str | None
    params: dict[str, Any]
    error: str | None
    attempts: int
    result: MelodyResult | dict[str, Any] | None
    training: TrainingProgress | None = None


class FieldProblem(BaseModel):
    field: str
    message: str
    allowed: str


class ValidationFailed(BaseModel):
    error: Literal["validation failed"]
    fields: list[FieldProblem]


class Error(BaseModel):
    error: str


class StyleInfo(BaseModel):
    name: str = Field(description="the value of a melody request's style")
    description: str


class ModelInfo(BaseModel):
    name: str
    created: str | None
    data: str | None = None
    metrics: dict[str, Any] | None = None
    default: bool
    available: bool
    styles: list[StyleInfo] | None = Field(None, description="the traditions the model writes in (a melody "
                                           "request's style); [] when it has no style input, null when its "
                                           "checkpoint cannot be read")


class ModelList(BaseModel):
    models: list[ModelInfo]
    default: str


class Readiness(BaseModel):
    ready: bool
    reasons: list[str]
    warnings: list[str] = Field(description="ready all the same, but e.g. the broker keeps nothing on disk")
    checks: dict[str, Any]


# a melody file, as service/downloads.py serves it: .mid audio/midi, .wav audio/wav, ...
FILE_MEDIA = tuple(MEDIA_TYPES[ext] for ext in ("mid", "musicxml", "json", "wav"))


def _ref(model):
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _responses(ok_code, ok_model, *errors, media=("application/json",)):
    out = {str(ok_code): {"description": "OK" if ok_code < 300 else "Accepted",
                          "content": {m: {"schema": _ref(ok_model) if ok_model else {}} for m in media}}}
    texts = {400: "invalid request", 401: "missing or wrong bearer token",
             403: "disabled: the server has no token (TUNESMITH_OPEN=1 opens them)", 404: "unknown id",
             409: "conflict with the job's or model's state",
             429: "too many submissions, or too much unfinished work, from this client (see Retry-After)",
             503: "broker unavailable, storage full, or the service's backlog full (see Retry-After)"}
    for code in errors:
        model = ValidationFailed if code == 400 else Error
        out[str(code)] = {"description": texts[code], "content": {"application/json": {"schema": _ref(model)}}}
    return out


def _body(model):
    return {"required": False, "content": {"application/json": {"schema": _ref(model)}}}


EVENTS_OPERATION = {
    "summary": "The job's progress as server-sent events",
    "description": "text/event-stream: `event: state` (the state when the stream opens, each change, and the "
                   "end state with `result` or `error`, which ends the stream) and `event: bar` for each finished "
                   "bar of each melody (`{melody, bar, notes: [{pitch, start_beats, end_beats}], draw, progress}`; a "
                   "melody the quality gate redraws starts again at bar 0 with a higher `draw`), from "
                   "the job's first event, in order; each event has an `id` to resume from with `Last-Event-ID`.",
    "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}},
                   {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
                    "description": "go on after this event"}],
    "responses": {
        "200": {"description": "the event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        "404": {"description": "unknown id", "content": {"application/json": {"schema": _ref(Error)}}},
        "503": {"description": "this server holds as many open streams as it may (Retry-After), or the broker is down",
                "content": {"application/json": {"schema": _ref(Error)}}}},
}


def build_spec() -> dict:
    models = [MelodyRequest, HarmonizationRequest, TrainingRequest, JobAccepted, JobRecord, ValidationFailed, Error,
              ModelList, Readiness]
    schemas = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    job_id = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    file_params = job_id + [{"name": "ext", "in": "path", "required": True,
                             "schema": {"enum": ["mid", "musicxml", "json", "wav"]}}]
    secured = [{"bearer": []}]
    training_body = _body(TrainingRequest)
    training_body["content"]["multipart/form-data"] = {"schema": {
        "type": "object", "properties": {"file": {"type": "string", "format": "binary",
                                                  "description": "a zip of .mid files"}},
        "additionalProperties": True}}
    paths = {
        "/api/v1/melodies": {"post": {"summary": "Generate melodies (asynchronous)",
                                      "requestBody": _body(MelodyRequest),
                                      "responses": _responses(202, JobAccepted, 400, 429, 503)}},
        "/api/v1/harmonizations": {"post": {"summary": "Chords and an accompaniment under your MIDI melody "
                                            "(asynchronous; a melody job: its files download as a melody's)",
                                            "requestBody": _body(HarmonizationRequest),
                                            "responses": _responses(202, JobAccepted, 400, 429, 503)}},
        "/api/v1/jobs/{job_id}": {
            "get": {"summary": "A job's state, progress, parameters and results", "parameters": job_id,
                    "responses": _responses(200, JobRecord, 404, 503)},
            "delete": {"summary": "Cancel a queued or running job (its cancel_token, or the admin token)",
                       "parameters": job_id, "security": secured,
                       "responses": _responses(200, JobRecord, 401, 404, 409, 503)}},
        "/api/v1/jobs/{job_id}/events": {"get": EVENTS_OPERATION},
        "/api/v1/melodies/{job_id}.{ext}": {"get": {
            "summary": "Download the first melody", "parameters": file_params,
            "responses": _responses(200, None, 404, 409, media=FILE_MEDIA)}},
        "/api/v1/melodies/{job_id}/{n}.{ext}": {"get": {
            "summary": "Download melody n (0-based)",
            "parameters": file_params + [{"name": "n", "in": "path", "required": True,
                                          "schema": {"type": "integer", "minimum": 0}}],
            "responses": _responses(200, None, 404, 409, media=FILE_MEDIA)}},
        "/api/v1/melodies/{job_id}.zip": {"get": {
            "summary": "Download every melody in every format", "parameters": job_id,
            "responses": _responses(200, None, 404, 409, media=(MEDIA_TYPES["zip"],))}},
        "/api/v1/training-jobs": {"post": {
            "summary": "Train a model (asynchronous); registers it when done", "security": secured,
            "requestBody": training_body, "responses": _responses(202, JobAccepted, 400, 401, 403, 409, 429, 503)}},
        "/api/v1/models": {"get": {"summary": "Registered models", "responses": _responses(200, ModelList)}},
        "/api/v1/models/{name}/default": {"post": {
            "summary": "Make a model the default for new requests", "security": secured,
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": _responses(200, None, 401, 403, 404)}},
        "/healthz": {"get": {"summary": "The process answers", "responses": _responses(200, None)}},
        "/readyz": {"get": {"summary": "Broker, workers and default model are ready",
                            "responses": {"200": {"description": "ready", "content": {
                                "application/json": {"schema": _ref(Readiness)}}},
                                "503": {"description": "not ready; see reasons", "content": {
                                    "application/json": {"schema": _ref(Readiness)}}}}}},
    }
    return {"openapi": "3.1.0",       # the schemas are JSON Schema 2020-12 (pydantic's), as 3.1 has it
            "info": {"title": "Tunesmith API", "version": "1",
                     "description": "Melody generation and training jobs. POST returns 202 and a job URL; "
                                    "poll the job, then download its files."},
            "paths": paths,
            "components": {"schemas": schemas,
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(build_spec())


DOCS_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Tunesmith API</title>
<link rel="stylesheet" href="{{ assets }}/css/swagger-ui.css"><link rel="icon" href="data:,"></head>
<body><div id="swagger-ui" data-spec="{{ spec }}"></div>
<script src="{{ assets }}/js/swagger-ui-bundle.js"></script>
<script src="{{ start }}"></script>
</body></html>"""

# The page's own script is a file, as the Content-Security-Policy allows no inline script (service/headers.py).
DOCS_START = """const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({url: root.dataset.spec, dom_id: "#swagger-ui", validatorUrl: null});
"""


@bp.get("/docs")
def docs():
    assets = url_for("openapi.static", filename="").rstrip("/")
    return render_template_string(DOCS_PAGE, assets=assets, spec=url_for("openapi.openapi_json"),
                                  start=url_for("openapi.docs_start"))


@bp.get("/docs/start.js")
def docs_start():
    return Response(DOCS_START, mimetype="text/javascript")
