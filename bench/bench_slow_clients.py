"""Does the API answer while hundreds of clients stall half-way through a request?

Starts the API as `tunesmith serve` runs it (service/cli.py: api_command) on a Redis given by
REDIS_URL, opens N connections that each send half a request line and then nothing, and times
GET /healthz (10 s at most) with them all open:

    REDIS_URL=redis://127.0.0.1:6379/13 python bench/bench_slow_clients.py --stalled 300
    REDIS_URL=... python bench/bench_slow_clients.py --send 'GET /healthz HTTP/1.1\r\nHost: x\r\n'

The figures are in docs/benchmarks.md.
"""
import argparse
import os
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


def healthz_seconds(base: str, timeout: float = 10.0) -> float | None:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=timeout) as response:
            response.read()
        return time.perf_counter() - started
    except OSError:
        return None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stalled", type=int, default=300)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--send", default="GET /healthz HT", help="what each stalled client sends before stalling "
                        "(default: half a request line; try 'GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n', headers unfinished)")
    args = parser.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TUNESMITH_HOME": tempfile.mkdtemp(prefix="slow-clients-"),
           "TUNESMITH_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:"}
    command = executable(api_command("127.0.0.1", port, args.api_workers))
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    stalled = []
    try:
        deadline = time.monotonic() + 60
        while healthz_seconds(base, 2) is None:
            if time.monotonic() > deadline:
                raise SystemExit("the API did not start")
            time.sleep(0.2)
        print(f"idle: /healthz in {healthz_seconds(base) * 1000:.1f} ms")
        for _ in range(args.stalled):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(args.send.encode().decode("unicode_escape").encode())   # then nothing
            stalled.append(sock)
        time.sleep(1)
        took = healthz_seconds(base)
        print(f"{args.stalled} stalled connections sending {args.send!r}: /healthz " +
              ("did not answer within 10 s" if took is None else f"in {took * 1000:.1f} ms"))
        time.sleep(3)
        closed = sum(1 for s in stalled if _closed(s))
        print(f"after 4 s, the server had closed {closed} of the {args.stalled} stalled connections")
    finally:
        for sock in stalled:
            sock.close()
        server.terminate()
        server.wait(20)


def _closed(sock) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


if __name__ == "__main__":
    main()
