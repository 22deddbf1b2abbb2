"""The `tunesmith` console script: every command, mounted from the layer that owns it (the
model's train, generate, evaluate, ... from model/cli.py, `worker` from worker/cli.py), and
`serve`, which is the service's own.

    tunesmith serve [--host 127.0.0.1] [--port 8000]
        One machine, one command: without REDIS_URL it starts an embedded Redis
        (service/embedded.py); then a generate worker, a train worker and the API (gunicorn),
        each a child process with exactly the command docker-compose.yml runs. Prints the URL
        and the bearer token (made up when TUNESMITH_TOKEN is unset, whichever the broker, unless
        TUNESMITH_OPEN=1); a child that exits is started again (bounded, with back-off), the
        embedded Redis too (same socket, same append-only file), every child dies with serve
        however serve dies, and Ctrl-C stops everything cleanly.
    tunesmith worker --queues generate|train [--concurrency N]
        One Celery worker against REDIS_URL (what a container runs).

Run without the console script as `python -m service.cli serve`. Building the parser imports
no torch: the process that supervises the service never needs it.
"""
import argparse
import os
import resource
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from model import cli as model_cli
from service.config import CONNECTIONS_PER_PROCESS, load_config
from worker import cli as worker_cli
from worker import DEFAULT_SENTINEL_MASTER, open_without_token, persistence_warning, preexec, redis_client
from worker.cli import default_concurrency, executable, worker_command

STOP_GRACE_S = 15
MAX_RESTARTS = 5                 # of one child within RESTART_WINDOW_S, before serve gives up
RESTART_WINDOW_S = 600


def api_command(host: str, port: int, workers: int = 2, header_timeout: int = 5) -> list[str]:
    """The gunicorn command that serves the API: gevent's worker, a greenlet per connection (up to
    CONNECTIONS_PER_PROCESS a process), so stalled clients and open event streams hold no thread
    that others wait for; a request's line and headers must arrive within `header_timeout` seconds
    (gevent's worker applies its keep-alive time to them: TUNESMITH_HEADER_TIMEOUT), its body is
    bounded in the app (service/front.py). No control socket: gunicorn's default is one path per
    user ($XDG_RUNTIME_DIR or ~/.gunicorn), which a second instance would take over."""
    return ["gunicorn", "--bind", f"{host}:{port}", "--workers", str(workers), "--worker-class", "gevent",
            "--worker-connections", str(CONNECTIONS_PER_PROCESS), "--keep-alive", str(header_timeout),
            "--timeout", "60", "--no-control-socket", "--access-logfile", "-", "service:create_app()"]


def ensure_token(env: dict) -> dict:
    """Fail closed, whichever the broker: without TUNESMITH_TOKEN, make one up for the children
    (serve prints it), unless the operator opted in to open endpoints (TUNESMITH_OPEN=1)."""
    if not env.get("TUNESMITH_TOKEN") and not open_without_token(env):
        env["TUNESMITH_TOKEN"] = secrets.token_urlsafe(18)
    return env


def serve(args) -> int:
    env = dict(os.environ)
    home = Path(env.get("TUNESMITH_HOME", "var")).resolve()
    env["TUNESMITH_HOME"] = str(home)
    broker = None
    if not env.get("REDIS_URL"):
        from service.embedded import EmbeddedRedis
        broker = EmbeddedRedis(home / "redis")
        env["REDIS_URL"] = broker.url
    ensure_token(env)
    env.setdefault("OMP_NUM_THREADS", "1")
    _allow_open_files()
    commands = {"generate worker": worker_command("generate", default_concurrency("generate", env)),
                "train worker": worker_command("train"),
                "api": api_command(args.host, args.port, args.api_workers, load_config(env)["TUNESMITH_HEADER_TIMEOUT"])}
    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    supervisor = Supervisor(commands, env)
    status = 0
    try:
        supervisor.start_all()
        print(f"Tunesmith is running at http://{args.host}:{args.port}/  (API docs: /api/v1/docs)", flush=True)
        print(f"broker: {'embedded Redis at ' + env['REDIS_URL'] if broker else env['REDIS_URL']}", flush=True)
        if broker is None:
            _warn_without_persistence(env["REDIS_URL"])
        if env.get("TUNESMITH_TOKEN"):
            print(f"token for training and admin endpoints: {env['TUNESMITH_TOKEN']}", flush=True)
        else:
            print("TUNESMITH_OPEN=1 and no TUNESMITH_TOKEN: training and admin endpoints are open to anyone",
                  flush=True)
        while not stopping:
            if not supervisor.watch():
                status = 1
                break
            if broker is not None:
                broker.watch()             # a dead embedded Redis is started again, its data kept
            time.sleep(0.2)
    finally:
        print("stopping...", flush=True)
        _stop(supervisor.children)
        if broker is not None:
            broker.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped", flush=True)
    return status


class Supervisor:
    """The children of `serve`: started in sessions of their own (a Ctrl-C reaches only `serve`,
    which stops them in order), each told by the kernel to die when `serve` dies however it dies
    (worker/lifetime.py: SIGKILL to the Celery workers, whose pool processes follow them; SIGTERM to
    gunicorn, which stops its workers). A child that exits is started again after a back-off of
    1, 2, 4 ... 30 s; one that exits MAX_RESTARTS times within RESTART_WINDOW_S makes `serve` stop."""

    def __init__(self, commands: dict, env: dict):
        self.commands, self.env = commands, env
        self.children, self.exits, self.due = {}, {name: [] for name in commands}, {}

    def start_all(self) -> None:
        for name in self.commands:
            self.start(name)

    def start(self, name: str) -> None:
        death = signal.SIGTERM if name == "api" else signal.SIGKILL
        self.children[name] = subprocess.Popen(executable(self.commands[name]), env=self.env,
                                               start_new_session=True, preexec_fn=preexec(death))

    def watch(self) -> bool:
        """Restart what died (once its back-off is over); False when a child died too often."""
        now = time.monotonic()
        for name, process in self.children.items():
            if name in self.due or process.poll() is None:
                continue
            exits = self.exits[name] = [t for t in self.exits[name] if now - t < RESTART_WINDOW_S] + [now]
            if len(exits) > MAX_RESTARTS:
                print(f"{name} exited {len(exits)} times within {RESTART_WINDOW_S} s; stopping",
                      file=sys.stderr, flush=True)
                return False
            delay = min(2 ** (len(exits) - 1), 30)
            print(f"{name} exited with status {process.returncode}; starting it again in {delay} s "
                  f"({len(exits)} of {MAX_RESTARTS} restarts within {RESTART_WINDOW_S} s)", file=sys.stderr, flush=True)
            self.due[name] = now + delay
        for name, when in list(self.due.items()):
            if now >= when:
                del self.due[name]
                self.start(name)
        return True


def _allow_open_files() -> None:
    """Each API process may hold 1000 client connections and a Redis connection per open stream
    (api_command): raise this process's soft limit on open files to its hard limit, for the children."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if resource.RLIM_INFINITY not in (soft, hard) and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _warn_without_persistence(redis_url: str) -> None:
    """With REDIS_URL: say so at start when that Redis would lose accepted jobs on a restart."""
    import redis
    try:
        master = os.environ.get("TUNESMITH_SENTINEL_MASTER", DEFAULT_SENTINEL_MASTER)
        warning = persistence_warning(redis_client(redis_url, master, socket_connect_timeout=2, socket_timeout=2))
    except redis.RedisError as exc:
        warning = f"could not ask Redis about persistence ({type(exc).__name__})"
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)


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
