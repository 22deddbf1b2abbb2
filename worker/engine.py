"""The generation engine of a generate worker: one process that holds the loaded models and one
``Batcher`` per model (worker/batcher.py), serving every pool process of its Celery worker.

Why a process of its own: Celery's prefork pool runs one task per pool process, and the pool is what
keeps the promises around a job (a pool process killed mid-job has its task put back at once, time
limits are enforced by killing it). To batch across jobs, the pool processes stay thin: each claims
its job, sends the request here over a unix socket and waits, writing progress and bar events as
they come; the engine's batcher advances every live request together. The engine is started lazily
by the first pool process that needs it (never by the worker's parent, which forks the pool and
must not hold torch), is shared by all the worker's pool processes, and lives as long as both the
pool process that started it and the worker's parent (a request in flight when it goes is sent
again to a new one).

    client = EngineClient(worker_pid=os.getppid(), batching=True)
    result = client.generate(path, params, on_bar=..., should_stop=...)   # a plain dict (below)

A request whose pool process dies or gives up (cancelled, time limit) leaves the batch: the engine
sees its connection close and cancels it. The result is plain data (no torch): the seed, the model
name and per melody its JSON (``Melody.to_json``) and its ``model.representation.notation.Score``, from which any
process writes the files. ``batching=False`` runs one request at a time (the baseline).

    python -m worker.engine --address PATH --watch-pid PID [--no-batching] [--max-rows N]
"""
from __future__ import annotations

import argparse
import fcntl
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import CancelledError
from multiprocessing.connection import Client, Listener
from pathlib import Path

from worker.lifetime import preexec
from worker.settings import BARS_EVERY_S

log = logging.getLogger(__name__)
START_TIMEOUT_S = 180          # loading torch and a model on a busy machine
POLL_S = 0.5                   # how often a waiting pool process asks `should_stop`


class EngineError(RuntimeError):
    """The engine failed a request for a reason that is not the request's (it is logged there)."""


class Cancelled(Exception):
    """The request was stopped by `should_stop` (the job was cancelled)."""


def engine_address(worker_pid: int) -> str:
    """The unix socket of the engine of the Celery worker whose parent process is `worker_pid`."""
    folder = Path(tempfile.gettempdir()) / f"tunesmith-engine-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return str(folder / f"{worker_pid}.sock")


# ---- the pool process's side ------------------------------------------------------------------

class EngineClient:
    def __init__(self, worker_pid: int, batching: bool = True, max_rows: int = 64, bars_every: float = BARS_EVERY_S):
        self.worker_pid, self.batching, self.max_rows, self.bars_every = worker_pid, batching, max_rows, bars_every
        self.address = engine_address(worker_pid)
        self.process: subprocess.Popen | None = None

    def generate(self, path, params, on_bar=None, should_stop=None) -> dict:
        """Generate `params` (model.generation.params.GenerationParams) with the checkpoint at `path`.
        `on_bar(event)` gets each finished bar: the first as soon as it is done, the later ones
        together at most every BARS_EVERY_S seconds (then `on_bar.flush()`, where it has one, is
        called after each group, so it can write them in one go); `should_stop()` is asked every POLL_S seconds and
        when it answers True the request leaves the batch and Cancelled is raised. A ValueError
        (bad parameters, an unreadable primer, no acceptable melody) comes back as a ValueError.
        An engine lost mid-request (it dies with the pool process that started it) is started
        again and the request sent again, once: its bars then stream again from bar 0."""
        try:
            return self._generate(path, params, on_bar, should_stop)
        except (EOFError, ConnectionResetError, BrokenPipeError):
            log.warning("the generation engine went away; starting it again")
            return self._generate(path, params, on_bar, should_stop)

    def _generate(self, path, params, on_bar, should_stop) -> dict:
        with self._connect() as conn:
            from worker.logs import current_job
            conn.send({"path": str(path), "params": params, "job_id": current_job.get()})
            last_check = time.monotonic()
            flush = getattr(on_bar, "flush", None)      # an on_bar that writes a group of bars together
            try:
                while True:
                    if should_stop is not None and time.monotonic() - last_check >= POLL_S:
                        last_check = time.monotonic()
                        if should_stop():
                            conn.send("cancel")
                            raise Cancelled()
                    if not conn.poll(POLL_S):
                        continue
                    kind, value = conn.recv()
                    if kind == "bars":
                        if on_bar is not None:
                            for event in value:
                                on_bar(event)
                            if flush is not None:
                                flush()
                    elif kind == "done":
                        return value
                    elif kind == "invalid":
                        raise ValueError(value)
                    else:
                        raise EngineError(value)
            finally:
                if flush:
                    flush()

    def _connect(self):
        try:
            return Client(self.address, family="AF_UNIX")
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        with open(self.address + ".lock", "w") as lock:      # one pool process starts the engine
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return Client(self.address, family="AF_UNIX")
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            argv = [sys.executable, "-m", "worker.engine", "--address", self.address,
                    "--watch-pid", str(self.worker_pid), "--max-rows", str(self.max_rows),
                    "--bars-every", str(self.bars_every)]
            # it dies with this pool process (worker/lifetime.py), however either dies, and ends
            # by itself when the worker's parent has gone
            self.process = subprocess.Popen(argv + ([] if self.batching else ["--no-batching"]), preexec_fn=preexec())
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise EngineError(f"the generation engine exited with {self.process.returncode}")
                try:
                    return Client(self.address, family="AF_UNIX")
                except (FileNotFoundError, ConnectionRefusedError):
                    time.sleep(0.05)
            raise EngineError(f"the generation engine did not start within {START_TIMEOUT_S} s")


# ---- the engine process -------------------------------------------------------------------------

class Engine:
    """The loaded models' batchers, and one thread per connected request."""

    def __init__(self, batching: bool = True, max_rows: int = 64, meter=None, bars_every: float = BARS_EVERY_S):
        self.batching, self.max_rows, self.meter, self.bars_every = batching, max_rows, meter, bars_every
        self.batchers: dict = {}                 # (checkpoint path, mtime) -> Batcher
        self.lock = threading.Lock()

    def batcher_for(self, path: str):
        from model.generation.sampling import Generator
        from worker.batcher import Batcher
        p = Path(path).resolve()
        key = (str(p), p.stat().st_mtime_ns)
        with self.lock:
            batcher = self.batchers.get(key)
            if batcher is None:
                for old in [k for k in self.batchers if k[0] == key[0]]:   # a retrained file: the old one goes
                    self.batchers.pop(old).close(drain=True)              # once its running requests are done
                started = time.perf_counter()
                batcher = self.batchers[key] = Batcher(Generator(p), self.max_rows, self.batching)
                if self.meter is not None:
                    batcher.loop.on_step = self.meter.step
                log.info("engine %d loaded %s in %.2f s", os.getpid(), p, time.perf_counter() - started)
            return batcher

    def serve(self, conn) -> None:
        """One request: submit it, send its bars as they finish (the first at once, then in groups
        at most every BARS_EVERY_S seconds: each message wakes the pool process, which writes it to
        Redis), then its result or error."""
        send_lock = threading.Lock()
        request = message = None
        held, sent_at = [], [None]

        def send(message):
            with send_lock:
                conn.send(message)

        def send_bars():
            if held:
                sent_at[0] = time.monotonic()
                send(("bars", held[:]))
                held.clear()

        def on_bar(event):                       # on the batcher's thread
            held.append(event)
            if sent_at[0] is None or time.monotonic() - sent_at[0] >= self.bars_every:
                try:
                    send_bars()
                except OSError:                  # the pool process is gone: leave the batch
                    request.cancel()
        try:
            message = conn.recv()
            request = self.batcher_for(message["path"]).submit(message["params"], on_bar=on_bar)
            threading.Thread(target=_cancel_on_hangup, args=(conn, request), daemon=True).start()
            generation = request.result()
            send_bars()
            send(("done", plain_result(generation)))
        except (CancelledError, EOFError, OSError):
            pass
        except ValueError as exc:                # the request's own problem
            _try(send, ("invalid", str(exc)))
        except Exception as exc:
            log.exception("engine request failed", extra={"job_id": message.get("job_id") if message else None})
            _try(send, ("error", f"{type(exc).__name__}: {exc}"))
        finally:
            conn.close()


def plain_result(generation) -> dict:
    """A Generation as plain data: what a job stores and writes its files from (no torch)."""
    melodies = []
    for m in generation.melodies:
        melodies.append({"index": m.index, "json": m.to_json(),
                         "score": m.tokenizer.score(m.tokens, m.tempo).to_dict()})
    return {"seed": generation.seed, "model": generation.model, "seconds": generation.seconds,
            "melodies": melodies}


def _cancel_on_hangup(conn, request) -> None:
    """Cancel the request when its pool process says so or hangs up."""
    try:
        conn.recv()
    except (EOFError, OSError):
        pass
    except Exception:
        log.exception("reading from a pool process")
    if not request.future.done():
        request.cancel()


def _try(send, message) -> None:
    try:
        send(message)
    except OSError:
        pass


def _exit_with(pid: int, address: str) -> None:
    """Stop this process once the worker's parent `pid` has gone."""
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            pass
        time.sleep(1.0)
    for path in (address, address + ".lock"):
        try:
            os.unlink(path)
        except OSError:
            pass
    os._exit(0)


def _meter():
    """The engine's metrics, to the Redis and key prefix of the worker that started it."""
    from worker.broker import redis_client
    from worker.metrics import EngineMeter
    from worker.settings import DEFAULT_REDIS_URL, load_settings
    settings = load_settings()
    client = redis_client(settings["REDIS_URL"] or DEFAULT_REDIS_URL, settings["TUNESMITH_SENTINEL_MASTER"],
                          socket_connect_timeout=1, socket_timeout=2)
    return EngineMeter(client, settings["TUNESMITH_KEY_PREFIX"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="The generation engine of one generate worker")
    parser.add_argument("--address", required=True)
    parser.add_argument("--watch-pid", type=int, required=True)
    parser.add_argument("--max-rows", type=int, default=64)
    parser.add_argument("--no-batching", action="store_true")
    parser.add_argument("--bars-every", type=float, default=BARS_EVERY_S)
    args = parser.parse_args(argv)
    from worker.logs import use_json_logs
    use_json_logs("INFO")
    import torch
    torch.set_num_threads(1)                     # one thread: 2 cores shared by many processes
    try:
        os.unlink(args.address)                  # a stale socket of an engine that died (we hold the lock)
    except FileNotFoundError:
        pass
    listener = Listener(args.address, family="AF_UNIX")
    threading.Thread(target=_exit_with, args=(args.watch_pid, args.address), daemon=True).start()
    engine = Engine(batching=not args.no_batching, max_rows=args.max_rows, meter=_meter(), bars_every=args.bars_every)
    while True:
        conn = listener.accept()
        threading.Thread(target=engine.serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
