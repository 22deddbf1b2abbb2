"""What generation draws a key from when a request names none: the training tunes' share of each key,
over all of them and per style (a style's tunes keep to keys of their own: O'Neill's to D and G,
the Chinese songs spread wide).

``python -m model.training.key_priors --model PATH`` computes them for a checkpoint from its own
training split and stores them in it (a checkpoint trained before the per-style priors existed).
"""
from __future__ import annotations

import argparse

import numpy as np

from model.network.melody import UNKNOWN_KEY


def key_priors(keys, styles) -> tuple[list[float], dict[str, list[float]]]:
    """(prior over the 24 keys, {style: its prior}) of the training tunes' key ids (UNKNOWN_KEY or
    None: a tune without notes, left out) and style names (None: no style)."""
    keys = np.asarray([UNKNOWN_KEY if k is None else int(k) for k in keys], dtype=np.int64)

    def share(chosen) -> list[float]:
        counts = np.bincount(chosen, minlength=UNKNOWN_KEY + 1)[:UNKNOWN_KEY].astype(np.float64)
        return (counts / max(counts.sum(), 1.0)).tolist()

    names = sorted({s for s in styles if s is not None})
    return share(keys), {name: share(keys[np.asarray([s == name for s in styles])]) for name in names}


def main(argv=None) -> int:
    from model.network.checkpoint import load_checkpoint, update_checkpoint
    from model.network.conditions import tune_key
    from model.representation.corpora import load_corpus, split_corpus
    from model.representation.styles import style_of
    p = argparse.ArgumentParser(description="Store a checkpoint's key priors (all tunes and per style), from its "
                                            "training split.")
    p.add_argument("--model", required=True, help="checkpoint to update in place")
    args = p.parse_args(argv)
    model, tokenizer, ckpt = load_checkpoint(args.model)
    if not model.config.key_dim:
        raise SystemExit(f"{args.model}: the network has no key input")
    trained = ckpt["train_config"]
    train = split_corpus(load_corpus(trained["data"], tokenizer.config, progress=False), seed=trained.get("seed", 0),
                         valid=trained.get("valid", 0.05), test=trained.get("test", 0.05))["train"]
    styles = [style_of(t.id) if style_of(t.id) in model.config.styles else None for t in train]
    prior, by_style = key_priors([tune_key(tokenizer, t.tokens) for t in train], styles)
    update_checkpoint(args.model, key_prior=prior, style_key_priors=by_style)
    print(f"{args.model}: key priors of {len(train)} training tunes, and of " +
          ", ".join(f"{sum(s == name for s in styles)} {name}" for name in by_style))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
