"""The transfer protocol's first half: a model trained without the tunes it is scored on (the rest
of Essen, kinder left out), scored on every tune of another corpus (kinder) as it is, with no
fine-tuning, with its own short-term model and without; pitch bits per note pooled over all notes,
the figure IDyOM reports.

    python bench/kinder_transfer.py --model runs/essen-without-kinder.pt \
        [--data music21:essenFolksong/kinder0.abc] [--out docs/results/kinder-transfer-none.json]

The second half (fine-tuned on the nine other folds) is `tunesmith evaluate --folds 10 --init <model>`.
Prints this run's figures only.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model.network import shortterm  # noqa: E402
from model.network.checkpoint import load_checkpoint  # noqa: E402
from model.representation.corpora import load_corpus  # noqa: E402
from model.evaluation.report import prediction_figures, tune_scores  # noqa: E402
from model.network.scoring import token_arrays
from benchmarks_doc import print_report  # noqa: E402  (bench/benchmarks_doc.py, beside this script)

KEYS = ("bits_per_note", "pitch_bits_per_note", "notes")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="music21:essenFolksong/kinder0.abc")
    p.add_argument("--out", help="also write the JSON report here")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer, ckpt = load_checkpoint(args.model)
    corpus = load_corpus(args.data, tokenizer.config)
    tokens = token_arrays(corpus.tunes)
    report = {"model": args.model, "data": args.data, "tunes": len(tokens),
              "trained_on": ckpt.get("train_config", {}).get("data")}
    for name, copy_model in (("mixture", shortterm.CopyModel.from_checkpoint(ckpt)), ("network_only", None)):
        logprobs, bits = tune_scores(model, tokenizer, tokens, copy_model=copy_model)
        figures = prediction_figures(logprobs, bits, tokens, tokenizer)
        report[name] = {k: figures[k] for k in KEYS}
    report["command"] = "python bench/kinder_transfer.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
