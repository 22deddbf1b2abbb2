"""Time one 16-bar melody at batch 1 end to end (`Generator.generate`, default settings), N times.

    python bench/generate_16_bars.py [--model PATH ...] [--runs 40] [--variants '[{"tonic_pull": 0}, {}]']

Models (and parameter variants: JSON GenerationParams overrides) given together are timed in turns (run i of every model, then run i + 1), so machine load
falls on all of them alike. To compare with older code, run the same command from a checkout of
that commit with PYTHONPATH pointing at it. Prints only this run's median and minimum.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from model.generation.params import GenerationParams  # noqa: E402
from model.generation.sampling import Generator


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", default=None, help="checkpoint (repeatable; default: the shipped one)")
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--variants", default="[{}]", help="JSON list of GenerationParams overrides, timed in turns")
    args = p.parse_args()
    torch.set_num_threads(1)
    gens = {m or "default": Generator(m) for m in (args.model or [None])}
    variants = json.loads(args.variants)
    runs = {(f"{name} {json.dumps(v)}" if v else name): (g, v) for name, g in gens.items() for v in variants}
    times = {k: [] for k in runs}
    for g, v in runs.values():
        g.generate(GenerationParams(bars=16, seed=0, **v))  # warm: tables, numba, caches
    for i in range(args.runs):
        for name, (g, v) in runs.items():
            t = time.perf_counter()
            g.generate(GenerationParams(bars=16, seed=i, **v))
            times[name].append(time.perf_counter() - t)
    import os
    print(f"code {Path(__file__).resolve().parent.parent}, 1-minute load average {os.getloadavg()[0]:.2f}")
    for name, v in times.items():
        print(f"{name}: 16 bars at batch 1, median {statistics.median(v) * 1e3:.1f} ms, "
              f"min {min(v) * 1e3:.1f} ms over {len(v)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
