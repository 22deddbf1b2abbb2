"""The short-term model's window and match cap, fitted on the valid split and scored on the test split.

    python bench/short_term_window.py [--model model/weights/default.pt] [--windows 128,256,512,1024,100000]
                                      [--max-matches 32,64,128]

For each window (with the cap at 64) and each cap (with the window at 512) it fits the copy model to
the checkpoint's network on the valid split of its corpus (``shortterm.collect`` + ``shortterm.fit``,
as ``tunesmith short-term`` does) and prints the valid nats/token of the mixture and its test bits per
note and pitch bits per note (``evaluate_model`` with that copy model). The network's predictions are
computed once. Prints one JSON object per line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.network import shortterm  # noqa: E402
from model import DEFAULT_MODEL_PATH  # noqa: E402
from model.evaluation.report import checkpoint_splits, evaluate_model  # noqa: E402
from model.network.scoring import target_logprobs, token_arrays


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_PATH))
    parser.add_argument("--windows", default="128,256,512,1024,100000")
    parser.add_argument("--max-matches", default="32,64,128")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer, _, _, splits = checkpoint_splits(args.model)
    valid = token_arrays(splits["valid"])
    target = target_logprobs(model, tokenizer, valid)
    cases = [(int(w), 64) for w in args.windows.split(",")] + \
            [(512, int(m)) for m in args.max_matches.split(",") if int(m) != 64]
    for window, max_match in cases:
        copy_model, nats = shortterm.fit(shortterm.collect(target, valid, max_match=max_match, window=window))
        test = evaluate_model(model, tokenizer, splits["test"], copy_model=copy_model)
        print(json.dumps({"window": window, "max_match": max_match, "valid_nats_per_token": round(nats, 5),
                          "test_bits_per_note": round(test["bits_per_note"], 4),
                          "test_pitch_bits_per_note": round(test["pitch_bits_per_note"], 4),
                          "beta": round(copy_model.beta, 3)}), flush=True)


if __name__ == "__main__":
    main()
