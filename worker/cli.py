"""`tunesmith worker`: one Celery worker of the job runtime against REDIS_URL (what a container
runs), and the worker command line that `tunesmith serve` (service/cli.py) starts as well.

    tunesmith worker --queues generate|train [--concurrency N]

A generate worker is one process with its models loaded (worker/model_host.py) and Celery's threads
pool: each thread holds one job and waits on the model's batcher, so `--concurrency` (default
`TUNESMITH_GENERATE_CONCURRENCY`, 32) is how many jobs share one step loop. A train worker runs one
job per prefork process (default 1): training keeps a process of its own, which Celery's time
limits can kill.
"""
import os
import sys

from worker.settings import open_without_token


def worker_command(queue: str, concurrency: int = 1) -> list[str]:
    """The Celery worker command for one queue: threads around the batcher for generate, prefork
    (whose time limits kill a process) for train."""
    pool = "threads" if queue == "generate" else "prefork"
    return ["celery", "-A", "worker.celery_worker", "worker", "-Q", queue, "-c", str(concurrency),
            "--pool", pool, "-n", f"{queue}@%h", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle"]


def default_concurrency(queue: str, environ=None) -> int:
    """Jobs a worker of this queue holds at once unless told: a generate worker's batch, one training job."""
    from worker.settings import generation_throughput
    env = os.environ if environ is None else environ
    return generation_throughput(env)["TUNESMITH_GENERATE_CONCURRENCY"] if queue == "generate" else 1


def executable(argv: list[str]) -> list[str]:
    """Run a console script from this interpreter's environment (works without PATH set)."""
    return [sys.executable, "-m", argv[0], *argv[1:]]


def run_worker(args) -> int:
    if not os.environ.get("REDIS_URL"):
        print("tunesmith worker needs REDIS_URL (e.g. redis://localhost:6379/0)", file=sys.stderr)
        return 2
    if args.queues == "train" and not os.environ.get("TUNESMITH_TOKEN") and not open_without_token(os.environ):
        print("tunesmith worker --queues train needs TUNESMITH_TOKEN, the token the API asks of training "
              "requests (or TUNESMITH_OPEN=1 to accept training from anyone)", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    argv = executable(worker_command(args.queues, args.concurrency or default_concurrency(args.queues)))
    os.execv(argv[0], argv)


def add_commands(subparsers) -> None:
    """Add `worker` to a `tunesmith` argument parser's subcommands."""
    p = subparsers.add_parser("worker", help="run one Celery worker against REDIS_URL",
                              description="Run one Celery worker of the Tunesmith service against REDIS_URL.")
    p.add_argument("--queues", choices=("generate", "train"), required=True)
    p.add_argument("--concurrency", type=int, default=None,
                   help="jobs held at once (generate: threads, train: prefork processes); generate: TUNESMITH_GENERATE_CONCURRENCY (32), train: 1")
    p.set_defaults(func=run_worker)
