"""worker/broker.py: REDIS_URL as a plain Redis or as Redis Sentinel. A real redis-server and a real
sentinel (redis-server --sentinel) on loopback ports of their own; the shared Redis is not touched."""
import shutil
import subprocess

import pytest

from support import free_port, wait_until
from worker.broker import NotReplicated, is_sentinel, redis_client, sentinel_hosts
from worker.settings import load_settings

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def test_sentinel_urls_are_read_the_way_kombu_reads_them():
    hosts, db, password = sentinel_hosts("sentinel://:pw@10.0.0.1:26379/2;sentinel://10.0.0.2;sentinel://h3:26380")
    assert hosts == [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("h3", 26380)] and db == 2 and password == "pw"
    assert is_sentinel("sentinel://a:1") and not is_sentinel("redis://a:1/0") and not is_sentinel(None)
    with pytest.raises(ValueError, match="sentinel://host:port"):
        sentinel_hosts("sentinel://a:1;redis://b:2")


def test_celery_is_told_the_master_name_only_with_sentinel():
    sentinel = load_settings({"REDIS_URL": "sentinel://a:26379;sentinel://b:26379", "TUNESMITH_SENTINEL_MASTER": "m1"})
    assert sentinel["CELERY"]["broker_transport_options"]["master_name"] == "m1"
    assert sentinel["CELERY"]["broker_url"].startswith("sentinel://")
    plain = load_settings({"REDIS_URL": "redis://a:6379/0"})
    assert "master_name" not in plain["CELERY"]["broker_transport_options"]


def test_only_sentinel_tightens_the_health_checks_and_waits_for_a_replica():
    sentinel = load_settings({"REDIS_URL": "sentinel://a:26379;sentinel://b:26379"})
    transport = sentinel["CELERY"]["broker_transport_options"]
    assert transport["health_check_interval"] == 4 and transport["socket_timeout"] == 2
    assert sentinel["TUNESMITH_WRITE_REPLICAS"] == 1
    plain = load_settings({"REDIS_URL": "redis://a:6379/0"})
    assert "health_check_interval" not in plain["CELERY"]["broker_transport_options"]
    assert plain["CELERY"]["broker_transport_options"]["socket_timeout"] == 5
    assert plain["TUNESMITH_WRITE_REPLICAS"] == 0
    assert load_settings({"REDIS_URL": "sentinel://a:1", "TUNESMITH_WRITE_REPLICAS": "0"})["TUNESMITH_WRITE_REPLICAS"] == 0


@pytest.fixture
def sentinel(tmp_path):
    """A primary on a free port and one sentinel watching it (quorum 1)."""
    port, sentinel_port = free_port(), free_port()
    primary = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor primary-{port} 127.0.0.1 {port} 1\n")
    watcher = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        yield f"sentinel://127.0.0.1:{sentinel_port}/3", f"primary-{port}", port
    finally:
        for process in (watcher, primary):
            process.kill()
            process.wait(10)


def test_a_client_through_sentinel_reaches_the_primary_it_names(sentinel):
    url, master, port = sentinel
    client = redis_client(url, master, socket_connect_timeout=1, socket_timeout=2)
    wait_until(lambda: _pings(client), 20, "the sentinel to answer for its primary")
    client.set("tunesmith-broker-test", "through sentinel")
    direct = redis_client(f"redis://127.0.0.1:{port}/3")
    assert direct.get("tunesmith-broker-test") == b"through sentinel"   # the same server, the same database
    direct.delete("tunesmith-broker-test")


def _pings(client) -> bool:
    try:
        return client.ping()
    except Exception:
        return False


def test_a_job_no_replica_acknowledges_is_refused_and_leaves_no_record(sentinel, tmp_path, tiny_checkpoint):
    """With Sentinel a job is accepted once a replica has it (Redis WAIT); this primary has none, so
    submit gives up after a second with NotReplicated (the API's 503) and takes the record back."""
    from worker.runtime import Runtime
    url, master, port = sentinel
    runtime = Runtime(load_settings({"REDIS_URL": url, "TUNESMITH_SENTINEL_MASTER": master,
                                     "TUNESMITH_HOME": str(tmp_path), "TUNESMITH_DEFAULT_MODEL": str(tiny_checkpoint),
                                     "TUNESMITH_KEY_PREFIX": "tsreplicas:"}))
    assert runtime.write_replicas == 1
    wait_until(lambda: _pings(runtime.redis), 20, "the sentinel to answer for its primary")
    with pytest.raises(NotReplicated, match="0 of 1 replicas"):
        runtime.submit("melody", {"bars": 2}, job_id="feedfacefeedface")
    assert runtime.jobs.get("feedfacefeedface") is None
    assert runtime.redis.zscore("tsreplicas:queued", "feedfacefeedface") is None   # nor watched as queued
