"""Does a melody asked for in a style sound like it? Style-classifier recall on generated melodies and on real tunes.

    python bench/style_eval.py --model PATH [--out docs/results/style-eval.json] [--per-style 150] [--seed 0]
                               [--split test] [--params JSON]

Issue 19's style target: generated melodies are recognised as their requested style at least
``TARGET`` (85 %) as often as real tunes of that style are. The classifier is
``model.evaluation.style_classifier``, fitted on the checkpoint's train split (its own split, as in
training) with its penalty chosen on the valid split. It then reads:
- (a) **real**: every test tune of each style;
- (b) **generated**: for each style, ``--per-style`` melodies requested with that style. Melody i of
  style k takes the meter and bar count (at most ``MAX_BARS``, as ``tunesmith evaluate``'s sample
  statistics) of a test tune of that style drawn with ``--seed``, and seed ``seed + k * per_style + i``;
- (c) per style, generated recall over real recall, against the target;
- (d) **any**: the same requests (same meters, bars and seeds) with style "any" (the network told
  nothing). A row is the style of the paired test tune, so the matrix shows what the style input adds.
``--split valid`` reads the valid tunes instead of the test tunes (for choosing sampling settings; the
classifier's penalty was chosen there too, so its real recall there is a little flattering);
``--params`` (JSON GenerationParams overrides, e.g. ``{"tonic_pull": 1}``) applies to every request.
All requests run through one ``StepLoop`` (continuous batching), so they give the bytes that
``Generator.generate`` gives for each one alone. The script prints the three matrices side by side and
writes JSON with the command, the model, the counts and the figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.evaluation.report import checkpoint_splits  # noqa: E402
from model.evaluation.style_classifier import confusion, fit_style_classifier, recall  # noqa: E402
from model.generation.batcher import Request, StepLoop  # noqa: E402
from model.generation.params import GenerationParams  # noqa: E402
from model.generation.sampling import Generator  # noqa: E402
from model.representation.styles import ANY, style_of  # noqa: E402

TARGET = 0.85
MAX_BARS = 32  # as sample_statistics


def paired_requests(test_by_style: dict, tokenizer, per_style: int, seed: int) -> list[tuple[str, GenerationParams]]:
    """(style, params) for each generated melody: a seeded test tune's meter and bars, one seed each."""
    rng = np.random.default_rng(seed)
    out = []
    for k, (style, tunes) in enumerate(test_by_style.items()):
        for i, r in enumerate(rng.integers(0, len(tunes), size=per_style)):
            _, meters = tokenizer.decode_notes(tunes[r])
            bars = max(1, min(tokenizer.bar_count(tunes[r]), MAX_BARS))
            out.append((style, GenerationParams(bars=bars, meter=meters[0][1], seed=seed + k * per_style + i,
                                                style=style)))
    return out


def generate_all(generator: Generator, params: list[GenerationParams]) -> list[list[int] | None]:
    """One melody's tokens per request, run together in one step loop (None where the quality gate gave up)."""
    loop = StepLoop(generator)
    requests = [Request(generator.plan(p)) for p in params]
    for r in requests:
        loop.waiting.append(r)
    loop.run()
    out = []
    for r in requests:
        try:
            out.append(r.result().melodies[0].tokens)
        except ValueError:  # GenerationFailed: degenerate in every draw
            out.append(None)
    return out


def matrix_figures(classifier, tunes_by_style: dict, tokenizer) -> dict:
    m = confusion(classifier, tunes_by_style, tokenizer)
    return {"count": {s: len(t) for s, t in tunes_by_style.items()}, "confusion": m.tolist(),
            "recall": recall(m, classifier.styles)}


def table(styles, blocks: dict) -> str:
    """The confusion matrices side by side, rows the true (or requested) style, with each row's recall."""
    width = max(8, *(len(s) + 1 for s in styles))
    head = "".join(f"{s:>{width}}" for s in styles) + f"{'recall':>8}"
    lines = [f"{'':<10}" + "".join(f"{name:<{len(head) + 4}}" for name in blocks),
             f"{'':<10}" + "".join(f"{head:<{len(head) + 4}}" for _ in blocks)]
    for i, s in enumerate(styles):
        cells = []
        for b in blocks.values():
            row = "".join(f"{v:>{width}}" for v in b["confusion"][i]) + f"{b['recall'][s]:>8.1%}"
            cells.append(f"{row:<{len(head) + 4}}")
        lines.append(f"{s:<10}" + "".join(cells))
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a checkpoint with a style input")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "style-eval.json"))
    p.add_argument("--per-style", type=int, default=150, help="generated melodies per style")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("valid", "test"), default="test",
                   help="the tunes read and paired with (valid: for choosing settings; test: once)")
    p.add_argument("--params", default="{}", help="JSON GenerationParams overrides for every request")
    args = p.parse_args()
    if args.per_style < 1:
        p.error(f"--per-style must be >= 1, got {args.per_style}")
    import torch
    torch.set_num_threads(1)
    started = time.perf_counter()
    _, tok, ckpt, data, splits = checkpoint_splits(args.model)
    generator = Generator(args.model)
    styles = tuple(generator.styles or ())
    if not styles:
        p.error(f"--model {args.model} has no style input: there is no style to ask for")
    by_split = {name: {s: [t.tokens for t in tunes if style_of(t.id) == s] for s in styles}
                for name, tunes in splits.items()}
    empty = [f"{name}/{s}" for name, d in by_split.items() for s, t in d.items() if not t]
    if empty:
        p.error(f"the checkpoint's data {data!r} has no tunes for {', '.join(empty)}")
    classifier = fit_style_classifier(by_split["train"], by_split["valid"], tok)
    fitted = time.perf_counter()
    real = matrix_figures(classifier, by_split[args.split], tok)

    overrides = json.loads(args.params)
    requests = [(s, replace(params, **overrides))
                for s, params in paired_requests(by_split[args.split], tok, args.per_style, args.seed)]
    asked = generate_all(generator, [params for _, params in requests])
    unknown = generate_all(generator, [replace(params, style=ANY) for _, params in requests])
    generated_at = time.perf_counter()
    by_style = lambda melodies: {s: [m for (r, _), m in zip(requests, melodies) if r == s and m is not None]
                                 for s in styles}
    gen = matrix_figures(classifier, by_style(asked), tok)
    any_style = matrix_figures(classifier, by_style(unknown), tok)
    ratio = {s: gen["recall"][s] / real["recall"][s] if real["recall"][s] else float("nan") for s in styles}
    report = {
        "command": " ".join(["python", "bench/style_eval.py", *sys.argv[1:]]),
        "model": str(args.model), "epoch": ckpt.get("epoch"), "data": data, "styles": list(styles),
        "split": args.split, "params": overrides, "seed": args.seed, "per_style": args.per_style, "max_bars": MAX_BARS, "target": TARGET,
        "classifier": {**classifier.to_dict(), "train": {s: len(t) for s, t in by_split["train"].items()},
                       "valid": {s: len(t) for s, t in by_split["valid"].items()}},
        "real": real, "generated": gen, "any": any_style,
        "failed": {"generated": sum(m is None for m in asked), "any": sum(m is None for m in unknown)},
        "ratio": ratio, "met": {s: bool(ratio[s] >= TARGET) for s in styles},
        "all_met": all(ratio[s] >= TARGET for s in styles),
        "seconds": {"fit": round(fitted - started, 1), "generate": round(generated_at - fitted, 1),
                    "total": round(time.perf_counter() - started, 1)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"style classifier: l2 {classifier.l2:g}, valid balanced accuracy "
          f"{classifier.valid_balanced_accuracy[classifier.l2]:.3f}; rows: true or requested style, columns: predicted")
    print(table(styles, {f"real {args.split} tunes": real, "generated (style asked)": gen, 'generated ("any")': any_style}))
    for s in styles:
        verdict = "met" if report["met"][s] else "NOT met"
        print(f"{s:<10} generated / real recall {ratio[s]:.3f} (target {TARGET}): {verdict}")
    print(f"failed draws: {report['failed']}; {report['seconds']} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
