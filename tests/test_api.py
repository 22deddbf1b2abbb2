"""The HTTP API through Flask's test client, with a real Redis and no worker: validation,
job records, cancel of a queued job, auth, the OpenAPI document, broker down -> 503."""
import base64
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from service import create_app
from service.schemas import KEYS, SCALES

TOKEN = {"Authorization": "Bearer test-token"}


@pytest.fixture
def client(app):
    return app.test_client()


def fields_of(response):
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["error"] == "validation failed"
    return {f["field"]: f for f in body["fields"]}


# ---- melody requests ---------------------------------------------------------------------------

def test_post_melodies_returns_202_with_job_url_and_a_queued_record(client):
    response = client.post("/api/v1/melodies", json={"bars": 4, "seed": 7, "key": "D", "scale": "dorian"})
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"] == body["status_url"] == f"/api/v1/jobs/{body['id']}"
    job = client.get(body["status_url"]).get_json()
    assert job["state"] == "queued" and job["kind"] == "melody" and job["progress"] == 0.0
    assert job["params"]["bars"] == 4 and job["params"]["key"] == "D" and job["params"]["model"] == "default"
    assert job["created_at"].endswith("Z") and job["started_at"] is None and job["error"] is None


def test_prefer_wait_for_a_job_nobody_runs_answers_202_after_the_wait(client):
    """No worker here: the job stays queued, so a `Prefer: wait=1` answers the usual 202 once the
    second has passed, saying it waited; without the preference nothing says so."""
    waited = client.post("/api/v1/melodies", json={"bars": 2}, headers={"Prefer": "respond-async, wait=1"})
    assert waited.status_code == 202 and waited.headers["Preference-Applied"] == "wait=1"
    assert waited.get_json()["state"] == "queued" and waited.get_json()["cancel_token"]
    plain = client.post("/api/v1/melodies", json={"bars": 2})
    assert plain.status_code == 202 and "Preference-Applied" not in plain.headers
    huge = client.post("/api/v1/melodies", json={"bars": 2, "seed": 1}, headers={"Prefer": "wait=0"})
    assert huge.status_code == 202 and "Preference-Applied" not in huge.headers       # wait=0: no wait


def test_empty_body_takes_every_default(client):
    assert client.post("/api/v1/melodies").status_code == 202


@pytest.mark.parametrize("field,bad,allowed_part", [
    ("bars", 0, ">= 1"), ("bars", 257, "<= 256"), ("bars", "8", "integer"), ("bars", 4.5, "integer"),
    ("temperature", 0, "> 0"), ("temperature", 5.5, "<= 5"), ("temperature", "hot", "number"),
    ("top_k", -1, ">= 0"), ("top_k", 129, "<= 128"),
    ("top_p", 0, "> 0"), ("top_p", 1.01, "<= 1"),
    ("seed", -1, ">= 0"), ("seed", 2**32, "<= 4294967295"), ("seed", 1.5, "integer"),
    ("key", "H", "one of"), ("key", 3, "one of"),
    ("scale", "bebop", "one of"),
    ("tempo", 19, ">= 20"), ("tempo", 301, "<= 300"),
    ("meter", "four", "matching"),
    ("primer", "", "characters"), ("primer", [[200, 0, 1]], "<= 127"), ("primer", [[60, -1, 1]], ">= 0"),
    ("primer", [[60, 0, 0]], "> 0"), ("primer", [[60, 0]], "["), ("primer", [[60, 0, 1]] * 513, "512"),
    ("primer", "x" * (96 * 1024 + 1), "98304"),
    ("include_primer", "yes", "boolean"),
    ("model", "Bad Name!", "matching"),
    ("count", 0, ">= 1"), ("count", 17, "<= 16"),
    ("beam_width", 0, ">= 1"), ("beam_width", 17, "<= 16"),
    ("min_pitch", -1, ">= 0"), ("max_pitch", 128, "<= 127"),
    ("avoid_repetition", 1, "boolean"), ("short_term", "no", "boolean"),
    ("form", "AXB", "matching"), ("form", "aabb", "matching"), ("phrase_bars", 0, ">= 1"),
    ("form_strict", "yes", "boolean"), ("pickup", 1, "boolean"),
    ("style", "klezmer", "one of: german, chinese, irish, any"), ("style", 1, "one of"),
])
def test_each_bad_melody_field_is_named_with_its_allowed_range(client, field, bad, allowed_part):
    problems = fields_of(client.post("/api/v1/melodies", json={field: bad}))
    assert list(problems) == [field]
    assert allowed_part in problems[field]["allowed"], problems[field]
    assert problems[field]["message"]


def test_every_bad_field_is_reported_at_once(client):
    problems = fields_of(client.post("/api/v1/melodies", json={
        "bars": 0, "temperature": 9, "count": 99, "colour": "blue", "top_p": "x"}))
    assert set(problems) == {"bars", "temperature", "count", "colour", "top_p"}
    assert problems["colour"]["message"] == "unknown field 'colour'"
    assert "bars" in problems["colour"]["allowed"]


@pytest.mark.parametrize("body,field", [
    ({"min_pitch": 80, "max_pitch": 60}, "max_pitch"),
    ({"scale": "minor"}, "key"),
    ({"beam_width": 2, "count": 3}, "count"),
    ({"model": "nosuchmodel"}, "model"),
    ({"primer": "not base64!"}, "primer"),
    ({"form": "AABB", "bars": 6}, "phrase_bars"),
    ({"form": "AB", "bars": 8, "phrase_bars": 3}, "phrase_bars"),
    ({"form": "AB", "min_bars": 4, "max_bars": 8}, "form"),
    ({"pickup": True, "primer": [[60, 0, 1]]}, "pickup"),
])
def test_rules_across_fields(client, body, field):
    assert field in fields_of(client.post("/api/v1/melodies", json=body))


@pytest.mark.parametrize("raw,content_type", [
    (b"{not json", "application/json"), (b"[1, 2]", "application/json"), (b'"text"', "application/json")])
def test_a_body_that_is_not_a_json_object_is_400(client, raw, content_type):
    problems = fields_of(client.post("/api/v1/melodies", data=raw, content_type=content_type))
    assert "(body)" in problems


def test_key_and_scale_names_match_the_sampler():
    from model.representation.keys import PITCH_CLASSES, SCALES as SAMPLER_SCALES
    assert set(KEYS) == set(PITCH_CLASSES)
    assert set(SCALES) == set(SAMPLER_SCALES)


def test_request_body_over_the_limit_is_413_json(service_env, monkeypatch):
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TUNESMITH_MAX_UPLOAD_MB", "1")
    client = create_app().test_client()
    response = client.post("/api/v1/training-jobs", data=b"x" * (1024 * 1024 + 10),
                           content_type="application/json", headers=TOKEN)
    assert response.status_code == 413
    assert "error" in response.get_json()


def test_deeply_nested_json_is_400_not_a_crash(client):
    for depth in (40, 1000, 100_000):
        for body in ("[" * depth + "]" * depth, '{"primer": ' + "[" * depth + "]" * depth + "}"):
            problems = fields_of(client.post("/api/v1/melodies", data=body, content_type="application/json"))
            assert "nests deeper than 32 levels" in problems["(body)"]["message"]


def test_a_chunked_body_over_the_limit_is_413(service_env, monkeypatch):
    """No Content-Length to refuse it by: the body is cut at the limit (gunicorn sets
    wsgi.input_terminated for chunked requests, as here) and the answer is 413, not 'invalid JSON'."""
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TUNESMITH_MAX_UPLOAD_MB", "1")
    client = create_app().test_client()
    for url in ("/api/v1/melodies", "/api/v1/training-jobs"):
        response = client.post(url, input_stream=io.BytesIO(b'{"bars": "' + b"x" * (3 << 20) + b'"}'),
                               content_type="application/json", headers={**TOKEN, "Transfer-Encoding": "chunked"},
                               environ_overrides={"wsgi.input_terminated": True})
        assert response.status_code == 413 and "error" in response.get_json()


# ---- jobs ----------------------------------------------------------------------------------------

def test_unknown_job_is_404(client):
    for job_id in ("0123456789abcdef0123456789abcdef", "nothing-like-an-id", "x" * 300):
        response = client.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 404 and "error" in response.get_json()
    assert client.delete("/api/v1/jobs/0123456789abcdef0123456789abcdef").status_code == 404


def test_cancel_a_queued_job_then_cancel_again_is_409(client):
    job = client.post("/api/v1/melodies", json={}).get_json()
    response = client.delete(job["status_url"], headers={"Authorization": f"Bearer {job['cancel_token']}"})
    assert response.status_code == 200
    assert response.get_json()["state"] == "cancelled" and response.get_json()["finished_at"]
    assert client.get(job["status_url"]).get_json()["state"] == "cancelled"
    again = client.delete(job["status_url"], headers=TOKEN)
    assert again.status_code == 409 and again.get_json()["job"]["state"] == "cancelled"


def test_downloads_of_an_unfinished_job_are_409_and_of_an_unknown_one_404(client):
    job = client.post("/api/v1/melodies", json={}).get_json()
    response = client.get(f"/api/v1/melodies/{job['id']}.mid")
    assert response.status_code == 409 and response.get_json()["state"] == "queued"
    assert client.get("/api/v1/melodies/0123456789abcdef0123456789abcdef.mid").status_code == 404
    assert client.get(f"/api/v1/melodies/{job['id']}.exe").status_code in (404, 409)


# ---- training jobs and models --------------------------------------------------------------------

def _zip_of(files: dict) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


def test_training_needs_the_token(client):
    assert client.post("/api/v1/training-jobs", json={"data": "bach"}).status_code == 401
    wrong = client.post("/api/v1/training-jobs", json={"data": "bach"}, headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    assert client.post("/api/v1/models/default/default").status_code == 401


def test_the_bearer_scheme_is_case_insensitive(client):
    for scheme in ("bearer", "BEARER", "Bearer"):
        response = client.post("/api/v1/models/default/default", headers={"Authorization": f"{scheme} test-token"})
        assert response.status_code == 200, scheme


def _app_with(service_env, monkeypatch, **env):
    for name, value in {**service_env, **env}.items():
        monkeypatch.setenv(name, value)
    if "TUNESMITH_TOKEN" not in env:
        monkeypatch.delenv("TUNESMITH_TOKEN")
    return create_app().test_client()


def test_without_a_token_training_and_admin_endpoints_fail_closed(service_env, monkeypatch):
    client = _app_with(service_env, monkeypatch)
    for response in (client.post("/api/v1/training-jobs", json={"data": "bach"}),
                     client.post("/api/v1/models/default/default"),
                     client.post("/api/v1/models/default/default", headers=TOKEN)):
        assert response.status_code == 403
        assert "TUNESMITH_TOKEN" in response.get_json()["error"] and "TUNESMITH_OPEN=1" in response.get_json()["error"]
    job = client.post("/api/v1/melodies", json={}).get_json()       # melodies stay open to everyone
    assert client.delete(job["status_url"]).status_code == 401       # ... but a job is its owner's to cancel
    mine = client.delete(job["status_url"], headers={"Authorization": f"Bearer {job['cancel_token']}"})
    assert mine.status_code == 200 and mine.get_json()["state"] == "cancelled"


def test_the_operator_can_opt_in_to_open_endpoints(service_env, monkeypatch):
    client = _app_with(service_env, monkeypatch, TUNESMITH_OPEN="1")
    assert client.post("/api/v1/training-jobs", json={"data": "bach"}).status_code == 202
    assert client.post("/api/v1/models/default/default").status_code == 200
    job = client.post("/api/v1/melodies", json={}).get_json()
    assert client.delete(job["status_url"]).status_code == 200


def test_cancel_takes_the_jobs_own_secret_or_the_token_and_nothing_else(client):
    mine = client.post("/api/v1/melodies", json={}).get_json()
    theirs = client.post("/api/v1/melodies", json={}).get_json()
    training = client.post("/api/v1/training-jobs", headers=TOKEN, json={"data": "bach"}).get_json()
    assert mine["cancel_token"] != theirs["cancel_token"]
    for job in (theirs, training):
        for headers in ({}, {"Authorization": f"Bearer {mine['cancel_token']}"}, {"Authorization": "Bearer no"},
                        {"Authorization": f"Basic {mine['cancel_token']}"}):
            response = client.delete(job["status_url"], headers=headers)
            assert response.status_code == 401, headers
            assert "cancel_token" in response.get_json()["error"] and response.headers["WWW-Authenticate"] == "Bearer"
        assert client.get(job["status_url"]).get_json()["state"] == "queued"
    record = client.get(mine["status_url"]).get_json()
    assert "cancel_token" not in json.dumps(record) and mine["cancel_token"] not in json.dumps(record)
    assert "cancel_hash" not in record
    own = client.delete(mine["status_url"], headers={"Authorization": f"bearer {mine['cancel_token']}"})
    assert own.status_code == 200 and own.get_json()["state"] == "cancelled"
    assert client.delete(training["status_url"], headers=TOKEN).get_json()["state"] == "cancelled"
    assert client.delete(theirs["status_url"], headers=TOKEN).get_json()["state"] == "cancelled"


def test_training_job_with_a_collection_is_queued_with_its_settings(client):
    response = client.post("/api/v1/training-jobs", headers=TOKEN,
                           json={"data": "bach", "epochs": 2, "cell": "gru", "hidden_size": 32, "name": "my-bach",
                                 "transpose": [-5, 6], "short_term": False})
    assert response.status_code == 202
    job = client.get(response.headers["Location"]).get_json()
    assert job["kind"] == "training" and job["state"] == "queued"
    assert job["params"]["data"] == "music21:bach" and job["params"]["cell"] == "gru"
    assert job["params"]["transpose"] == [-5, 6] and job["params"]["short_term"] is False
    from worker.training import train_config
    config = train_config(job["params"], job["params"]["data"], "out.pt")
    assert config.transpose == (-5, 6) and config.short_term is False
    assert job["params"]["name"] == "my-bach"
    assert job["training"]["epochs"] == 2 and job["training"]["history"] == []


def test_a_training_job_leaves_the_recipe_unset_unless_asked_and_the_api_shows_it_before(client):
    response = client.post("/api/v1/training-jobs", headers=TOKEN, json={"data": "bach", "from_scratch": True})
    job = client.get(response.headers["Location"]).get_json()
    from worker.training import train_config
    config = train_config(job["params"], job["params"]["data"], "out.pt")
    assert config.from_scratch is True and config.epochs is None and config.batch_size is None
    assert config.lr is None and config.patience is None and config.transpose is None
    recipe = client.get("/api/v1/training-recipe?tunes=200").get_json()  # 180 training tunes of Essen's length
    assert recipe["tunes"] == 180 and recipe["from_scratch"]["batch_size"] == 8
    assert recipe["from_scratch"]["transpose"] == [-5, 6] and recipe["from_scratch"]["patience"] == 10
    assert recipe["fine_tune"]["lr"] == 5e-4 and recipe["fine_tune"]["transpose"] == [0, 0]
    assert client.get("/api/v1/training-recipe?tunes=8000").get_json()["from_scratch"]["batch_size"] == 64
    for query in ("", "?tunes=0", "?tunes=many", "?tunes=200&tokens=-1"):
        bad = client.get(f"/api/v1/training-recipe{query}")
        name = "tokens" if "tokens" in query else "tunes"
        assert bad.status_code == 400 and bad.get_json()["fields"][0]["field"] == name, query
        assert "must be a whole number from 1 to" in bad.get_json()["fields"][0]["message"]


def test_training_job_with_an_uploaded_zip_multipart_and_base64(client, app):
    archive = _zip_of({"a.mid": b"MThd-not-checked-until-the-worker"})
    response = client.post("/api/v1/training-jobs", headers=TOKEN, content_type="multipart/form-data",
                           data={"file": (io.BytesIO(archive), "tunes.zip"), "epochs": "1", "cell": "lstm"})
    assert response.status_code == 202, response.get_json()
    job = client.get(response.headers["Location"]).get_json()
    assert job["params"]["data"].startswith("upload.zip") and job["params"]["epochs"] == 1
    # kept in Redis, where a train worker on any host fetches it (worker/training.py: prepare_data)
    assert app.extensions["tunesmith"].files.fetcher(job["id"])("upload.zip") == archive
    encoded = client.post("/api/v1/training-jobs", headers=TOKEN,
                          json={"data_base64": base64.b64encode(archive).decode(), "epochs": 1})
    assert encoded.status_code == 202


@pytest.mark.parametrize("body,field", [
    ({}, "data"), ({"data": "bach", "data_base64": "UEsDBA=="}, "data"),
    ({"data": "../etc/passwd"}, "data"), ({"data": "bach", "epochs": 0}, "epochs"),
    ({"data": "bach", "epochs": 501}, "epochs"), ({"data": "bach", "cell": "transformer"}, "cell"),
    ({"data": "bach", "hidden_size": 3}, "hidden_size"), ({"data": "bach", "hidden_size": 2048}, "hidden_size"),
    ({"data": "bach", "layers": 0}, "layers"), ({"data": "bach", "layers": 5}, "layers"),
    ({"data": "bach", "bptt": 2}, "bptt"), ({"data": "bach", "bptt": "some"}, "bptt"),
    ({"data": "bach", "clip": 0}, "clip"), ({"data": "bach", "lr": 0}, "lr"), ({"data": "bach", "lr": 2}, "lr"),
    ({"data": "bach", "max_minutes": 0}, "max_minutes"), ({"data": "bach", "max_minutes": 241}, "max_minutes"),
    ({"data": "bach", "name": "Has Spaces"}, "name"), ({"data": "bach", "name": "default"}, "name"),
    ({"data": "bach", "dropout": 1}, "dropout"), ({"data": "bach", "batch_size": 0}, "batch_size"),
    ({"data": "bach", "embedding_dim": 1}, "embedding_dim"), ({"data": "bach", "optimizer": "sgd"}, "optimizer"),
    ({"data": "bach", "transpose": [3, -2]}, "transpose"), ({"data": "bach", "transpose": [0, 13]}, "transpose"),
    ({"data": "bach", "transpose": [1]}, "transpose"), ({"data": "bach", "short_term": "yes"}, "short_term"),
    ({"data_base64": "%%%notbase64"}, "data_base64"), ({"data_base64": base64.b64encode(b"plain").decode()}, "data"),
    ({"data_base64": base64.b64encode(_zip_of({})).decode()}, "data"),
    ({"data_base64": base64.b64encode(_zip_of({"readme.txt": "no tunes"})).decode()}, "data"),
])
def test_each_bad_training_field_is_named(client, body, field):
    problems = fields_of(client.post("/api/v1/training-jobs", json=body, headers=TOKEN))
    assert field in problems, problems
    assert problems[field]["allowed"]


def test_an_empty_zip_is_called_empty_not_a_non_zip(client):
    for files, words in (({}, "the uploaded zip is empty"), ({"a.txt": "x"}, "holds no MIDI file")):
        body = {"data_base64": base64.b64encode(_zip_of(files)).decode()}
        assert words in fields_of(client.post("/api/v1/training-jobs", json=body, headers=TOKEN))["data"]["message"]


def test_models_list_the_shipped_default_and_setting_an_unknown_default_is_404(client):
    body = client.get("/api/v1/models").get_json()
    assert body["default"] == "default"
    (shipped,) = body["models"]
    assert shipped["name"] == "default" and shipped["default"] and shipped["available"]
    assert client.post("/api/v1/models/nosuch/default", headers=TOKEN).status_code == 404
    assert client.post("/api/v1/models/default/default", headers=TOKEN).get_json()["default"] == "default"


def test_a_model_without_a_style_input_refuses_a_style_and_takes_any(client):
    problems = fields_of(client.post("/api/v1/melodies", json={"bars": 2, "style": "irish"}))
    assert list(problems) == ["style"]
    assert "model 'default' has no style input" in problems["style"]["message"], problems
    assert problems["style"]["allowed"] == "null or any"
    for style in ("any", None):                                   # today's behaviour: no style asked for
        response = client.post("/api/v1/melodies", json={"bars": 2, "style": style})
        assert response.status_code == 202, response.get_json()
        assert client.get(response.get_json()["status_url"]).get_json()["params"]["style"] == style


def test_a_style_is_checked_against_the_models_own_styles(client, app, tiny_style_checkpoint):
    from conftest import TINY_STYLES
    app.extensions["tunesmith"].models.register("styled", tiny_style_checkpoint, {"data": "test"})
    problems = fields_of(client.post("/api/v1/melodies", json={"model": "styled", "style": "irish"}))
    assert list(problems) == ["style"]
    assert "style 'irish' is not one model 'styled' knows (its styles: german, chinese)" in problems["style"]["message"]
    assert problems["style"]["allowed"] == "null or one of: german, chinese, any"
    for style in (*TINY_STYLES, "any"):
        response = client.post("/api/v1/melodies", json={"model": "styled", "style": style, "bars": 2})
        assert response.status_code == 202, response.get_json()
        assert client.get(response.get_json()["status_url"]).get_json()["params"]["style"] == style


def test_models_list_their_styles_with_descriptions(client, app, tiny_style_checkpoint):
    from model.representation.styles import STYLE_DESCRIPTIONS
    app.extensions["tunesmith"].models.register("styled", tiny_style_checkpoint, {"data": "test"})
    models = {m["name"]: m for m in client.get("/api/v1/models").get_json()["models"]}
    assert models["default"]["styles"] == []                      # the tiny shipped model has no style input
    assert models["styled"]["styles"] == [{"name": s, "description": STYLE_DESCRIPTIONS[s]}
                                          for s in ("german", "chinese")]


def test_a_taken_model_name_is_409(client, app, tiny_checkpoint):
    app.extensions["tunesmith"].models.register("taken", tiny_checkpoint, {"data": "test"})
    response = client.post("/api/v1/training-jobs", headers=TOKEN, json={"data": "bach", "name": "taken"})
    assert response.status_code == 409


# ---- documents, health, broker down ----------------------------------------------------------------

def test_openapi_describes_every_endpoint_with_schemas(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    for path, method in [("/api/v1/melodies", "post"), ("/api/v1/jobs/{job_id}", "get"),
                         ("/api/v1/jobs/{job_id}", "delete"), ("/api/v1/melodies/{job_id}.{ext}", "get"),
                         ("/api/v1/melodies/{job_id}/{n}.{ext}", "get"), ("/api/v1/melodies/{job_id}.zip", "get"),
                         ("/api/v1/training-jobs", "post"), ("/api/v1/models", "get"),
                         ("/api/v1/models/{name}/default", "post"), ("/healthz", "get"), ("/readyz", "get")]:
        assert method in spec["paths"][path], (path, method)
    schemas = spec["components"]["schemas"]
    assert schemas["MelodyRequest"]["properties"]["count"]["maximum"] == 16
    assert schemas["MelodyRequest"]["additionalProperties"] is False
    assert set(schemas["TrainingRequest"]["properties"]["cell"]["enum"]) == {"lstm", "gru", "rnn"}
    style = schemas["MelodyRequest"]["properties"]["style"]
    assert {"enum": ["german", "chinese", "irish", "any"], "type": "string"} in style["anyOf"]
    assert style["default"] is None and "German folk songs" in style["description"]
    assert schemas["ModelInfo"]["properties"]["styles"]
    post = spec["paths"]["/api/v1/melodies"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/MelodyRequest")
    assert post["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobAccepted")
    assert post["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationFailed")


def test_docs_page_loads_only_local_assets(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html
    for asset in ("css/swagger-ui.css", "js/swagger-ui-bundle.js"):
        url = html.split(asset)[0].rsplit('"', 1)[1] + asset
        response = client.get(url)
        assert response.status_code == 200 and len(response.data) > 1000


def test_healthz_answers_and_readyz_explains_without_workers(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    response = client.get("/readyz")
    body = response.get_json()
    assert response.status_code == 503 and body["ready"] is False
    assert "no worker answering on queue 'generate'" in body["reasons"]
    assert body["checks"]["broker"] == "ok" and body["checks"]["default_model"]["status"] == "ok"


def test_readyz_is_not_ready_until_each_generate_worker_says_it_has_loaded_the_default_model(app, monkeypatch):
    """A worker answering on its queue is not enough: each generate worker's heartbeat must name the
    default model as loaded (worker/model_host.py). The workers' answer to Celery's inspect is
    stood in for here (tests/test_engine.py reads a real worker's heartbeat)."""
    from worker.model_host import ready_key
    runtime = app.extensions["tunesmith"]
    monkeypatch.setattr(runtime, "queues_served", lambda timeout=1.0: {"generate@a": {"generate"},
                                                                       "generate@b": {"generate"}, "train@a": {"train"}})
    client = app.test_client()
    loading = client.get("/readyz")
    assert loading.status_code == 503
    assert loading.get_json()["reasons"] == [
        "generate worker(s) generate@a, generate@b have not loaded the default model 'default' yet"]
    runtime.redis.set(ready_key(runtime.jobs.prefix, "generate@a"), json.dumps({"default": "default"}), ex=10)
    runtime.redis.set(ready_key(runtime.jobs.prefix, "generate@b"), json.dumps({"default": "older"}), ex=10)
    assert client.get("/readyz").get_json()["reasons"] == [
        "generate worker(s) generate@b have not loaded the default model 'default' yet"]
    runtime.redis.set(ready_key(runtime.jobs.prefix, "generate@b"), json.dumps({"default": "default"}), ex=10)
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"]["models_loaded"] == {
        "generate@a": "default", "generate@b": "default"}


def test_readyz_reads_the_generate_workers_word_for_the_checkpoint_and_loads_nothing_while_it_loads(app, monkeypatch):
    """A generate worker says it is loading (before it imports torch) and then what the loaded
    checkpoint can write (worker/registry.py: publish_vocabulary): /readyz waits for it meanwhile and
    then believes it, without loading the checkpoint in a child process of the API."""
    from types import SimpleNamespace

    from worker import registry
    from worker.model_host import ready_key, say_loading
    runtime = app.extensions["tunesmith"]
    loads = []
    monkeypatch.setattr(registry, "subprocess", SimpleNamespace(run=lambda *a, **k: loads.append(a),
                                                                TimeoutExpired=subprocess.TimeoutExpired))
    monkeypatch.setattr(registry, "_checked", {})
    monkeypatch.setattr(runtime, "queues_served", lambda timeout=1.0: {"train@a": {"train"}})
    say_loading(runtime.redis, runtime.jobs.prefix, "generate@a")
    loading = app.test_client().get("/readyz").get_json()
    assert loading["checks"]["default_model"]["status"] == "loading"
    assert loading["checks"]["models_loading"] == ["generate@a"]
    assert "no worker answering on queue 'generate'" in loading["reasons"]

    vocabulary = {"min_pitch": 40, "max_pitch": 90, "meters": ["4/4"], "styles": [], "data": None}
    registry.publish_vocabulary(runtime.redis, runtime.jobs.prefix, runtime.models.path("default"), vocabulary)
    runtime.redis.set(ready_key(runtime.jobs.prefix, "generate@a"), json.dumps({"default": "default"}), ex=10)
    monkeypatch.setattr(runtime, "queues_served", lambda timeout=1.0: {"generate@a": {"generate"}, "train@a": {"train"}})
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"]["default_model"]["status"] == "ok"
    assert registry.checkpoint_vocabulary(runtime.models.path("default"), runtime.redis, runtime.jobs.prefix) == vocabulary
    assert loads == []                                      # no child process loaded the checkpoint


def test_readyz_warns_when_the_broker_keeps_nothing_on_disk(service_env, monkeypatch, tmp_path):
    from support import OwnRedis
    for appendonly in (False, True):
        redis_server = OwnRedis(tmp_path / f"redis-{appendonly}", appendonly=appendonly).start()
        try:
            for name, value in {**service_env, "REDIS_URL": redis_server.url}.items():
                monkeypatch.setenv(name, value)
            body = create_app().test_client().get("/readyz").get_json()
        finally:
            redis_server.stop()
        if appendonly:
            assert body["warnings"] == [] and body["checks"]["persistence"] == "ok"
        else:
            assert "appendonly" in body["warnings"][0] and body["checks"]["persistence"] == body["warnings"][0]
            assert "no worker answering on queue 'generate'" in body["reasons"]      # a warning, not a reason


def test_the_api_process_never_imports_torch(service_env):
    """gunicorn workers answer every endpoint without torch, /readyz's default-model check included
    (it loads the checkpoint in a child process)."""
    code = ("import json, sys\n"
            "from service import create_app\n"
            "client = create_app().test_client()\n"
            "ready = client.get('/readyz').get_json()\n"
            "codes = [client.get(u).status_code for u in ('/api/v1/models', '/api/v1/openapi.json', '/', '/train')]\n"
            "codes.append(client.post('/api/v1/melodies', json={'bars': 2}).status_code)\n"
            "print(json.dumps([ready['checks']['default_model']['status'], codes, 'torch' in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **service_env}, capture_output=True,
                         text=True, timeout=180, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    model_status, codes, torch_imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert model_status == "ok" and codes == [200, 200, 200, 200, 202]
    assert torch_imported is False


def test_broker_down_is_503_json_within_two_seconds(service_env, monkeypatch):
    import socket
    with socket.socket() as s:           # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")
    client = create_app().test_client()
    for method, url, body in [("post", "/api/v1/melodies", {"bars": 4}),
                              ("get", "/api/v1/jobs/0123456789abcdef0123456789abcdef", None),
                              ("post", "/api/v1/training-jobs", {"data": "bach"})]:
        started = time.monotonic()
        response = getattr(client, method)(url, json=body, headers=TOKEN)
        elapsed = time.monotonic() - started
        assert response.status_code == 503, (url, response.get_json())
        assert "broker unavailable" in response.get_json()["error"]
        assert elapsed < 2.0, f"{url} took {elapsed:.2f} s"   # the requirement: no hang
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["reasons"][0].startswith("broker unreachable")
    for response in (ready, client.post("/api/v1/melodies", json={})):      # no broker address for clients
        assert str(port) not in response.get_data(as_text=True) and "127.0.0.1" not in response.get_data(as_text=True)


def test_public_records_show_no_server_paths(client, app):
    job = client.post("/api/v1/melodies", json={}).get_json()
    home = app.extensions["tunesmith"].home
    app.extensions["tunesmith"].jobs.update(job["id"], state="failed", error=(
        f"FileNotFoundError: [Errno 2] No such file or directory: '{home}/jobs/{job['id']}/data/tune.mid'"))
    record = client.get(job["status_url"]).get_json()
    assert record["error"] == "FileNotFoundError: [Errno 2] No such file or directory: 'tune.mid'"
    assert home not in json.dumps(record) and "worker_pid" not in record


def test_length_range_and_cadence_are_checked_at_the_edge(client):
    assert "max_bars" in fields_of(client.post("/api/v1/melodies", json={"min_bars": 9, "max_bars": 4}))
    assert "max_bars" in fields_of(client.post("/api/v1/melodies", json={"min_bars": 4}))
    assert "cadence" in fields_of(client.post("/api/v1/melodies", json={"cadence": "plagal"}))
    assert "max_bars" in fields_of(client.post("/api/v1/melodies", json={"max_bars": 257}))
    assert "tonic_pull" in fields_of(client.post("/api/v1/melodies", json={"tonic_pull": -1}))
    assert "tonic_pull" in fields_of(client.post("/api/v1/melodies", json={"tonic_pull": 10.5}))
    ok = client.post("/api/v1/melodies", json={"min_bars": 4, "max_bars": 12, "cadence": "tonic", "key": "G",
                                                "redraw_degenerate": False})
    assert ok.status_code == 202
    params = client.get(ok.get_json()["status_url"]).get_json()["params"]
    assert (params["min_bars"], params["max_bars"], params["cadence"]) == (4, 12, "tonic")
    assert params["tempo"] is None  # the primer's tempo, else 120, decided in the worker


def test_training_job_carries_the_bars_remaining_input(client):
    response = client.post("/api/v1/training-jobs", headers=TOKEN,
                           json={"data": "bach", "remaining_inputs": False, "max_remaining": 4})
    job = client.get(response.headers["Location"]).get_json()
    from worker.training import train_config
    config = train_config(job["params"], job["params"]["data"], "out.pt")
    assert config.remaining_inputs is False and config.max_remaining == 4
    default = client.get(client.post("/api/v1/training-jobs", headers=TOKEN, json={"data": "bach"})
                         .headers["Location"]).get_json()
    assert train_config(default["params"], "music21:bach", "out.pt").remaining_inputs is True


@pytest.mark.parametrize("body,field", [
    ({"regenerate": {"from_bar": 2, "to_bar": 3}}, "regenerate"),                          # no primer
    ({"primer": [[60, 0, 1]], "regenerate": {"from_bar": 3, "to_bar": 2}}, "regenerate"),  # backwards
    ({"primer": [[60, 0, 1]], "regenerate": {"from_bar": 0, "to_bar": 2}}, "regenerate"),
    ({"primer": [[60, 0, 1]], "regenerate": {"from_bar": 1}}, "regenerate"),
    ({"primer": [[60, 0, 1]], "regenerate": [1, 2]}, "regenerate"),
    ({"primer": [[60, 0, 1]], "regenerate": {"from_bar": 1, "to_bar": 2}, "max_bars": 4}, "max_bars"),
])
def test_a_bad_regenerate_span_is_400_naming_the_field(client, body, field):
    problems = fields_of(client.post("/api/v1/melodies", json=body))
    assert field in problems
    if isinstance(body.get("regenerate"), dict) and len(body["regenerate"]) == 1:
        assert "to_bar" in problems[field]["message"]


def test_a_regenerate_request_is_accepted_with_its_span(client):
    response = client.post("/api/v1/melodies", json={"primer": [[60, 0, 1], [62, 4, 1]],
                                                     "regenerate": {"from_bar": 1, "to_bar": 1}})
    assert response.status_code == 202
    job = client.get(response.get_json()["status_url"]).get_json()
    assert job["params"]["regenerate"] == {"from_bar": 1, "to_bar": 1}
