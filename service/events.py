"""`GET /api/v1/jobs/<id>/events`: a job's progress as server-sent events (`text/event-stream`).

    event: state   data: {"state": "queued" | "running" | "succeeded" | "failed" | "cancelled", ...}
    event: bar     data: {"melody": 0, "bar": 3, "notes": [{"pitch", "start_beats", "end_beats"}], "draw": 1, "progress"}

A melody the quality gate redraws streams again from bar 0 with a higher "draw": replace its bars.

The first event is the job's state when the stream opens; then every event the worker wrote to the
job's Redis stream (worker/events.py) from its start, so a late listener still gets every bar, in
order; the last is the end state, with the result links (or the error). A "running" event starts
an attempt: a job delivered again streams its bars from bar 0 again. Each event carries its id, so
a client that reconnects with `Last-Event-ID` goes on where it was.

Each stream holds a connection of the API process (a greenlet of gunicorn's gevent worker,
service/cli.py) and one to Redis, so a process serves at most `TUNESMITH_MAX_STREAMS` at once and
answers 503 (with Retry-After) beyond that. How many are open, in each process, is in /metrics.
"""
import json
import logging
import os
import socket
import threading
import time

import redis
from flask import Blueprint, Response, abort, current_app, request

from service.admission import refusal
from worker import FINISHED, public_record

bp = Blueprint("events", __name__, url_prefix="/api/v1")
MAX_STREAM_S = 600             # a stream ends after this (the client reconnects with Last-Event-ID)
WAIT_MS = 1000                 # one blocking read; shorter than the Redis client's socket timeout
REPORT_S = 10                  # a process with streams open writes its count this often, and at each change
REPORT_STALE_S = 60            # /metrics leaves out a process that has written nothing for this long
log = logging.getLogger(__name__)        # streams run outside the app context: no current_app there


class StreamSlots:
    """The streams one API process holds open, at most `limit`: event streams and requests that
    wait for their job (`Prefer: wait`, service/api.py). The count is written to a Redis hash
    (process -> "count time") at each change and every REPORT_S while streams stay open, so that
    /metrics, whichever process answers it, shows every process's (`open_streams`); a process that
    died drops out of it once its last write is REPORT_STALE_S old."""

    def __init__(self, limit: int, client, prefix: str):
        self.limit, self.redis, self.key = limit, client, f"{prefix}streams"
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        self.open, self.reported = 0, 0.0
        self.lock = threading.Lock()

    def acquire(self) -> bool:
        with self.lock:
            if self.open >= self.limit:
                return False
            self.open += 1
        self.report()
        return True

    def release(self) -> None:
        with self.lock:
            self.open -= 1
        self.report()

    def report(self, every: float = 0.0) -> None:
        """Write the count (at most once per `every` seconds). Counting never fails a stream: a Redis
        that does not answer leaves the last count standing until it goes stale."""
        now = time.time()
        if now - self.reported < every:
            return
        self.reported = now
        try:
            self.redis.hset(self.key, self.process, f"{self.open} {now:.0f}")
        except redis.RedisError as exc:
            log.warning("could not write the open stream count: %s", exc)


def init_app(app) -> None:
    runtime = app.extensions["tunesmith"]
    app.extensions["streams"] = StreamSlots(app.config["TUNESMITH_MAX_STREAMS"], runtime.redis, runtime.jobs.prefix)


def open_streams(client, prefix: str) -> dict:
    """{process: streams it holds open} of every API process that wrote its count lately."""
    counts, now = {}, time.time()
    for process, value in client.hgetall(f"{prefix}streams").items():
        n, at = value.split()
        if now - float(at) > REPORT_STALE_S:
            client.hdel(f"{prefix}streams", process)
        else:
            counts[process.decode()] = int(n)
    return counts


def sse(kind: str, data: dict, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@bp.get("/jobs/<job_id>/events")
def job_events(job_id):
    runtime = current_app.extensions["tunesmith"]
    record = runtime.jobs.get(job_id)
    if record is None:
        abort(404, f"no job {job_id!r} (unknown or expired)")
    slots = current_app.extensions["streams"]
    if not slots.acquire():
        return refusal(503, "too many open event streams on this server; poll the job or try again", 2, "streams")
    after = request.headers.get("Last-Event-ID") or "0"

    def stream():
        yield "retry: 1000\n\n"
        if after == "0":
            yield sse("state", _state_of(record))
        yield from _follow(runtime, job_id, after, slots)
    response = Response(stream(), mimetype="text/event-stream",
                        headers={"X-Accel-Buffering": "no"})     # Cache-Control: service/headers.py
    response.call_on_close(slots.release)      # the server closes it at the end or when the client goes
    return response


def _follow(runtime, job_id: str, after: str, slots: StreamSlots):
    """The job's events after `after` until its end state (or MAX_STREAM_S)."""
    deadline = time.monotonic() + MAX_STREAM_S
    while time.monotonic() < deadline:
        slots.report(every=REPORT_S)
        events = runtime.events.read(job_id, after, block_ms=WAIT_MS)
        for event_id, kind, data in events:
            after = event_id
            yield sse(kind, data, event_id)
            if kind == "state" and data["state"] in FINISHED:
                return
        if events:
            continue
        record = runtime.jobs.get(job_id)          # ended without an event (cancelled while queued, expired)
        if record is None:
            yield sse("state", {"state": "expired", "error": "the job's record has expired"})
            return
        if record["state"] in FINISHED:
            if runtime.events.read(job_id, after, block_ms=200):
                continue                               # its last events were on their way: read them
            yield sse("state", _state_of(record))
            return
        yield ": waiting\n\n"                        # a comment keeps proxies from closing the stream


def wait_for_end(runtime, job_id: str, seconds: float) -> dict | None:
    """The job's record once it has finished (read from its event stream as the end state arrives),
    or None when it has not within `seconds` (`Prefer: wait`, service/api.py)."""
    deadline, after = time.monotonic() + seconds, "0"
    while (left := deadline - time.monotonic()) > 0:
        events = runtime.events.read(job_id, after, block_ms=max(1, int(1000 * min(left, WAIT_MS / 1000))),
                                     count=1000)
        for event_id, kind, data in events:
            after = event_id
            if kind == "state" and data["state"] in FINISHED:
                return runtime.jobs.get(job_id)
        if not events:
            record = runtime.jobs.get(job_id)      # ended without an event (cancelled while queued, expired)
            if record is None or record["state"] in FINISHED:
                return record
    return None


def _state_of(record: dict) -> dict:
    public = public_record(record)
    return {"state": public["state"], "progress": public["progress"], "result": public["result"],
            "error": public["error"]}
