"""A model's step loop on a thread of its own, for the jobs of a generate worker.

A generate worker keeps one ``Batcher`` per loaded model. Jobs call ``submit(params)`` from their
own threads and wait on the returned ``model.generation.batcher.Request``; the batcher's thread
drives the model's ``StepLoop`` (model/generation/batcher.py), which advances the rows of every
request it holds together and gives a request the bytes it gives alone. This module is only the
glue: a thread, a wake-up, closing. ``batching=False`` runs one request at a time (the baseline of
``bench/bench_service.py``).
"""
from __future__ import annotations

import logging
import threading
import time

import torch

from model.generation.batcher import Request, StepLoop

log = logging.getLogger(__name__)


class Batcher:
    def __init__(self, generator, max_rows: int = 64, batching: bool = True):
        self.g = generator
        self.loop = StepLoop(generator, max_rows, batching)
        self.wake = threading.Condition()
        self.closed = False
        self.draining = False             # close(drain=True): finish what it holds, take nothing new
        self.thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self.thread.start()

    # ---- the callers' side ---------------------------------------------------------------------

    def submit(self, params, on_bar=None, time_limit: float | None = None, client=None) -> Request:
        """Queue a request; ``on_bar(event)`` is called from the batcher's thread with
        {"melody", "bar", "notes", "draw", "progress"} each time a bar is done (a melody the quality
        gate redraws starts again at bar 0 with a higher "draw"). ``time_limit``: seconds from now
        after which the request leaves the batch with ``DeadlineExceeded``. Waiting requests join
        the batch from their ``client``s in turn (model/generation/batcher.py: FairQueue)."""
        deadline = None if time_limit is None else time.monotonic() + time_limit
        request = Request(self.g.plan(params), on_bar, deadline, time_limit, client)
        with self.wake:
            if self.closed or self.draining:
                raise RuntimeError("the batcher is closed")
            self.loop.waiting.append(request)
            self.wake.notify()
        return request

    def close(self, drain: bool = False) -> None:
        """Stop the step loop: at once, failing what it holds; or (``drain``) once the requests it
        holds are done, without waiting for them here (a model replaced under running jobs)."""
        with self.wake:
            if drain:
                self.draining = True
            else:
                self.closed = True
            self.wake.notify()
        if not drain:
            self.thread.join(timeout=10)

    @property
    def batch_sizes(self):
        return self.loop.batch_sizes

    # ---- the batcher's thread --------------------------------------------------------------------

    def _run(self) -> None:
        loop = self.loop
        with torch.inference_mode():
            while True:
                with self.wake:
                    while not self.closed and not self.draining and not loop.busy:
                        self.wake.wait()
                    if self.closed or self.draining and not loop.busy:
                        break
                try:
                    loop.admit()
                    if loop.active:
                        loop.step()
                except Exception as e:  # never let one request's error stop the loop for the others
                    log.exception("batcher step failed")
                    for r in loop.active:
                        if not r.future.done():
                            r.future.set_exception(e)
                    loop.active, loop.state = [], None
        loop.fail_all(RuntimeError("the batcher was closed"))
