"""Core speed: our Recurrent layers against torch's fused ones, and MelodyNetwork.step per token.

    python bench/bench_core.py [--threads 1] [--write]

(a) forward+backward training throughput (tokens/s) of a 2-layer, 256-unit stack on 64-dim inputs,
    128-step windows, batch 1 and 64: model.network.cells.Recurrent ("cells") against torch.nn.LSTM/GRU/RNN
    ("fused"), for each cell type.
(b) MelodyNetwork.step time (network only, no sampling) at batch 1 and 32 for 2x256 LSTM, GRU and
    RNN networks, beside stepping torch.nn.LSTM with one-token windows (the naive way).
--write puts the tables into the "Core speed" section of docs/benchmarks.md: every figure it writes
is measured in that run (figures of earlier machines are in the History section, which no script writes).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks_doc import cpu_model, replace_section  # noqa: E402  (bench/benchmarks_doc.py, beside this script)
from model.network.kernels import ONEDNN_MIN_ROWS  # noqa: E402
from model.network.melody import MelodyNetwork, NetworkConfig, build_recurrent  # noqa: E402

EMBEDDING, HIDDEN, LAYERS, WINDOW, VOCAB, STEPS = 64, 256, 2, 128, 80, 200


def best_times(fns, repeats: int, warmup: int = 2) -> list[float]:
    """Best-of-`repeats` CPU seconds of this thread per call of each function, timed in turns.

    The machine is shared by several busy processes, so wall time mostly measures waiting for a
    core; the CPU time of our one thread (torch.set_num_threads(1) computes in the calling thread)
    does not count the time other processes hold the core. Timing in turns lets every function see
    the same background (cache pressure), and the minimum is the least disturbed run."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.thread_time()
            fn()
            best[k] = min(best[k], time.thread_time() - start)
    return best


def forward_backward(cell: str, backend: str, batch: int):
    torch.manual_seed(0)
    rnn = build_recurrent(cell, backend, EMBEDDING, HIDDEN, LAYERS, dropout=0.0)
    x = torch.randn(batch, WINDOW, EMBEDDING, requires_grad=True)
    weights = torch.randn(batch, WINDOW, HIDDEN)

    def run():
        out, _ = rnn(x)  # (B, T, H)
        (out * weights).sum().backward()

    return run


def stepper(net: MelodyNetwork, batch: int, tokens: int, naive: bool = False):
    """`tokens` consecutive generation steps, through step() or one-token windows of forward()."""
    ids = torch.randint(0, VOCAB, (tokens, batch))

    @torch.inference_mode()
    def run():
        state = net.init_state(batch)
        for t in range(tokens):
            if naive:
                logits, state = net(ids[t].unsqueeze(1), None, state)
            else:
                logits, state = net.step(ids[t], None, state)

    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--write", action="store_true", help="update the Core speed section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()

    rows = ["| cell | batch | fused tokens/s | cells tokens/s | cells / fused |", "|---|---|---|---|---|"]
    ratios = {}
    for cell in ("lstm", "gru", "rnn"):
        for batch in (1, 64):
            runs = [forward_backward(cell, backend, batch) for backend in ("fused", "cells")]
            fused, ours = (batch * WINDOW / t for t in best_times(runs, 8 if batch > 1 else 20))
            ratios[cell, batch] = ours / fused
            rows.append(f"| {cell} | {batch} | {fused:,.0f} | {ours:,.0f} | {ours / fused:.2f} |")
            print(rows[-1], flush=True)
    training_table = "\n".join(rows) + "\n\n" + ratio_summary(ratios)

    rows = ["| network | batch | step() ms per step | step() µs per token | nn.LSTM one-token windows ms per step |",
            "|---|---|---|---|---|"]
    for cell in ("lstm", "gru", "rnn"):
        net = MelodyNetwork(NetworkConfig(vocab_size=VOCAB, cell=cell)).eval()
        for batch in (1, 32):
            runs = [stepper(net, batch, STEPS)] + ([stepper(net, batch, STEPS, naive=True)] if cell == "lstm" else [])
            times = [t / STEPS * 1e3 for t in best_times(runs, 5, warmup=1)]
            naive_text = f"{times[1]:.3f}" if len(times) > 1 else "-"
            rows.append(f"| {cell} 2x{HIDDEN} | {batch} | {times[0]:.3f} | {times[0] / batch * 1e3:.1f} | {naive_text} |")
            print(rows[-1], flush=True)
    step_table = "\n".join(rows)

    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    print(f"\n{training_table}\n\n{step_table}\n")
    print(f"took {elapsed:.0f} s; 1-minute load average {load_before:.2f} before, {load_after:.2f} after")
    if args.write:
        write_section(training_table, step_table, args.threads, load_before, load_after)


def ratio_summary(ratios: dict) -> str:
    """The cells / fused speed ratios of this run in a sentence, at each batch size."""
    cells = ("lstm", "gru", "rnn")
    parts = [f"at batch {batch}{' (the training default)' if batch == 64 else ''} at "
             + " / ".join(f"{ratios[c, batch]:.2f}x" for c in cells) for batch in (1, 64)]
    return "In this run our LSTM / GRU / RNN layers trained " + "; ".join(parts) + " the speed of the fused ones."


def write_section(training_table: str, step_table: str, threads: int, load_before: float,
                  load_after: float) -> None:
    section = f"""## Core speed

Measured {datetime.date.today().isoformat()} with `python bench/bench_core.py --write`
(`torch.set_num_threads({threads})`, torch {torch.__version__}, {os.cpu_count()} CPU cores of an {cpu_model()},
1-minute load average {load_before:.2f} before the run, {load_after:.2f} after).

**Training throughput**: forward + backward of a {LAYERS}-layer, {HIDDEN}-unit stack on {EMBEDDING}-dim inputs,
{WINDOW}-step windows; tokens/s = batch x window / CPU time per iteration (`time.thread_time`,
best of 20 at batch 1, of 8 at batch 64, fused and cells timed in turns: the machine is shared, and
wall time there counts waiting for a core). "cells" is
`model.network.cells.Recurrent` (our equations, hand-written BPTT), "fused" is `torch.nn.LSTM/GRU/RNN`.

{training_table}

**Generation**: `MelodyNetwork.step` (network only: embedding, {LAYERS}x{HIDDEN} recurrent stack,
projection to {VOCAB} logits; sampling comes on top), CPU time, best of 5 runs of {STEPS} consecutive steps, beside
feeding one-token windows through `torch.nn.LSTM` (the naive way, LSTM only). One step advances
`batch` melodies by one token each; "per token" divides by the batch.

{step_table}

What makes the cells fast (see `model/network/recurrent.py` and `model/network/kernels.py`): the input projection of all
steps and the weight gradients are whole-sequence matmuls, the time loops make one matmul and a few in-place
element-wise calls per step with no autograd graph (a hand-written BPTT), float32 products of
{ONEDNN_MIN_ROWS}+ rows go through oneDNN rather than MKL's sgemm, and large tensors take tanh as
2 sigmoid(2x) - 1. `step()` looks layer 0's input projection up in a (vocab x gates) table. The figures
that led to those choices were measured on earlier machines: see History.

The machine kind changes between sessions; compare rows of one table only.
"""
    replace_section("Core speed", section)


if __name__ == "__main__":
    main()
