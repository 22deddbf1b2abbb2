"""The Celery tasks: thin adapters from a job id to the plain job functions.

Both take only the job id (parameters and files live in the job record and the storage
folder, never in the broker). Reliability settings are in service/config.py; per task:
`acks_late` and `reject_on_worker_lost`, so a task whose worker dies is delivered again.
"""
from celery import shared_task
from flask import current_app

from worker.jobs import maybe_sweep


def _services():
    return current_app.extensions["tunesmith"]


@shared_task(name="worker.tasks.generate_melodies", acks_late=True, reject_on_worker_lost=True,
             ignore_result=True)
def generate_melodies(job_id: str) -> str:
    from worker.generation import run_generation_job
    config = current_app.config
    state = run_generation_job(_services(), job_id, config["TUNESMITH_MAX_ATTEMPTS"],
                               delay=config["TUNESMITH_TEST_DELAY"])
    maybe_sweep(_services(), config["TUNESMITH_JOB_TTL"])
    return state


@shared_task(name="worker.tasks.train_model", acks_late=True, reject_on_worker_lost=True,
             ignore_result=True)
def train_model(job_id: str) -> str:
    from worker.training import run_training_job
    state = run_training_job(_services(), job_id, current_app.config["TUNESMITH_MAX_ATTEMPTS"])
    maybe_sweep(_services(), current_app.config["TUNESMITH_JOB_TTL"])
    return state


@shared_task(name="worker.tasks.echo", ignore_result=True)
def echo(key: str) -> None:
    """A trivial task for measuring the broker round trip (service/embedded.py)."""
    _services().redis.rpush(key, "done")
