"""One step loop for every live melody in a worker process (continuous batching).

A generate worker keeps one ``Batcher`` per loaded model. Jobs call ``submit(params)`` from any
thread and wait on the returned handle; the batcher's own thread advances the rows of every request
it holds together, one network step per token for the whole batch. A new request joins at the next
step (its prefix or primer is run first, for its rows alone), a finished one leaves at once, and
each request keeps its own parameters, masks, short-term model state and random stream in its
``model.generation.rows.MelodyRows``. A request's draws come from ``Generator.plan``, the same generator of
draws ``Generator.generate`` runs alone, so the quality gate's redraws join the batch like new rows.

Bytes do not depend on the batch: with ``MelodyNetwork.step(batch_stable=True)`` the logits of a row
are the same whatever the batch size (from ``model.generation.rows.min_rows`` rows on, 2) and the row's place in
it, so every step is padded to at least that many rows, an idle worker's included. ``Generator.generate`` alone runs at the request's own batch
size (the fastest for one melody), whose last float digits can differ; a sampled token flips only
when two candidates' perturbed logits tie to ~1e-6, so in practice the CLI and the service agree.
Beam search keeps its own loop: its draws run on the batcher's thread between two steps. ``batching=False`` runs one request at a time (the baseline of
``bench/bench_service.py``).
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import CancelledError, Future

import torch

from model.generation.params import MAX_COUNT
from model.generation.rows import MelodyRows, min_rows

log = logging.getLogger(__name__)


class Request:
    """One submitted request: its plan (a generator of draws), its current rows and its future;
    `client` is who asked (the API's client id), for the fair order of waiting requests."""

    def __init__(self, plan, on_bar=None, client=None):
        self.plan, self.on_bar, self.client = plan, on_bar, client
        self.future: Future = Future()
        self.rows: MelodyRows | None = None
        self.draw = None          # the model.generation.rows.Draw of the rows in flight
        self.draws = 0            # draws started (1 + the gate's redraws)
        self.bars_sent = 0
        self.cancelled = False

    def cancel(self) -> None:
        """Leave the batch at the next step; the future raises CancelledError."""
        self.cancelled = True

    def result(self, timeout: float | None = None):
        return self.future.result(timeout)


class FairQueue:
    """The waiting requests, taken from their clients in turn: a client's requests wait behind each
    other, not in front of another client's. Clients take turns in the order they arrived; one that
    was served goes to the back (round robin)."""

    def __init__(self):
        self.queues: dict[str | None, deque[Request]] = {}    # a dict keeps the clients' turn order

    def append(self, request: Request) -> None:
        self.queues.setdefault(request.client, deque()).append(request)

    def popleft(self) -> Request:
        client = next(iter(self.queues))
        waiting = self.queues.pop(client)
        request = waiting.popleft()
        if waiting:
            self.queues[client] = waiting                        # to the back of the turn
        return request

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def __iter__(self):
        return (r for q in self.queues.values() for r in q)


class Batcher:
    def __init__(self, generator, max_rows: int = 64, batching: bool = True):
        self.g, self.max_rows, self.batching = generator, max_rows, batching
        self.min_rows = min_rows(generator.model)  # shared batches are padded to this many rows
        # the row-stable kernels for the largest batch it may run: max_rows, and a request joining
        generator.model.stable_kernels(max_rows + MAX_COUNT)
        self.incoming = FairQueue()
        self.active: list[Request] = []
        self.state = None  # the stacked recurrent state of the active rows (padding only inside a step)
        self.wake = threading.Condition()
        self.closed = False
        self.draining = False             # close(drain=True): finish what it holds, take nothing new
        self.steps = self.tokens = 0      # counters for /metrics: network steps run, tokens produced
        self.batch_sizes: deque[int] = deque(maxlen=1024)
        self.on_step = None               # on_step(rows) after every network step (worker/metrics.py)
        self.thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self.thread.start()

    # ---- the callers' side ---------------------------------------------------------------------

    def submit(self, params, on_bar=None, client=None) -> Request:
        """Queue a request; ``on_bar(event)`` is called from the batcher's thread with
        {"melody", "bar", "notes", "draw", "progress"} each time a bar is done (a melody the quality
        gate redraws starts again at bar 0 with a higher "draw"). Waiting requests join the batch
        from their ``client``s in turn (FairQueue)."""
        request = Request(self.g.plan(params), on_bar, client)
        with self.wake:
            if self.closed or self.draining:
                raise RuntimeError("the batcher is closed")
            self.incoming.append(request)
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
    def rows(self) -> int:
        return sum(r.rows.B for r in self.active)

    # ---- the batcher's thread --------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self.wake:
                    while not self.closed and not self.draining and not self.incoming and not self.active:
                        self.wake.wait()
                    if self.closed or self.draining and not self.incoming and not self.active:
                        break
                try:
                    self._admit()
                    if self.active:
                        self._step()
                except Exception as e:  # never let one request's error stop the loop for the others
                    log.exception("batcher step failed")
                    for r in self.active:
                        if not r.future.done():
                            r.future.set_exception(e)
                    self.active, self.state = [], None
        for r in list(self.active) + list(self.incoming):
            if not r.future.done():
                r.future.set_exception(RuntimeError("the batcher was closed"))

    def _admit(self) -> None:
        """Start the next draws of waiting requests while there is room in the batch."""
        while self.incoming:
            if self.active and (not self.batching or self.rows >= self.max_rows):
                return
            with self.wake:
                request = self.incoming.popleft()
            self._next_draw(request, None, first=True)

    def _next_draw(self, request: Request, drawn, first: bool = False) -> None:
        """Send the plan its last draw (or start it) and start the rows of the draw it asks for next;
        beam draws run here, alone. Finishes the request when its plan returns."""
        try:
            while True:
                draw = next(request.plan) if first else request.plan.send(drawn)
                first = False
                request.draws += 1
                if draw.params.beam_width > 1:
                    drawn = self.g._draw(draw)
                    continue
                rows = MelodyRows(self.g, *draw)
                request.rows, request.draw, request.bars_sent = rows, draw, 0
                self._join(request, rows.start_state())
                return
        except StopIteration as done:
            request.future.set_result(done.value)
        except Exception as e:  # a bad request fails alone
            request.future.set_exception(e)

    def _join(self, request: Request, state) -> None:
        self.active.append(request)
        self.state = state if self.state is None else _cat(self.state, state)

    def _step(self) -> None:
        B = self.rows
        pad = max(0, self.min_rows - B)
        state = self.state  # between steps it holds exactly the active rows, in their order
        if pad:
            state = _cat(state, _zeros_like_rows(state, pad))
        xs, conds = zip(*(r.rows.inputs() for r in self.active))
        x = torch.cat(xs + ((xs[0].new_zeros(pad),) if pad else ()))
        cond = None if conds[0] is None else torch.cat(conds + ((conds[0].new_zeros(pad),) if pad else ()))
        logits, self.state = self.g.model.step(x, cond, state, batch_stable=True)  # (B + pad, V)
        self.steps += 1
        self.tokens += B
        self.batch_sizes.append(B)
        if self.on_step is not None:
            self.on_step(B)
        spans, offset, still, finished = [], 0, [], []
        for r in self.active:
            n = r.rows.B
            if not r.cancelled:
                r.rows.advance(logits[offset:offset + n])
                self._report_bars(r)
            if r.cancelled:
                r.future.set_exception(CancelledError())
            elif r.rows.done:
                finished.append(r)  # leaves the batch; its next draw (if any) joins below
            else:
                spans.append((offset, n))
                still.append(r)
            offset += n
        if len(still) < len(self.active):  # someone left: keep the state rows of those still here
            self.state = _rows(self.state, torch.cat([torch.arange(o, o + n) for o, n in spans])) if still else None
        elif pad:  # everyone stays: drop the padding rows (a view)
            self.state = tuple(h[:, :B] for h in self.state) if isinstance(self.state, tuple) else self.state[:, :B]
        self.active = still
        for r in finished:
            self._next_draw(r, r.rows.result(r.draw.count))

    def _report_bars(self, r: Request) -> None:
        """Stream the bars finished since the last step: the first draw's for every melody, and a
        redraw's as the melody it replaces (its bars start again at 0, with a higher ``draw``)."""
        if r.on_bar is None:
            return
        while r.bars_sent < r.rows.bars_completed:
            notes = r.rows.finished_bar_notes(r.bars_sent)
            for m, bar_notes in enumerate(notes[:r.draw.count]):
                try:
                    r.on_bar({"melody": m if r.rows.replaces is None else r.rows.replaces, "bar": r.bars_sent,
                              "notes": bar_notes, "draw": r.draws, "progress": r.rows.progress})
                except Exception:  # a listener's failure must not stop the batch
                    log.exception("on_bar callback failed")
            r.bars_sent += 1


def _rows(state, index: torch.Tensor):
    """Rows ``index`` of a recurrent state ((h, c) or h, each (L, B, H))."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


def _cat(a, b):
    if isinstance(a, tuple):
        return tuple(torch.cat([x, y], 1) for x, y in zip(a, b))
    return torch.cat([a, b], 1)


def _zeros_like_rows(state, n: int):
    if isinstance(state, tuple):
        return tuple(s.new_zeros(s.shape[0], n, s.shape[2]) for s in state)
    return state.new_zeros(state.shape[0], n, state.shape[2])
