"""The recipe rule's measurements: short runs from scratch on seeded subsets of Essen, the rule's
recipe (model/training/recipe.py) against the recipe that was the default before it, and against
variants, compared on the subset's validation tunes (the network's nats per token, and with its
short-term model).

    python bench/recipe_sizes.py --out docs/results/recipe-sizes.json \
        [--runs '[[200, "rule"], [200, "previous"], [500, "rule"], [500, "rule-no-transpose"]]'] [--max-minutes 15]

Runs go one after the other on one thread; the report is rewritten after each run, so an
interrupted measurement keeps what it finished. Prints only what this run measured.
"""
import argparse
import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.representation.corpora import load_corpus  # noqa: E402
from model.training.config import TrainConfig  # noqa: E402
from model.training.trainer import train  # noqa: E402

# the recipe every corpus got before the rule (batch 64, 30 epochs, patience 4, lr patience 1, no transposition)
PREVIOUS = {"batch_size": 64, "epochs": 30, "patience": 4, "lr_patience": 1, "transpose": (0, 0), "lr": 2e-3}
VARIANTS = {"rule": {}, "previous": PREVIOUS, "rule-no-transpose": {"transpose": (0, 0)}}
DEFAULT_RUNS = [[200, "rule"], [200, "previous"], [100, "rule"], [100, "previous"], [500, "rule"],
                [500, "rule-no-transpose"]]


def subset(corpus, tunes: int, seed: int):
    # a hash of its own: ordered by split_of's hash, the first tunes would all fall in the valid split
    order = sorted(corpus.tunes, key=lambda t: hashlib.sha256(f"subset:{seed}:{t.id}".encode()).digest())
    return replace(corpus, tunes=order[:tunes], provenance={**corpus.provenance, "subset": tunes, "subset_seed": seed})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="music21:essenFolksong")
    p.add_argument("--runs", default=json.dumps(DEFAULT_RUNS), help="JSON list of [tunes, variant]")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets' draw")
    p.add_argument("--max-minutes", type=float, default=15.0, help="each run's budget")
    p.add_argument("--folder", default="runs/recipe-sizes")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    corpus = load_corpus(args.data, progress=False)
    report = {"data": args.data, "seed": args.seed, "max_minutes": args.max_minutes, "runs": [],
              "command": "python bench/recipe_sizes.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    for tunes, variant in json.loads(args.runs):
        config = TrainConfig(data=f"{args.data} (seeded subset of {tunes})",
                             out=f"{args.folder}/{tunes}-{variant}.pt", from_scratch=True, threads=1,
                             valid=0.1, test=0.0, max_minutes=args.max_minutes, **VARIANTS[variant])
        started = time.monotonic()
        run = train(config, corpus=subset(corpus, tunes, args.seed), show_progress=False)
        m = run["metrics"]
        entry = {"tunes": tunes, "variant": variant, "recipe": run["recipe"], "stopped": run["stopped"],
                 "best_epoch": m["best_epoch"], "epochs_done": m["epochs_done"], "valid_loss": m["valid_loss"],
                 "short_term_valid_loss": m["short_term_valid_loss"],
                 "wall_minutes": round((time.monotonic() - started) / 60, 2)}
        report["runs"].append(entry)
        print(json.dumps(entry), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
