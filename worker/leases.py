"""Leases on running jobs, and the reaper that puts a job back in its queue when its lease lapses
or its message was lost.

Celery on Redis hands an unacknowledged task out again only after the visibility timeout (hours
here, since it must outlast the longest training job), so a job whose whole worker died would sit
`running` that long. Instead, the worker process that claims a job holds a lease on it:

    <prefix>lease:<id>    the owner ("host:pid"), expiring LEASE_S seconds after its last renewal
    <prefix>running       the ids of jobs that have been claimed and not yet finished

One thread per process renews the leases of all the jobs it holds every LEASE_S / 4 (`Leases`). Every worker's
parent process runs `reap` every REAP_EVERY_S: a running job whose lease is gone moves back to
`queued` (a compare-and-set, so of many reapers one wins) and its id is published again, so a
killed worker's job runs again within about LEASE_S + REAP_EVERY_S seconds. The visibility
timeout stays as the outer net: its late redelivery finds the job finished and is skipped.

A message can also vanish on its way to a worker (popped by Redis, never read: a worker killed or
stopped, a connection cut; kombu's own issues say so), leaving a record `queued` forever. So the
reaper also looks at jobs queued for over LOST_AFTER_S (`<prefix>queued`, a sorted set by time
queued): one whose id is in no queue and was not delivered to a worker lately (kombu's unacked
messages, by delivery time) is published again.

Exactly once in effect: a job is claimed only when queued, or running under a lease that lapsed or
whose owner is a dead process on this host; a job finishes only while the record still names its
claimer as `lease_owner` (records.py's guarded transition); attempts are counted at each claim.
"""
import json
import logging
import os
import socket
import threading
import time

log = logging.getLogger(__name__)
LEASE_S = 20.0
REAP_EVERY_S = 5.0
LOST_AFTER_S = 30.0
QUEUE_NAMES = ("generate", "train")          # worker/settings.py's QUEUES

# KEYS: record, lease, running set, queued set. ARGV: ttl, owner, lease ms, job id, an owner known dead ('' = none),
# field/value pairs to write. -1 no record, -2 finished, 0 someone alive holds it, else the attempt count.
_CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state ~= '"queued"' and state ~= '"running"' then return -2 end
local holder = redis.call('GET', KEYS[2])
if state == '"running"' and holder and holder ~= ARGV[2] and holder ~= ARGV[5] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[1], 'state', '"running"')
redis.call('ZREM', KEYS[4], ARGV[4])
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return attempts
"""
# KEYS: lease. ARGV: owner, lease ms. 1 renewed, 0 the lease is someone else's (or gone).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: lease, running set, record. ARGV: owner, job id, owner as the record has it (JSON).
# The lease goes; the job leaves the running set only if it no longer runs as ours: a job we leave
# unfinished (the task was terminated, say) stays there, lease-less, for the reaper's next beat.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('HGET', KEYS[3], 'state') == '"running"' and redis.call('HGET', KEYS[3], 'lease_owner') == ARGV[3]
then return 0 end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"""
# KEYS: record, lease, running set, queued set. ARGV: ttl, job id, now.
# 1 requeued; 0 left alone (and forgotten if done).
_REQUEUE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= '"running"' then redis.call('SREM', KEYS[3], ARGV[2]) return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', '"queued"', 'lease_owner', 'null')
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""


def this_owner() -> str:
    """Who holds a lease: this process on this host (`Leases` keeps one process from holding a job twice)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_key(store, job_id: str) -> str:
    return f"{store.prefix}lease:{job_id}"


def running_key(store) -> str:
    return f"{store.prefix}running"


def queued_key(store) -> str:
    return f"{store.prefix}queued"


def note_queued(store, pipe, job_id: str) -> None:
    """Add to a pipeline: the job is queued now (records.py's create calls this)."""
    pipe.zadd(queued_key(store), {job_id: time.time()})


def forget_queued(store, pipe, job_id: str) -> None:
    """Add to a pipeline: the job is no longer watched as queued (records.py's delete calls this)."""
    pipe.zrem(queued_key(store), job_id)


def claim_lease(store, job_id: str, lease_s: float = LEASE_S, **fields) -> int:
    """Take the job and its lease, counting the attempt: returns the attempt number, or -1 (no record),
    -2 (finished or cancelled), 0 (running under another live owner's lease)."""
    holder = store.redis.get(lease_key(store, job_id))
    dead = holder.decode() if holder and _dead_here(holder.decode()) else ""
    fields["lease_owner"] = this_owner()
    pairs = [x for name, value in fields.items() for x in (name, json.dumps(value))]
    return int(store.redis.eval(_CLAIM, 4, store.key(job_id), lease_key(store, job_id), running_key(store),
                                queued_key(store), store.ttl, this_owner(), int(lease_s * 1000), job_id, dead, *pairs))


def _dead_here(owner: str) -> bool:
    """Is `owner` ("host:pid") a process of this host that no longer runs?"""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Leases:
    """This process's leases on the jobs it runs, renewed together by one thread (every LEASE_S / 4,
    one pipeline for them all), which also watches their records for a cancel (every WATCH_S, one
    pipeline) and calls the job's `on_cancel`. A generate worker holds many jobs at once in one
    process; a training worker's process one.

        leases = Leases(store, lease_s)
        with leases.hold(job_id, on_cancel=request.cancel) as held:
            ...the job...                       # held.owner: the claimer the record names

    Leaving `hold` releases the lease; a job left unfinished (by an exception no job function
    catches) stays in the running set, lease-less, and is queued again at the reaper's next beat.
    """

    WATCH_S = 0.25

    def __init__(self, store, lease_s: float = LEASE_S):
        self.store, self.lease_s = store, lease_s
        self.owner = this_owner()
        self.held: dict[str, Held] = {}
        self.lock = threading.Lock()
        self.thread = None

    def hold(self, job_id: str, on_cancel=None) -> "Held":
        held = Held(self, job_id, on_cancel)
        with self.lock:
            if job_id in self.held:
                raise RuntimeError(f"job {job_id} is already running in this process")
            self.held[job_id] = held
            if self.thread is None:
                self.thread = threading.Thread(target=self._watch, name="leases", daemon=True)
                self.thread.start()
        return held

    def holds(self, job_id: str) -> bool:
        return job_id in self.held

    def release(self, job_id: str) -> None:
        with self.lock:
            self.held.pop(job_id, None)
        try:
            if not self.store.redis.eval(_RELEASE, 3, lease_key(self.store, job_id), running_key(self.store),
                                         self.store.key(job_id), self.owner, job_id, json.dumps(self.owner)):
                log.warning("job %s left unfinished: queued again at the reaper's next beat", job_id)
        except Exception:                 # Redis away: the lease lapses by itself
            log.warning("could not release the lease on job %s", job_id)

    def _watch(self) -> None:
        """The thread: beats while this process holds a job, and ends when it holds none."""
        renewed = time.monotonic()
        while True:
            time.sleep(min(self.WATCH_S, self.lease_s / 4))
            with self.lock:
                held = list(self.held.values())
                if not held:
                    self.thread = None
                    return
            renew = time.monotonic() - renewed >= self.lease_s / 4
            try:
                self._beat(held, renew)
                if renew:
                    renewed = time.monotonic()
            except Exception as exc:      # Redis away for a moment: try again at the next beat
                log.warning("renewing leases / reading cancels failed: %s", exc)

    def _beat(self, held: list, renew: bool) -> None:
        store = self.store
        pipe = store.redis.pipeline(transaction=False)
        for h in held:
            pipe.hget(store.key(h.job_id), "state")
            if renew:
                pipe.eval(_RENEW, 1, lease_key(store, h.job_id), self.owner, int(self.lease_s * 1000))
        answers = iter(pipe.execute())
        for h in held:
            state = next(answers)
            if renew and not next(answers):
                log.warning("job %s: the lease is no longer ours", h.job_id)
            if h.on_cancel is not None and (state is None or json.loads(state) == "cancelled"):
                h.on_cancel()


class Held:
    """One job held under this process's lease (`Leases.hold`); a context manager."""

    def __init__(self, leases: Leases, job_id: str, on_cancel=None):
        self.leases, self.job_id, self.on_cancel = leases, job_id, on_cancel
        self.owner = leases.owner

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.leases.release(self.job_id)
        return False


def reap(runtime) -> list[str]:
    """Queue again every running job whose lease lapsed and every queued job whose message was lost,
    publishing its id again; returns those ids."""
    return requeue_lapsed(runtime) + republish_lost(runtime)


def requeue_lapsed(runtime) -> list[str]:
    store, requeued = runtime.jobs, []
    for raw in store.redis.smembers(running_key(store)):
        job_id = raw.decode()
        if store.redis.exists(lease_key(store, job_id)):
            continue
        if not store.redis.eval(_REQUEUE, 4, store.key(job_id), lease_key(store, job_id), running_key(store),
                                queued_key(store), store.ttl, job_id, time.time()):
            continue
        record = store.get(job_id)
        try:
            runtime.publish(record)
        except Exception:                 # the broker is away: leave it running, to be reaped again
            log.exception("could not requeue job %s", job_id)
            store.transition(job_id, ("queued",), "running")
            store.redis.sadd(running_key(store), job_id)
            continue
        log.warning("job %s: its worker's lease lapsed; queued again (attempt %d so far)",
                    job_id, record["attempts"])
        requeued.append(job_id)
    return requeued


def republish_lost(runtime, lost_after_s: float = LOST_AFTER_S) -> list[str]:
    store, now = runtime.jobs, time.time()
    waiting = store.redis.zrangebyscore(queued_key(store), 0, now - lost_after_s, start=0, num=200)
    if not waiting:
        return []
    # every message a worker could still get: those in the queues, and those delivered lately but
    # not acknowledged (a worker claims its job within a moment of delivery; an older delivery of a
    # job still queued went to a worker that is gone, and waits for the visibility timeout)
    pending = [m for q in QUEUE_NAMES for m in store.redis.lrange(f"{store.prefix}{q}", 0, 20_000)]
    delivered = store.redis.hgetall(f"{store.prefix}unacked")
    if delivered:
        times = dict(store.redis.zrange(f"{store.prefix}unacked_index", 0, -1, withscores=True))
        pending += [m for tag, m in delivered.items() if now - times.get(tag, now) < lost_after_s]
    messages = b"\n".join(pending)
    republished = []
    for raw in waiting:
        job_id = raw.decode()
        record = store.get(job_id)
        if record is None or record["state"] != "queued":
            store.redis.zrem(queued_key(store), job_id)
            continue
        store.redis.zadd(queued_key(store), {job_id: now})     # looked at now: again in LOST_AFTER_S
        if raw in messages:
            continue
        runtime.publish(record)
        log.warning("job %s: queued %.0f s ago and its message is gone; published again",
                    job_id, now - _queued_since(record))
        republished.append(job_id)
    return republished


def _queued_since(record: dict) -> float:
    from datetime import datetime
    try:
        return datetime.fromisoformat(record["created_at"].replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError, AttributeError):
        return time.time()
