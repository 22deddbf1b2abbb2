"""service/events.py and worker/events.py on the real Redis: a job's events stream in order from its
start, end with its end state, resume after Last-Event-ID, and a process holds a bounded number of
streams. (tests/test_service_e2e.py streams a real job under gunicorn.)"""
import json

import pytest

from service import create_app


@pytest.fixture
def app(service_env, monkeypatch):
    for name, value in {**service_env, "TUNESMITH_MAX_STREAMS": "2"}.items():
        monkeypatch.setenv(name, value)
    return create_app()


def parse(text: str) -> list[dict]:
    """SSE text -> [{"id", "event", "data"}] (comments and retry lines left out)."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith((":", "retry")))
        if "event" in fields:
            events.append({"id": fields.get("id"), "event": fields["event"], "data": json.loads(fields["data"])})
    return events


def test_the_stream_replays_every_event_in_order_and_ends_with_the_result(app):
    runtime = app.extensions["tunesmith"]
    job_id = runtime.jobs.create("melody", {"bars": 3})["id"]
    runtime.jobs.transition(job_id, ("queued",), "running")
    runtime.events.state(job_id, "running", attempt=1)
    for bar in range(3):
        for melody in range(2):
            runtime.events.publish(job_id, "bar", melody=melody, bar=bar, progress=(bar + 1) / 3,
                                   notes=[{"pitch": 60 + bar, "start_beats": 4.0 * bar, "end_beats": 4.0 * bar + 1}])
    result = {"seed": 1, "melodies": [{"index": 0, "midi": f"/api/v1/melodies/{job_id}/0.mid"}]}
    runtime.jobs.transition(job_id, ("running",), "succeeded", result=result, progress=1.0)
    runtime.events.state(job_id, "succeeded", result=result, error=None)
    runtime.events.publish(job_id, "bar", melody=0, bar=99, notes=[], progress=1.0)   # after the end: not sent

    response = app.test_client().get(f"/api/v1/jobs/{job_id}/events")
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = parse(response.get_data(as_text=True))
    assert [e["event"] for e in events] == ["state", "state"] + ["bar"] * 6 + ["state"]
    assert events[0]["data"]["state"] == "succeeded"            # the record when the stream opened
    assert events[1]["data"] == {"state": "running", "attempt": 1}
    bars = [(e["data"]["melody"], e["data"]["bar"]) for e in events if e["event"] == "bar"]
    assert bars == [(m, b) for b in range(3) for m in range(2)]
    assert events[-1]["data"] == {"state": "succeeded", "result": result, "error": None}

    # a client that reconnects after the third bar gets the rest, nothing twice
    resumed = app.test_client().get(f"/api/v1/jobs/{job_id}/events", headers={"Last-Event-ID": events[4]["id"]})
    rest = parse(resumed.get_data(as_text=True))
    assert [e["id"] for e in rest] == [e["id"] for e in events[5:]]


def test_a_job_cancelled_while_queued_ends_its_stream(app):
    runtime = app.extensions["tunesmith"]
    job_id = runtime.jobs.create("melody", {"bars": 3})["id"]
    runtime.jobs.cancel(job_id)                   # no worker saw it: no events at all
    events = parse(app.test_client().get(f"/api/v1/jobs/{job_id}/events").get_data(as_text=True))
    assert [e["data"]["state"] for e in events] == ["cancelled", "cancelled"]
    assert app.test_client().get("/api/v1/jobs/0123456789abcdef/events").status_code == 404


def test_a_process_holds_at_most_max_streams(app):
    runtime = app.extensions["tunesmith"]
    job_id = runtime.jobs.create("melody", {"bars": 3})["id"]
    client = app.test_client()
    url = f"/api/v1/jobs/{job_id}/events"
    held = [client.get(url, buffered=False) for _ in range(2)]     # open, never read to the end
    assert [r.status_code for r in held] == [200, 200]
    refused = client.get(url)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
    held[0].close()                                              # a listener goes: its slot is free
    again = client.get(url, buffered=False)
    assert again.status_code == 200
    for response in (held[1], again):
        response.close()


def test_open_streams_their_limit_and_the_refused_are_in_metrics(app):
    runtime = app.extensions["tunesmith"]
    job_id = runtime.jobs.create("melody", {"bars": 3})["id"]
    client = app.test_client()
    held = [client.get(f"/api/v1/jobs/{job_id}/events", buffered=False) for _ in range(2)]
    assert client.get(f"/api/v1/jobs/{job_id}/events").status_code == 503
    text = client.get("/metrics").get_data(as_text=True)
    process = app.extensions["streams"].process
    assert f'tunesmith_streams_open{{process="{process}"}} 2.0' in text
    assert 'tunesmith_limit{name="max_streams_per_process"} 2.0' in text
    assert 'tunesmith_refused_total{reason="streams"} 1.0' in text
    for response in held:
        response.close()
    assert f'tunesmith_streams_open{{process="{process}"}} 0.0' in client.get("/metrics").get_data(as_text=True)


def test_the_stream_is_in_the_openapi_document(app):
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    operation = spec["paths"]["/api/v1/jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"404", "503"} <= set(operation["responses"])
