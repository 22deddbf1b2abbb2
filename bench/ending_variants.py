"""How a checkpoint's melodies end on the VALID split, under sampling variants, beside the valid tunes
(the measurements behind the model card's "What moved the endings"; the test split is never read).

    python bench/ending_variants.py --model runs/x.pt [--samples 400] [--variants '[{}, {"temperature": 0.9}]']
        [--teacher-forced] [--key-agreement 100] [--range 8,16]

For each variant (GenerationParams overrides), ``model.evaluation.report.sample_statistics`` draws
``--samples`` melodies (seeds 0..n-1, each with the meter and bar count of a valid tune) and prints
their ending statistics and the matched valid tunes'. ``--teacher-forced`` adds, over the valid
tunes, the network's (and the mixture's) probability that the last note is the tonic of the tune's
Krumhansl-Schmuckler key, given an onset there. ``--key-agreement N`` (a network with a key input)
draws N 8-bar melodies and counts how often the key estimated from a melody is the key the network
was told. ``--range MIN,MAX`` draws the melodies with that length range instead (``min_bars``/
``max_bars``; each still takes a valid tune's meter) and adds how long they ran.
One JSON object per line; it prints only what this run measured.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model.network.conditions import key_id  # noqa: E402
from model.evaluation.report import checkpoint_splits, sample_statistics  # noqa: E402
from model.network.scoring import token_arrays, tune_distributions
from model.representation.keys import estimate_key  # noqa: E402
from model.representation.tokens import melody_notes
from model.generation.rows import melody_key  # noqa: E402
from model.generation.params import GenerationParams  # noqa: E402
from model.generation.sampling import Generator, Prefix
from model.network.shortterm import CopyModel, last_barline  # noqa: E402


def teacher_forced(model, tok, ckpt, tunes) -> dict:
    copy = CopyModel.from_checkpoint(ckpt)
    tokens = token_arrays(tunes)
    pcs = np.array([-1 if tok.pitch_of(v) is None else tok.pitch_of(v) % 12 for v in range(tok.vocab_size)])
    net, mix, empirical = [], [], []
    for i, dist in tune_distributions(model, tok, tokens, known_key=True):
        ids = [int(t) for t in tokens[i]]
        notes, _, _ = melody_notes(ids, tok)
        if not notes:
            continue
        tonic = estimate_key(notes)[0]
        last = max(j for j, t in enumerate(ids) if tok.pitch_of(t) is not None)
        for out, d in ((net, dist), (mix, copy.mix(dist, tokens[i], last_barline(tokens[i], tok.bar_id)) if copy else dist)):
            p = np.exp(d[last - 1])
            out.append(p[pcs == tonic].sum() / p[pcs >= 0].sum())
        empirical.append(pcs[ids[last]] == tonic)
    return {"teacher_forced_tonic_probability": {"network": float(np.mean(net)), "mixture": float(np.mean(mix))},
            "valid_tunes_ending_on_tonic": float(np.mean(empirical)), "tunes": len(empirical)}


def key_agreement(gen: Generator, n: int) -> dict:
    tok, agree = gen.tokenizer, 0
    for s in range(n):
        params = GenerationParams(bars=8, seed=s)
        told = melody_key(gen, params, Prefix(tok.start_ids("4/4"), "4/4"), s)
        notes, _, _ = melody_notes(gen.generate(params).melodies[0].tokens, tok)
        tonic, mode, _ = estimate_key(notes)
        agree += told is not None and key_id(tonic, mode) == told
    return {"key_agreement": agree / n, "melodies": n}


def range_endings(gen: Generator, tok, tunes, n: int, lo: int, hi: int, variant: dict) -> dict:
    """Ending statistics of n melodies drawn with min_bars=lo, max_bars=hi (seeds 0..n-1), each with
    the meter of a valid tune drawn as ``sample_statistics`` draws them; and how many bars they ran."""
    from model.generation.endings import ending_statistics
    ref = token_arrays(tunes)
    melodies, bars = [], []
    for i, r in enumerate(np.random.default_rng(0).integers(0, len(ref), size=n)):
        _, meters = tok.decode_notes(ref[r])
        m = gen.generate(GenerationParams(min_bars=lo, max_bars=hi, meter=meters[0][1], seed=i, **variant)).melodies[0]
        melodies.append(m.tokens)
        bars.append(tok.bar_count(m.tokens))
    return {**ending_statistics(melodies, tok), "mean_bars": float(np.mean(bars)),
            "share_at_max_bars": float(np.mean(np.array(bars) == hi))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--variants", default="[{}]", help="JSON list of GenerationParams overrides")
    p.add_argument("--teacher-forced", action="store_true")
    p.add_argument("--key-agreement", type=int, default=0)
    p.add_argument("--range", default=None, help="MIN,MAX: draw with this length range (min_bars, max_bars)")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, tok, ckpt, _, splits = checkpoint_splits(args.model)
    gen = Generator(args.model)
    for variant in json.loads(args.variants):
        started = time.monotonic()
        if args.range:
            lo, hi = (int(x) for x in args.range.split(","))
            print(json.dumps({"model": args.model, "variant": variant, "range": [lo, hi],
                              "endings": range_endings(gen, tok, splits["valid"], args.samples, lo, hi, variant),
                              "seconds": round(time.monotonic() - started)}), flush=True)
            continue
        s = sample_statistics(gen, tok, splits["valid"], count=args.samples, seed=0, **variant)
        print(json.dumps({"model": args.model, "variant": variant, "endings": s["endings"],
                          "valid_tunes_matched": s["reference_endings_matched"], "redrawn_share": s["redrawn_share"],
                          "seconds": round(time.monotonic() - started)}), flush=True)
    if args.teacher_forced:
        print(json.dumps({"model": args.model, **teacher_forced(model, tok, ckpt, splits["valid"])}), flush=True)
    if args.key_agreement and model.config.key_dim:
        print(json.dumps({"model": args.model, **key_agreement(gen, args.key_agreement)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
