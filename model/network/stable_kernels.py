"""Which kernels keep a row's generation step independent of its batch, measured on this machine.

A generate worker's batcher (model/generation/batcher.py) steps many requests' melodies together and promises
that a request's bytes do not depend on what else is in the batch. That holds only if a row's
logits and state after ``MelodyNetwork.step`` are bit for bit the same at every batch size and
place, and whether a kernel set does that depends on the CPU and on the code path the library picks
for each shape. Two sets are known to have done it, from 2 rows on (a single row takes a matrix-
vector path of its own, so shared batches are padded to 2 rows: ``model.generation.rows.MIN_ROWS``):
- "mkl": torch's default products (MKL) and torch's tanh. On the Intel Xeon VM of 2026-12-02 it
  was row-stable and 1.3 to 1.9x faster per step than "onednn" from 2 to 64 rows;
- "onednn": oneDNN's products and tanh in its sigmoid form. On the AMD EPYC VMs of earlier
  sessions MKL's products changed a row's result with the row count, and this set did not.

``choose(net)`` tries them fastest first and keeps the first whose rows come out identical for every
batch size from 2 to ``MAX_ROWS`` and for shuffled batches, on random tokens, conditions and states
(the arithmetic a kernel does depends on the shapes, not the values, so random values expose a
shape-dependent order with near certainty). It takes about 0.1 s per set, once per network.
"""
from __future__ import annotations

import logging

import torch

CANDIDATES = ("mkl", "onednn")  # fastest first
MAX_ROWS = 80   # a worker's batch: 64 rows (TUNESMITH_BATCH_ROWS, worker/model_host.py), plus a request of up to 16 melodies joining
MIN_ROWS = 2

log = logging.getLogger(__name__)


def row_stable(net, kernels: str, max_rows: int = MAX_ROWS, seed: int = 0) -> bool:
    """Whether ``net``'s step with ``kernels`` gives every row the same logits and state at every
    batch size from MIN_ROWS to ``max_rows`` and wherever the row sits."""
    cfg, g = net.config, torch.Generator().manual_seed(seed)
    n = max_rows
    tokens = torch.randint(0, cfg.vocab_size, (n,), generator=g)
    cond = torch.randint(0, cfg.max_positions, (n,), generator=g) if cfg.conditioned else None
    shape = (cfg.num_layers, n, cfg.hidden_size)
    state = tuple(torch.randn(shape, generator=g) for _ in range(2)) if cfg.cell == "lstm" \
        else torch.randn(shape, generator=g)

    def step(rows):
        picked = tuple(s[:, rows] for s in state) if isinstance(state, tuple) else state[:, rows]
        logits, after = net._step(tokens[rows], None if cond is None else cond[rows], picked, kernels)
        return logits, after if isinstance(after, tuple) else (after,)

    with torch.no_grad():  # not inference_mode: the step's scratch buffers it makes are kept and reused
        full, full_state = step(torch.arange(n))
        batches = [torch.arange(B) for B in range(MIN_ROWS, n + 1)]
        batches += [torch.randperm(n, generator=g)[:int(torch.randint(MIN_ROWS, n + 1, (1,), generator=g))]
                    for _ in range(4)]
        for rows in batches:
            logits, after = step(rows)
            if not torch.equal(logits, full[rows]) or \
                    not all(torch.equal(a, f[:, rows]) for a, f in zip(after, full_state)):
                return False
    return True


def choose(net, max_rows: int = MAX_ROWS) -> str:
    """The first of CANDIDATES that is row-stable here; "onednn" (the set measured stable on the
    machines of earlier sessions) with a warning when none proves to be."""
    for kernels in CANDIDATES:
        if row_stable(net, kernels, max_rows):
            log.info("batched generation steps with the %s kernels (row-stable here from %d to %d rows)",
                     kernels, MIN_ROWS, max_rows)
            return kernels
    log.warning("no kernel set proved row-stable on this machine: a request's bytes may depend on its batch")
    return "onednn"
