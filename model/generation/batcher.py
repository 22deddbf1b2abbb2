"""One step loop for many requests' melodies at once (continuous batching), without threads.

``StepLoop`` advances the rows of every request it holds together, one network step per token
for the whole batch. A new request joins at the next step (its prefix or primer is run first, for
its rows alone), a finished one leaves at once, and each request keeps its own parameters, masks,
short-term model state and random stream in its ``model.generation.rows.MelodyRows``. A request's
draws come from ``Generator.plan``, so the quality gate's redraws join the batch like new rows.

    loop = StepLoop(generator)
    request = Request(generator.plan(params), on_bar=...)
    loop.waiting.append(request)                # any thread may append; the loop's caller pops
    while loop.busy:
        loop.admit()
        loop.step()
    generation = request.future.result()

Whoever drives the loop decides where it runs: ``Generator.generate`` (the CLI, evaluation) runs
one request through it in the caller's thread, a generate worker runs it on a thread of its own
(worker/batcher.py); so one request and one seed give the same bytes from both.

Bytes do not depend on the batch: with ``MelodyNetwork.step(batch_stable=True)`` the logits of a row
are the same whatever the batch size (from ``model.generation.rows.min_rows`` rows on, 2) and the
row's place in it, so every step is padded to at least that many rows. Beam search keeps its own
loop (``Generator.run_draw``): its draws run between two steps.

A request leaves the batch at the next step when it is cancelled (``Request.cancel``) or its
deadline has passed (``DeadlineExceeded``); the others go on.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future

import torch

from model.generation.params import MAX_COUNT
from model.generation.rows import CHOOSE, MelodyRows, min_rows

log = logging.getLogger(__name__)


class DeadlineExceeded(TimeoutError):
    """A request was still generating when its deadline passed (the message says how long it had)."""


class Request:
    """One submitted request: its plan (a generator of draws), its current rows and its future.
    ``deadline``: a ``time.monotonic()`` past which it leaves the batch, failed (None: no deadline)."""

    def __init__(self, plan, on_bar=None, deadline: float | None = None, seconds: float | None = None,
                 client=None):
        self.plan, self.on_bar, self.deadline, self.seconds = plan, on_bar, deadline, seconds
        self.client = client      # who asked, for the fair order of waiting requests (FairQueue)
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

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def fail_late(self) -> None:
        self.future.set_exception(DeadlineExceeded(
            f"generation took longer than its time limit of {self.seconds:g} s and was stopped; "
            "ask for fewer bars or melodies"))


class FairQueue:
    """The waiting requests, taken from their clients in turn: a client's requests wait behind each
    other, not in front of another client's. Clients take turns in the order they arrived; one that
    was served goes to the back (round robin). Any thread may append; one thread takes."""

    def __init__(self):
        self.queues: dict = {}            # client -> deque of its requests; a dict keeps the turn order
        self.lock = threading.Lock()

    def append(self, request: Request) -> None:
        with self.lock:
            self.queues.setdefault(request.client, deque()).append(request)

    def popleft(self) -> Request:
        with self.lock:
            client = next(iter(self.queues))
            waiting = self.queues.pop(client)
            request = waiting.popleft()
            if waiting:
                self.queues[client] = waiting                    # to the back of the turn
            return request

    def clear(self) -> None:
        with self.lock:
            self.queues.clear()

    def __len__(self) -> int:
        return sum(len(q) for q in list(self.queues.values()))

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self):
        with self.lock:
            return iter([r for q in self.queues.values() for r in q])


class StepLoop:
    """The rows of many requests, stepped together. Not thread-safe except ``waiting.append``."""

    def __init__(self, generator, max_rows: int = 64, batching: bool = True):
        self.g, self.max_rows, self.batching = generator, max_rows, batching
        self.min_rows = min_rows(generator.model)  # shared batches are padded to this many rows
        # the row-stable kernels for the largest batch it may run: max_rows, and a request joining
        generator.model.stable_kernels(max_rows + MAX_COUNT)
        self.waiting = FairQueue()
        self.active: list[Request] = []
        self.state = None  # the stacked recurrent state of the active rows (padding only inside a step)
        self.steps = self.tokens = 0      # counters for /metrics: network steps run, tokens produced
        self.batch_sizes: deque[int] = deque(maxlen=1024)
        self.on_step = None               # on_step(rows) after every network step (worker/metrics.py)
        self._constants = {}              # index and noise tensors of rows that take no mask, no draw

    @property
    def rows(self) -> int:
        return sum(r.rows.B for r in self.active)

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.active)

    def run(self) -> None:
        """Step until every request it holds is done (the caller's thread)."""
        with torch.inference_mode():
            while self.busy:
                self.admit()
                if self.active:
                    self.step()

    def fail_all(self, error: BaseException) -> None:
        """Fail every request it holds (the step loop broke, or is closed)."""
        for r in list(self.active) + list(self.waiting):
            if not r.future.done():
                r.future.set_exception(error)
        self.active, self.state = [], None
        self.waiting.clear()

    def admit(self) -> None:
        """Start the next draws of waiting requests while there is room in the batch."""
        while self.waiting:
            if self.active and (not self.batching or self.rows >= self.max_rows):
                return
            request = self.waiting.popleft()
            if request.cancelled:
                request.future.set_exception(CancelledError())
            elif request.expired(time.monotonic()):
                request.fail_late()
            else:
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
                    drawn = self.g.run_draw(draw)
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

    def step(self) -> None:
        """One network step for every active row; requests that finish, are cancelled or are past
        their deadline leave the batch. After the network each request's rows advance
        (``MelodyRows.advance``: begin, bias, draw_noise, take); with more than one request,
        two of those parts are made once for the whole batch (``_advance_together``): the grid
        steps' key mask (for the requests that share the first one's table) and the draw (the
        Gumbel noise added and the argmax). Either way a row's logits meet the same additions in
        the same order, so its bytes are the same."""
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
        now = time.monotonic()
        sizes = [r.rows.B for r in self.active]
        if len(self.active) == 1:  # alone: its parts in turn (the batch's shared calls would cost more)
            r = self.active[0]
            if not r.cancelled and not r.expired(now):
                r.rows.advance(logits[:B])
        else:
            self._advance_together(logits, sizes, now)
        spans, offset = [], 0
        for n in sizes:
            spans.append((offset, n))
            offset += n
        still, kept, finished = [], [], []
        for r, span in zip(self.active, spans):
            if r.cancelled:
                r.future.set_exception(CancelledError())
            elif r.expired(now):
                r.fail_late()
            else:
                self._report_bars(r)
                if r.rows.done:
                    finished.append(r)  # leaves the batch; its next draw (if any) joins below
                else:
                    kept.append(span)
                    still.append(r)
        if len(still) < len(self.active):  # someone left: keep the state rows of those still here
            self.state = _rows(self.state, torch.cat([torch.arange(o, o + n) for o, n in kept])) if still else None
        elif pad:  # everyone stays: drop the padding rows (a view)
            self.state = tuple(h[:, :B] for h in self.state) if isinstance(self.state, tuple) else self.state[:, :B]
        self.active = still
        for r in finished:
            self._next_draw(r, r.rows.result(r.draw.count))

    def _advance_together(self, logits: torch.Tensor, sizes: list[int], now: float) -> None:
        """``MelodyRows.advance`` for every active request (its rows ``sizes``), with the grid steps'
        key mask and the draw made once for all of them."""
        rows_logits = logits[:sum(sizes)]  # without the padding rows
        views = rows_logits.split(sizes)  # each request's rows of the logits (views)
        arrays = logits.numpy()  # the same memory, for the short-term model's compiled call
        steps, table, index, offset = [], None, [], 0  # per request: (the column it draws or None, its mask added here)
        for r, n in zip(self.active, sizes):
            kind = None if r.cancelled or r.expired(now) else r.rows.begin(arrays[offset:offset + n])
            offset += n
            shared = kind == CHOOSE and (table is None or r.rows.mask_after is table)
            if shared:
                table = r.rows.mask_after
            index.append(r.rows.last if shared else self._no_mask(n, r.rows.mask_after.shape[0] - 1))
            steps.append((kind, shared))
        if table is not None:  # the key mask of every row at a grid step (the last row, zeros, for the others)
            rows_logits.add_(table.index_select(0, torch.cat(index)))
        noise = []
        for r, rows, (kind, shared) in zip(self.active, views, steps):
            if kind is None:
                noise.append(self._no_noise(rows.shape[0], rows.shape[1]))
                continue
            r.rows.bias(rows, kind, masked=shared)
            tempered = self.g.tempered(rows, r.rows.params)
            if tempered is not rows:
                rows.copy_(tempered)
            noise.append(r.rows.draw_noise(kind))
        if any(kind is not None for kind, _ in steps):
            choices = rows_logits.add_(torch.cat(noise)).argmax(-1)  # (B,) the Gumbel-max draw of every row
            for r, choice, (kind, _) in zip(self.active, choices.split(sizes), steps):
                if kind is not None:
                    r.rows.take(choice, kind)

    def _no_mask(self, n: int, row: int) -> torch.Tensor:
        """(n,) the index of a mask table's row of zeros."""
        key = ("mask", n, row)
        if key not in self._constants:
            self._constants[key] = torch.full((n,), row)
        return self._constants[key]

    def _no_noise(self, n: int, V: int) -> torch.Tensor:
        """(n, V) zeros: the noise of rows that draw nothing at this step (their argmax is not used)."""
        key = ("noise", n, V)
        if key not in self._constants:
            self._constants[key] = torch.zeros(n, V)
        return self._constants[key]

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
