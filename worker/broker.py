"""The one way a process opens Redis: a plain URL (`redis://`, `unix://`), or Redis Sentinel.

With Sentinel, REDIS_URL lists the sentinels the way kombu reads them,

    sentinel://[:password@]host1:26379[/db];sentinel://host2:26379;sentinel://host3:26379

and TUNESMITH_SENTINEL_MASTER names the monitored primary (kombu's `master_name`). The job store's
client asks the sentinels for the primary at each new connection (redis-py's `Sentinel.master_for`),
so after a failover the next command reconnects to the promoted replica by itself; Celery's
transport does the same through `broker_transport_options["master_name"]` (worker/settings.py).
Redis Cluster is not supported: Celery's Redis transport cannot use it (celery/celery#2852).

Redis replicates asynchronously, so a job the primary has stored can die with it. With Sentinel a
job is accepted only once a replica has it too (`await_replicas`, TUNESMITH_WRITE_REPLICAS).
"""
from __future__ import annotations

from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "sentinel://"
DEFAULT_SENTINEL_MASTER = "tunesmith"
REPLICA_WAIT_MS = 1000        # how long a new job waits for its replicas before it is refused


class NotReplicated(redis.ConnectionError):
    """Fewer replicas than asked acknowledged a write in time (a replica down, or the primary dying
    under it). To a client it is the broker being unavailable: 503, try again."""


def await_replicas(pipe, replicas: int) -> None:
    """Execute `pipe` (a redis-py pipeline holding at least one write, run on one connection) and,
    when `replicas` > 0, wait until that many replicas have every write the primary made up to its
    last one, this process's and any other's before it (Redis WAIT counts the replication stream),
    for REPLICA_WAIT_MS at most; NotReplicated if fewer did."""
    if replicas > 0:
        pipe.wait(replicas, REPLICA_WAIT_MS)
    answers = pipe.execute()
    if replicas > 0 and answers[-1] < replicas:
        raise NotReplicated(f"{answers[-1]} of {replicas} replicas acknowledged the write within {REPLICA_WAIT_MS} ms")


def is_sentinel(url: str | None) -> bool:
    return bool(url) and url.startswith(SENTINEL_SCHEME)


def sentinel_hosts(url: str) -> tuple[list[tuple[str, int]], int, str | None]:
    """(sentinel (host, port)s, database, password) of a `sentinel://...;sentinel://...` URL."""
    hosts, db, password = [], 0, None
    for part in url.split(";"):
        if not part.startswith(SENTINEL_SCHEME):
            raise ValueError(f"REDIS_URL must list sentinels as sentinel://host:port;sentinel://host:port, got {url!r}")
        parsed = urlsplit(part)
        if not parsed.hostname:
            raise ValueError(f"a sentinel in REDIS_URL has no host: {part!r}")
        hosts.append((parsed.hostname, parsed.port or 26379))
        if parsed.path.strip("/"):
            db = int(parsed.path.strip("/"))
        password = parsed.password or password
    return hosts, db, password


def redis_client(url: str, master: str = DEFAULT_SENTINEL_MASTER, **options) -> redis.Redis:
    """A client of the Redis at `url` (with Sentinel: of the current primary named `master`);
    `options` are redis-py's connection options (timeouts)."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    hosts, db, password = sentinel_hosts(url)
    # one try per sentinel (redis-py retries each connection 3 times by default: with a sentinel whose
    # host is gone, the retries of the discovery inside the retries of the connection multiply into
    # tens of seconds); the primary's connection is tried twice more after a short pause
    sentinels = Sentinel(hosts, sentinel_kwargs={"retry": Retry(NoBackoff(), 0), **{
        k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")}})
    return sentinels.master_for(master, db=db, password=password,
                                retry=Retry(ExponentialBackoff(cap=0.5, base=0.1), 2), **options)
