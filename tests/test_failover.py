"""The broker's own failover: a primary Redis, its replica and three sentinels (quorum 2), an API host
and a generate-worker host, each a network namespace (tests/test_cluster.py's Cluster, on a subnet
of its own), every Tunesmith process given only the sentinels as REDIS_URL:

    r1     169.254.78.10   redis-server, the primary at the start
    r2,r3  169.254.78.11-12  redis-server --replicaof r1
    s1-s3  169.254.78.21-23  redis-server --sentinel (monitor r1, quorum 2, down after 1 s)
    api    169.254.78.30   gunicorn serving service:create_app()
    gen1   169.254.78.31   tunesmith worker --queues generate

A client keeps submitting melodies while the primary's Redis is SIGKILLed, or its host cut off,
mid-load. Sentinel promotes a replica; every job the API accepted (202) before the primary died or
after it must finish, once; new jobs must be accepted after the promotion; and nothing is left
hanging: no job queued or running, and the generate worker the same process as before (it
reconnects; nothing restarts it here).
"""
import os
import shutil
import signal
import threading
import time

import pytest
import redis
import requests

from support import wait_until
from test_cluster import REDIS_PORT, Cluster, running
from worker.leases import LEASE_S, REAP_EVERY_S

pytestmark = pytest.mark.slow
MASTER = "tunesmith"
SENTINEL_PORT = 26379
SENTINELS = ("s1", "s2", "s3")
REPLICAS = ("r2", "r3")     # two: the promoted one still has a replica to acknowledge new jobs (WAIT)
JOB = {"bars": 64, "count": 4}


class SentinelCluster(Cluster):
    hosts = {"r1": 10, "r2": 11, "r3": 12, "s1": 21, "s2": 22, "s3": 23, "api": 30, "gen1": 31}
    net = "169.254.78."

    def __init__(self, tmp, checkpoint):
        super().__init__(tmp, checkpoint)
        self.redis_url = ";".join(f"sentinel://{self.address(s)}:{SENTINEL_PORT}" + ("/0" if i == 0 else "")
                                  for i, s in enumerate(SENTINELS))

    def address(self, host) -> str:
        return f"{self.net}{self.hosts[host]}"

    def start_all(self):
        self.start_redis("r1")
        for replica in REPLICAS:
            self.start_redis(replica, "--replicaof", self.address("r1"), str(REDIS_PORT))
            wait_until(lambda r=replica: "master_link_status:up" in self.redis_cli(r, "info", "replication"), 30,
                       f"{replica} to sync with the primary")
        for host in SENTINELS:
            folder = self.tmp / f"{host}-data"
            folder.mkdir()
            conf = folder / "sentinel.conf"        # sentinel rewrites its own configuration file
            conf.write_text(f"port {SENTINEL_PORT}\nbind {self.address(host)}\nprotected-mode no\ndir {folder}\n"
                            f"sentinel monitor {MASTER} {self.address('r1')} {REDIS_PORT} 2\n"
                            f"sentinel down-after-milliseconds {MASTER} 1000\n"
                            f"sentinel failover-timeout {MASTER} 10000\n")
            self.start(host, ["redis-server", str(conf), "--sentinel"])

        def sentinels_agree():    # each sentinel knows the replicas and the two other sentinels
            for host in SENTINELS:
                info = self.redis_cli(host, "sentinel", "master", MASTER, port=SENTINEL_PORT).split("\n")
                fields = dict(zip(info[::2], info[1::2]))
                if fields.get("num-slaves") != str(len(REPLICAS)) or fields.get("num-other-sentinels") != "2":
                    return False
            return True
        wait_until(sentinels_agree, 60, "the sentinels to find the replicas and each other", interval=0.5)
        self.start_services()

    def ready(self) -> bool:
        """/readyz's only complaint, if any, is the train worker this cluster does not run."""
        try:
            answer = requests.get(f"{self.base}/readyz", timeout=3).json()
        except (requests.RequestException, ValueError):
            return False
        return answer.get("checks", {}).get("models_loaded", {}).get("generate@gen1") == "default" and \
            all("'train'" in reason for reason in answer.get("reasons", []))

    def primary(self) -> str:
        """The primary's address as the first sentinel that answers names it."""
        for host in SENTINELS:
            answer = self.redis_cli(host, "sentinel", "get-master-addr-by-name", MASTER, port=SENTINEL_PORT)
            if answer:
                return answer.split("\n")[0]
        return ""

    def kill(self, host):
        os.killpg(self.processes[host].pid, signal.SIGKILL)
        self.processes[host].wait(10)


@pytest.fixture
def cluster(tmp_path, tiny_checkpoint):
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("needs redis-server (with --sentinel) and redis-cli")
    with running(SentinelCluster(tmp_path, tiny_checkpoint)) as c:
        yield c


class Submitter:
    """A client posting a melody every `every` seconds on a thread; `accepted`: (time, job id) of
    each 202, `refused`: how many answers were anything else (503 while the broker fails over)."""

    def __init__(self, base, every=0.25):
        self.base, self.every = base, every
        self.accepted, self.refused, self.errors = [], 0, []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        seed = 0
        while not self.stopped.is_set():
            seed += 1
            try:
                response = requests.post(f"{self.base}/api/v1/melodies", json={**JOB, "seed": seed}, timeout=15)
            except requests.RequestException as exc:
                self.errors.append(repr(exc))
            else:
                if response.status_code == 202:
                    self.accepted.append((time.monotonic(), response.json()["id"]))
                else:
                    self.refused += 1
            self.stopped.wait(self.every)

    def accepted_after(self, moment) -> list[str]:
        return [job for at, job in self.accepted if at > moment]


@pytest.mark.parametrize("how", ["kill", "cut"])
def test_a_sentinel_failover_loses_no_accepted_job_and_the_service_goes_on(cluster, how):
    """`kill`: the primary's redis-server SIGKILLed (its connections are reset at once); `cut`: its
    host's link taken down (nothing is reset: clients find out by their timeouts and health checks)."""
    worker = cluster.processes["gen1"]
    submitter = Submitter(cluster.base)
    submitter.thread.start()
    try:
        primary = redis.Redis(cluster.address("r1"), REDIS_PORT, socket_timeout=5)
        prefix = cluster.prefix
        replicas = {cluster.address(r) for r in REPLICAS}

        def busy():     # mid-load: a job running, more accepted behind it
            return len(submitter.accepted) >= 6 and primary.scard(f"{prefix}running") > 0
        wait_until(busy, 60, "jobs accepted and one running")
        died = time.monotonic()
        if how == "kill":
            cluster.kill("r1")
        else:
            cluster.cut("r1")
        promoted_at = wait_until(lambda: cluster.primary() in replicas and time.monotonic(), 30,
                                 "Sentinel to promote a replica")
        wait_until(lambda: submitter.accepted_after(promoted_at), 30, "a job accepted after the promotion")
        first_new = min(at for at, _ in submitter.accepted if at > died)
        time.sleep(2)                   # a few more, on the new primary
    finally:
        submitter.stopped.set()
        submitter.thread.join(30)
    ids = [job for _, job in submitter.accepted]
    before = [job for at, job in submitter.accepted if at < died]

    store = redis.Redis(cluster.primary(), REDIS_PORT, socket_timeout=5)

    def record(job_id):
        return requests.get(f"{cluster.base}/api/v1/jobs/{job_id}", timeout=15).json()

    def all_finished():
        records = [record(job) for job in ids]
        return records if all(r.get("state") in ("succeeded", "failed", "cancelled") for r in records) else None
    records = wait_until(all_finished, 60, "every accepted job to finish", interval=0.5)
    finished = time.monotonic()
    print(f"\nfailover ({how}): promoted {promoted_at - died:.1f} s after the {how}, first job accepted "
          f"{first_new - died:.1f} s after it, all {len(ids)} accepted jobs ({len(before)} before the {how}) "
          f"finished {finished - died:.1f} s after it ({sum(r.get('attempts', 0) > 1 for r in records)} run twice); "
          f"{submitter.refused} refused, {len(submitter.errors)} client errors")

    assert [r["state"] for r in records] == ["succeeded"] * len(ids), [(r.get("id"), r.get("error")) for r in records]
    for r in records:               # one result each, written by one finishing attempt
        assert len(r["result"]["melodies"]) == JOB["count"]
        assert int(store.hget(f"{prefix}job:{r['id']}", "completions")) == 1, r
    assert submitter.accepted_after(promoted_at)
    # nothing hung: no job left queued or running (a finished job whose lease could not be released
    # while the broker was away leaves the running set when the reaper sees that lease lapse), no
    # message left behind, the same worker process
    wait_until(lambda: store.scard(f"{prefix}running") == 0 and store.zcard(f"{prefix}queued") == 0,
               LEASE_S + REAP_EVERY_S + 5, "no job left running or queued", interval=0.5)
    assert store.llen(f"{prefix}generate") == 0
    assert worker.poll() is None, "the generate worker exited during the failover"
    deadline = time.monotonic() + 10            # /readyz asks the workers, which answer within a second
    while not cluster.ready() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cluster.ready(), requests.get(f"{cluster.base}/readyz", timeout=15).text
