"""What every job does around its work: claim the record (counting attempts, skipping
cancelled and finished jobs), fail it with a message, and sweep expired files now and then.

A task is delivered at least once: `acks_late` plus `reject_on_worker_lost` put it back when
its worker process dies, and the lease reaper (worker/leases.py) when the whole worker died. So a
job may start again after its first attempt was killed half-way; the attempt counter in the
record (counted at each claim) stops a job that kills its worker every time (a poison job).
"""
import hashlib
import logging
import os
import socket

from worker.leases import claim_lease
from worker.records import FINISHED, now_iso
from worker.storage import sweep_expired

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 3600


def claim(runtime, job_id: str, max_attempts: int) -> dict | None:
    """Mark the job running under this process's lease (worker/leases.py) and return its record, or
    None when it must not run (unknown, expired, cancelled, already finished, running under another
    live worker's lease, or out of attempts)."""
    store = runtime.jobs
    if runtime.leases.holds(job_id):
        log.info("job %s is running in this process already; skipping this delivery", job_id)
        return None
    record = store.get(job_id)
    if record is None:
        log.warning("job %s has no record (expired?); skipping", job_id)
        return None
    if record["state"] in FINISHED:
        log.info("job %s is %s; skipping", job_id, record["state"])
        return None
    fields = {"worker_pid": os.getpid()}
    if record["started_at"] is None:
        fields["started_at"] = now_iso()
    attempts = claim_lease(store, job_id, runtime.lease_s, **fields)
    if attempts == 0:
        log.info("job %s is running under another worker's lease; skipping this delivery", job_id)
        return None
    if attempts < 0:
        return None                      # cancelled or finished in the meantime
    if attempts > max_attempts:
        store.transition(job_id, ("queued", "running"), "failed", finished_at=now_iso(),
                         error=f"gave up after {max_attempts} attempts: the worker was lost each time")
        return None
    return store.get(job_id)


def fail(runtime, job_id: str, message: str, owner: str | None = None) -> None:
    """Fail the job (while it is still `owner`'s, when given)."""
    runtime.jobs.transition(job_id, ("queued", "running"), "failed", owner=owner, finished_at=now_iso(),
                            error=message)


def maybe_sweep(runtime, ttl: int) -> None:
    """At most once an hour per storage folder (a Redis lock named after this host and its
    TUNESMITH_HOME, since workers and API processes on other machines each keep their own): delete
    the folders of expired jobs, and release the backlog's work of jobs whose record is gone."""
    where = hashlib.sha256(f"{socket.gethostname()}:{os.path.abspath(runtime.home)}".encode()).hexdigest()[:16]
    lock = f"{runtime.jobs.prefix}sweep-lock:{where}"
    try:
        if runtime.redis.set(lock, os.getpid(), nx=True, ex=SWEEP_EVERY_S):
            removed = sweep_expired(runtime.home, lambda jid: runtime.jobs.get(jid) is not None, ttl)
            if removed:
                log.info("removed %d expired job folders", len(removed))
            released = runtime.backlog.sweep(lambda jid: runtime.jobs.get(jid) is not None)
            if released:
                log.info("released the work of %d jobs whose record is gone", len(released))
    except Exception:                    # housekeeping must never fail a job
        log.exception("sweeping expired jobs failed")
