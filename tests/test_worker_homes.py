"""Generate workers on other machines: two generate workers on one Redis, each with its own
TUNESMITH_HOME (no shared disk), and an API process with a third. Every job is served by one of
them, and the API serves its MIDI, JSON, MusicXML and zip from what the job left in Redis."""
import io
import os
import zipfile

import pytest

from service import create_app
from test_engine import REQUESTS, alone, finished, midis, start_worker, stop_worker, submit

pytestmark = pytest.mark.slow


def test_two_workers_with_their_own_homes_serve_one_api(service_env, monkeypatch, tmp_path, tiny_checkpoint):
    for name, value in {**service_env, "TUNESMITH_HOME": str(tmp_path / "api-home")}.items():
        monkeypatch.setenv(name, value)
    app = create_app()
    homes = [tmp_path / f"worker-{i}" for i in range(2)]
    workers = [start_worker(app, tmp_path / f"worker-{i}.log", env={"TUNESMITH_HOME": str(home)}, concurrency=2)
               for i, home in enumerate(homes)]
    try:
        client = app.test_client()
        # a model registered through Redis (as a training job does): each worker fetches it by hash
        app.extensions["tunesmith"].models.register("shared-tiny", tiny_checkpoint, {"data": "test"})
        ids = [submit(client, body) for body in REQUESTS * 2]
        ids += [submit(client, {**body, "model": "shared-tiny"}) for body in REQUESTS * 2]
        records = [finished(app, job_id) for job_id in ids]
        assert [r["state"] for r in records] == ["succeeded"] * len(ids), [r["error"] for r in records]
        ran_in = {job_id: [h for h in homes if (h / "jobs" / job_id).is_dir()] for job_id in ids}
        assert all(len(where) == 1 for where in ran_in.values())        # each job ran on one worker
        assert {where[0] for where in ran_in.values()} == set(homes)      # and both workers took jobs
        assert not (tmp_path / "api-home" / "jobs").exists() or not os.listdir(tmp_path / "api-home" / "jobs")
        shared = [r for r in records if r["params"]["model"] == "shared-tiny"]
        sha = app.extensions["tunesmith"].models.get("shared-tiny")["sha256"]
        for home in {ran_in[r["id"]][0] for r in shared}:   # every worker that ran one holds it by hash, not by name
            assert (home / "model-cache" / f"{sha}.pt").read_bytes() == tiny_checkpoint.read_bytes()
            assert not (home / "models").exists()
        for record in records:
            assert midis(client, record) == alone(tiny_checkpoint, record)
            job_id = record["id"]
            assert client.get(f"/api/v1/melodies/{job_id}/0.json").get_json()["notes"] is not None
            assert client.get(f"/api/v1/melodies/{job_id}/0.musicxml").data.lstrip().startswith(b"<?xml")
            archive = zipfile.ZipFile(io.BytesIO(client.get(f"/api/v1/melodies/{job_id}.zip").data))
            assert len(archive.namelist()) == 3 * len(record["result"]["melodies"])
    finally:
        for worker in workers:
            stop_worker(worker)


def test_the_api_sweeps_the_expired_files_it_fetched_into_its_own_home(service_env, monkeypatch, tmp_path):
    """What an API process fetched from Redis into its own TUNESMITH_HOME goes when the job has
    expired, as in a worker's home: the first request to the downloads starts the sweep."""
    import time as time_mod
    from service import downloads
    from support import wait_until
    home = tmp_path / "api-home"
    for name, value in {**service_env, "TUNESMITH_HOME": str(home)}.items():
        monkeypatch.setenv(name, value)
    app = create_app()
    old, live = home / "jobs" / ("a" * 32), home / "jobs" / ("b" * 32)
    for folder in (old, live):
        folder.mkdir(parents=True)
        (folder / "melody-0.mid").write_bytes(b"MThd")
    stale = time_mod.time() - app.extensions["tunesmith"].job_ttl - 3600
    os.utime(old / "melody-0.mid", (stale, stale))
    os.utime(live / "melody-0.mid", (stale, stale))
    app.extensions["tunesmith"].jobs.create("melody", {}, job_id="b" * 32)  # its record lives: it stays
    monkeypatch.setattr(downloads, "_last_sweep", [0.0])
    assert app.test_client().get("/api/v1/melodies/" + "c" * 32 + ".mid").status_code == 404
    wait_until(lambda: not old.exists(), 10, "the expired folder to go")
    assert live.is_dir()
