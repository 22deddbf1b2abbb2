"""A full or read-only disk (service/disk.py): TUNESMITH_HOME on a small tmpfs of the test's own,
filled to the last byte. Every write the service is asked for answers 503 with Retry-After and a
JSON message, never 500; /readyz says so; what was stored stays readable; freeing space is all it
takes to work again. Needs root to mount (skipped with the reason otherwise)."""
import contextlib
import errno
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import forget_keys, service_environment
from support import OwnRedis, serving, wait_until

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write a file in `folder` until the file system has no byte left; returns it."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with contextlib.suppress(OSError):           # the last few bytes, below one block of the write above
        with open(folder / "filler-tail", "wb") as f:
            while True:
                f.write(b"\0" * 512)
                f.flush()
    return filler


def call(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def assert_refused_for_storage(answer, problem: str):
    status, headers, body = answer
    assert status == 503, (status, body)
    assert int(headers["Retry-After"]) > 0
    message = json.loads(body)
    assert message["storage"] == problem and problem in message["error"], message
    assert "/" not in message["error"]                # no server path


def test_a_full_then_read_only_home_answers_503_keeps_what_was_stored_and_recovers(tmp_path, tiny_checkpoint,
                                                                                  redis_base_url):
    with tmpfs(tmp_path / "home", "16m") as home:
        env = {**os.environ, **service_environment(home, tiny_checkpoint, redis_base_url),
               "TUNESMITH_MIN_FREE_MB": "1"}
        try:
            with serving(home, env, log_folder=tmp_path) as base:
                api = base + "/api/v1"

                def finished(job_id):
                    return lambda: json.loads(call("GET", f"{api}/jobs/{job_id}")[2])["state"] == "succeeded"
                _, _, body = call("POST", api + "/melodies", {"bars": 2, "seed": 3})
                before = json.loads(body)["id"]
                wait_until(finished(before), 90, "a melody before the disk fills")
                stored = call("GET", f"{api}/melodies/{before}.mid")
                assert stored[0] == 200

                filler = fill(home)
                assert_refused_for_storage(call("POST", api + "/melodies", {"bars": 2}), "full")
                upload = call("POST", api + "/training-jobs", {"data_base64": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="},
                              headers={"Authorization": "Bearer test-token"})
                assert upload[0] in (400, 503), upload      # an empty zip is 400 before any write
                # rendered on its first download, the MusicXML has nowhere to go: 503, not 500
                assert_refused_for_storage(call("GET", f"{api}/melodies/{before}.musicxml"), "full")
                assert call("GET", f"{api}/melodies/{before}.mid")[2] == stored[2]   # nothing stored is lost
                status, _, body = call("GET", base + "/readyz")
                assert status == 503 and json.loads(body)["checks"]["storage"]["status"] == "full"
                assert any("storage full" in r for r in json.loads(body)["reasons"])
                assert call("GET", base + "/healthz")[0] == 200

                filler.unlink()                             # space freed: it works again, by itself
                status, _, body = call("POST", api + "/melodies", {"bars": 2, "seed": 4})
                assert status == 202, body
                wait_until(finished(json.loads(body)["id"]), 90, "a melody after space was freed")
                assert call("GET", f"{api}/melodies/{before}.musicxml")[0] == 200
                wait_until(lambda: call("GET", base + "/readyz")[0] == 200, 30, "/readyz ready again")

                subprocess.run(["mount", "-o", "remount,ro", str(home)], check=True)
                try:
                    assert_refused_for_storage(call("POST", api + "/melodies", {"bars": 2}), "read-only")
                    status, _, body = call("GET", base + "/readyz")
                    assert status == 503 and json.loads(body)["checks"]["storage"]["status"] == "read-only"
                    assert call("GET", f"{api}/melodies/{before}.mid")[2] == stored[2]
                finally:
                    subprocess.run(["mount", "-o", "remount,rw", str(home)], check=True)
                assert call("POST", api + "/melodies", {"bars": 2})[0] == 202
        finally:
            forget_keys(env)


def test_a_broker_that_cannot_write_its_append_only_file_is_503_and_loses_nothing(tmp_path, service_env,
                                                                                  monkeypatch):
    """The embedded broker keeps its append-only file in TUNESMITH_HOME: when that disk is full,
    Redis refuses writes (MISCONF). The API says the storage is full; the records it had are kept,
    and once space is freed Redis writes its file and takes writes again."""
    from service import create_app
    with tmpfs(tmp_path / "redis", "4m") as folder:
        broker = OwnRedis(folder).start()
        try:
            for name, value in {**service_env, "REDIS_URL": broker.url}.items():
                monkeypatch.setenv(name, value)
            client = create_app().test_client()
            kept = client.post("/api/v1/melodies", json={"bars": 2}).get_json()["id"]
            filler = fill(folder)

            def refused():
                response = client.post("/api/v1/melodies", json={"bars": 2})
                return response if response.status_code == 503 else None
            response = wait_until(refused, 20, "Redis to refuse writes for want of disk")
            assert response.get_json()["storage"] == "full" and int(response.headers["Retry-After"]) > 0
            assert client.get(f"/api/v1/jobs/{kept}").get_json()["state"] == "queued"

            filler.unlink()
            wait_until(lambda: client.post("/api/v1/melodies", json={"bars": 2}).status_code == 202, 20,
                       "Redis to take writes again")
            broker.stop()                         # and what it kept is on disk: a restart reads it back
            broker.start()
            assert client.get(f"/api/v1/jobs/{kept}").get_json()["state"] == "queued"
        finally:
            broker.stop()
