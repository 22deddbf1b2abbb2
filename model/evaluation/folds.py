"""K-fold cross-validation by tune, the protocol music-cognition studies report (IDyOM: 10 folds).

The protocol (model/evaluation/protocol.py) is equal data (``from_scratch``: a fresh network per
fold) or transfer (the default: each fold fine-tunes a pretrained model that never saw the evaluated
tunes; the starting model's own figures on the held-out folds are reported beside, so the report
says what fine-tuning bought).

``fold_of`` assigns every tune to one of K folds by a hash of its id (stable, whatever else is in the
corpus; sizes differ by at most one). ``cross_validate`` trains a fresh network per fold on the other
folds with the given ``TrainConfig``, or fine-tunes one (a share ``valid`` of those tunes for validation and early
stopping, none for test), scores the held-out fold with and without the short-term model, and pools
the figures over every held-out note: each tune is scored exactly once, by a model that never saw it.
"""
from __future__ import annotations

import hashlib
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from model.representation.corpora import Corpus


def fold_assignment(tune_ids: list[str], folds: int, seed: int = 0) -> dict[str, int]:
    """{tune id: fold}: tunes ordered by a hash of (seed, id), then dealt out round-robin."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if len(set(tune_ids)) != len(tune_ids):
        raise ValueError("tune ids must be unique to partition by tune")
    if len(tune_ids) < folds:
        raise ValueError(f"folds must be at most the number of tunes ({len(tune_ids)}), got {folds}")
    order = sorted(tune_ids, key=lambda t: hashlib.sha256(f"{seed}:{t}".encode()).digest())
    return {t: i % folds for i, t in enumerate(order)}


def fold_corpora(corpus: Corpus, folds: int, seed: int = 0) -> list[tuple[Corpus, list]]:
    """Per fold: (a corpus of the other folds' tunes, the held-out tunes)."""
    fold = fold_assignment([t.id for t in corpus.tunes], folds, seed)
    out = []
    for k in range(folds):
        rest = [t for t in corpus.tunes if fold[t.id] != k]
        held = [t for t in corpus.tunes if fold[t.id] == k]
        out.append((replace(corpus, tunes=rest, provenance={**corpus.provenance, "fold": k, "folds": folds}), held))
    return out


def cross_validate(corpus: Corpus, folds: int, config, valid: float = 0.1, out_dir=None,
                   progress: bool = False) -> dict:
    """Train and score ``folds`` models (``config``: a TrainConfig; its data, out, valid and test are
    set per fold). Returns pooled and per-fold bits per note and pitch bits per note, for the network
    with its short-term model (``config.short_term``) and alone."""
    from model.network import shortterm
    from model.network.checkpoint import load_checkpoint
    from model.evaluation.report import prediction_figures, tune_scores
    from model.network.scoring import token_arrays
    from model.training.trainer import train
    from model.evaluation.protocol import choose_protocol
    config, protocol = choose_protocol(config, corpus)
    print(f"protocol: {protocol['text']}", file=sys.stderr, flush=True)
    start = load_checkpoint(protocol["start"]) if protocol["start"] else None
    names = ["mixture", "network_only"] + (["start_mixture", "start_network_only"] if start else [])
    results, pooled = [], {name: ([], [], []) for name in names}
    with tempfile.TemporaryDirectory(prefix="tunesmith-folds-") as tmp:
        folder = Path(out_dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for k, (train_corpus, held) in enumerate(fold_corpora(corpus, folds, config.seed)):
            fold_config = replace(config, out=str(folder / f"fold-{k}.pt"), valid=valid, test=0.0)
            run = train(fold_config, corpus=train_corpus, show_progress=progress)
            model, tokenizer, ckpt = load_checkpoint(fold_config.out)
            tokens = token_arrays(held)
            entry = {"fold": k, "tunes": len(held), "best_epoch": run["metrics"]["best_epoch"],
                     "valid_loss": run["metrics"]["valid_loss"], "recipe": run["recipe"]}
            copy_model = shortterm.CopyModel.from_checkpoint(ckpt) if config.short_term else None
            scored = [("mixture", model, copy_model), ("network_only", model, None)]
            if start:  # the starting model as it was, on the same held-out tunes
                scored += [("start_mixture", start[0], shortterm.CopyModel.from_checkpoint(start[2])),
                           ("start_network_only", start[0], None)]
            for name, net, cm in scored:
                if name.endswith("mixture") and cm is None:
                    continue
                logprobs, bits = tune_scores(net, tokenizer, tokens, copy_model=cm)
                figures = prediction_figures(logprobs, bits, tokens, tokenizer)
                entry[name] = {key: figures[key] for key in ("bits_per_note", "pitch_bits_per_note", "notes")}
                for acc, part in zip(pooled[name], (logprobs, bits, tokens)):
                    acc.extend(part)
            results.append(entry)
    report = {"folds": folds, "tunes": len(corpus.tunes), "protocol": protocol, "per_fold": results}
    for name, (logprobs, bits, tokens) in pooled.items():
        if tokens:
            figures = prediction_figures(logprobs, bits, tokens, tokenizer)
            report[name] = {key: figures[key] for key in ("bits_per_note", "pitch_bits_per_note", "notes", "tunes")}
    return report
