"""One 16-bar request alone in a Batcher, padded to 2 rows (today's shared step) and to 8 rows (the
padding before), in turns in one process, so that the machine's drift falls on both alike.

    python bench/lone_request.py [--rounds 5] [--runs 9]

Each round times ``--runs`` requests (seeds 100..) with each padding and prints both medians and
their ratio; then the median of the ratios. Both paddings keep a row's bytes independent of the
batch (model/generation/rows.py); they differ only in cost. Prints only this run's figures.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model.generation.params import GenerationParams  # noqa: E402
from model.generation.sampling import Generator
from worker.batcher import Batcher  # noqa: E402


def median_ms(batcher, runs: int) -> float:
    times = []
    for seed in range(100, 100 + runs):
        started = time.perf_counter()
        batcher.submit(GenerationParams(bars=16, seed=seed)).result()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=9)
    args = p.parse_args()
    torch.set_num_threads(1)
    batcher = Batcher(Generator())
    try:
        for pad in (2, 8):                       # warm up both shapes
            batcher.min_rows = pad
            median_ms(batcher, 2)
        ratios = []
        for r in range(args.rounds):
            figures = {}
            for pad in ((2, 8) if r % 2 == 0 else (8, 2)):
                batcher.min_rows = pad
                figures[pad] = median_ms(batcher, args.runs)
            ratios.append(figures[2] / figures[8])
            print(f"round {r + 1}: padded to 2 rows {figures[2]:.1f} ms, to 8 rows {figures[8]:.1f} ms, "
                  f"ratio {ratios[-1]:.3f}")
        print(f"median ratio (2 rows / 8 rows) over {args.rounds} rounds: {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    finally:
        batcher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
