"""The `tunesmith` console script: every command, mounted from the layer that owns it (the
model's train, generate, evaluate, ... from model/cli.py, `worker` from worker/cli.py), and
`serve`, which is the service's own.

    tunesmith serve [--host 127.0.0.1] [--port 8000]
        One machine, one command: without REDIS_URL it starts an embedded Redis
        (service/embedded.py); then a generate worker, a train worker and the API (gunicorn),
        each a child process with exactly the command docker-compose.yml runs. Prints the URL
        and the bearer token; Ctrl-C stops everything cleanly.
    tunesmith worker --queues generate|train [--concurrency N]
        One Celery worker against REDIS_URL (what a container runs).

Run without the console script as `python -m service.cli serve`. Building the parser imports
no torch: the process that supervises the service never needs it.
"""
import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from model import cli as model_cli
from service.config import load_config
from worker import cli as worker_cli
from worker.cli import default_concurrency, executable, worker_command

STOP_GRACE_S = 15


def api_command(host: str, port: int, workers: int = 2, streams: int = 32) -> list[str]:
    """The gunicorn command that serves the API: per process, 8 threads for requests plus one for
    each event stream it may hold open (TUNESMITH_MAX_STREAMS, service/events.py)."""
    return ["gunicorn", "--bind", f"{host}:{port}", "--workers", str(workers), "--threads", str(8 + streams),
            "--timeout", "60", "--access-logfile", "-", "service:create_app()"]


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
        for name, argv in (("generate worker", worker_command("generate", default_concurrency("generate", env))),
                           ("train worker", worker_command("train")),
                           ("api", api_command(args.host, args.port, args.api_workers,
                                               load_config(env)["TUNESMITH_MAX_STREAMS"]))):
            # own session: a Ctrl-C reaches only us, and we stop the children in order
            children[name] = subprocess.Popen(executable(argv), env=env, start_new_session=True)
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


def add_commands(subparsers) -> None:
    """Add `serve` to a `tunesmith` argument parser's subcommands."""
    p = subparsers.add_parser("serve", help="run the API, workers and (without REDIS_URL) a Redis",
                              description="Run the Tunesmith service: the HTTP API, a generate worker and a train "
                              "worker; without REDIS_URL an embedded Redis is started too.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-workers", type=int, default=2, help="gunicorn worker processes")
    p.set_defaults(func=serve)


COMMANDS = (worker_cli.add_commands, add_commands)   # mounted beside the model's own


def build_parser() -> argparse.ArgumentParser:
    """The whole `tunesmith` parser, as `tunesmith --help` shows it."""
    return model_cli.build_parser(mount=COMMANDS)


def parse_args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    """The console script (pyproject.toml's `tunesmith`)."""
    return model_cli.main(argv, mount=COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
