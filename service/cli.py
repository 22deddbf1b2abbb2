"""`tunesmith serve` and `tunesmith worker` (model/cli.py dispatches here).

    tunesmith serve [--host 127.0.0.1] [--port 8000]
        One machine, one command: without REDIS_URL it starts an embedded Redis
        (service/embedded.py); then a generate worker, a train worker and the API (gunicorn),
        each a child process with exactly the command docker-compose.yml runs. Prints the URL
        and the bearer token; Ctrl-C stops everything cleanly.
    tunesmith worker --queues generate|train [--concurrency N]
        One Celery worker against REDIS_URL (what a container runs).

Run without the console script as `python -m service.cli serve`.
"""
import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_GRACE_S = 15


def worker_command(queue: str, concurrency: int = 1) -> list[str]:
    """The Celery worker command for one queue (prefork: time limits need it)."""
    return ["celery", "-A", "worker.celery_worker", "worker", "-Q", queue, "-c", str(concurrency),
            "--pool", "prefork", "-n", f"{queue}@%h", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle"]


def api_command(host: str, port: int, workers: int = 2) -> list[str]:
    """The gunicorn command that serves the API."""
    return ["gunicorn", "--bind", f"{host}:{port}", "--workers", str(workers), "--threads", "4",
            "--timeout", "60", "--access-logfile", "-", "service:create_app()"]


def _executable(argv: list[str]) -> list[str]:
    """Run a console script from this interpreter's environment (works without PATH set)."""
    return [sys.executable, "-m", argv[0], *argv[1:]]


def serve(args) -> int:
    env = dict(os.environ)
    home = Path(env.get("TUNESMITH_HOME", "var")).resolve()
    env["TUNESMITH_HOME"] = str(home)
    broker = None
    if not env.get("REDIS_URL"):
        from service.embedded import EmbeddedRedis
        broker = EmbeddedRedis(home / "redis")
        env["REDIS_URL"] = broker.url
    if not env.get("TUNESMITH_TOKEN") and broker is not None:
        env["TUNESMITH_TOKEN"] = secrets.token_urlsafe(18)
    env.setdefault("OMP_NUM_THREADS", "1")

    children = {}
    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        for name, argv in (("generate worker", worker_command("generate")),
                           ("train worker", worker_command("train")),
                           ("api", api_command(args.host, args.port, args.api_workers))):
            # own session: a Ctrl-C reaches only us, and we stop the children in order
            children[name] = subprocess.Popen(_executable(argv), env=env, start_new_session=True)
        print(f"Tunesmith is running at http://{args.host}:{args.port}/  (API docs: /api/v1/docs)", flush=True)
        print(f"broker: {'embedded Redis at ' + env['REDIS_URL'] if broker else env['REDIS_URL']}", flush=True)
        if env.get("TUNESMITH_TOKEN"):
            print(f"token for training and admin endpoints: {env['TUNESMITH_TOKEN']}", flush=True)
        else:
            print("no TUNESMITH_TOKEN set: training and admin endpoints are open", flush=True)
        while not stopping:
            dead = [n for n, p in children.items() if p.poll() is not None]
            if dead:
                print(f"{', '.join(dead)} exited; stopping", file=sys.stderr, flush=True)
                status = 1
                break
            time.sleep(0.2)
    finally:
        print("stopping...", flush=True)
        _stop(children)
        if broker is not None:
            broker.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped", flush=True)
    return status


def _stop(children: dict) -> None:
    """API first (no new jobs), then the workers: SIGTERM (warm shutdown: running generation
    tasks finish), then SIGKILL after a grace period. A training job cut off here resumes from
    its last epoch checkpoint when its message is delivered again."""
    order = [n for n in ("api", "generate worker", "train worker") if n in children]
    for name in order:
        if children[name].poll() is None:
            children[name].send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for name in order:
        process = children[name]
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)     # the worker and its pool children
            process.wait()


def worker(args) -> int:
    if not os.environ.get("REDIS_URL"):
        print("tunesmith worker needs REDIS_URL (e.g. redis://localhost:6379/0)", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    argv = _executable(worker_command(args.queues, args.concurrency))
    os.execv(argv[0], argv)


def add_arguments(subparsers) -> None:
    """Add `serve` and `worker` to a `tunesmith` argument parser (used by model/cli.py)."""
    p = subparsers.add_parser("serve", help="run the API, workers and (without REDIS_URL) a Redis",
                              description="Run the Tunesmith service: the HTTP API, a generate worker and a train "
                              "worker; without REDIS_URL an embedded Redis is started too.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-workers", type=int, default=2, help="gunicorn worker processes")
    p.set_defaults(func=serve)
    p = subparsers.add_parser("worker", help="run one Celery worker against REDIS_URL",
                              description="Run one Celery worker of the Tunesmith service against REDIS_URL.")
    p.add_argument("--queues", choices=("generate", "train"), required=True)
    p.add_argument("--concurrency", type=int, default=1, help="worker processes (prefork)")
    p.set_defaults(func=worker)


def build_parser() -> argparse.ArgumentParser:
    """`tunesmith serve|worker` alone (model/cli.py parses these two with it: no torch imported)."""
    parser = argparse.ArgumentParser(prog="tunesmith")
    add_arguments(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
