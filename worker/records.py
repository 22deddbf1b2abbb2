"""Job records in Redis: our own account of every job, because Celery alone reports an
unknown task id as PENDING forever.

A record is one Redis hash `<prefix>job:<id>` whose fields are JSON values. It expires
`ttl` seconds after its last write (see docs/service.md for the schedule). State moves
queued -> running -> succeeded | failed, and to cancelled from queued or running; every
move is a compare-and-set in one Lua script, so a worker finishing a job that the user
cancelled a moment earlier cannot flip it back to succeeded.
"""
import json
import re
import uuid
from datetime import datetime, timezone

from worker.backlog import RELEASE, backlog_key
from worker.leases import forget_queued, note_queued

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")

# Compare-and-set: KEYS[1] the record, KEYS[2] the backlog (worker/backlog.py); ARGV = ttl, n, n
# allowed (JSON) states, the lease owner the record must name ('' = any: worker/leases.py), a counter
# field to add one to ('' = none), field/value pairs. A job that ends here releases its work from the
# backlog in the same step.
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
local n = tonumber(ARGV[2])
local ok = (n == 0)
for i = 3, 2 + n do if state == ARGV[i] then ok = true end end
if not ok then return 0 end
local owner = ARGV[3 + n]
if owner ~= '' and redis.call('HGET', KEYS[1], 'lease_owner') ~= owner then return 0 end
if ARGV[4 + n] ~= '' then redis.call('HINCRBY', KEYS[1], ARGV[4 + n], 1) end
for i = 5 + n, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
local now = redis.call('HGET', KEYS[1], 'state')
if now == '"succeeded"' or now == '"failed"' or now == '"cancelled"' then
  local backlog, job_id = KEYS[2], cjson.decode(redis.call('HGET', KEYS[1], 'id'))
""" + RELEASE + """
end
return 1
"""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    """Create, read and update job records; `redis` is a redis-py client."""

    def __init__(self, redis, prefix="tunesmith:", ttl=7 * 24 * 3600):
        self.redis = redis
        self.prefix = prefix
        self.ttl = int(ttl)
        self._transition = redis.register_script(_TRANSITION)

    def key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def create(self, kind: str, params: dict, job_id: str | None = None, **fields) -> dict:
        """Store a new queued record and return it."""
        job_id = job_id or new_job_id()
        record = {"id": job_id, "kind": kind, "state": "queued", "progress": 0.0,
                  "created_at": now_iso(), "started_at": None, "finished_at": None,
                  "params": params, "error": None, "result": None, "attempts": 0,
                  "completions": 0, **fields}
        key = self.key(job_id)
        with self.redis.pipeline() as pipe:
            pipe.hset(key, mapping={k: json.dumps(v) for k, v in record.items()})
            pipe.expire(key, self.ttl)
            note_queued(self, pipe, job_id)       # watched for a lost message (worker/leases.py)
            pipe.execute()
        return record

    def get(self, job_id: str) -> dict | None:
        """The record as a dict, or None for an unknown (or expired) id."""
        if not _plausible_id(job_id):
            return None
        raw = self.redis.hgetall(self.key(job_id))
        if not raw:
            return None
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def update(self, job_id: str, client=None, **fields) -> bool | None:
        """Write fields whatever the state; False when the record is gone. With a pipeline as
        `client`, the write is queued on it and the answer is None."""
        return self.transition(job_id, (), client=client, **fields)

    def transition(self, job_id: str, from_states, to_state: str | None = None, owner: str | None = None,
                   client=None, count: str | None = None, **fields) -> bool | None:
        """Write fields (and the new state) only while the state is one of `from_states`
        (any state when empty) and, given an `owner`, while the job's lease is still that owner's
        (a job requeued or taken over meanwhile is no longer ours to finish); `count`: an integer
        field to add one to in the same step ("completions": a finished job is counted once, however
        the connection fails). True when written; with a pipeline as `client`, queued on it, and
        None (the answer comes with the pipeline's)."""
        if to_state is not None:
            fields["state"] = to_state
        pairs = []
        for name, value in fields.items():
            pairs += [name, json.dumps(value)]
        allowed = [json.dumps(s) for s in from_states]
        done = self._transition(keys=[self.key(job_id), backlog_key(self.prefix)],
                                args=[self.ttl, len(allowed), *allowed, json.dumps(owner) if owner else "",
                                      count or "", *pairs],
                                client=client)
        return None if client is not None else done == 1

    def count(self, job_id: str, field: str) -> int:
        """Atomically add one to an integer field (attempts, completions)."""
        key = self.key(job_id)
        with self.redis.pipeline() as pipe:
            pipe.hincrby(key, field, 1)
            pipe.expire(key, self.ttl)
            value, _ = pipe.execute()
        return int(value)

    def delete(self, job_id: str) -> None:
        """Forget a record (a job that could not be published, or that no replica took), and stop
        watching it as queued: else it would hold the queued set until the lost-message check."""
        with self.redis.pipeline() as pipe:
            pipe.delete(self.key(job_id))
            forget_queued(self, pipe, job_id)
            pipe.execute()

    def is_cancelled(self, job_id: str) -> bool:
        state = self.redis.hget(self.key(job_id), "state")
        return state is None or json.loads(state) == "cancelled"

    def cancel(self, job_id: str) -> bool:
        """Mark a queued or running job cancelled; False when it had already finished."""
        return self.transition(job_id, ("queued", "running"), "cancelled",
                               finished_at=now_iso(), error="cancelled by request")


_ORDER = ("id", "kind", "state", "progress", "created_at", "started_at", "finished_at", "attempts",
          "params", "error", "result", "training")


_SERVER_PATH = re.compile(r"(?<![\w:/.])/(?:[^\s/'\"(),;]+/)+([^\s/'\"(),;]*)")


def public_record(record: dict) -> dict:
    """The record as the API shows it, in a fixed key order: internal fields (worker pid, cancel
    secret's hash, lease) left out, and no server path in its error."""
    public = {k: record[k] for k in _ORDER if k in record}
    if public.get("error"):
        public["error"] = without_paths(public["error"])
    return public


def without_paths(text: str) -> str:
    """`text` with every absolute file path cut to its last part: '/srv/var/jobs/x/data' -> 'data'."""
    return _SERVER_PATH.sub(lambda m: m.group(1) or "(folder)", text)


def _plausible_id(job_id: str) -> bool:
    return 8 <= len(job_id) <= 64 and all(c in "0123456789abcdef-" for c in job_id)
