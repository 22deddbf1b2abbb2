"""Job records and the plain job functions around the tasks, on the real Redis: state
changes, attempt limit (poison jobs), progress from training events, expiry sweep, the
registry and atomic files."""
import io
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest

from service import create_app
from worker.jobs import claim
from worker.registry import ModelRegistry
from model.representation.files import atomic_write
from worker.storage import sweep_expired
from worker.training import ProgressWriter


@pytest.fixture
def services(service_env, monkeypatch):
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    return create_app().extensions["tunesmith"]


def test_state_changes_are_compare_and_set(services):
    store = services.jobs
    job = store.create("melody", {"bars": 4})
    assert store.ttl > 0 and 0 < store.redis.ttl(store.key(job["id"])) <= store.ttl
    assert store.transition(job["id"], ("queued",), "running")
    assert not store.transition(job["id"], ("queued",), "running")     # already running
    assert store.cancel(job["id"])
    assert not store.transition(job["id"], ("running",), "succeeded")  # a late finish cannot undo a cancel
    assert store.get(job["id"])["state"] == "cancelled"
    assert not store.cancel(job["id"])
    assert not store.update("0123456789abcdef", progress=1.0)          # no record, nothing written
    assert store.get("0123456789abcdef") is None


def test_claim_counts_attempts_and_fails_a_poison_job(services):
    store = services.jobs
    job_id = store.create("melody", {})["id"]
    for attempt in (1, 2):
        record = claim(services, job_id, max_attempts=2)
        assert record["state"] == "running" and record["attempts"] == attempt
    assert claim(services, job_id, max_attempts=2) is None             # a third delivery
    record = store.get(job_id)
    assert record["state"] == "failed" and "gave up after 2 attempts" in record["error"]


def test_claim_skips_cancelled_and_finished_jobs(services):
    store = services.jobs
    cancelled = store.create("melody", {})["id"]
    store.cancel(cancelled)
    assert claim(services, cancelled, 3) is None
    assert store.get(cancelled)["attempts"] == 0
    assert claim(services, "0123456789abcdef0123456789abcdef", 3) is None


def test_progress_writer_turns_training_events_into_the_record(services):
    store = services.jobs
    job_id = store.create("training", {}, training={})["id"]
    store.transition(job_id, ("queued",), "running")
    writer = ProgressWriter(store, job_id)
    history = []
    writer({"event": "step", "epoch": 1, "epochs": 2, "step": 5, "steps_per_epoch": 10, "train_loss": 3.0,
            "tokens_per_s": 900.0, "eta_s": 12.0, "history": history})
    record = store.get(job_id)
    assert record["progress"] == 0.25 and record["training"]["step"] == 5 and record["training"]["eta_s"] == 12.0
    history.append({"epoch": 1, "train_loss": 2.5, "valid_loss": 2.6, "tokens_per_s": 1000.0, "seconds": 1.0})
    writer({"event": "epoch", "epoch": 1, "epochs": 2, "step": 0, "steps_per_epoch": 10, "train_loss": 2.5,
            "tokens_per_s": 1000.0, "eta_s": None, "history": history})
    record = store.get(job_id)
    assert record["progress"] == 0.5
    assert record["training"]["history"] == [{"epoch": 1, "train_loss": 2.5, "valid_loss": 2.6,
                                              "tokens_per_s": 1000.0, "seconds": 1.0}]
    writer({"event": "done", "epoch": 1, "epochs": 2, "step": 0, "steps_per_epoch": None, "train_loss": None,
            "tokens_per_s": None, "eta_s": None, "history": history})
    assert store.get(job_id)["training"]["tokens_per_s"] == 1000.0     # kept from the last event that had it
    assert not writer.should_stop()
    store.cancel(job_id)
    writer.last_check = 0.0
    assert writer.should_stop()


def test_sweep_removes_only_old_folders_without_records(services, tmp_path):
    store = services.jobs
    home = tmp_path / "home"
    live = store.create("melody", {})["id"]
    for job_id in (live, "a" * 32, "b" * 32):
        atomic_write(home / "jobs" / job_id / "melody-0.mid", b"MThd")
    later = time.time() + 10 * 86400
    removed = sweep_expired(home, lambda j: store.get(j) is not None, ttl=86400, now=later)
    assert sorted(removed) == ["a" * 32, "b" * 32]
    assert (home / "jobs" / live).is_dir()
    assert sweep_expired(home, lambda j: False, ttl=86400) == []           # too recent to go


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    path = atomic_write(tmp_path / "x" / "melody-0.mid", b"one")
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two" and [p.name for p in path.parent.iterdir()] == ["melody-0.mid"]


def test_registry_names_defaults_and_idempotent_registration(tmp_path, tiny_checkpoint):
    registry = ModelRegistry(tmp_path, tiny_checkpoint)
    assert registry.default_name() == "default" and [m["name"] for m in registry.list()] == ["default"]
    assert registry.register("folk", tiny_checkpoint, {"job": "j1", "data": "x"}) == "folk"
    assert registry.register("folk", tiny_checkpoint, {"job": "j1", "data": "x"}) == "folk"   # re-delivered
    assert registry.register("folk", tiny_checkpoint, {"job": "j2", "data": "x"}) == "folk-2"
    registry.set_default("folk-2")
    assert registry.default_name() == "folk-2"
    assert [m["name"] for m in registry.list() if m["default"]] == ["folk-2"]
    with pytest.raises(KeyError):
        registry.set_default("nosuch")
    with pytest.raises(ValueError, match="model name"):
        registry.register("../evil", tiny_checkpoint, {})
    assert registry.path("../evil") is None


def test_wav_rendering_lasts_as_long_as_the_melody():
    import pretty_midi
    from service.audio import SAMPLE_RATE, render_wav
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    piano.notes = [pretty_midi.Note(90, 60 + i, i * 0.5, (i + 1) * 0.5) for i in range(4)]   # 2 s
    midi.instruments.append(piano)
    out = io.BytesIO()
    midi.write(out)
    with wave.open(io.BytesIO(render_wav(out.getvalue()))) as w:
        assert w.getframerate() == SAMPLE_RATE and w.getsampwidth() == 2
        seconds = w.getnframes() / SAMPLE_RATE
        frames = w.readframes(w.getnframes())
    assert 2.0 < seconds < 2.5
    assert max(frames[1::2]) > 0                   # not silence


def test_the_worker_entry_module_never_imports_torch():
    """The worker's parent process loads this module before it forks its pool: no torch there."""
    code = "import sys, worker.celery_worker; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_redelivered_training_job_resumes_from_its_last_epoch(services, monkeypatch):
    """The first attempt dies right after epoch 1 was saved; the second goes on from there."""
    import worker.training as training
    from test_service_e2e import tiny_corpus_zip
    store = services.jobs
    params = {"data": "upload.zip", "epochs": 2, "cell": "gru", "hidden_size": 8, "layers": 1, "embedding_dim": 4,
              "dropout": 0.0, "batch_size": 4, "bptt": 16, "clip": 1.0, "lr": 0.01, "valid": 0.3,
              "max_minutes": 5, "name": "resumed"}
    job_id = store.create("training", params, training={})["id"]
    atomic_write(Path(services.home) / "jobs" / job_id / "upload.zip", tiny_corpus_zip())

    class Died(BaseException):
        """Stands for SIGKILL: nothing in the job catches it."""

    real_call = training.ProgressWriter.__call__

    def die_after_first_epoch(self, event):
        real_call(self, event)
        if event["event"] == "epoch" and event["epoch"] == 1:
            raise Died()
    monkeypatch.setattr(training.ProgressWriter, "__call__", die_after_first_epoch)
    with pytest.raises(Died):
        training.run_training_job(services, job_id)
    first = store.get(job_id)
    assert first["state"] == "running" and len(first["training"]["history"]) == 1

    monkeypatch.setattr(training.ProgressWriter, "__call__", real_call)
    assert training.run_training_job(services, job_id) == "succeeded"
    done = store.get(job_id)
    assert done["attempts"] == 2 and done["result"]["model"] == "resumed"
    assert [h["epoch"] for h in done["training"]["history"]] == [1, 2]
    assert done["training"]["history"][0] == first["training"]["history"][0]   # epoch 1 was not redone
    recipe = done["training"]["recipe"]  # the record shows what the rule chose for the settings left unset, and why
    assert recipe["batch_size"] == 4 and recipe["epochs"] == 2 and recipe["patience"] == 10
    assert recipe["chosen_by_rule"] == ["lr_patience", "patience", "transpose"] and recipe["start"] is None
    assert recipe["start_reason"].startswith("the shipped model does not fit: its network differs")


def test_the_registry_in_redis_serves_homes_that_share_no_disk(tmp_path, tiny_checkpoint, service_env):
    """Two processes with their own TUNESMITH_HOME on one Redis: a model registered by one is fetched
    by the other into its own cache by content hash, byte for byte; names and the default are shared."""
    import hashlib
    import redis as redis_lib
    client = redis_lib.Redis.from_url(service_env["REDIS_URL"])
    prefix = service_env["TUNESMITH_KEY_PREFIX"]
    a = ModelRegistry(tmp_path / "a", tiny_checkpoint, redis=client, prefix=prefix)
    b = ModelRegistry(tmp_path / "b", tiny_checkpoint, redis=client, prefix=prefix)
    assert a.register("folk", tiny_checkpoint, {"job": "j1", "data": "x"}) == "folk"
    assert b.register("folk", tiny_checkpoint, {"job": "j1", "data": "x"}) == "folk"   # re-delivered, elsewhere
    assert b.register("folk", tiny_checkpoint, {"job": "j2", "data": "x"}) == "folk-2"
    sha = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    fetched = b.path("folk")
    assert fetched == tmp_path / "b" / "model-cache" / f"{sha}.pt" and fetched.read_bytes() == tiny_checkpoint.read_bytes()
    assert not (tmp_path / "b" / "models").exists()                  # nothing by name on b's disk
    assert [m["name"] for m in b.list()] == ["default", "folk", "folk-2"]
    assert b.get("folk")["sha256"] == sha and b.get("folk")["available"]
    a.set_default("folk-2")
    assert b.default_name() == "folk-2" and [m["name"] for m in b.list() if m["default"]] == ["folk-2"]
    with pytest.raises(KeyError):
        b.set_default("nosuch")
    # a damaged copy in Redis is never served as the model: a fresh home finds it unavailable
    client.set(f"{prefix}model-file:{sha}", b"not the checkpoint")
    c = ModelRegistry(tmp_path / "c", tiny_checkpoint, redis=client, prefix=prefix)
    assert c.path("folk") is None
    assert b.path("folk") == fetched                                 # b's verified copy stays good


@pytest.mark.parametrize("model,error", [
    ("styled", "style must be german, chinese, any (this model's styles), got 'irish'"),
    ("default", "style must be null or 'any': this model has no style input, got 'irish'"),   # the tiny default
])
def test_a_style_the_model_does_not_know_fails_its_job_with_the_generators_words(services, tiny_style_checkpoint,
                                                                                  model, error):
    """The API refuses such a request (tests/test_api.py); a job that reaches the worker anyway (from
    elsewhere, or a model replaced since) fails with the generator's ParameterError, not a crash."""
    from worker.generation import run_generation_job
    from worker.model_host import ModelHost
    services.models.register("styled", tiny_style_checkpoint, {"data": "test"})
    host = ModelHost(services.settings, "test-worker")
    try:
        bad = services.jobs.create("melody", {"bars": 2, "seed": 1, "model": model, "style": "irish"})["id"]
        assert run_generation_job(services, host, bad) == "failed"
        assert error in services.jobs.get(bad)["error"], services.jobs.get(bad)["error"]
        good = services.jobs.create("melody", {"bars": 2, "seed": 1, "model": model, "style": "any"})["id"]
        assert run_generation_job(services, host, good) == "succeeded"
        assert services.jobs.get(good)["params"]["style"] == "any"
    finally:
        for batcher in host.batchers.values():
            batcher.close()
