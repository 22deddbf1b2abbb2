"""Form figures of generated melodies against the Essen test tunes, and their first bars.

    python bench/form_figures.py [--model PATH] [--pairs 300] [--seeds 200] [--code NAME=DIR ...]
                                 [--variant NAME=JSON ...] [--split test] [--data SPEC] [--out-dir docs/results]

For each code checkout (``--code``: a name and a checkout whose ``model`` package generates; default
this one) and each parameter variant (``--variant``: JSON GenerationParams overrides; default
``off={"form": "none"}`` and ``sampled={}``), a child process with that checkout on its path
generates:
- ``--pairs`` melodies paired with test tunes as ``tunesmith evaluate``'s sample statistics pair them
  (melody i: the meter and number of bars, at most 32, of a tune of ``--split`` drawn with seed 0, and
  seed i);
- ``--seeds`` default 16-bar melodies, seeds 0..seeds-1.
This checkout then reads their form (``model.evaluation.form_figures``) beside the test tunes' and
their endings (``model.generation.endings.ending_statistics``), prints the figures and writes
``docs/results/form-<code>-<variant>.json``. Only this run's figures are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_BARS = 32  # as sample_statistics


def generate(args) -> dict:
    """The child: generate with the checkout on PYTHONPATH (only APIs older checkouts have too)."""
    import numpy as np
    import torch
    from model.evaluation.report import checkpoint_splits
    from model.generation.params import GenerationParams
    from model.generation.sampling import Generator
    torch.set_num_threads(1)
    _, tok, _, _, splits = checkpoint_splits(args.model or __import__("model").DEFAULT_MODEL_PATH, args.data,
                                             progress=False)
    gen = Generator(args.model)
    variant = json.loads(args.generate)
    test = [t.tokens for t in splits[args.split]]
    pairs, melodies = [], []
    for i, r in enumerate(np.random.default_rng(0).integers(0, len(test), size=args.pairs)):
        _, meters = tok.decode_notes(test[r])
        bars = max(1, min(tok.bar_count(test[r]), MAX_BARS))
        m = gen.generate(GenerationParams(bars=bars, meter=meters[0][1], seed=i, **variant)).melodies[0]
        pairs.append({"reference": int(r), "tokens": m.tokens, "redrawn": m.info.get("redrawn", 0)})
    for seed in range(args.seeds):
        melodies.append(gen.generate(GenerationParams(bars=16, seed=seed, **variant)).melodies[0].tokens)
    return {"pairs": pairs, "sixteen_bars": melodies}


def figures(drawn: dict, model, split: str, data: str | None = None) -> dict:
    """This checkout's reading of a child's melodies."""
    from model.evaluation.form_figures import form_statistics
    from model.evaluation.report import checkpoint_splits
    from model.generation.endings import ending_statistics
    from model.representation.form import tune_bars, empty_first_bar
    import model as package
    _, tok, _, _, splits = checkpoint_splits(model or package.DEFAULT_MODEL_PATH, data, progress=False)
    test = [t.tokens for t in splits[split]]
    generated = [p["tokens"] for p in drawn["pairs"]]
    matched = [test[p["reference"]] for p in drawn["pairs"] if tok.bar_count(test[p["reference"]]) <= MAX_BARS]
    sixteen = drawn["sixteen_bars"]
    return {"pairs": len(generated), "form": form_statistics(generated, tok),
            "reference_form_matched": form_statistics(matched, tok),
            "endings": ending_statistics(generated, tok), "reference_endings_matched": ending_statistics(matched, tok),
            "redrawn": sum(p["redrawn"] > 0 for p in drawn["pairs"]),
            "sixteen_bars": {"melodies": len(sixteen),
                             "empty_first_bars": sum(empty_first_bar(tune_bars(t, tok), tok) for t in sixteen),
                             "form": form_statistics(sixteen, tok)}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped one)")
    p.add_argument("--pairs", type=int, default=300)
    p.add_argument("--seeds", type=int, default=200)
    p.add_argument("--code", action="append", default=None, help="NAME=DIR: a checkout that generates")
    p.add_argument("--variant", action="append", default=None, help="NAME=JSON GenerationParams overrides")
    p.add_argument("--split", default="test", help="the tunes paired with (valid: for choosing; test: once)")
    p.add_argument("--data", default=None, help="the corpus whose split is paired with (default: the model's)")
    p.add_argument("--out-dir", default=str(ROOT / "docs" / "results"))
    p.add_argument("--generate", default=None, help=argparse.SUPPRESS)  # the child: a variant's JSON
    args = p.parse_args()
    if args.generate is not None:
        json.dump(generate(args), sys.stdout)
        return 0
    sys.path.insert(0, str(ROOT))
    codes = dict(c.split("=", 1) for c in args.code or [f"branch={ROOT}"])
    variants = dict(v.split("=", 1) for v in args.variant or ['off={"form": "none"}', "sampled={}"])
    command = " ".join(["python", "bench/form_figures.py", *sys.argv[1:]])
    for code, folder in codes.items():
        for name, variant in variants.items():
            child = [sys.executable, __file__, "--generate", variant, "--pairs", str(args.pairs), "--split", args.split,
                     "--seeds", str(args.seeds)] + (["--model", args.model] if args.model else []) \
                + (["--data", args.data] if args.data else [])
            out = subprocess.run(child, env={**os.environ, "PYTHONPATH": folder}, check=True,
                                 capture_output=True, text=True).stdout
            report = {"code": code, "variant": json.loads(variant), "command": command,
                      "split": args.split, "data": args.data, **figures(json.loads(out), args.model, args.split, args.data)}
            path = Path(args.out_dir) / f"form-{code}-{name}{'' if args.split == 'test' else '-' + args.split}.json"
            path.write_text(json.dumps(report, indent=1) + "\n")
            f, ref, s = report["form"], report["reference_form_matched"], report["sixteen_bars"]
            print(f"{code} {name}: exact repeats {f['exact_repeat_share']:.3f} (tunes {ref['exact_repeat_share']:.3f}), "
                  f"rhythm repeats {f['rhythm_repeat_share']:.3f} ({ref['rhythm_repeat_share']:.3f}), "
                  f"pickups {f['pickup_share']:.3f} ({ref['pickup_share']:.3f}), first note at "
                  f"{f['first_note_position']:.3f} ({ref['first_note_position']:.3f}) of a bar, empty first bars "
                  f"{f['empty_first_bars']} ({ref['empty_first_bars']}); 16 bars: {s['empty_first_bars']} of "
                  f"{s['melodies']} begin with an empty bar; tonic endings {report['endings']['tonic_share']:.3f} "
                  f"({report['reference_endings_matched']['tonic_share']:.3f}) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
