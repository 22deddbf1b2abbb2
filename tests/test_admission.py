"""Admission control (service/admission.py, worker/backlog.py) through Flask's test client on the real
Redis: the backlog bound in work (503), a client's share of unfinished work and its request rate
(429), each with Retry-After and a JSON message; finishing, failing or cancelling a job gives its
work back; the limits are in /metrics. Clients are told apart by address (REMOTE_ADDR) or the token."""
import pytest

from service import create_app
from worker import job_work
from worker.jobs import fail

A, B = {"REMOTE_ADDR": "10.0.0.1"}, {"REMOTE_ADDR": "10.0.0.2"}
TOKEN = {"Authorization": "Bearer test-token"}


@pytest.fixture
def make_client(service_env, monkeypatch):
    def make(**settings):
        for name, value in {**service_env, **settings}.items():
            monkeypatch.setenv(name, str(value))
        app = create_app()
        return app, app.test_client()
    return make


def post(client, who, bars=8, count=1, headers=None):
    return client.post("/api/v1/melodies", json={"bars": bars, "count": count}, environ_base=who, headers=headers)


def assert_refused(response, status):
    assert response.status_code == status, response.get_json()
    assert int(response.headers["Retry-After"]) > 0
    assert response.get_json()["error"]
    return response.get_json()


def test_a_jobs_work_is_its_bars_times_its_rows():
    assert job_work({"bars": 256, "count": 16}) == 512 * job_work({"bars": 8, "count": 1})
    assert job_work({"bars": 8, "min_bars": 4, "max_bars": 32, "count": 2}) == 64
    assert job_work({"bars": 8, "count": 1, "beam_width": 4}) == 32


def test_beyond_the_backlog_new_jobs_get_503_and_a_finished_job_makes_room(make_client):
    app, client = make_client(TUNESMITH_MAX_BACKLOG_WORK=100, TUNESMITH_MAX_CLIENT_WORK=1000)
    accepted = [post(client, A, 8, 4).get_json() for _ in range(3)]           # 96 of 100
    body = assert_refused(post(client, B, 8, 4), 503)
    assert "full" in body["error"] and body["limit"] == 100
    assert post(client, B, 4, 1).status_code == 202                          # 4 more still fit
    assert assert_refused(post(client, B, 1, 1), 503)

    cancelled = client.delete(f"/api/v1/jobs/{accepted[0]['id']}",
                              headers={"Authorization": f"Bearer {accepted[0]['cancel_token']}"})
    assert cancelled.status_code == 200
    assert post(client, B, 8, 4).status_code == 202                          # its 32 were given back
    runtime = app.extensions["tunesmith"]
    record = runtime.jobs.get(accepted[1]["id"])
    runtime.jobs.transition(record["id"], ("queued",), "running")
    fail(runtime, record["id"], "a worker's failure")                       # failed: given back too
    assert runtime.backlog.totals()["work"] == 100 - 32
    fail(runtime, record["id"], "again")                                     # once only
    assert runtime.backlog.totals()["work"] == 100 - 32


def test_one_clients_unfinished_work_is_bounded_and_the_others_are_served(make_client):
    app, client = make_client(TUNESMITH_MAX_BACKLOG_WORK=10_000, TUNESMITH_MAX_CLIENT_WORK=64)
    first = post(client, A, 16, 4)
    assert first.status_code == 202
    body = assert_refused(post(client, A, 8, 1), 429)
    assert body["limit"] == 64 and body["work"] == 8 and "unfinished" in body["error"]
    assert post(client, B, 16, 4).status_code == 202                        # another address
    assert post(client, A, 16, 4, headers=TOKEN).status_code == 202          # the token holder is its own client
    made_up = {"Authorization": "Bearer not-the-token"}
    assert post(client, A, 8, 1, headers=made_up).status_code == 429         # a made-up token is still address A

    runtime = app.extensions["tunesmith"]
    job_id = first.get_json()["id"]
    runtime.jobs.transition(job_id, ("queued",), "running")
    assert runtime.jobs.transition(job_id, ("running",), "succeeded")
    assert post(client, A, 8, 1).status_code == 202


def test_a_clients_submission_rate_is_limited_with_retry_after(make_client):
    _, client = make_client(TUNESMITH_RATE_LIMIT="3/minute")
    assert [post(client, A).status_code for _ in range(3)] == [202, 202, 202]
    body = assert_refused(post(client, A), 429)
    assert "too many requests" in body["error"]
    assert post(client, B).status_code == 202                                # another client's own count
    assert client.get("/api/v1/models", environ_base=A).status_code == 200   # reading is not limited


def test_the_limits_the_backlog_and_the_refusals_are_in_metrics(make_client):
    _, client = make_client(TUNESMITH_MAX_BACKLOG_WORK=50, TUNESMITH_MAX_CLIENT_WORK=40,
                            TUNESMITH_RATE_LIMIT="120/minute")
    post(client, A, 8, 4)
    post(client, A, 8, 2)                                                    # 429: A's share
    post(client, B, 8, 4)                                                    # 503: the backlog
    text = client.get("/metrics").get_data(as_text=True)
    assert 'tunesmith_limit{name="max_backlog_work"} 50.0' in text
    assert 'tunesmith_limit{name="max_client_work"} 40.0' in text
    assert 'tunesmith_limit{name="client_submissions_per_s"} 2.0' in text
    assert "tunesmith_backlog_work 32.0" in text and "tunesmith_backlog_jobs 1.0" in text
    assert 'tunesmith_refused_total{reason="client_work"} 1.0' in text
    assert 'tunesmith_refused_total{reason="backlog"} 1.0' in text


def test_the_work_of_a_job_whose_record_is_gone_is_released_by_the_sweep(make_client):
    app, client = make_client(TUNESMITH_MAX_CLIENT_WORK=8)
    job_id = post(client, A, 8, 1).get_json()["id"]
    runtime = app.extensions["tunesmith"]
    runtime.jobs.delete(job_id)                                              # as if it had expired
    assert post(client, A, 8, 1).status_code == 429
    assert runtime.backlog.sweep(lambda jid: runtime.jobs.get(jid) is not None) == [job_id]
    assert post(client, A, 8, 1).status_code == 202
