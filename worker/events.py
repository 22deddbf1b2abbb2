"""A job's events in Redis, for the API to stream (service/events.py): one Redis stream per job,
`<prefix>events:<id>`, that lives as long as the job's record (its time to live).

The worker appends: "state" (running, then succeeded with the result links, failed with the error,
or cancelled), and "bar" for each finished bar of each melody ({"melody", "bar", "notes",
"progress"}), in the order they happened; the API appends "state: cancelled" when it cancels a job.
A reader that comes late reads the stream from its start, so it still sees every bar in order, and
a reconnecting one goes on after the last id it saw (SSE's Last-Event-ID). Writing an event never
fails a job: a lost event costs a listener a bar, not the melody.
"""
import json
import logging

log = logging.getLogger(__name__)
MAX_EVENTS = 20_000          # a stream's bound: 16 melodies of 256 bars, and the states
FINAL_STATES = ("succeeded", "failed", "cancelled")


class JobEvents:
    def __init__(self, redis, prefix: str, ttl: int):
        self.redis, self.prefix, self.ttl = redis, prefix, int(ttl)

    def key(self, job_id: str) -> str:
        return f"{self.prefix}events:{job_id}"

    def publish(self, job_id: str, kind: str, **data) -> None:
        """Append one event; `data` must be JSON-serialisable."""
        self.publish_many(job_id, [(kind, data)])

    def publish_many(self, job_id: str, events, also=None) -> None:
        """Append [(kind, data)] in one round trip, in order; ``also(pipe)`` may queue more commands
        on the same round trip (a job's progress: worker/generation.py)."""
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                self.add(pipe, job_id, events)
                if also is not None:
                    also(pipe)
                pipe.execute()
        except Exception:
            log.warning("could not publish %d events of job %s", len(events), job_id, exc_info=True)

    def add(self, pipe, job_id: str, events) -> None:
        """Queue the commands that append [(kind, data)] on a pipeline."""
        key = self.key(job_id)
        for kind, data in events:
            pipe.xadd(key, {"kind": kind, "data": json.dumps(data)}, maxlen=MAX_EVENTS, approximate=True)
        if events:
            pipe.expire(key, self.ttl)

    def state(self, job_id: str, state: str, **data) -> None:
        self.publish(job_id, "state", state=state, **data)

    def read(self, job_id: str, after: str = "0", block_ms: int = 1000, count: int = 200) -> list:
        """[(id, kind, data)] after the event id `after` ("0": from the start), waiting up to
        `block_ms` for the first one when there is none yet."""
        found = self.redis.xread({self.key(job_id): after}, count=count, block=block_ms)
        events = []
        for _, entries in found or ():
            for event_id, fields in entries:
                events.append((event_id.decode(), fields[b"kind"].decode(), json.loads(fields[b"data"])))
        return events
