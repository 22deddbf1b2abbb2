"""Which cross-validation protocol a run follows, and the check that makes the transfer one honest.

* **equal data** (``from_scratch``): every fold trains a fresh network on the other folds only, as
  IDyOM was trained; nothing else is learnt from.
* **transfer** (the default): every fold fine-tunes a model pretrained elsewhere, ``init`` or the
  shipped model, on the other folds. Only fair when that model never saw the evaluated tunes: its
  training corpus (the spec its checkpoint records) is read and every evaluated tune is looked up
  in it, transposition aside (the same notes and rhythm a key higher are the same tune). One found,
  or a corpus that cannot be read, and the run is refused with a message saying what to do.

The shipped model was trained on all of Essen, kinder included, so kinder's transfer run needs a
model trained without kinder (docs/model-card.md gives the command); O'Neill's tunes it never saw.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from model import DEFAULT_MODEL_PATH
from model.network.checkpoint import read_checkpoint
from model.representation.corpora import Corpus, load_corpus
from model.representation.tokens import MelodyTokenizer, TokenizerConfig
from model.training.plan import start_problem


def tune_fingerprint(tokens, tokenizer: MelodyTokenizer) -> str:
    """A tune's tokens with every pitch taken relative to its first note (so a transposed copy matches)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    first_note = tokenizer.note_id(tokenizer.config.min_pitch)
    notes = tokens >= first_note
    shifted = np.where(notes, tokens - (tokens[notes][0] if notes.any() else 0) + 10_000, tokens)
    return hashlib.sha256(shifted.tobytes()).hexdigest()


def seen_tunes(ckpt: dict, tunes, tokenizer: MelodyTokenizer) -> tuple[str, list[str]]:
    """(the spec of the corpus the checkpoint was trained on, the ids of ``tunes`` found in it).
    Raises ValueError when that corpus cannot be read."""
    spec = (ckpt.get("data") or {}).get("spec") or (ckpt.get("train_config") or {}).get("data")
    try:
        pretrained = load_corpus(spec, tokenizer.config, progress=False)
    except (ValueError, TypeError, OSError) as e:
        raise ValueError(f"cannot check that the starting model never saw the evaluated tunes: its training "
                         f"corpus {spec!r} cannot be read ({e})") from None
    known = {tune_fingerprint(t.tokens, tokenizer) for t in pretrained.tunes}
    return spec, [t.id for t in tunes if tune_fingerprint(t.tokens, tokenizer) in known]


def choose_protocol(config, corpus: Corpus):
    """(the TrainConfig every fold trains with: a fresh network or ``init`` named, the protocol as a dict).
    Raises ValueError for a starting model that does not fit or that saw the evaluated tunes."""
    if config.from_scratch:
        return config, {"name": "equal data", "start": None,
                        "text": "equal data: a fresh network per fold, trained on the other folds only"}
    start = config.init or str(DEFAULT_MODEL_PATH)
    ckpt = read_checkpoint(start)
    tokenizer = MelodyTokenizer(corpus.tokenizer_config or TokenizerConfig())
    problem = start_problem(ckpt, config.network_config(tokenizer), tokenizer)
    if problem:
        raise ValueError(f"the transfer protocol cannot start from {start}: {problem}; "
                         "name another model with --init, or use --from-scratch (equal data)")
    spec, seen = seen_tunes(ckpt, corpus.tunes, tokenizer)
    if seen:
        raise ValueError(f"the transfer protocol needs a starting model that never saw the evaluated tunes, but "
                         f"{start} was trained on {spec}, which holds {len(seen)} of the {len(corpus.tunes)} "
                         f"(e.g. {seen[0]}); use --from-scratch (equal data), or --init a model trained without "
                         "them (docs/model-card.md: a model of Essen without kinder)")
    return replace(config, init=start), {
        "name": "transfer", "start": start, "start_trained_on": spec, "seen_tunes": 0,
        "text": f"transfer: each fold fine-tunes {start} (trained on {spec}, which holds none of the "
                f"{len(corpus.tunes)} evaluated tunes) on the other folds"}
