"""worker/runtime.py: the job runtime the API submits through: a job is published by task name to
its kind's queue with its time limits, and a job that cannot be published leaves no record."""
import json
import socket

import kombu.exceptions
import pytest

from worker import Runtime, load_settings
from worker.settings import QUEUES, TASKS


@pytest.fixture
def runtime(service_env):
    return Runtime(load_settings(service_env))


def queued_messages(runtime, queue) -> list[dict]:
    key = f"{runtime.settings['TUNESMITH_KEY_PREFIX']}{queue}"
    return [json.loads(raw) for raw in runtime.redis.lrange(key, 0, -1)]


@pytest.mark.parametrize("kind,params,limits", [
    ("melody", {"bars": 4}, (None, None)), ("training", {"max_minutes": 2}, (720, 420))])
def test_a_job_goes_to_its_queue_by_task_name_with_its_time_limits(runtime, kind, params, limits):
    record = runtime.submit(kind, params)
    assert runtime.jobs.get(record["id"])["state"] == "queued"
    (message,) = queued_messages(runtime, QUEUES[kind])
    headers = message["headers"]
    assert headers["task"] == TASKS[kind] and headers["id"] == record["id"]
    assert tuple(headers["timelimit"]) == limits          # (hard, soft) seconds; a melody's deadline is its batcher's


def test_a_job_the_broker_refuses_leaves_no_record(service_env):
    with socket.socket() as s:                      # a port nobody listens on: the broker is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(service_env)
    settings["CELERY"] = {**settings["CELERY"], "broker_url": f"redis://127.0.0.1:{port}/0"}
    runtime = Runtime(settings)                      # job records still reach the real Redis
    with pytest.raises(kombu.exceptions.OperationalError):
        runtime.submit("melody", {"bars": 4}, job_id="0123456789abcdef0123456789abcdef")
    assert runtime.jobs.get("0123456789abcdef0123456789abcdef") is None
