"""Core speed: our Recurrent layers against torch's fused ones, and MelodyNetwork.step per token.

    python bench/bench_core.py [--threads 1] [--write]

(a) forward+backward training throughput (tokens/s) of a 2-layer, 256-unit stack on 64-dim inputs,
    128-step windows, batch 1 and 64: model.cells.Recurrent ("cells") against torch.nn.LSTM/GRU/RNN
    ("fused"), for each cell type.
(b) MelodyNetwork.step time per token (network only, no sampling) at batch 1 and 32 for the default
    2x256 LSTM network, beside stepping torch.nn.LSTM with one-token windows (the naive way).
--write puts the tables into the "Core speed" section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.network import MelodyNetwork, NetworkConfig, build_recurrent  # noqa: E402

EMBEDDING, HIDDEN, LAYERS, WINDOW, VOCAB = 64, 256, 2, 128, 80
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_throughput(cell: str, backend: str, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    rnn = build_recurrent(cell, backend, EMBEDDING, HIDDEN, LAYERS, dropout=0.0)
    x = torch.randn(batch, WINDOW, EMBEDDING, requires_grad=True)
    weights = torch.randn(batch, WINDOW, HIDDEN)

    def forward_backward():
        out, _ = rnn(x)  # (B, T, H)
        (out * weights).sum().backward()

    return batch * WINDOW / median_time(forward_backward, repeats)


def step_time(net: MelodyNetwork, batch: int, tokens: int, naive: bool = False) -> float:
    """Seconds per step of `tokens` consecutive steps (median of 3 runs)."""
    ids = torch.randint(0, VOCAB, (tokens, batch))

    @torch.inference_mode()
    def run():
        state = net.init_state(batch)
        for t in range(tokens):
            if naive:  # a one-token window through the fused module
                logits, state = net(ids[t].unsqueeze(1), None, state)
            else:
                logits, state = net.step(ids[t], None, state)

    return median_time(run, 3, warmup=1) / tokens


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--write", action="store_true", help="update the Core speed section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()

    rows = ["| cell | batch | fused tokens/s | cells tokens/s | cells / fused |", "|---|---|---|---|---|"]
    for cell in ("lstm", "gru", "rnn"):
        for batch in (1, 64):
            repeats = 5 if batch > 1 else 15
            fused = training_throughput(cell, "fused", batch, repeats)
            ours = training_throughput(cell, "cells", batch, repeats)
            rows.append(f"| {cell} | {batch} | {fused:,.0f} | {ours:,.0f} | {ours / fused:.2f} |")
            print(rows[-1], flush=True)
    training_table = "\n".join(rows)

    rows = ["| network | batch | step() ms/token | nn.LSTM one-token windows ms/token |", "|---|---|---|---|"]
    for cell in ("lstm", "gru", "rnn"):
        net = MelodyNetwork(NetworkConfig(vocab_size=VOCAB, cell=cell)).eval()
        for batch in (1, 32):
            ours = step_time(net, batch, 400)
            naive = step_time(net, batch, 100, naive=True) if cell == "lstm" else None
            naive_text = f"{naive * 1e3:.3f}" if naive is not None else "-"
            rows.append(f"| {cell} 2x{HIDDEN} | {batch} | {ours * 1e3:.3f} | {naive_text} |")
            print(rows[-1], flush=True)
    step_table = "\n".join(rows)

    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    print(f"\n{training_table}\n\n{step_table}\n")
    print(f"took {elapsed:.0f} s; 1-minute load average {load_before:.2f} before, {load_after:.2f} after")
    if args.write:
        write_section(training_table, step_table, args.threads, load_before, load_after)


def write_section(training_table: str, step_table: str, threads: int, load_before: float,
                  load_after: float) -> None:
    section = f"""## Core speed

Measured {datetime.date.today().isoformat()} with `python bench/bench_core.py --write`
(`torch.set_num_threads({threads})`, torch {torch.__version__}, {os.cpu_count()} CPU cores shared with other
work: 1-minute load average {load_before:.2f} before the run, {load_after:.2f} after).

**Training throughput**: forward + backward of a {LAYERS}-layer, {HIDDEN}-unit stack on {EMBEDDING}-dim inputs,
{WINDOW}-step windows; tokens/s = batch x window / median time per iteration. "cells" is
`model.cells.Recurrent` (our equations, hand-written BPTT), "fused" is `torch.nn.LSTM/GRU/RNN`.

{training_table}

**Generation**: `MelodyNetwork.step` per token (network only: embedding, {LAYERS}x{HIDDEN} recurrent stack,
projection to {VOCAB} logits; sampling comes on top), median of 3 runs of 400 consecutive steps, beside
feeding one-token windows through `torch.nn.LSTM` (the naive way, LSTM only).

{step_table}
"""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Core speed\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    DOCS.write_text(text)
    print(f"wrote {DOCS}")


if __name__ == "__main__":
    main()
