"""How often strong-beat notes are chord tones: real tunes against their own derived chords, and
melodies generated over those chords with the soft chord pull at several strengths, and strict.

    nice -n 15 python bench/chord_pull.py --tunes 48 --out docs/results/chord-pull-valid.json [--params JSON]

Real: every tune of the shipped model's valid split, its chords estimated (model/representation/
harmony.py), the share of notes starting on a strong position (``endings.strong_positions``) whose
pitch class is in the chord sounding there. Generated: for the first ``--tunes`` valid tunes of one
meter, one melody (seed = the tune's index) of the tune's length (at most 16 bars) and meter over the
tune's derived chords, for each pull (0 = ``chord_tones`` none) and for ``strict``; the same share
against the given chords. ``CHORD_PULL`` (model/generation/chord_tones.py) is chosen from this run:
the smallest pull whose share reaches the real tunes'.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from model.evaluation.report import checkpoint_splits  # noqa: E402
from model.generation import chord_tones  # noqa: E402
from model.generation.accompaniment import progression_chords, score_chords  # noqa: E402
from model.generation.endings import strong_positions  # noqa: E402
from model.generation.params import GenerationParams  # noqa: E402
from model.generation.sampling import Generator  # noqa: E402
from model.representation.harmony import HarmonyModel  # noqa: E402



def strong_share(score, spans) -> tuple[int, int]:
    """(chord tones, notes) among the notes that start on a strong position of their bar."""
    hits = total = 0
    meters = dict(score.meters)
    meter = None
    for bar in range(len(score.bar_starts) - 1):
        meter = meters.get(bar, meter)
        start, end = score.bar_starts[bar], score.bar_starts[bar + 1]
        strong = {start + p for p in strong_positions(meter, score.steps_per_quarter, end - start)}
        for pitch, s, _ in score.notes:
            if s in strong:
                chord = next(sp.chord for sp in spans if sp.start <= s < sp.end)
                hits += pitch % 12 in chord.pitch_classes
                total += 1
    return hits, total


def progression_of(score, spans, bars: int) -> list[str]:
    """The derived chords of the first ``bars`` bars, one string a bar ('G C')."""
    return [" ".join(str(sp.chord) for sp in spans if score.bar_starts[b] <= sp.start < score.bar_starts[b + 1])
            for b in range(bars)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--tunes", type=int, default=48)
    p.add_argument("--pulls", default="0,1,2,3,4,6,8", help="soft pulls to try, nats (0 = chord_tones none)")
    p.add_argument("--out", default=None)
    p.add_argument("--params", default="{}", help="JSON GenerationParams overrides for every melody, e.g. "
                                                    "'{\"form\": \"none\"}'")
    args = p.parse_args()
    overrides = json.loads(args.params)
    torch.set_num_threads(1)
    gen = Generator(args.model)
    tok = gen.tokenizer
    harmony = HarmonyModel.load()
    _, _, _, data, splits = checkpoint_splits(gen.path)
    hits = total = 0
    picked = []
    for tune in splits["valid"]:
        score = tok.score(tune.tokens)
        spans = score_chords(score, harmony)
        h, t = strong_share(score, spans)
        hits, total = hits + h, total + t
        if len(score.meters) == 1 and len(picked) < args.tunes:
            picked.append((score, spans))
    report = {"model": os.path.relpath(gen.path), "data": data, "split": "valid",
              "real": {"tunes": len(splits["valid"]), "strong_notes": total, "chord_tone_share": hits / total},
              "generated": {}, "command": " ".join(["nice -n 15 python", "bench/chord_pull.py", *sys.argv[1:]])}
    print("real", report["real"], flush=True)
    pulls = [float(x) for x in args.pulls.split(",")]
    for setting in [*(("soft", pull) for pull in pulls), ("strict", None)]:
        mode, pull = setting
        if pull is not None:
            chord_tones.CHORD_PULL = pull
        hits = total = 0
        for i, (score, spans) in enumerate(picked):
            bars = min(16, len(score.bar_starts) - 1)
            params = GenerationParams(bars=bars, meter=score.meters[0][1], seed=i,
                                      chords=progression_of(score, spans, bars),
                                      chord_tones="none" if pull == 0.0 else mode, **overrides)
            m = gen.generate(params).melodies[0]
            out = tok.score(m.tokens)
            h, t = strong_share(out, progression_chords(out, params.progression()))
            hits, total = hits + h, total + t
        name = f"soft_{pull:g}" if mode == "soft" else "strict"
        report["generated"][name] = {"melodies": len(picked), "strong_notes": total, "chord_tone_share": hits / total}
        print(name, report["generated"][name], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
