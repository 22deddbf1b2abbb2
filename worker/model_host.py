"""The generate worker's loaded models: one ``Generator`` and one ``Batcher`` per checkpoint, in the
worker's own process, loaded when the worker starts (the default model) or on a model's first job.

A generate worker runs Celery's threads pool: its tasks are threads of this process, so each hands
its request to the model's batcher (worker/batcher.py) and waits on it, and the melodies of every job
the worker holds advance in one step loop per model. Nothing crosses a process boundary between a
job and its model. A model is keyed by its checkpoint's path and modification time: a new default
(another path) or a retrained file (new mtime) is loaded on its first request, and the old
batcher of a replaced file drains (the requests it holds finish) and goes.

The host also says that it is ready: every HEARTBEAT_S a thread writes
``<prefix>generate-ready:<worker name>`` (the default model it has loaded, expiring after
READY_TTL_S), which ``/readyz`` reads, and loads a newly made default before saying so.

    host = ModelHost(settings, worker_name)
    host.start(runtime)                       # load the default, warm it, start the heartbeat
    request = host.batcher(path).submit(params, on_bar=..., time_limit=...)
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)
HEARTBEAT_S = 2.0
READY_TTL_S = 10
LOADING_TTL_S = 120                          # a worker that died while loading is forgotten then


def ready_key(prefix: str, worker_name: str) -> str:
    return f"{prefix}generate-ready:{worker_name}"


def loading_key(prefix: str, worker_name: str) -> str:
    return f"{prefix}generate-loading:{worker_name}"


def say_loading(redis, prefix: str, worker_name: str) -> None:
    """A generate worker starting: it loads its models before it answers on its queue (for
    /readyz, which then waits for it rather than loading the checkpoint itself meanwhile)."""
    redis.set(loading_key(prefix, worker_name), os.getpid(), ex=LOADING_TTL_S)


def loading_workers(redis, prefix: str) -> list[str]:
    """The generate workers that said they are loading their models (and have not finished)."""
    start = len(loading_key(prefix, ""))
    return sorted(k.decode()[start:] for k in redis.scan_iter(match=loading_key(prefix, "*"), count=100))


def loaded_defaults(redis, prefix: str) -> dict:
    """{generate worker name: the default model it has loaded and warmed}, from the heartbeats of
    the workers alive now (for /readyz; torch-free)."""
    names = [k.decode() for k in redis.scan_iter(match=ready_key(prefix, "*"), count=100)]
    values = redis.mget(names) if names else []
    start = len(ready_key(prefix, ""))
    return {n[start:]: json.loads(v)["default"] for n, v in zip(names, values) if v is not None}


class ModelHost:
    def __init__(self, settings: dict, worker_name: str, meter=None):
        self.settings, self.worker_name, self.meter = settings, worker_name, meter
        self.batchers: dict = {}                 # (checkpoint path, mtime) -> Batcher
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.runtime = None                      # set by start: where to say what is loaded

    def batcher(self, path):
        """The batcher of the checkpoint at ``path``, loading it on first use."""
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
                batcher = Batcher(Generator(p), self.settings.get("TUNESMITH_BATCH_ROWS", 64),
                                  self.settings.get("TUNESMITH_BATCHING", True))
                batcher.loop.on_step = self.meter.step if self.meter is not None else None
                self._warm(batcher)
                self._publish(batcher.g)
                self.batchers[key] = batcher
                log.info("worker %d loaded %s in %.2f s", os.getpid(), p, time.perf_counter() - started)
            return batcher

    def _publish(self, generator) -> None:
        """Say in Redis what the checkpoint can write (worker/registry.py), so that the API's
        /readyz and request checks read it instead of loading the checkpoint themselves."""
        from worker.registry import publish_vocabulary, vocabulary_of
        if self.runtime is None:
            return
        try:
            publish_vocabulary(self.runtime.redis, self.runtime.jobs.prefix, generator.path, vocabulary_of(
                generator.tokenizer, generator.model.config, generator.train_config))
        except Exception as exc:                 # Redis away: the API loads the checkpoint itself
            log.warning("could not publish the loaded checkpoint's vocabulary: %s", exc)

    @staticmethod
    def _warm(batcher) -> None:
        """One small request through the step loop: the kernels' buffers and the state after BOS
        are made now, not for the first job."""
        from model.generation.params import GenerationParams
        batcher.submit(GenerationParams(bars=1, seed=0, count=2, redraw_degenerate=False)).result(timeout=120)

    def start(self, runtime) -> None:
        """Load the default model now (the worker consumes nothing before this returns) and keep
        saying so in Redis."""
        self.runtime = runtime
        self._load_default(runtime)
        self._say_ready(runtime)
        threading.Thread(target=self._heartbeat, args=(runtime,), name="model-host", daemon=True).start()

    def stop(self, runtime) -> None:
        self.stopped.set()
        try:
            runtime.redis.delete(ready_key(runtime.jobs.prefix, self.worker_name))
        except Exception:
            pass

    def _load_default(self, runtime) -> str:
        name = runtime.models.default_name()
        path = runtime.models.path(name)
        if path is None:
            raise FileNotFoundError(f"the default model {name!r} has no checkpoint")
        self.batcher(path)
        return name

    def _say_ready(self, runtime) -> None:
        name = self._load_default(runtime)
        with runtime.redis.pipeline() as pipe:
            pipe.set(ready_key(runtime.jobs.prefix, self.worker_name),
                     json.dumps({"default": name, "pid": os.getpid()}), ex=READY_TTL_S)
            pipe.delete(loading_key(runtime.jobs.prefix, self.worker_name))
            pipe.execute()

    def _heartbeat(self, runtime) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            try:
                self._say_ready(runtime)
            except Exception as exc:      # Redis away, or a default that will not load: not ready meanwhile
                log.warning("the generate worker is not ready: %s", exc)
