"""Leases and the reaper (worker/leases.py) on the real Redis, without Celery: who may claim a
running job, what a lapsed lease and a lost message lead to, and that a job finishes only while
its claimer still holds it."""
import time

import pytest

from service import create_app
from support import wait_until
from worker import leases
from worker.jobs import claim
import threading

from worker.leases import Leases, claim_lease, lease_key, reap, this_owner


@pytest.fixture
def runtime(service_env, monkeypatch):
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    runtime = create_app().extensions["tunesmith"]
    runtime.published = []
    runtime.publish = lambda record: runtime.published.append(record["id"])    # no Celery here
    return runtime


def test_a_running_job_is_claimed_again_only_when_its_lease_lapsed(runtime):
    store = runtime.jobs
    job_id = store.create("melody", {})["id"]
    assert claim_lease(store, job_id, lease_s=0.5) == 1
    store.redis.set(lease_key(store, job_id), "elsewhere:1", px=500)         # another host holds it
    assert claim_lease(store, job_id) == 0
    time.sleep(0.6)                                                          # ... and died: lapsed
    assert claim_lease(store, job_id) == 2
    assert store.get(job_id)["lease_owner"] == this_owner()
    store.cancel(job_id)
    assert claim_lease(store, job_id) == -2


def test_a_dead_owner_on_this_host_does_not_hold_its_job(runtime):
    store = runtime.jobs
    job_id = store.create("melody", {})["id"]
    claim_lease(store, job_id)
    import socket
    import subprocess
    import sys
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()                                                              # a pid that no longer runs
    store.redis.set(lease_key(store, job_id), f"{socket.gethostname()}:{gone.pid}", px=60_000)
    assert claim_lease(store, job_id) == 2                                   # taken over at once


def test_a_lapsed_lease_is_requeued_once_and_published_again(runtime):
    store = runtime.jobs
    job_id = store.create("melody", {})["id"]
    record = claim(runtime, job_id, 3)
    assert record["state"] == "running"
    assert reap(runtime) == []                                               # the lease is alive
    store.redis.delete(lease_key(store, job_id))                            # the worker died long ago
    assert reap(runtime) == [job_id] and runtime.published == [job_id]
    assert store.get(job_id)["state"] == "queued" and store.get(job_id)["lease_owner"] is None
    assert claim(runtime, job_id, 3)["attempts"] == 2


def test_a_job_finishes_only_while_its_claimer_holds_it(runtime):
    store = runtime.jobs
    job_id = store.create("melody", {})["id"]
    claim(runtime, job_id, 3)
    mine = this_owner()
    store.update(job_id, lease_owner="elsewhere:1")                         # requeued and claimed by another
    assert not store.transition(job_id, ("running",), "succeeded", owner=mine)
    store.update(job_id, lease_owner=mine)
    assert store.transition(job_id, ("running",), "succeeded", owner=mine)


def test_one_thread_renews_the_leases_of_every_job_held_and_releases_each_after(runtime):
    store = runtime.jobs
    held = Leases(store, lease_s=0.4)
    jobs = [store.create("melody", {})["id"] for _ in range(3)]
    for job_id in jobs:
        claim_lease(store, job_id, lease_s=0.4)
    with held.hold(jobs[0]), held.hold(jobs[1]):
        with held.hold(jobs[2]):
            time.sleep(1.0)                                                  # 2.5 lease lengths
            assert [store.redis.get(lease_key(store, j)).decode() for j in jobs] == [this_owner()] * 3
            assert store.transition(jobs[2], ("running",), "succeeded", owner=this_owner())
        assert not store.redis.exists(lease_key(store, jobs[2]))
        assert not store.redis.sismember(leases.running_key(store), jobs[2])
        time.sleep(0.5)
        assert all(store.redis.exists(lease_key(store, j)) for j in jobs[:2])   # still renewed
        assert held.thread in threading.enumerate() and held.thread.name == "leases"   # one thread for all
    wait_until(lambda: held.thread is None, 5, "the lease thread to end with the last job")


def test_the_lease_thread_passes_a_cancel_on_to_its_job(runtime):
    store = runtime.jobs
    held = Leases(store, lease_s=5)
    cancelled, kept = store.create("melody", {})["id"], store.create("melody", {})["id"]
    seen, wrongly = threading.Event(), []
    with held.hold(cancelled, on_cancel=seen.set), held.hold(kept, on_cancel=lambda: wrongly.append(kept)):
        store.cancel(cancelled)
        assert seen.wait(5)
        time.sleep(2 * Leases.WATCH_S)
    assert wrongly == []


def test_a_process_never_claims_a_job_it_is_running_again(runtime):
    store = runtime.jobs
    job_id = store.create("melody", {})["id"]
    assert claim(runtime, job_id, 3)["attempts"] == 1
    with runtime.leases.hold(job_id):
        assert claim(runtime, job_id, 3) is None                             # a duplicate delivery, same process
    assert store.get(job_id)["attempts"] == 1


def test_a_queued_job_whose_message_was_lost_is_published_again(runtime, monkeypatch):
    store = runtime.jobs
    lost = store.create("melody", {})["id"]
    waiting = store.create("melody", {})["id"]
    store.redis.rpush(f"{store.prefix}generate", f'{{"headers": {{"id": "{waiting}"}}}}')   # its message
    assert leases.republish_lost(runtime) == []                              # both too young to tell
    monkeypatch.setattr(leases, "LOST_AFTER_S", 0.0)
    assert leases.republish_lost(runtime, lost_after_s=0.0) == [lost]
    assert runtime.published == [lost]


def test_a_queued_job_delivered_long_ago_to_a_worker_that_is_gone_is_published_again(runtime):
    store = runtime.jobs
    stale, fresh = store.create("melody", {})["id"], store.create("melody", {})["id"]
    now = time.time()
    for tag, job_id, delivered_at in (("tag-1", stale, now - 120), ("tag-2", fresh, now - 1)):
        store.redis.hset(f"{store.prefix}unacked", tag, f'[{{"headers": {{"id": "{job_id}"}}}}, "", "generate"]')
        store.redis.zadd(f"{store.prefix}unacked_index", {tag: delivered_at})
        store.redis.zadd(leases.queued_key(store), {job_id: now - 60})      # both queued a minute ago
    assert leases.republish_lost(runtime, lost_after_s=30.0) == [stale]    # fresh: its worker has it now
    assert runtime.published == [stale]


def test_a_job_left_unfinished_by_its_task_is_queued_again_at_the_next_beat(runtime):
    """The task was terminated (Celery does that to a late-acknowledged task on a broker connection
    loss): the job function is left by an exception it does not catch, the record still says running."""
    store = runtime.jobs
    job_id = store.create("melody", {})["id"]
    claim(runtime, job_id, 3)
    with pytest.raises(SystemExit):
        with runtime.leases.hold(job_id):
            raise SystemExit()
    assert store.get(job_id)["state"] == "running" and not store.redis.exists(lease_key(store, job_id))
    assert reap(runtime) == [job_id] and store.get(job_id)["state"] == "queued"
