"""Time one 16-bar melody at batch 1 end to end (`Generator.generate`, default settings), N times.

    python bench/generate_16_bars.py [--model PATH ...] [--runs 40] [--variants '[{"tonic_pull": 0}, {}]']
    python bench/generate_16_bars.py --checkout /path/to/another/checkout [--checkout ...] [--runs 40]

Models (and parameter variants: JSON GenerationParams overrides) given together are timed in turns
(run i of every model, then run i + 1; every other turn in reverse order), so machine load falls on
all of them alike. ``--checkout`` (repeatable) compares code: this checkout and each one named, each
with its own shipped model, run in processes of their own alike (a process that spawns and waits
for the others would be one of a kind), each timing its run i when told to, in the same turns; so
an older commit is compared with this one run by run rather than one whole command after the other.
Prints only this run's median and minimum, and for every entry after the first the median of its
run i's time over the first's run i.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from model.generation.params import GenerationParams  # noqa: E402
from model.generation.sampling import Generator

# a checkout's process: its shipped model, warmed like the models timed in process; it times run i when sent i
CHECKOUT_RUNNER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from model.generation.params import GenerationParams
from model.generation.sampling import Generator
g = Generator()
g.generate(GenerationParams(bars=16, seed=0))
print("ready", flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    g.generate(GenerationParams(bars=16, seed=int(line)))
    print(time.perf_counter() - t, flush=True)
"""


class CheckoutRunner:
    """A checkout's code in a process of its own, timing one 16-bar melody per call."""

    def __init__(self, checkout: str | Path):
        root = str(Path(checkout).resolve())
        env = {**os.environ, "PYTHONPATH": root}
        self.proc = subprocess.Popen([sys.executable, "-c", CHECKOUT_RUNNER, root], cwd=root, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the checkout {root} did not start (see its error above)")

    def time(self, seed: int) -> float:
        self.proc.stdin.write(f"{seed}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _timed(g: Generator, params: GenerationParams) -> float:
    t = time.perf_counter()
    g.generate(params)
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", default=None, help="checkpoint (repeatable; default: the shipped one)")
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--variants", default="[{}]", help="JSON list of GenerationParams overrides, timed in turns")
    p.add_argument("--checkout", action="append", default=[],
                   help="another checkout to time against this one, each with its shipped model (repeatable)")
    args = p.parse_args()
    if args.checkout and (args.model or json.loads(args.variants) != [{}]):
        p.error("--checkout times each checkout's shipped model at the defaults: give it without --model and --variants")
    torch.set_num_threads(1)
    runners = [CheckoutRunner(c) for c in [ROOT, *args.checkout]] if args.checkout else []
    # name -> time one run with a seed
    timers = {}
    for k, r in enumerate(runners):
        name = f"checkout {r.proc.args[-1]}, its default"
        timers[name if name not in timers else f"{name} ({k + 1})"] = r.time  # a checkout may be given twice
    if not runners:
        gens = {m or "default": Generator(m) for m in (args.model or [None])}
        for name, g in gens.items():
            for v in json.loads(args.variants):
                g.generate(GenerationParams(bars=16, seed=0, **v))  # warm: tables, numba, caches
                timers[f"{name} {json.dumps(v)}" if v else name] = \
                    lambda seed, g=g, v=v: _timed(g, GenerationParams(bars=16, seed=seed, **v))
    times = {name: [] for name in timers}
    order = list(timers)
    try:
        for i in range(args.runs):  # every other turn in reverse, so that none always runs first
            for name in (order if i % 2 == 0 else order[::-1]):
                times[name].append(timers[name](i))
    finally:
        for r in runners:
            r.close()
    print(f"code {ROOT}, 1-minute load average {os.getloadavg()[0]:.2f}")
    for name, v in times.items():
        print(f"{name}: 16 bars at batch 1, median {statistics.median(v) * 1e3:.1f} ms, "
              f"min {min(v) * 1e3:.1f} ms over {len(v)} runs")
    first, *others = times
    for name in others:  # run i against run i of the first, taken in the same turn
        ratios = [a / b for a, b in zip(times[name], times[first])]
        print(f"{name} / {first}, the same turn's runs: median {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
