"""The Celery tasks: thin adapters from a job id to the plain job functions.

Both job tasks take only the job id (parameters and files live in the job record and the storage
folder, never in the broker). Reliability settings are in worker/settings.py; per task:
`acks_late` and `reject_on_worker_lost`, so a task whose worker dies is delivered again. The
publisher names them (worker/settings.py's TASKS); nothing imports this module but the worker.
"""
import pretty_midi  # noqa: F401  (the MIDI writer's library: imported once in the parent, before a train worker forks)
from celery import shared_task

from worker.jobs import maybe_sweep
from worker.logs import job_context
from worker.runtime import model_host_of, runtime_of
from worker.settings import ECHO_TASK, TASKS


@shared_task(bind=True, name=TASKS["melody"], acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def generate_melodies(self, job_id: str) -> str:
    from worker.generation import run_generation_job     # a generate worker has torch loaded; a train worker's parent never
    runtime = runtime_of(self.app)
    with job_context(job_id):
        state = run_generation_job(runtime, model_host_of(self.app), job_id, runtime.max_attempts)
    maybe_sweep(runtime, runtime.job_ttl)
    return state


@shared_task(bind=True, name=TASKS["training"], acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def train_model(self, job_id: str) -> str:
    from worker.training import run_training_job
    runtime = runtime_of(self.app)
    with job_context(job_id):
        state = run_training_job(runtime, job_id, runtime.max_attempts)
    maybe_sweep(runtime, runtime.job_ttl)
    return state


@shared_task(bind=True, name=ECHO_TASK, ignore_result=True)
def echo(self, key: str) -> None:
    """A trivial task for measuring the broker round trip (service/embedded.py)."""
    runtime_of(self.app).redis.rpush(key, "done")
