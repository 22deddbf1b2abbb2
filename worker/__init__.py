"""The job runtime: the Celery app and its tasks, job records, artifact storage, upload checks,
the model registry and the generation and training jobs. It imports model/ and never service/;
it knows no Flask and its parent processes never import torch.

What the API (service/) uses, all importable from this package:

    load_settings, env_number, MAX_TRAIN_MINUTES    settings from the environment (worker/settings.py)
    ECHO_TASK                                       a trivial task's name (the broker round trip)
    celery_config, make_celery                      Celery settings for a broker URL and key prefix; the app
    Runtime                                         Redis, job records, registry, storage, Celery:
        .submit(kind, params, job_id=None, **fields)    store a queued record, publish the job by name
        .jobs (JobStore) .models (ModelRegistry) .job_dir(id) .revoke(id) .queues_served()
    FINISHED, STATES, new_job_id, public_record     job records (worker/records.py)
    NAME_PATTERN, SHIPPED_NAME, checkpoint_problem  the model registry (worker/registry.py)
    artifact_name, atomic_write, job_dir            job files (worker/storage.py)
    metrics_snapshot                                the counters /metrics shows (worker/metrics.py)
    melody_file, job_zip, cached_file               files rendered on first download (worker/formats.py)
    Runtime.events                                  a job's event stream (worker/events.py)

The tasks (worker/tasks.py) are thin adapters over worker/generation.py and worker/training.py;
worker/celery_worker.py is the module `celery -A` loads; worker/cli.py holds `tunesmith worker`.
"""
from worker.formats import cached as cached_file, job_zip, melody_file
from worker.metrics import metrics_snapshot
from worker.records import FINISHED, STATES, new_job_id, public_record
from worker.registry import NAME_PATTERN, SHIPPED_NAME, checkpoint_problem
from worker.runtime import Runtime, make_celery, queues_served
from worker.settings import ECHO_TASK, MAX_TRAIN_MINUTES, celery_config, env_number, load_settings
from worker.storage import artifact_name, atomic_write, job_dir

__all__ = ["FINISHED", "STATES", "new_job_id", "public_record", "NAME_PATTERN", "SHIPPED_NAME",
           "checkpoint_problem", "Runtime", "make_celery", "queues_served", "ECHO_TASK", "MAX_TRAIN_MINUTES",
           "celery_config", "env_number", "load_settings", "artifact_name", "atomic_write", "job_dir",
           "metrics_snapshot", "cached_file", "job_zip", "melody_file"]
