"""A real `celery worker` subprocess on the generate queue: a worker SIGKILLed in the middle of a
job, and cancelling queued and running jobs. The worker runs the command `tunesmith
worker` runs, with tests/slow_jobs.py as its entry module, so every job waits a moment before
generating: long enough to act on."""
import base64
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from service import create_app
from support import stop_worker, wait_until
from worker import queues_served
from worker.cli import executable, worker_command

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
DELAY_S = 2.0


def start_worker(app, log_path, delay_s=DELAY_S):
    """What `tunesmith worker --queues generate` runs (worker/cli.py), its jobs slowed by `delay_s`."""
    argv = [("slow_jobs" if part == "worker.celery_worker" else part) for part in worker_command("generate")]
    env = {**os.environ, "SLOW_JOB_S": str(delay_s), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(executable(argv), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    wait_until(lambda: queues_served(app.extensions["celery"], timeout=0.5), 60, "the worker")
    return worker


@pytest.fixture
def stack(service_env, monkeypatch, tmp_path):
    """(Flask app, worker process): the app submits, the worker runs the jobs."""
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    app = create_app()
    worker = start_worker(app, tmp_path / "worker.log")
    try:
        yield app, worker
    finally:
        stop_worker(worker)


def submit(client, **body) -> str:
    response = client.post("/api/v1/melodies", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


ADMIN = {"Authorization": "Bearer test-token"}       # service_env's token: may cancel any job


def state_of(app, job_id, *states, timeout=90) -> dict:
    store = app.extensions["tunesmith"].jobs
    return wait_until(lambda: (r := store.get(job_id)) and r["state"] in states and r, timeout,
                      f"job {job_id} to be {'/'.join(states)}")


def test_a_job_whose_worker_is_killed_completes_exactly_once_on_the_next_worker(service_env, monkeypatch, tmp_path):
    """A generate worker is one process (its tasks are threads around its batcher): SIGKILLed
    mid-job, its lease lapses (2 s here) and the next worker's reaper queues the job again; it runs
    there once, with the bytes the same request gives uninterrupted."""
    for name, value in {**service_env, "TUNESMITH_LEASE_S": "2"}.items():
        monkeypatch.setenv(name, value)
    app = create_app()
    client = app.test_client()
    worker = start_worker(app, tmp_path / "worker.log")
    job_id = submit(client, bars=4, seed=77, count=2)
    running = state_of(app, job_id, "running")
    killed = running["worker_pid"]
    assert killed == worker.pid                     # the job runs in the worker's own process
    os.kill(killed, signal.SIGKILL)
    worker.wait()
    successor = start_worker(app, tmp_path / "worker.log")
    try:
        done = state_of(app, job_id, "succeeded", "failed")
        assert done["state"] == "succeeded", done["error"]
        assert done["attempts"] == 2 and done["completions"] == 1
        assert done["worker_pid"] == successor.pid
        folder = Path(app.extensions["tunesmith"].home) / "jobs" / job_id
        # the job stores MIDI and JSON; MusicXML and the zip are rendered on their first download (worker/formats.py)
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [f"melody-{i}.{ext}" for i in range(2) for ext in ("mid", "json")])
        for i in range(2):
            assert client.get(f"/api/v1/melodies/{job_id}/{i}.musicxml").status_code == 200
        assert client.get(f"/api/v1/melodies/{job_id}.zip").status_code == 200
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [f"melody-{i}.{ext}" for i in range(2) for ext in ("mid", "musicxml", "json")] + ["melodies.zip"])

        again = submit(client, bars=4, seed=77, count=2)     # the same request, never interrupted
        assert state_of(app, again, "succeeded")["attempts"] == 1
        for i in range(2):
            assert client.get(f"/api/v1/melodies/{job_id}/{i}.mid").data == \
                client.get(f"/api/v1/melodies/{again}/{i}.mid").data
    finally:
        stop_worker(successor)


def test_a_bad_primer_that_got_past_the_api_fails_its_job_with_a_message_and_the_worker_lives_on(stack):
    app, worker = stack
    runtime = app.extensions["tunesmith"]
    truncated = base64.b64encode(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x00\x40\x00\x90").decode()
    params = {"bars": 2, "seed": 1, "primer": truncated, "model": "default"}
    bad = runtime.submit("melody", params)["id"]            # straight to the queue, as a job from elsewhere
    failed = state_of(app, bad, "succeeded", "failed")
    assert failed["state"] == "failed" and "primer is not a readable MIDI file" in failed["error"], failed["error"]
    good = submit(app.test_client(), bars=2, seed=2)
    assert state_of(app, good, "succeeded", "failed")["state"] == "succeeded" and worker.poll() is None


def test_cancelled_jobs_never_run_to_success(stack):
    app, _ = stack
    client = app.test_client()
    home = Path(app.extensions["tunesmith"].home)
    running = submit(client, bars=2)
    state_of(app, running, "running")
    queued = submit(client, bars=2)                   # waits: the worker holds one job at a time
    assert app.extensions["tunesmith"].jobs.get(queued)["state"] == "queued"

    assert client.delete(f"/api/v1/jobs/{queued}", headers=ADMIN).get_json()["state"] == "cancelled"
    assert client.delete(f"/api/v1/jobs/{running}", headers=ADMIN).get_json()["state"] == "cancelled"

    after = submit(client, bars=2)                    # FIFO: once this one is done, both were seen
    assert state_of(app, after, "succeeded", "failed")["state"] == "succeeded"
    for job_id in (running, queued):
        record = app.extensions["tunesmith"].jobs.get(job_id)
        assert record["state"] == "cancelled" and record["result"] is None
        assert not (home / "jobs" / job_id).exists()
    assert app.extensions["tunesmith"].jobs.get(queued)["attempts"] == 0   # skipped, never started


def test_a_job_whose_whole_worker_died_runs_again_on_the_next_worker(service_env, monkeypatch, tmp_path):
    """The worker's parent dies too (machine lost): Redis hands the unacknowledged task out again
    once the visibility timeout has passed (here 4 s instead of hours) to the next worker."""
    visibility_s = 4
    for name, value in {**service_env, "TUNESMITH_VISIBILITY_TIMEOUT": str(visibility_s)}.items():
        monkeypatch.setenv(name, value)
    app = create_app()
    worker = start_worker(app, tmp_path / "worker.log")
    job_id = submit(app.test_client(), bars=2, seed=5)
    state_of(app, job_id, "running")
    os.killpg(worker.pid, signal.SIGKILL)            # the parent and its pool process
    worker.wait()
    time.sleep(visibility_s + 1)
    assert app.extensions["tunesmith"].jobs.get(job_id)["state"] == "running"   # nobody is on it
    successor = start_worker(app, tmp_path / "worker.log")
    try:
        done = state_of(app, job_id, "succeeded", "failed")
        assert done["state"] == "succeeded" and done["attempts"] == 2 and done["completions"] == 1
    finally:
        stop_worker(successor)
