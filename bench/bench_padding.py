"""What the batcher's fixed batch shape costs one melody, on this machine.

    python bench/bench_padding.py [--runs 15]

A shared batch is padded to ``model.generation.rows.min_rows`` rows (2; 8 before this was measured) and steps
with ``MelodyNetwork.step(batch_stable=True)`` so that a row's logits do not depend on the batch
(worker/batcher.py). This prints, for this run only: the step's matrix products at 1 to 64 rows
with MKL (torch.addmm) and oneDNN (the kernel the fast step() takes from 8 rows), whether MKL gives
a row the same result alone and in a batch, one fast network step at 1 and 8 rows, whether the
batcher's step (``MelodyNetwork.step(batch_stable=True)``, with the kernel set
``model/network/stable_kernels.py`` measured row-stable here) keeps rows batch-independent from 2 rows and
what it costs at 2 and 8 rows, and one 16-bar melody from ``Generator.generate`` alone (unpadded)
against the same request alone in a Batcher (padded). ``bench/lone_request.py`` compares the two
paddings in turns.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from model.network.kernels import _ONEDNN  # noqa: E402
from model.generation.params import GenerationParams  # noqa: E402
from model.generation.sampling import Generator
from worker.batcher import Batcher  # noqa: E402


def per_call_us(f, n: int = 300) -> float:
    for _ in range(30):
        f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(1)
    g = Generator()
    H, V = g.model.config.hidden_size, g.model.config.vocab_size
    print("| product | rows | MKL µs | oneDNN µs | MKL: a row alone = in the batch |")
    print("|---|---|---|---|---|")
    with torch.inference_mode():
        for i, o in ((H, 4 * H), (H, V)):
            w, b = torch.randn(o, i), torch.randn(o)
            wt = w.t().contiguous()
            for rows in (1, 8, 16, 32, 64):
                x = torch.randn(rows, i)
                mkl = per_call_us(lambda: torch.addmm(b, x, wt))
                dnn = per_call_us(lambda: _ONEDNN(x, w, b, "none", [], "")) if _ONEDNN else float("nan")
                same = torch.equal(torch.addmm(b, x[:1], wt), torch.addmm(b, x, wt)[:1])
                print(f"| ({rows}, {i}) x ({i}, {o}) | {rows} | {mkl:.0f} | {dnn:.0f} | {same} |")
        for rows in (1, 8):
            x, c, s = torch.zeros(rows, dtype=torch.long), torch.zeros(rows, dtype=torch.long), g.model.init_state(rows)
            print(f"network step, {rows} row(s): {per_call_us(lambda: g.model.step(x, c, s), 500):.0f} µs")
        # the batcher's step (batch_stable=True: the kernel set measured row-stable here):
        # compare every row of steps of 2..64 rows with the 64-row step, bit for bit, and time 2 rows against 8
        torch.manual_seed(0)
        n = 64
        x = torch.randint(0, V, (n,))
        c = torch.randint(0, g.model.config.max_positions, (n,))
        state = tuple(torch.randn(g.model.config.num_layers, n, H) * 0.5 for _ in range(2))
        stable = lambda b: g.model.step(x[:b], c[:b], tuple(s[:, :b].contiguous() for s in state),  # noqa: E731
                                        batch_stable=True)
        ref = stable(n)
        differ = [b for b in range(2, n + 1) if not torch.equal(stable(b)[0], ref[0][:b])]
        print(f"the batcher's kernels ({g.model.stable_kernels()}): row counts 2..64 whose logits differ from 64 "
              f"rows': {differ or 'none'}")
        for rows in (2, 8):
            xs, cs, st = x[:rows], c[:rows], tuple(s[:, :rows].contiguous() for s in state)
            print(f"  network step, {rows} rows: "
                  f"{per_call_us(lambda: g.model.step(xs, cs, st, batch_stable=True), 500):.0f} µs")
    batcher = Batcher(g)
    try:
        for name, run in (("Generator.generate alone (unpadded)", lambda s: g.generate(GenerationParams(bars=16, seed=s))),
                          ("one request alone in a Batcher (padded)",
                           lambda s: batcher.submit(GenerationParams(bars=16, seed=s)).result())):
            run(0)
            times = []
            for s in range(args.runs):
                t = time.perf_counter()
                run(s)
                times.append(time.perf_counter() - t)
            print(f"16 bars, {name}: median {1000 * statistics.median(times):.1f} ms over {args.runs} runs")
    finally:
        batcher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
