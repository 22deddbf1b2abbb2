"""The worker's entry module (worker/celery_worker.py) with every melody job slowed down, for
tests/test_worker.py: a job waits SLOW_JOB_S seconds (default 2) after it was claimed and before
it generates, long enough for a test to kill its worker or cancel it. Production code has no such
hook; this module wraps `worker.generation.generate` when the worker loads it.
"""
import os
import time

import worker.generation as generation
from worker.celery_worker import celery_app  # noqa: F401  (the app `celery -A slow_jobs` finds)

DELAY_S = float(os.environ.get("SLOW_JOB_S", "2"))
_generate = generation.generate


def slow_generate(*args, **kwargs):
    time.sleep(DELAY_S)
    return _generate(*args, **kwargs)


generation.generate = slow_generate
