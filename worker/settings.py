"""The job runtime's settings: environment variables with the `TUNESMITH_` prefix (plus the
conventional `REDIS_URL`), read once by `load_settings()`, and the Celery settings built from them.
The API process reads the same settings (service/config.py adds its own) so that both sides
agree on the broker, the key prefix, the storage folder and the queues.

| variable | default | meaning |
|---|---|---|
| `TUNESMITH_HOME` | `./var` | storage: job artifacts, uploads, registered models |
| `REDIS_URL` | (none) | Redis for job records and the Celery broker; `unix:///path.sock` for a socket. `tunesmith serve` starts an embedded Redis when it is unset |
| `TUNESMITH_DEFAULT_MODEL` | `model/weights/default.pt` | checkpoint registered as the model "default" |
| `TUNESMITH_KEY_PREFIX` | `tunesmith:` | prefix of every Redis key (job records and broker queues) |
| `TUNESMITH_JOB_TTL` | `604800` (7 days) | seconds a job record and its files live after their last update |
| `TUNESMITH_MAX_ATTEMPTS` | `3` | deliveries of one job before it is failed as poison |
| `TUNESMITH_GENERATE_TIME_LIMIT` | `120` | a melody job's deadline in its batcher, seconds: past it the job fails with a message |
| `TUNESMITH_VISIBILITY_TIMEOUT` | longest task + 1 h | seconds before Redis hands an unacknowledged task out again (the outer net) |
| `TUNESMITH_LEASE_S` | `20` | a running job's lease (worker/leases.py): lapsed this long, the job is queued again |
| `TUNESMITH_WRITE_REPLICAS` | `1` with Sentinel, else `0` | replicas that must have a job (Redis `WAIT`, up to 1 s) before it is accepted; fewer: `503` |

Generation throughput (worker/model_host.py, worker/batcher.py):

| variable | default | meaning |
|---|---|---|
| `TUNESMITH_BATCHING` | `1` | `0`: the batcher runs one request at a time (the baseline) instead of one shared step loop |
| `TUNESMITH_BATCH_ROWS` | `64` | melodies (rows) the step loop admits before new requests wait |
| `TUNESMITH_GENERATE_CONCURRENCY` | `32` | jobs one generate worker holds at once (its threads) |
| `TUNESMITH_BARS_EVERY_S` | `0.2` | after a job's first bar, its finished bars reach its record and stream at most this often (0: each bar as it is done) |
"""
import os
from pathlib import Path

from worker.broker import DEFAULT_SENTINEL_MASTER, is_sentinel

ENV_PREFIX = "TUNESMITH_"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"     # without REDIS_URL (`tunesmith serve` sets it)
MAX_TRAIN_MINUTES = 240          # the longest training budget a job may ask for (its hard limit: + 10 min)
# Tasks by name: the API publishes by name (celery.send_task), so it never imports worker/tasks.py
TASKS = {"melody": "worker.tasks.generate_melodies", "training": "worker.tasks.train_model"}
QUEUES = {"melody": "generate", "training": "train"}
ECHO_TASK = "worker.tasks.echo"
BARS_EVERY_S = 0.2               # a job's bars after its first are written at most this often (worker/generation.py)


def env_number(env, name: str, default, kind=int):
    """The number in `TUNESMITH_<name>`, or `default` when unset; a ValueError names a bad one."""
    raw = env.get(ENV_PREFIX + name)
    if raw in (None, ""):
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name} must be a number, got {raw!r}") from None


def open_without_token(env) -> bool:
    """Has the operator opted in to training and admin endpoints without a token (`TUNESMITH_OPEN=1`)?
    Without a token and without this, the API refuses them and `tunesmith worker --queues train` will not start."""
    return env.get(ENV_PREFIX + "OPEN", "").strip().lower() in ("1", "true", "yes")


def broker_url(redis_url: str) -> str:
    """The kombu URL for a redis-py URL: unix sockets are `redis+socket://` to kombu."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://"):].split("?")[0]
    return redis_url


def load_settings(environ=None) -> dict:
    """The runtime's settings from the environment (`environ` defaults to `os.environ`)."""
    env = os.environ if environ is None else environ
    generate_limit = env_number(env, "GENERATE_TIME_LIMIT", 120)
    longest_task = max(generate_limit, MAX_TRAIN_MINUTES * 60 + 600)   # a training job's hard limit
    redis_url = env.get("REDIS_URL") or None
    prefix = env.get(ENV_PREFIX + "KEY_PREFIX", "tunesmith:")
    settings = {
        "TUNESMITH_HOME": str(Path(env.get(ENV_PREFIX + "HOME", "var")).resolve()),
        "REDIS_URL": redis_url,
        "TUNESMITH_DEFAULT_MODEL": env.get(ENV_PREFIX + "DEFAULT_MODEL") or None,
        "TUNESMITH_KEY_PREFIX": prefix,
        "TUNESMITH_JOB_TTL": env_number(env, "JOB_TTL", 7 * 24 * 3600),
        "TUNESMITH_MAX_ATTEMPTS": env_number(env, "MAX_ATTEMPTS", 3),
        "TUNESMITH_GENERATE_TIME_LIMIT": generate_limit,
        "TUNESMITH_LEASE_S": env_number(env, "LEASE_S", 20.0, float),
        "TUNESMITH_SENTINEL_MASTER": env.get(ENV_PREFIX + "SENTINEL_MASTER", DEFAULT_SENTINEL_MASTER),
        "TUNESMITH_WRITE_REPLICAS": env_number(env, "WRITE_REPLICAS", 1 if is_sentinel(redis_url) else 0),
    }
    settings.update(generation_throughput(env))
    visibility = env_number(env, "VISIBILITY_TIMEOUT", longest_task + 3600)
    settings["CELERY"] = celery_config(redis_url, prefix, visibility, settings["TUNESMITH_SENTINEL_MASTER"])
    return settings


def generation_throughput(env) -> dict:
    """The batching settings (see the second table above)."""
    batching = env.get(ENV_PREFIX + "BATCHING", "1").strip().lower() not in ("0", "false", "no", "off")
    return {"TUNESMITH_BATCHING": batching, "TUNESMITH_BATCH_ROWS": env_number(env, "BATCH_ROWS", 64),
            "TUNESMITH_GENERATE_CONCURRENCY": env_number(env, "GENERATE_CONCURRENCY", 32),
            "TUNESMITH_BARS_EVERY_S": env_number(env, "BARS_EVERY_S", BARS_EVERY_S, float)}


# With Sentinel there is another primary to go to, so a dead one must be noticed within seconds:
# kombu checks its connections (a BRPOP overdue by this much, a pub/sub connection's PING) every
# `health_check_interval` (25 s by default) and redis-py gives up on a silent socket after
# `socket_timeout`. A single Redis keeps the longer defaults: there is nowhere else to go, and a
# shorter timeout would only turn a slow moment of that Redis into an error.
SENTINEL_TRANSPORT = {"health_check_interval": 4, "socket_timeout": 2}


def celery_config(redis_url, prefix, visibility_timeout, sentinel_master=DEFAULT_SENTINEL_MASTER) -> dict:
    """Celery settings (lower-case names) for `make_celery`.

    Reliability: a task is acknowledged only after it finishes (`acks_late`) and is put back
    when its worker process dies (`reject_on_worker_lost`); each process reserves one task at
    a time; Redis re-delivers an unacknowledged task after `visibility_timeout`, which must
    exceed the longest task or a running training job would be handed out twice. Publishing
    gives up after about a second so that a dead broker becomes a 503, not a hung request.
    """
    transport = {
        "global_keyprefix": prefix,
        "visibility_timeout": visibility_timeout,
        "socket_connect_timeout": 1,
        "socket_timeout": 5,
        "max_retries": 1,
    }
    if is_sentinel(redis_url):          # kombu asks these sentinels for the primary (worker/broker.py)
        transport.update(master_name=sentinel_master, **SENTINEL_TRANSPORT)
    return {
        "broker_url": broker_url(redis_url or DEFAULT_REDIS_URL),
        "broker_transport_options": transport,
        "broker_connection_timeout": 1,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,          # our own job records carry state and results
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 1, "interval_start": 0.2,
                                      "interval_step": 0.2, "interval_max": 0.5},
        "task_default_queue": "generate",
        "task_routes": {TASKS[kind]: {"queue": QUEUES[kind]} for kind in TASKS},
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        "worker_consumer": "worker.consumer:Consumer",     # survives its broker dying (worker/consumer.py)
        "worker_send_task_events": False,
    }
