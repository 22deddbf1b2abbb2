"""A cluster on one machine: network namespaces as hosts, each with a veth pair on a link-local
subnet joined by a bridge, its own hostname (a UTS namespace), its own TUNESMITH_HOME and nothing
shared with the others but REDIS_URL:

    redis  169.254.77.10   redis-server (append-only file)
    api    169.254.77.11   gunicorn serving service:create_app()
    gen1   169.254.77.12   tunesmith worker --queues generate
    gen2   169.254.77.13   tunesmith worker --queues generate
    train  169.254.77.14   tunesmith worker --queues train

The test process stands in the root namespace on 169.254.77.1 (the bridge), as a client would.
A host is cut off by taking its link down. Namespaces need root (CAP_NET_ADMIN); without it the
tests skip and say so.
"""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests

from support import wait_until
from test_service_e2e import tiny_corpus_zip

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
NET = "169.254.77."
HOSTS = {"redis": 10, "api": 11, "gen1": 12, "gen2": 13, "train": 14}
REDIS_PORT = 6390
TOKEN = {"Authorization": "Bearer test-token"}


def sh(*argv, check=True):
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def namespaces_work() -> str | None:
    """None when network namespaces and bridges can be made here, else why not."""
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "needs iproute2's ip and util-linux's unshare"
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) to make network namespaces"
    probe = f"tsprobe{uuid.uuid4().hex[:4]}"
    if sh("ip", "netns", "add", probe, check=False).returncode != 0:
        return "ip netns add is not permitted here"
    sh("ip", "netns", "del", probe, check=False)
    return None


class Cluster:
    hosts = HOSTS
    net = NET           # the hosts' subnet (a /24): another cluster test uses one of its own

    def __init__(self, tmp: Path, checkpoint: Path):
        self.tag = uuid.uuid4().hex[:4]
        self.tmp, self.checkpoint = tmp, checkpoint
        self.bridge = f"tsbr{self.tag}"
        self.processes = {}
        self.prefix = f"tscluster-{self.tag}:"
        self.redis_url = f"redis://{self.net}{self.hosts['redis']}:{REDIS_PORT}/0" if "redis" in self.hosts else None
        self.base = f"http://{self.net}{self.hosts['api']}:8000"

    def ns(self, host):
        return f"ts{host}{self.tag}"

    def link(self, host):
        return f"v{host}{self.tag}"[:15]

    def network(self):
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.net}1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for host, last in self.hosts.items():
            ns, link = self.ns(host), self.link(host)
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", link, "type", "veth", "peer", "name", f"p{host}{self.tag}"[:15])
            sh("ip", "link", "set", f"p{host}{self.tag}"[:15], "netns", ns)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", f"p{host}{self.tag}"[:15], "name", "eth0")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.net}{last}/24", "dev", "eth0")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "link", "set", link, "master", self.bridge)
            sh("ip", "link", "set", link, "up")

    def env(self, host) -> dict:
        home = self.tmp / host
        home.mkdir(exist_ok=True)
        model = home / "default.pt"             # each host its own copy of the default model file
        shutil.copy(self.checkpoint, model)
        return {**os.environ, "REDIS_URL": self.redis_url, "TUNESMITH_HOME": str(home),
                "TUNESMITH_KEY_PREFIX": self.prefix, "TUNESMITH_DEFAULT_MODEL": str(model),
                "TUNESMITH_TOKEN": "test-token", "TUNESMITH_CACHE": str(home / "cache"),
                "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TUNESMITH_SENTINEL_MASTER": "tunesmith",
                # the test is one client standing for many: no per-client share or rate (service/admission.py)
                "TUNESMITH_MAX_CLIENT_WORK": "100000000", "TUNESMITH_RATE_LIMIT": ""}

    def start(self, host, argv, env=None):
        """argv run in host's namespace under its own hostname, in a process group of its own."""
        log = open(self.tmp / f"{host}.log", "ab")
        command = ["ip", "netns", "exec", self.ns(host), "unshare", "--uts", "sh", "-c",
                   f'hostname {host} && exec "$@"', "sh", *argv]
        self.processes[host] = subprocess.Popen(command, env=env or self.env(host), stdout=log,
                                                stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)

    def start_all(self):
        self.start_redis("redis")
        self.start_services()

    def start_redis(self, host, *extra):
        data = self.tmp / f"{host}-data"
        data.mkdir()
        self.start(host, ["redis-server", "--bind", f"{self.net}{self.hosts[host]}", "--port", str(REDIS_PORT),
                          "--save", "", "--appendonly", "yes", "--dir", str(data), "--protected-mode", "no", *extra])
        wait_until(lambda: self.redis_cli(host, "ping") == "PONG", 30, f"the {host} host's Redis")

    def redis_cli(self, host, *command, port=REDIS_PORT) -> str:
        return sh("redis-cli", "-h", f"{self.net}{self.hosts[host]}", "-p", str(port), *command, check=False).stdout.strip()

    def start_services(self):
        self.start("api", [sys.executable, "-m", "gunicorn", "--bind", f"{self.net}{self.hosts['api']}:8000", "--workers", "1",
                           "--threads", "16", "--timeout", "60", "--no-control-socket", "service:create_app()"])
        for host in ("gen1", "gen2"):
            if host not in self.hosts:
                continue
            self.start(host, [sys.executable, "-m", "service.cli", "worker", "--queues", "generate", "--concurrency", "2"])
        if "train" in self.hosts:
            self.start("train", [sys.executable, "-m", "service.cli", "worker", "--queues", "train"])
        wait_until(self.ready, 120, "the cluster's /readyz")

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.base}/readyz", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def cut(self, host):
        sh("ip", "link", "set", self.link(host), "down")

    def join(self, host):
        sh("ip", "link", "set", self.link(host), "up")

    def jobs_on(self, host) -> set[str]:
        """Ids of the melody jobs whose files this host wrote."""
        folder = self.tmp / host / "jobs"
        return {p.name for p in folder.iterdir() if any(p.glob("melody-*"))} if folder.is_dir() else set()

    def close(self):
        for process in self.processes.values():
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(10)
        for host in self.hosts:
            for pid in sh("ip", "netns", "pids", self.ns(host), check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", self.ns(host), check=False)
            sh("ip", "link", "del", self.link(host), check=False)
        sh("ip", "link", "del", self.bridge, check=False)


@contextlib.contextmanager
def running(c: Cluster):
    """`c`'s network and processes, all removed on the way out; a skip where namespaces cannot be made."""
    reason = namespaces_work()
    if reason:
        pytest.skip(f"a cluster of network namespaces cannot be made here: {reason}")
    try:
        c.network()
        c.start_all()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_checkpoint):
    with running(Cluster(tmp_path_factory.mktemp("cluster"), tiny_checkpoint)) as c:
        yield c


def submit(c, body) -> str:
    response = requests.post(f"{c.base}/api/v1/melodies", json=body, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def record(c, job_id) -> dict:
    return requests.get(f"{c.base}/api/v1/jobs/{job_id}", timeout=30).json()


def wait_done(c, ids, timeout):
    def done():
        records = [record(c, i) for i in ids]
        # (a 503 while the broker fails over has no state: not done yet)
        return records if all(r.get("state") in ("succeeded", "failed", "cancelled") for r in records) else None
    return wait_until(done, timeout, "the cluster's jobs")


def test_jobs_sent_to_the_api_host_are_served_by_both_worker_hosts(cluster):
    ids = [submit(cluster, {"bars": 128, "count": 4, "seed": i}) for i in range(12)]
    records = wait_done(cluster, ids, 180)
    assert [r["state"] for r in records] == ["succeeded"] * len(ids), [r["error"] for r in records]
    on1, on2 = cluster.jobs_on("gen1"), cluster.jobs_on("gen2")
    assert on1 and on2 and on1.isdisjoint(on2) and on1 | on2 >= set(ids)
    # the API host serves the files a worker host wrote, fetched through Redis
    midi = requests.get(f"{cluster.base}/api/v1/melodies/{ids[0]}.mid", timeout=20)
    assert midi.status_code == 200 and midi.content[:4] == b"MThd"


def test_a_worker_host_cut_off_mid_job_has_its_jobs_finished_by_the_other(cluster):
    ids = [submit(cluster, {"bars": 256, "count": 16, "seed": 100 + i}) for i in range(4)]

    broker = redis.Redis(f"{NET}{HOSTS['redis']}", REDIS_PORT, socket_timeout=5)

    def running_on_gen1():   # a lease's owner is "host:pid" (worker/leases.py)
        return [i for i in ids if (broker.get(f"{cluster.prefix}lease:{i}") or b"").startswith(b"gen1:")] or None
    victims = wait_until(running_on_gen1, 60, "a job running on gen1")
    cluster.cut("gen1")
    try:
        records = wait_done(cluster, ids, 150)
        assert [r["state"] for r in records] == ["succeeded"] * len(ids), [r["error"] for r in records]
        for job in victims:
            assert job in cluster.jobs_on("gen2")   # finished by the other host
    finally:
        cluster.join("gen1")
    # back on the link, gen1 writes no second result, and serves new jobs again
    time.sleep(5)
    for r in [record(cluster, i) for i in ids]:
        assert r["state"] == "succeeded" and len(r["result"]["melodies"]) == 16
    before = cluster.jobs_on("gen1")
    more = [submit(cluster, {"bars": 128, "count": 4, "seed": 200 + i}) for i in range(10)]
    records = wait_done(cluster, more, 180)
    assert [r["state"] for r in records] == ["succeeded"] * len(more), [r["error"] for r in records]
    assert cluster.jobs_on("gen1") - before


def test_a_model_trained_on_the_train_host_is_served_by_both_worker_hosts(cluster):
    response = requests.post(f"{cluster.base}/api/v1/training-jobs", headers=TOKEN, timeout=30,
                             files={"file": ("tunes.zip", tiny_corpus_zip())},
                             data={"epochs": "1", "hidden_size": "16", "embedding_dim": "8", "layers": "1",
                                   "batch_size": "4", "bptt": "16", "dropout": "0.0", "valid": "0.3",
                                   "name": f"cluster-{cluster.tag}", "max_minutes": "5"})
    assert response.status_code == 202, response.text
    trained = wait_until(lambda: (r := record(cluster, response.json()["id"]))["state"] in
                         ("succeeded", "failed") and r or None, 300, "the training job")
    assert trained["state"] == "succeeded", trained["error"]
    name = f"cluster-{cluster.tag}"
    assert requests.post(f"{cluster.base}/api/v1/models/{name}/default", headers=TOKEN, timeout=10).status_code == 200
    ids = [submit(cluster, {"bars": 64, "count": 2, "seed": 300 + i}) for i in range(10)]
    records = wait_done(cluster, ids, 180)
    assert all(r["state"] == "succeeded" and r["params"]["model"] == name for r in records)
    served = [i for i in ids if i in cluster.jobs_on("gen1")], [i for i in ids if i in cluster.jobs_on("gen2")]
    assert served[0] and served[1]


def test_the_api_host_cut_off_from_redis_answers_503_and_recovers(cluster):
    # cut the Redis host's link: the API host (still reachable from the client) loses its broker
    cluster.cut("redis")
    try:
        def refused():   # (a Response is falsy when its status is an error: return it in a list)
            response = requests.post(f"{cluster.base}/api/v1/melodies", json={"bars": 2}, timeout=30)
            return [response] if response.status_code == 503 else None
        response, = wait_until(refused, 60, "a 503 from the API host without Redis")
        assert response.json()["error"] and "Retry-After" in response.headers
        assert requests.get(f"{cluster.base}/readyz", timeout=30).status_code == 503
    finally:
        cluster.join("redis")
    job = wait_until(lambda: (r := requests.post(f"{cluster.base}/api/v1/melodies", json={"bars": 2},
                                                 timeout=30)).status_code == 202 and r.json()["id"] or None,
                     60, "the API host taking jobs again")
    assert wait_done(cluster, [job], 120)[0]["state"] == "succeeded"
