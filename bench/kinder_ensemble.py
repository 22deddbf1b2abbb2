"""Networks of two cross-validation runs averaged, fold by fold: does an ensemble of networks (no
short-term model) predict kinder better than either alone? Chosen on the folds' validation tunes,
reported on the held-out folds.

    python bench/kinder_ensemble.py --folds-dir runs/kinder-e100 --folds-dir runs/kinder-e100-d1 \
        [--data music21:essenFolksong/kinder0.abc] [--folds 10] [--out docs/results/NAME.json]

Each folder holds the fold-K.pt files of a `tunesmith evaluate --folds ... --folds-dir` run with the
same data, folds and seed. Per fold it rebuilds that run's split (the held-out fold, and the 10 % of
the other folds it validated on), scores every network alone and the ensemble (the mean of their
probabilities), and pools the held-out figures over all notes as `tunesmith evaluate --folds` does.
Prints only what this run measured.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model.evaluation import metrics  # noqa: E402
from model.network.checkpoint import load_checkpoint  # noqa: E402
from model.representation.corpora import load_corpus, split_corpus  # noqa: E402
from model.evaluation.report import prediction_figures  # noqa: E402
from model.network.scoring import token_arrays, tune_distributions
from model.evaluation.folds import fold_corpora  # noqa: E402
from model.representation.tokens import TokenizerConfig  # noqa: E402
from benchmarks_doc import print_report  # noqa: E402  (bench/benchmarks_doc.py, beside this script)


def distributions(path: Path, tokens):
    model, tokenizer, _ = load_checkpoint(path)
    out = [None] * len(tokens)
    for i, dist in tune_distributions(model, tokenizer, tokens):
        out[i] = dist
    return out, tokenizer


def figures(dists, tokens, tokenizer) -> dict:
    logprobs = [d[np.arange(len(d)), t[1:]] for d, t in zip(dists, tokens)]
    bits = [metrics.pitch_bits(d, t, tokenizer) for d, t in zip(dists, tokens)]
    return prediction_figures(logprobs, bits, tokens, tokenizer)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folds-dir", action="append", required=True)
    p.add_argument("--data", default="music21:essenFolksong/kinder0.abc")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fold-valid", type=float, default=0.1)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if len(set(args.folds_dir)) != len(args.folds_dir):
        p.error("each --folds-dir once")
    torch.set_num_threads(1)
    corpus = load_corpus(args.data, TokenizerConfig(steps_per_quarter=4), progress=False)
    names = [str(d) for d in args.folds_dir] + ["ensemble"]
    pooled = {n: ([], []) for n in names}  # held-out (dists, tokens)
    per_fold = []
    for k, (rest, held) in enumerate(fold_corpora(corpus, args.folds, args.seed)):
        valid = token_arrays(split_corpus(rest, seed=args.seed, valid=args.fold_valid, test=0.0)["valid"])
        held_tokens = token_arrays(held)
        entry = {"fold": k}
        for part, tokens in (("valid", valid), ("held_out", held_tokens)):
            runs = []
            for d in args.folds_dir:
                dists, tokenizer = distributions(Path(d) / f"fold-{k}.pt", tokens)
                runs.append(dists)
            ensemble = [np.logaddexp.reduce(np.stack(ds), axis=0) - np.log(len(ds)) for ds in zip(*runs)]
            for name, dists in zip(names, runs + [ensemble]):
                f = figures(dists, tokens, tokenizer)
                entry.setdefault(name, {})[part] = {"nats_per_token": f["nats_per_token"],
                                                    "pitch_bits_per_note": f["pitch_bits_per_note"]}
                if part == "held_out":
                    pooled[name][0].extend(dists)
                    pooled[name][1].extend(tokens)
        per_fold.append(entry)
        print(json.dumps(entry), flush=True)
    report = {"data": args.data, "folds": args.folds, "folds_dirs": args.folds_dir, "per_fold": per_fold,
              "mean_valid_nats_per_token": {n: float(np.mean([e[n]["valid"]["nats_per_token"] for e in per_fold]))
                                            for n in names},
              "held_out": {n: {key: v for key, v in figures(*pooled[n], tokenizer).items()
                               if key in ("bits_per_note", "pitch_bits_per_note", "notes", "tunes")} for n in names},
              "command": " ".join(["python", "bench/kinder_ensemble.py", *sys.argv[1:]])}
    print_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
