"""How often melodies end on the tonic of a requested key: 5 keys x 16 seeds of 16-bar melodies.

    python bench/ending_keys.py [--model PATH] [--out docs/results/ending-keys.json]

For each of D, G, C, F and A major and seeds 0..15, one 16-bar melody at the default settings,
with `cadence` none and `tonic_pull` 0 (the model's own ending), with `cadence` none (the default
tonic pull) and with `cadence` tonic (the constraint). Prints, per setting, how
many of the 80 end on the requested tonic, on a strong beat, and longer than a beat. Only this
run's figures are printed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from model.generation.endings import beat_steps, strong_positions  # noqa: E402
from model.representation.keys import PITCH_CLASSES  # noqa: E402
from model.generation.params import GenerationParams  # noqa: E402
from model.generation.sampling import Generator

KEYS = ("D", "G", "C", "F", "A")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    gen = Generator(args.model)
    report = {"model": str(gen.path), "melodies_per_setting": len(KEYS) * args.seeds,
              "command": " ".join(["python", "bench/ending_keys.py", *sys.argv[1:]])}
    settings = {"none_without_pull": {"tonic_pull": 0.0}, "none": {}, "tonic": {"cadence": "tonic"}}
    for name, setting in settings.items():
        tonic = strong = longer = 0
        for key in KEYS:
            for seed in range(args.seeds):
                m = gen.generate(GenerationParams(bars=16, key=key, seed=seed, **setting)).melodies[0]
                last, S = m.notes[-1], gen.tokenizer.bar_steps(m.meter)
                total = sum(1 for t in m.tokens if gen.tokenizer.is_step(t))
                tonic += last.pitch % 12 == PITCH_CLASSES[key]
                strong += (last.start - (total - S)) in strong_positions(m.meter, gen.tokenizer.steps_per_quarter, S)
                longer += last.end - last.start > beat_steps(m.meter, gen.tokenizer.steps_per_quarter)
        report[name] = {"params": setting, "on_requested_tonic": tonic, "final_on_strong_beat": strong,
                        "final_longer_than_beat": longer}
        print(f"{name} {setting}: {tonic} of {report['melodies_per_setting']} end on the requested tonic, "
              f"{strong} on a strong beat of the last bar, {longer} with a final note longer than a beat")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
