"""The service's answer when its storage cannot take a write: 503 with `Retry-After` and a JSON
message saying so, never a 500.

Two ways a full disk shows:
- a write of ours fails (`OSError` ENOSPC, EDQUOT or EROFS: an upload, a file rendered on first
  download, a model fetched into the cache): the error handler answers 503;
- Redis refuses writes because it cannot write its own append-only file (the embedded broker keeps
  it in TUNESMITH_HOME): `MISCONF`, the same 503.
Before a job is accepted, `check_room` refuses it while the home has less than
`TUNESMITH_MIN_FREE_MB` free or is read-only, as its worker could not write its files. Nothing
stored is touched: the files and records already there stay readable, and everything works again
by itself once space is freed (no state is kept about the failure). /readyz reports the same
(`checks.storage`, service/health.py).
"""
import os
import re

import redis
from flask import Flask, abort, current_app, jsonify

from worker import storage_problem

RETRY_AFTER_S = 60            # freeing space is an operator's work: minutes, not seconds


def storage_refusal(problem: str):
    response = jsonify(error=f"the server's storage is {problem}: nothing new can be stored now; try again later",
                       storage=problem)
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def home_problem(home, min_free_mb: float) -> str | None:
    """None when `home` has room for a job's files, else "full" or "read-only" (statvfs: no write)."""
    try:
        stats = os.statvfs(home)
    except FileNotFoundError:              # not made yet: the first write makes it
        return None
    if stats.f_flag & os.ST_RDONLY:
        return "read-only"
    if stats.f_bavail * stats.f_frsize < max(min_free_mb * 2**20, 1):
        return "full"
    return None


def check_room() -> None:
    """Abort with 503 when the home cannot take a new job's files."""
    config = current_app.config
    problem = home_problem(config["TUNESMITH_HOME"], config["TUNESMITH_MIN_FREE_MB"])
    if problem:
        abort(storage_refusal(problem))


def broker_storage_problem(exc: redis.exceptions.ResponseError) -> str | None:
    """Redis's refusal to write because it cannot persist (MISCONF: its disk is full or unwritable),
    alone, in a pipeline's error ("caused error: MISCONF ...") or a script's ("-MISCONF ...")."""
    return "full" if re.search(r"(^|: |-)MISCONF ", str(exc)) else None


def init_app(app: Flask) -> None:
    @app.errorhandler(OSError)
    def refused_write(exc):
        problem = storage_problem(exc)
        if problem is None:
            raise exc
        app.logger.warning("storage refused a write: %s", exc)       # its path: the log's only
        return storage_refusal(problem)

    @app.errorhandler(redis.exceptions.ResponseError)
    def broker_refused_write(exc):
        problem = broker_storage_problem(exc)
        if problem is None:
            raise exc
        app.logger.warning("the broker refused a write: %s", exc)
        return storage_refusal(problem)
