"""The batcher inside a real generate worker (`tunesmith worker`'s command: one process, its tasks
threads) on the real Redis: jobs held at once share the step loop and give the bytes they give
alone and from `tunesmith generate`, a job cancelled mid-batch leaves the others untouched, and
progress moves per bar."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.generation.sampling import Generator
from service import create_app
from support import stop_worker, wait_until
from worker import queues_served
from worker.batcher import Batcher
from worker.cli import executable, worker_command
from worker.generation import generation_params

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"Authorization": "Bearer test-token"}       # service_env's token

REQUESTS = [
    {"bars": 8, "seed": 1},
    {"bars": 6, "seed": 2, "count": 3, "temperature": 1.3, "top_p": 0.9, "meter": "3/4"},
    {"bars": 5, "seed": 3, "key": "D", "scale": "dorian", "min_pitch": 55, "max_pitch": 80, "top_k": 12},
    {"min_bars": 2, "max_bars": 7, "seed": 4, "count": 2, "cadence": "tonic", "key": "G"},
    {"bars": 4, "seed": 6, "beam_width": 3, "count": 2},
    {"bars": 12, "seed": 7, "count": 4, "meter": "6/8", "avoid_repetition": False},
    {"min_bars": 3, "max_bars": 6, "seed": 8, "count": 2, "tonic_pull": 9.0},
]


def start_worker(app, log_path, env=None, concurrency=6):
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(executable(worker_command("generate", concurrency)), cwd=ROOT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_until(lambda: queues_served(app.extensions["celery"], timeout=0.5), 90, "the worker")
    return worker


@pytest.fixture
def stack(service_env, monkeypatch, tmp_path):
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    app = create_app()
    worker = start_worker(app, tmp_path / "worker.log")
    try:
        yield app
    finally:
        stop_worker(worker)


def submit(client, body) -> str:
    response = client.post("/api/v1/melodies", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def finished(app, job_id, timeout=120) -> dict:
    store = app.extensions["tunesmith"].jobs
    return wait_until(lambda: (r := store.get(job_id)) and r["state"] in ("succeeded", "failed", "cancelled") and r,
                      timeout, f"job {job_id} to finish")


def midis(client, record) -> list[bytes]:
    return [client.get(m["midi"]).data for m in record["result"]["melodies"]]


def alone(checkpoint, record) -> list[bytes]:
    """The job's request generated alone in an idle batcher, in this process, from its stored parameters."""
    batcher = Batcher(Generator(checkpoint))
    try:
        generation = batcher.submit(generation_params(record["params"])).result(timeout=120)
    finally:
        batcher.close()
    return [m.midi_bytes() for m in generation.melodies]


def test_jobs_held_at_once_give_the_bytes_they_give_alone(stack, tiny_checkpoint):
    app, client = stack, stack.test_client()
    ids = [submit(client, body) for body in REQUESTS]
    records = [finished(app, job_id) for job_id in ids]
    assert [r["state"] for r in records] == ["succeeded"] * len(REQUESTS), [r["error"] for r in records]
    for record in records:
        assert midis(client, record) == alone(tiny_checkpoint, record)
    assert len({r["worker_pid"] for r in records}) == 1     # one process held them all, one step loop ran them
    # the same requests again, one after another: the same bytes whether the worker is busy or idle
    for body, busy in zip(REQUESTS[:3], records):
        again = finished(app, submit(client, body))
        assert midis(client, again) == midis(client, busy)


def test_the_cli_gives_the_bytes_of_a_busy_service(stack, tiny_checkpoint, tmp_path):
    """`tunesmith generate` (Generator.generate) and the worker's batcher run one step loop: the
    same request and seed give the same MIDI, while the worker is busy with other jobs."""
    app, client = stack, stack.test_client()
    busy = [submit(client, {"bars": 64, "count": 4, "seed": 100 + i, "redraw_degenerate": False}) for i in range(3)]
    mine = submit(client, {"bars": 8, "seed": 5, "count": 2, "key": "D", "scale": "dorian"})
    record = finished(app, mine)
    assert record["state"] == "succeeded", record["error"]
    assert {finished(app, job_id)["state"] for job_id in busy} == {"succeeded"}
    out = tmp_path / "cli.mid"
    subprocess.run([sys.executable, "-m", "model.cli", "generate", "--model", str(tiny_checkpoint), "--bars", "8",
                    "--seed", "5", "--count", "2", "--key", "D", "--scale", "dorian", "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert midis(client, record) == [(tmp_path / f"cli-{i}.mid").read_bytes() for i in (1, 2)]


def test_prefer_wait_answers_with_the_finished_job_or_its_midi_or_202_when_not_in_time(stack):
    app, client = stack, stack.test_client()
    done = client.post("/api/v1/melodies", json={"bars": 4, "seed": 3, "count": 2}, headers={"Prefer": "wait=30"})
    assert done.status_code == 200 and done.headers["Preference-Applied"] == "wait=30"
    job = done.get_json()
    assert job["state"] == "succeeded" and len(job["result"]["melodies"]) == 2 and job["cancel_token"]
    assert client.get(job["result"]["melodies"][1]["midi"]).status_code == 200

    midi = client.post("/api/v1/melodies", json={"bars": 4, "seed": 3, "count": 2},
                       headers={"Prefer": "wait=30", "Accept": "audio/midi"})
    assert midi.status_code == 200 and midi.mimetype == "audio/midi" and midi.data.startswith(b"MThd")
    job_id = midi.headers["Location"].rsplit("/", 1)[1]
    assert midi.data == client.get(f"/api/v1/melodies/{job_id}.mid").data == client.get(job["result"]["melodies"][0]["midi"]).data

    late = client.post("/api/v1/melodies", json={"bars": 256, "count": 16, "seed": 4, "redraw_degenerate": False},
                       headers={"Prefer": "wait=1", "Accept": "audio/midi"})
    assert late.status_code == 202 and late.headers["Preference-Applied"] == "wait=1"
    assert late.get_json()["state"] == "queued"
    assert client.delete(late.get_json()["status_url"], headers=ADMIN).status_code == 200


def test_a_job_cancelled_mid_batch_leaves_the_others_untouched(stack, tiny_checkpoint):
    app, client = stack, stack.test_client()
    store = app.extensions["tunesmith"].jobs
    long = submit(client, {"bars": 256, "count": 16, "seed": 5, "redraw_degenerate": False})
    others = [submit(client, body) for body in REQUESTS[:3]]
    wait_until(lambda: (r := store.get(long)) and r["state"] == "running" and 0 < r["progress"], 120,
               "the long job to be under way")
    response = client.delete(f"/api/v1/jobs/{long}", headers=ADMIN)
    assert response.status_code == 200 and response.get_json()["state"] == "cancelled"
    after = submit(client, REQUESTS[3])           # the engine takes new work after the cancel
    records = [finished(app, job_id) for job_id in others + [after]]
    assert [r["state"] for r in records] == ["succeeded"] * 4
    for record in records:
        assert midis(client, record) == alone(tiny_checkpoint, record)
    cancelled = store.get(long)
    assert cancelled["state"] == "cancelled" and cancelled["result"] is None
    assert not (Path(app.extensions["tunesmith"].home) / "jobs" / long).exists()


@pytest.fixture
def bar_by_bar(monkeypatch):
    """Each finished bar reaches the job record at once (not grouped every 0.2 s), so that how often
    the record moves depends on the bars, not on how fast this machine generates them."""
    monkeypatch.setenv("TUNESMITH_BARS_EVERY_S", "0")


def test_progress_moves_bar_by_bar(bar_by_bar, stack):
    app, client = stack, stack.test_client()
    store = app.extensions["tunesmith"].jobs
    job_id = submit(client, {"bars": 128, "count": 2, "seed": 8, "redraw_degenerate": False})
    seen = []

    def done():
        record = store.get(job_id)
        seen.append(record["progress"])
        return record["state"] in ("succeeded", "failed")
    wait_until(done, 180, "the job", interval=0.01)
    record = store.get(job_id)
    assert record["state"] == "succeeded", record["error"]
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert len({p for p in seen if 0 < p < 1}) >= 3, seen     # bar by bar, not 0.1 then 1


def scrape(client) -> dict:
    """/metrics as {(name, labels as a sorted tuple): value}."""
    from prometheus_client.parser import text_string_to_metric_families
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True)) for s in family.samples}


def test_metrics_count_a_job_through_its_states(stack):
    app, client = stack, stack.test_client()
    jobs = lambda m, state: m.get(("tunesmith_jobs_total", (("kind", "melody"), ("state", state))), 0)  # noqa: E731
    before = scrape(client)
    job_id = submit(client, {"bars": 16, "seed": 3})
    queued = scrape(client)
    assert jobs(queued, "queued") == jobs(before, "queued") + 1
    assert finished(app, job_id)["state"] == "succeeded"
    after = wait_until(lambda: (m := scrape(client))[("tunesmith_generated_tokens_total", ())] >
                       before.get(("tunesmith_generated_tokens_total", ()), 0) and m, 10, "the engine's counters")
    for state in ("running", "succeeded"):
        assert jobs(after, state) == jobs(before, state) + 1, state
    latency = ("tunesmith_job_latency_seconds_count", ())
    assert after[latency] == before.get(latency, 0) + 1
    assert after[("tunesmith_batch_rows_count", ())] > before.get(("tunesmith_batch_rows_count", ()), 0)
    assert after[("tunesmith_queue_depth", (("queue", "generate"),))] == 0
    assert ("tunesmith_tokens_per_second", ()) in after

    cancelled = submit(client, {"bars": 256, "count": 16, "seed": 9, "redraw_degenerate": False})
    assert client.delete(f"/api/v1/jobs/{cancelled}", headers=ADMIN).status_code == 200
    assert jobs(scrape(client), "cancelled") == jobs(after, "cancelled") + 1


def test_worker_log_lines_are_json_with_the_job_id(stack, tmp_path):
    app, client = stack, stack.test_client()
    job_id = submit(client, {"bars": 4, "seed": 2})
    assert finished(app, job_id)["state"] == "succeeded"
    lines = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines()
             if line.startswith("{")]
    mine = [line for line in lines if line["job_id"] == job_id]
    assert mine and all({"time", "level", "logger", "pid", "message"} <= set(line) for line in mine)
    assert any("melodies from" in line["message"] for line in mine)


def test_readyz_sees_the_generate_worker_has_loaded_the_default_model(stack):
    """The worker says it has loaded and warmed its default model with a heartbeat in Redis
    (worker/model_host.py), written before it consumes its first job. (No train worker here, so
    /readyz is 503 for that reason.)"""
    body = stack.test_client().get("/readyz").get_json()
    (worker,) = body["checks"]["workers"]["generate"]
    assert body["checks"]["models_loaded"] == {worker: "default"}
    assert body["reasons"] == ["no worker answering on queue 'train'"]
