"""service/headers.py through Flask's test client: the Content-Security-Policy and its companions on
every kind of response, and Cache-Control by kind (tests/test_browser.py runs the pages under the
policy in Chromium)."""
import pytest

from service.headers import CSP, NO_STORE, PRIVATE_FILE, REVALIDATE, VENDORED
from worker import artifact_name


@pytest.fixture
def client(app):
    return app.test_client()


def directives(policy: str) -> dict:
    return {d.split()[0]: d.split()[1:] for d in policy.split("; ")}


def test_the_policy_allows_only_the_services_own_scripts_and_no_framing():
    policy = directives(CSP)
    assert policy["script-src"] == ["'self'"]           # no 'unsafe-inline', no 'unsafe-eval', no host
    assert policy["style-src"] == ["'self'", "'sha256-BCpnf71gZdCsSCHDzyB1RsBbZ0qQdqseK6v+yJsgg30='"]   # abcjs's one
    assert policy["default-src"] == ["'self'"] and policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"]


def security_headers(response):
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    return response.headers["Cache-Control"]


def test_every_kind_of_response_carries_the_headers_and_its_own_cache_rule(client):
    job = client.post("/api/v1/melodies", json={"bars": 2}).get_json()
    assert security_headers(client.get(f"/api/v1/jobs/{job['id']}")) == NO_STORE
    assert security_headers(client.get("/api/v1/no-such-thing")) == NO_STORE
    assert security_headers(client.get(f"/api/v1/melodies/{job['id']}.mid")) == NO_STORE     # 409: not yet
    assert security_headers(client.get("/healthz")) == NO_STORE
    for page in ("/", "/train", "/api/v1/docs"):
        assert security_headers(client.get(page)) == REVALIDATE
    assert security_headers(client.get("/assets/js/compose.js")) == REVALIDATE
    assert security_headers(client.get("/assets/vendor/abcjs/abcjs-basic-min.js")) == VENDORED
    assert security_headers(client.get("/api/v1/docs/assets/js/swagger-ui-bundle.js")) == VENDORED


def test_a_finished_jobs_files_are_private_to_whoever_holds_its_id(client, app):
    runtime = app.extensions["tunesmith"]
    record = runtime.jobs.create("melody", {"bars": 2, "count": 1})
    folder = runtime.job_dir(record["id"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / artifact_name(0, "mid")).write_bytes(b"MThd")
    runtime.jobs.update(record["id"], state="succeeded")
    response = client.get(f"/api/v1/melodies/{record['id']}.mid")
    assert response.status_code == 200, response.get_json()
    assert security_headers(response) == PRIVATE_FILE
    assert "public" not in response.headers["Cache-Control"]


def test_the_pages_hold_no_inline_script_or_style(client):
    for page in ("/", "/train", "/api/v1/docs"):
        html = client.get(page).get_data(as_text=True)
        assert "<script>" not in html and "style=" not in html and "<style" not in html, page
        assert " onload=" not in html and " onclick=" not in html, page
