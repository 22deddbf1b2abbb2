"""The job runtime: the Celery app and its tasks, job records, artifact storage, upload checks,
the model registry and the generation and training jobs. It imports model/ and never service/;
it knows no Flask and its parent processes never import torch.

What the API (service/) uses, all importable from this package:

    load_settings, env_number, MAX_TRAIN_MINUTES    settings from the environment (worker/settings.py)
    open_without_token                              TUNESMITH_OPEN=1: the operator's opt-in to no token
    ECHO_TASK                                       a trivial task's name (the broker round trip)
    celery_config, make_celery                      Celery settings for a broker URL and key prefix; the app
    Runtime                                         Redis, job records, registry, storage, Celery:
        .submit(kind, params, job_id=None, **fields)    store a queued record, publish the job by name
        .jobs (JobStore) .models (ModelRegistry) .job_dir(id) .revoke(id) .queues_served()
    persistence_warning(redis)                      None, or why that Redis may lose accepted jobs
    redis_client, DEFAULT_SENTINEL_MASTER           a Redis client from REDIS_URL, Sentinel too (worker/broker.py)
    FINISHED, STATES, new_job_id, public_record     job records (worker/records.py)
    without_paths                                   text fit for a client: server paths cut to their last part
    NAME_PATTERN, SHIPPED_NAME, checkpoint_problem  the model registry (worker/registry.py)
    checkpoint_vocabulary                           a model's pitch range, meters and styles (for checks at submit)
    artifact_name, job_dir                          job files (worker/storage.py)
    job_work                                        a melody job's work: bars x melodies (worker/backlog.py)
    storage_problem, storage_check                  a write refused by full or read-only storage; a probe of it
    die_with_parent, preexec                        children that die with their parent (worker/lifetime.py)
    check_midi, MidiInvalid                         the one MIDI checker (model/representation/midi_check.py): API, worker, CLI
    metrics_snapshot                                the counters /metrics shows (worker/metrics.py)
    loaded_defaults(redis, prefix)                  {generate worker: the default model it has loaded} (/readyz)
    loading_workers(redis, prefix)                  the generate workers still loading their models (/readyz)
    melody_file, job_zip, cached_file               files rendered on first download (worker/formats.py)
    maybe_sweep(runtime, ttl)                       delete expired job folders, at most hourly per folder
    Runtime.events                                  a job's event stream (worker/events.py)

The tasks (worker/tasks.py) are thin adapters over worker/generation.py and worker/training.py;
worker/celery_worker.py is the module `celery -A` loads; worker/cli.py holds `tunesmith worker`.
"""
from worker.backlog import job_work
from worker.formats import cached as cached_file, job_zip, melody_file
from worker.jobs import maybe_sweep
from worker.metrics import metrics_snapshot
from worker.model_host import loaded_defaults, loading_workers
from worker.records import FINISHED, STATES, new_job_id, public_record, without_paths
from model.representation.midi_check import MidiInvalid, check_midi
from worker.lifetime import die_with_parent, preexec
from worker.registry import NAME_PATTERN, SHIPPED_NAME, checkpoint_problem, checkpoint_vocabulary
from worker.broker import DEFAULT_SENTINEL_MASTER, redis_client
from worker.runtime import Runtime, make_celery, persistence_warning, queues_served
from worker.settings import (ECHO_TASK, MAX_TRAIN_MINUTES, celery_config, env_number, load_settings,
                             open_without_token)
from worker.storage import artifact_name, job_dir, storage_check, storage_problem

__all__ = ["maybe_sweep", "FINISHED", "STATES", "new_job_id", "public_record", "without_paths", "NAME_PATTERN", "SHIPPED_NAME",
           "checkpoint_problem", "checkpoint_vocabulary", "Runtime", "make_celery", "persistence_warning", "queues_served", "redis_client", "DEFAULT_SENTINEL_MASTER", "ECHO_TASK",
           "MAX_TRAIN_MINUTES", "celery_config", "env_number", "load_settings", "open_without_token",
           "artifact_name", "job_dir", "die_with_parent", "preexec", "MidiInvalid", "check_midi",
           "metrics_snapshot", "loaded_defaults", "loading_workers", "cached_file", "job_zip", "melody_file", "storage_check",
           "storage_problem", "job_work"]
