"""Worker log lines as one JSON object each, carrying the id of the job being run:

    {"time": "2026-12-01T15:40:00.123Z", "level": "INFO", "logger": "worker.generation", "pid": 812,
     "job_id": "3f2c...", "message": "1 melodies from ... in 0.143 s"}

`job_context(job_id)` marks the job a pool process is running (worker/tasks.py sets it around each
task); `use_json_logs()` puts the formatter on the root logger. Celery's `setup_logging` signal is
answered here, so the worker's own lines (task received, succeeded) come out the same way.
"""
import contextlib
import contextvars
import json
import logging
import sys
from datetime import datetime, timezone

from celery import signals

current_job: contextvars.ContextVar = contextvars.ContextVar("tunesmith_job_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"), "level": record.levelname, "logger": record.name, "pid": record.process,
                "job_id": getattr(record, "job_id", None) or current_job.get(), "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


@contextlib.contextmanager
def job_context(job_id: str):
    token = current_job.set(job_id)
    try:
        yield
    finally:
        current_job.reset(token)


def use_json_logs(level: str | int = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@signals.setup_logging.connect
def _celery_logging(loglevel=None, **kwargs):
    """Celery asks how to log: JSON lines on stderr."""
    use_json_logs(loglevel or "INFO")
