"""Does the API answer while hundreds of clients stall half-way through a request, or hold event
streams open?

Starts the API as `tunesmith serve` runs it (service/cli.py: api_command) on a Redis given by
REDIS_URL, opens N connections that each send a piece of a request and then nothing, and times
GET /healthz and GET /api/v1/models (10 s at most each) with them all open; then counts the
stalled connections the server has closed after --linger seconds. With --streams N it opens N
event streams on a job that stays queued (no worker runs) instead, and counts how many were
served and how many refused. With --front nginx the clients talk to nginx (deploy/nginx.conf,
what docker-compose.yml runs) in front of the API:

    REDIS_URL=redis://127.0.0.1:6379/13 python bench/bench_slow_clients.py --stalled 300
    REDIS_URL=... python bench/bench_slow_clients.py --send 'GET /healthz HTTP/1.1\r\nHost: x\r\n'
    REDIS_URL=... python bench/bench_slow_clients.py --streams 300
    REDIS_URL=... python bench/bench_slow_clients.py --front nginx     # needs nginx on PATH

The figures are in docs/benchmarks.md.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.cli import api_command  # noqa: E402
from worker.cli import executable  # noqa: E402
from worker.settings import DEFAULT_REDIS_URL  # noqa: E402

BODY_STALL = ("POST /api/v1/melodies HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\n"
              "Content-Length: 100\\r\\n\\r\\n{\"ba")


def seconds_to_answer(url: str, timeout: float = 10.0) -> float | None:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
        return time.perf_counter() - started
    except OSError:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(folder: Path, port: int, api_port: int) -> subprocess.Popen:
    """nginx with deploy/nginx.conf's server, its upstream and port moved to this machine's."""
    server = (ROOT / "deploy" / "nginx.conf").read_text()
    server = server.replace("api:8000", f"127.0.0.1:{api_port}").replace("listen 80;", f"listen 127.0.0.1:{port};")
    (folder / "server.conf").write_text(server)
    (folder / "main.conf").write_text(
        f"daemon off; pid {folder}/nginx.pid; error_log {folder}/error.log; worker_processes 1;\n"
        f"events {{ worker_connections 4096; }}\n"
        f"http {{ access_log off; client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy;\n"
        f"       fastcgi_temp_path {folder}/f; uwsgi_temp_path {folder}/u; scgi_temp_path {folder}/s;\n"
        f"       include {folder}/server.conf; }}\n")
    return subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(folder / "main.conf"),
                             "-e", str(folder / "error.log")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stall(port: int, n: int, send: str) -> list:
    clients = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(send.encode().decode("unicode_escape").encode())   # then nothing
        clients.append(sock)
    return clients


def open_streams(base: str, port: int, n: int) -> tuple[list, dict]:
    """n event streams on a job that stays queued: (their sockets, {status: how many})."""
    request = urllib.request.Request(base + "/api/v1/melodies", data=json.dumps({"bars": 2}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        job = json.loads(response.read())["id"]
    clients, statuses = stall(port, n, f"GET /api/v1/jobs/{job}/events HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"), {}
    for sock in clients:
        sock.settimeout(30)
        try:
            status = sock.recv(64).split(b" ", 2)[1].decode()
        except (OSError, IndexError):
            status = "no answer"
        statuses[status] = statuses.get(status, 0) + 1
    return clients, statuses


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stalled", type=int, default=300)
    parser.add_argument("--streams", type=int, default=0, help="open this many event streams instead of stalling")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--linger", type=float, default=8.0, help="seconds before counting closed connections")
    parser.add_argument("--front", choices=("none", "nginx"), default="none")
    parser.add_argument("--send", default="GET /healthz HT", help="what each stalled client sends before stalling "
                        "(default: half a request line; try 'GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n', headers "
                        f"unfinished, or 'body' for {BODY_STALL!r})")
    args = parser.parse_args(argv)
    send = BODY_STALL if args.send == "body" else args.send
    api_port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="slow-clients-"))
    env = {**os.environ, "TUNESMITH_HOME": str(folder / "home"), "TUNESMITH_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:",
           "TUNESMITH_RATE_LIMIT": ""}
    server = subprocess.Popen(executable(api_command("127.0.0.1", api_port, args.api_workers)), cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port, front = api_port, None
    if args.front == "nginx":
        port = free_port()
        front = start_nginx(folder, port, api_port)
    base = f"http://127.0.0.1:{port}"
    clients = []
    try:
        deadline = time.monotonic() + 60
        while seconds_to_answer(base + "/healthz", 2) is None:
            if time.monotonic() > deadline:
                raise SystemExit("the API did not start")
            time.sleep(0.2)
        print(f"idle: /healthz in {seconds_to_answer(base + '/healthz') * 1000:.1f} ms, "
              f"/api/v1/models in {seconds_to_answer(base + '/api/v1/models') * 1000:.1f} ms")
        if args.streams:
            clients, statuses = open_streams(base, port, args.streams)
            what = f"{args.streams} event streams asked for ({statuses})"
        else:
            clients = stall(port, args.stalled, send)
            what = f"{args.stalled} stalled connections sending {send!r}"
        time.sleep(1)
        for path in ("/healthz", "/api/v1/models"):
            took = seconds_to_answer(base + path)
            print(f"{what}: {path} " + ("did not answer within 10 s" if took is None else f"in {took * 1000:.1f} ms"))
        time.sleep(max(0.0, args.linger - 1))
        closed = sum(1 for s in clients if _closed(s))
        print(f"after {args.linger:g} s, the server had closed {closed} of the {len(clients)} connections")
    finally:
        for sock in clients:
            sock.close()
        for process in (front, server):
            if process is not None:
                process.terminate()
                process.wait(20)
        shutil.rmtree(folder, ignore_errors=True)
        forget_keys(env.get("REDIS_URL") or DEFAULT_REDIS_URL, env["TUNESMITH_KEY_PREFIX"])


def forget_keys(url: str, prefix: str) -> None:
    """Delete the Redis keys this run wrote (its job, queue and counters all carry its prefix)."""
    import redis
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        client.delete(key)


def _closed(sock) -> bool:
    sock.setblocking(False)
    try:
        while True:                  # what the server sent before closing (an error page), then EOF
            if sock.recv(65536) == b"":
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


if __name__ == "__main__":
    main()
