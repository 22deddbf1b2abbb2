"""Admission control: what the API accepts before a job is queued, so that no client can bury the
service, or another client, under work.

Three limits, each a setting (service/config.py) shown in /metrics:
- the backlog: all clients' unfinished melody work (bars x melodies, worker/backlog.py) stays
  under `TUNESMITH_MAX_BACKLOG_WORK`; beyond it a new job is `503` with `Retry-After`: the
  service is full, whoever asks;
- a client's share: one client's unfinished work stays under `TUNESMITH_MAX_CLIENT_WORK`; beyond
  it `429` with `Retry-After`: that client waits for its own jobs, the others are served;
- a client's request rate: job submissions per client, `TUNESMITH_RATE_LIMIT` (a Flask-Limiter
  rate string such as "30/minute"), counted in the same Redis as everything else, so every API
  process shares the count; beyond it `429` with `Retry-After`.
A client is its bearer token when it holds the service's token, else its address
(`service.api.client_id`). The generate workers' batchers take rows from clients in turn
(worker/batcher.py), so one client's queued work does not hold back another's melody either.
"""
import time

from flask import Flask, abort, current_app, jsonify, request
from flask_limiter import Limiter
from limits import parse

SUBMISSIONS = ("api.create_melodies", "api.create_training_job")
BACKLOG_RETRY_S = 30          # the backlog drains at the workers' pace: ask again in a while
CLIENT_RETRY_S = 10           # a client's own jobs finish one by one: sooner


def refusal(status: int, message: str, retry_after: int, reason: str, **fields):
    """The answer to a refused submission (or event stream, service/events.py), counted by reason for /metrics."""
    runtime = current_app.extensions["tunesmith"]
    try:
        runtime.redis.hincrby(f"{runtime.jobs.prefix}refused", reason, 1)
    except Exception:                      # counting must not turn a 429 into a 500
        current_app.logger.warning("could not count a refusal")
    response = jsonify(error=message, **fields)
    response.status_code = status
    response.headers["Retry-After"] = str(retry_after)
    return response


def admit(job_id: str, work: int, client: str) -> None:
    """Count a melody job's work in, or abort with 503 (the backlog is full) or 429 (this client's
    share is used up). The caller releases it (`Backlog.release`) if the job is not queued after all."""
    config = current_app.config
    backlog = current_app.extensions["tunesmith"].backlog
    limit, share = config["TUNESMITH_MAX_BACKLOG_WORK"], config["TUNESMITH_MAX_CLIENT_WORK"]
    refused = backlog.admit(job_id, work, client, limit, share)
    if refused == "backlog":
        abort(refusal(503, f"the service is full: {limit} bar-melodies of work are waiting or running "
                           f"(bars x count); try again later", BACKLOG_RETRY_S, "backlog", limit=limit))
    if refused == "client":
        abort(refusal(429, f"you have too much work unfinished: at most {share} bar-melodies (bars x count) "
                           f"per client; this job is {work}; wait for your jobs to finish", CLIENT_RETRY_S,
                      "client_work", limit=share, work=work))


def init_app(app: Flask, client_id) -> Limiter:
    """Rate-limit job submissions per client (`client_id()`), in the job runtime's Redis."""
    runtime = app.extensions["tunesmith"]
    rate = app.config["TUNESMITH_RATE_LIMIT"]
    limiter = Limiter(
        client_id, app=app,
        default_limits=[rate] if rate else [],
        default_limits_exempt_when=lambda: request.endpoint not in SUBMISSIONS,
        storage_uri="redis://", storage_options={"connection_pool": runtime.redis.connection_pool},
        key_prefix=f"{app.config['TUNESMITH_KEY_PREFIX']}rate", strategy="moving-window",
        headers_enabled=True, swallow_errors=True,          # Redis down: the broker's 503 says so
        on_breach=lambda limit: refusal(429, f"too many requests: at most {limit.limit} job submissions "
                                             f"per client; try again later", _seconds_until(limit),
                                        "rate", limit=str(limit.limit)))
    return limiter


def _seconds_until(limit) -> int:
    return max(1, int(limit.reset_at - time.time()))


def limits(config) -> dict:
    """The limits as /metrics shows them (the rate as submissions per second)."""
    rate = config["TUNESMITH_RATE_LIMIT"] and parse(config["TUNESMITH_RATE_LIMIT"])
    per_s = rate.amount / rate.get_expiry() if rate else 0
    return {"max_backlog_work": config["TUNESMITH_MAX_BACKLOG_WORK"],
            "max_client_work": config["TUNESMITH_MAX_CLIENT_WORK"], "client_submissions_per_s": per_s}


def refused_counts(runtime) -> dict:
    return {k.decode(): int(v) for k, v in runtime.redis.hgetall(f"{runtime.jobs.prefix}refused").items()}
