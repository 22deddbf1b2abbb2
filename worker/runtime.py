"""The job runtime as one object: Redis, the job records, the model registry, the storage folder
and the Celery app, built from the settings (worker/settings.py).

The API holds one per process (`app.extensions["tunesmith"]`) to submit, read and cancel jobs; a
worker process builds its own the first time one of its tasks runs (`runtime_of`), after the
fork. Jobs are published by task name, so the publisher never imports worker/tasks.py. No Flask
here, and no torch.
"""
from pathlib import Path

import redis
from celery import Celery

from worker.backlog import Backlog
from worker.broker import DEFAULT_SENTINEL_MASTER, await_replicas, redis_client
from worker.events import JobEvents
from worker.formats import KeptFiles
from worker.metrics import count_state
from worker.leases import LEASE_S, Leases
from worker.records import JobStore
from worker.registry import ModelRegistry
from worker.settings import DEFAULT_REDIS_URL, TASKS, load_settings
from worker.storage import job_dir


def make_celery(settings: dict) -> Celery:
    """A Celery app configured from `settings["CELERY"]` (worker/settings.py), carrying `settings`
    for the tasks' runtime."""
    app = Celery("tunesmith")
    app.config_from_object(settings["CELERY"])
    app.tunesmith_settings = settings
    return app


class Runtime:
    """What the API and the tasks share: Redis, job records and their events, the registry, the storage folder.
    `settings["REDIS_CONNECTIONS"]`, when given, bounds the Redis client's connections (redis-py's
    default is 100, fewer than an API process may use at once: service/config.py)."""

    def __init__(self, settings: dict, celery_app: Celery | None = None):
        self.settings = settings
        self.home = settings["TUNESMITH_HOME"]
        pool = {"max_connections": settings["REDIS_CONNECTIONS"]} if settings.get("REDIS_CONNECTIONS") else {}
        self.redis = redis_client(settings["REDIS_URL"] or DEFAULT_REDIS_URL,
                                  settings.get("TUNESMITH_SENTINEL_MASTER", DEFAULT_SENTINEL_MASTER),
                                  socket_connect_timeout=1, socket_timeout=2, **pool)
        self.jobs = JobStore(self.redis, settings["TUNESMITH_KEY_PREFIX"], settings["TUNESMITH_JOB_TTL"])
        self.backlog = Backlog(self.redis, settings["TUNESMITH_KEY_PREFIX"])
        self.events = JobEvents(self.redis, settings["TUNESMITH_KEY_PREFIX"], settings["TUNESMITH_JOB_TTL"])
        self.files = KeptFiles(self.redis, settings["TUNESMITH_KEY_PREFIX"], settings["TUNESMITH_JOB_TTL"])
        self.models = ModelRegistry(self.home, settings["TUNESMITH_DEFAULT_MODEL"], redis=self.redis,
                                    prefix=settings["TUNESMITH_KEY_PREFIX"])
        self.max_attempts = settings["TUNESMITH_MAX_ATTEMPTS"]
        self.lease_s = settings.get("TUNESMITH_LEASE_S", LEASE_S)
        self.leases = Leases(self.jobs, self.lease_s)   # this process's leases on the jobs it runs
        self.job_ttl = settings["TUNESMITH_JOB_TTL"]
        self.write_replicas = settings.get("TUNESMITH_WRITE_REPLICAS", 0)
        self.celery = celery_app or make_celery(settings)

    def job_dir(self, job_id: str) -> Path:
        """The job's storage folder (its uploads and artifacts)."""
        return job_dir(self.home, job_id)

    def time_limits(self, kind: str, params: dict) -> tuple[float, float] | None:
        """(soft, hard) seconds a task of this kind may run; None for a melody job, whose deadline
        is its batcher's (TUNESMITH_GENERATE_TIME_LIMIT, worker/generation.py): a generate worker
        runs threads, which Celery cannot time out."""
        if kind == "melody":
            return None
        budget = params["max_minutes"] * 60   # training stops itself then; the limits are a safety net
        return budget + 300, budget + 600

    def submit(self, kind: str, params: dict, job_id: str | None = None, **fields) -> dict:
        """Store a queued record of a "melody" or "training" job and publish its id; returns the record.

        The task id is the job id. If publishing fails, or fewer replicas than TUNESMITH_WRITE_REPLICAS
        have the job within a second (worker/broker.py: NotReplicated), the record is removed and the
        broker error propagates (the API answers 503; a message already queued finds no record and is
        skipped).
        """
        record = self.jobs.create(kind, params, job_id=job_id, **fields)
        try:
            self.publish(record)
            if self.write_replicas:
                # counted, and on a replica with its message: the count is the write on this connection
                # that WAIT measures from, so it covers the record and the message written before it
                with self.redis.pipeline(transaction=False) as pipe:
                    count_state(pipe, self.jobs.prefix, kind, "queued")
                    await_replicas(pipe, self.write_replicas)
        except Exception:
            self.jobs.delete(record["id"])
            raise
        if not self.write_replicas:
            self.count_state(kind, "queued")
        return record

    def count_state(self, kind: str, state: str) -> None:
        """Count a job entering a state, for /metrics (worker/metrics.py)."""
        count_state(self.redis, self.jobs.prefix, kind, state)

    def publish(self, record: dict) -> None:
        """Publish a job's id to its queue (at submit, and again when its lease lapsed: worker/leases.py)."""
        limits = self.time_limits(record["kind"], record["params"])
        timing = {} if limits is None else {"soft_time_limit": int(limits[0]), "time_limit": int(limits[1])}
        self.celery.send_task(TASKS[record["kind"]], args=[record["id"]], task_id=record["id"], **timing)

    def revoke(self, job_id: str) -> None:
        """Tell the workers to drop a job's task (its record says cancelled already)."""
        self.celery.control.revoke(job_id)

    def queues_served(self, timeout: float = 1.0) -> dict:
        """{worker name: set of queue names} from the workers that answer within `timeout`."""
        return queues_served(self.celery, timeout)


def queues_served(celery_app: Celery, timeout: float = 1.0) -> dict:
    """{worker name: set of queue names} from the workers that answer within `timeout`."""
    replies = celery_app.control.inspect(timeout=timeout).active_queues() or {}
    return {worker: {q["name"] for q in queues} for worker, queues in replies.items()}


def persistence_warning(client) -> str | None:
    """None when this Redis keeps accepted jobs on disk (an append-only file) and never evicts
    them, else what is wrong, for /readyz and the startup logs (CONFIG GET appendonly/save)."""
    try:
        config = {**client.config_get("appendonly"), **client.config_get("save"),
                  **client.config_get("maxmemory-policy")}
    except redis.ResponseError:               # CONFIG refused (some managed Redis): say we cannot tell
        return "cannot tell whether Redis persists its data (CONFIG GET is refused); make sure appendonly is on"
    problems = []
    if config.get("appendonly") != "yes":
        if config.get("save"):
            problems.append(f"Redis has no append-only file (appendonly no, RDB snapshots only: save "
                            f"'{config['save']}'): a restart loses the jobs accepted since the last snapshot; "
                            "set appendonly yes")
        else:
            problems.append("Redis keeps nothing on disk (appendonly no, save ''): a restart loses every "
                            "accepted job; set appendonly yes")
    policy = config.get("maxmemory-policy")
    if policy and policy != "noeviction":
        problems.append(f"Redis may evict keys (maxmemory-policy {policy}): set noeviction")
    return "; ".join(problems) or None


def model_host_of(celery_app: Celery):
    """The loaded models of this generate worker (worker/model_host.py), made at its start."""
    return celery_app.tunesmith_model_host


def runtime_of(celery_app: Celery) -> Runtime:
    """The Runtime of this process's Celery app, built on first use (in a worker: after the fork)."""
    runtime = getattr(celery_app, "tunesmith_runtime", None)
    if runtime is None:
        settings = getattr(celery_app, "tunesmith_settings", None) or load_settings()
        runtime = celery_app.tunesmith_runtime = Runtime(settings, celery_app)
    return runtime
