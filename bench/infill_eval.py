"""Infilling on held-out tunes: blank bars of real tunes, regenerate them in place, and score what was kept.

    python bench/infill_eval.py [--model model/weights/default.pt] [--split test] [--tunes 120]
        [--out docs/results/infill-test.json]

For each of ``--tunes`` tunes of the split (8 bars or more, one meter, drawn by seed), one span is
blanked: 1, 2 or 4 bars, early, in the middle or late (never the last bar), in turn. Then:
(a) the span is regenerated (``regenerate``, default settings, seed = the tune's index) and every bar
    outside it is compared with the original (the count of bars changed must be 0);
(b) the kept bars after the span are scored, in bits per note, teacher forced by the same network
    and short-term model, after three different spans: the infilled one, the true one, and a plain
    left-to-right continuation (the same bars generated from the bars before with the default
    settings, the network told that the tune ends after them, as a continuation would be);
(c) at both joins, the interval (semitones) between the last note before and the first note after,
    and whether a note starts on the join's barline, for the three spans; summarised against the
    true spans'.
It prints one JSON object and writes it to ``--out``; only what this run measured.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model import DEFAULT_MODEL_PATH  # noqa: E402
from model.evaluation.report import checkpoint_splits  # noqa: E402
from model.generation.infill import right_logprob, split_at_bars  # noqa: E402
from model.generation.params import GenerationParams  # noqa: E402
from model.generation.rows import melody_key  # noqa: E402
from model.generation.sampling import Generator, Prefix  # noqa: E402

LENGTHS, PLACES = (1, 2, 4), ("early", "middle", "late")


def bars_of(tok, ids):
    out = []
    for t in ids:
        if t == tok.bar_id:
            out.append([])
        elif out and tok.is_step(t):
            out[-1].append(t)
    return out


def span_for(index: int, bars: int) -> tuple[int, int]:
    """The index-th tune's span: lengths and places in turn, inside bars 1..bars-1."""
    length = LENGTHS[index % 3]
    place = PLACES[(index // 3) % 3]
    first = {"early": 2, "middle": max(2, (bars - length) // 2 + 1), "late": bars - length}[place]
    return first, first + length - 1


def joins(tok, ids, first: int, last: int) -> list[tuple[int | None, bool]]:
    """At the span's two barlines: (interval from the last note before to the first note after, or
    None; whether a note starts on the barline)."""
    notes, _ = tok.decode_notes(ids)
    bar_steps = tok.bar_steps(tok.meter_of(ids[1]))
    out = []
    for barline in ((first - 1) * bar_steps, last * bar_steps):
        before = [n for n in notes if n.start < barline]
        after = [n for n in notes if n.start >= barline]
        interval = after[0].pitch - before[-1].pitch if before and after else None
        out.append((interval, any(n.start == barline for n in notes)))
    return out


def right_bits(gen, ids, start, key, params) -> float:
    """Bits per note of ids[start:] (the kept bars after the span)."""
    tok = gen.tokenizer
    notes = sum(1 for t in ids[start:] if tok.pitch_of(t) is not None)
    nats = -float(right_logprob(gen, [ids], start, key, params)[0])
    return nats / math.log(2) / max(notes, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL_PATH))
    ap.add_argument("--split", default="test", choices=("valid", "test"))
    ap.add_argument("--tunes", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    gen = Generator(args.model)
    tok = gen.tokenizer
    tunes = [t for t in checkpoint_splits(args.model, progress=False)[4][args.split]
             if tok.bar_count(t.tokens) >= 8 and sum(1 for x in t.tokens if tok.meter_of(x) is not None) == 1]
    random.Random(args.seed).shuffle(tunes)
    tunes = tunes[:args.tunes]
    started = time.perf_counter()
    changed, rows = 0, []
    for i, tune in enumerate(tunes):
        ids = list(tune.tokens)
        bars = tok.bar_count(ids)
        first, last = span_for(i, bars)
        primer = tok.decode_midi_bytes(ids)
        params = GenerationParams(primer=primer, regenerate={"from_bar": first, "to_bar": last}, seed=i)
        filled = gen.generate(params).melodies[0].tokens
        orig_bars, new_bars = bars_of(tok, ids), bars_of(tok, filled)
        changed += sum(1 for b in range(bars) if not first - 1 <= b < last and orig_bars[b] != new_bars[b])
        left, right = split_at_bars(tok, ids, first, last)
        plain = gen.generate(GenerationParams(primer=tok.decode_midi_bytes(left + [tok.eos_id]),
                                              bars=last - first + 1, seed=i)).melodies[0].tokens
        plain = plain[:-1] + right
        start = len(ids) - len(right)
        # the key the network is told, as infilling tells it (a network with a key input)
        key = melody_key(gen, params, Prefix(left, tok.meter_of(ids[1])), i) if gen.model.config.key_dim else None
        rows.append({
            "tune": tune.id, "bars": bars, "span": [first, last],
            "bits_infilled": right_bits(gen, filled, start, key, params),
            "bits_true": right_bits(gen, ids, start, key, params),
            "bits_plain": right_bits(gen, plain, start, key, params),
            "joins_infilled": joins(tok, filled, first, last), "joins_true": joins(tok, ids, first, last),
            "joins_plain": joins(tok, plain, first, last),
        })
        print(f"{i + 1}/{len(tunes)} {tune.id} span {first}-{last}: right side "
              f"{rows[-1]['bits_infilled']:.2f} / {rows[-1]['bits_true']:.2f} / {rows[-1]['bits_plain']:.2f} "
              "bits per note (infilled / true / plain)", file=sys.stderr, flush=True)

    def mean(key):
        return float(np.mean([r[key] for r in rows]))

    def join_summary(kind):
        intervals = [abs(j[0]) for r in rows for j in r[f"joins_{kind}"] if j[0] is not None]
        onsets = [j[1] for r in rows for j in r[f"joins_{kind}"]]
        return {"mean_abs_interval": float(np.mean(intervals)), "leaps_over_7": float(np.mean(np.array(intervals) > 7)),
                "onset_on_barline": float(np.mean(onsets))}

    finite = lambda key: [r[key] for r in rows if math.isfinite(r[key])]
    result = {
        "model": args.model, "split": args.split, "tunes": len(rows), "seconds": round(time.perf_counter() - started, 1),
        "kept_bars_changed": changed,
        "right_side_bits_per_note": {k: float(np.mean(finite(f"bits_{k}"))) for k in ("infilled", "true", "plain")},
        "infilled_over_true": mean("bits_infilled") / mean("bits_true"),
        "joins": {k: join_summary(k) for k in ("infilled", "true", "plain")},
        "by_span_length": {str(n): {k: float(np.mean([r[f"bits_{k}"] for r in rows if r["span"][1] - r["span"][0] + 1 == n]))
                                    for k in ("infilled", "true", "plain")} for n in LENGTHS},
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({**result, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
