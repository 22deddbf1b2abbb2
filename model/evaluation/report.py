"""Scoring a melody network (and the n-gram reference) on held-out tunes, and its melodies against real ones.

Every tune is scored whole, from BOS with a zero state (the way generation starts), teacher
forced: the loss is the mean negative log-likelihood of each next token, in nats per token,
over every predicted token of every tune (BOS itself is never predicted; EOS is).
From the same next-token distributions come bits per note and pitch bits per note
(`model.evaluation.metrics`), for the network and for the Kneser-Ney model alike (`prediction_figures`).
`sample_statistics` generates melodies and compares their histograms, in-scale ratio and
degenerate share with the reference split; `evaluate_report` is everything `tunesmith evaluate` prints.
"""
from __future__ import annotations

import math

import numpy as np

from model.evaluation import metrics, ngram
from model.network import shortterm
from model.network.conditions import tune_positions
from model.network.scoring import fit_short_term, token_arrays, tune_distributions










def evaluate_model(model, tokenizer, tunes, batch_size: int = 32, copy_model=None, known_end: bool = True,
                   known_key: bool = False, told=()) -> dict:
    """Nats and bits per token, bits per note and pitch bits per note of ``model`` on ``tunes``
    (Tune objects or id sequences); with ``copy_model`` (a ``model.network.shortterm.CopyModel``), of the
    network mixed with that short-term model. A network with a key input reads "unknown" unless
    ``known_key`` (then each tune's own key, estimated from all its notes: a figure of the model
    given the key, not comparable with models that read no key); one with form, chord or style
    inputs reads them "unknown" except those named in ``told`` (each tune's own labels)."""
    tokens = token_arrays(tunes)
    if not tokens:
        raise ValueError("tunes must hold at least one tune, got none")
    ids = [t.id for t in tunes] if all(hasattr(t, "id") for t in tunes) else None
    logprobs, bits = tune_scores(model, tokenizer, tokens, batch_size=batch_size, copy_model=copy_model,
                                 known_end=known_end, known_key=known_key, told=told, tune_ids=ids)
    return prediction_figures(logprobs, bits, tokens, tokenizer)




def tune_scores(model, tokenizer, tokens: list[np.ndarray], batch_size: int = 32, copy_model=None,
                known_end: bool = True, known_key: bool = False, told=(),
                tune_ids=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per tune: the natural-log probability of each predicted token (len - 1,) and the pitch bits of
    each note onset (see ``model.evaluation.metrics.pitch_bits``), in the order of ``tokens``; with
    ``copy_model``, of the mixture with the short-term model."""
    logprobs, bits = [None] * len(tokens), [None] * len(tokens)
    positions = relations = None
    if copy_model is not None and copy_model.relation_gate is not None and model.config.form_dim and "form" in told:
        # the short-term model reads the form relation the network is told (its own gates per relation)
        positions = tune_positions(tokenizer, tokens, model.config, known_end, known_key, tune_ids=tune_ids, told=told)
        relations = [model.config.fields(p)["relation"] for p in positions]
    for i, dist in tune_distributions(model, tokenizer, tokens, batch_size, known_end, known_key, told, tune_ids,
                                      positions):
        if copy_model is not None:  # the last bar has its own gate when the end is known
            dist = copy_model.mix(dist, tokens[i], shortterm.last_barline(tokens[i], tokenizer.bar_id) if known_end else None,
                                  relations=None if relations is None else relations[i])
        logprobs[i] = dist[np.arange(len(dist)), tokens[i][1:]]
        bits[i] = metrics.pitch_bits(dist, tokens[i], tokenizer)
    return logprobs, bits






def prediction_figures(logprobs: list[np.ndarray], pitch_bits: list[np.ndarray], tokens: list[np.ndarray],
                       tokenizer) -> dict:
    """The prediction figures of any model from its per-token log-probabilities and per-note pitch bits."""
    count = sum(len(lp) for lp in logprobs)
    nats = -sum(float(lp.sum()) for lp in logprobs) / count
    onsets = np.concatenate(pitch_bits) if pitch_bits else np.zeros(0)
    return {"nats_per_token": nats, "bits_per_token": nats / math.log(2),
            "bits_per_note": metrics.corpus_bits_per_note(zip(logprobs, tokens), tokenizer),
            "pitch_bits_per_note": float(onsets.mean()) if len(onsets) else math.nan,
            "tokens": count, "notes": int(len(onsets)), "tunes": len(tokens)}


# ---- the n-gram reference ----------------------------------------------------------------------

NGRAM_ORDERS = range(3, 25)  # on 16th-note grid tokens the best order is long: 24 tokens = 1.5 bars of 4/4


def fit_ngram(train, valid, tokenizer, orders=NGRAM_ORDERS):
    """A Kneser-Ney model on the training tunes with the order that scores best on the validation tunes;
    returns (model, {order: valid nats per token}). On Essen (1.6M training tokens) validation loss
    keeps falling up to order ~24 (1.05 nats/token at order 8, 0.91 at 24); orders 3..24 take ~1 GB, ~40 s."""
    return ngram.select_order(token_arrays(train), token_arrays(valid), tokenizer.vocab_size, orders,
                              exclude_ids=[tokenizer.pad_id, tokenizer.bos_id])


def evaluate_ngram(model, tokenizer, tunes) -> dict:
    """The same figures as ``evaluate_model`` for a ``model.evaluation.ngram.KneserNeyModel``."""
    tokens = token_arrays(tunes)
    if not tokens:
        raise ValueError("tunes must hold at least one tune, got none")
    logprobs = model.score(tokens)
    bits = [metrics.pitch_bits(model.log_probabilities(t), t, tokenizer) for t in tokens]
    return {**prediction_figures(logprobs, bits, tokens, tokenizer), "order": model.order}


# ---- generated melodies against the reference split --------------------------------------------

def sample_statistics(generator, tokenizer, reference, count: int = 100, seed: int = 0, max_bars: int = 32,
                      **params) -> dict:
    """Generate ``count`` melodies with ``generator`` (a ``model.generation.sampling.Generator``) at the default
    sampling settings (``params`` override them) and compare them with the ``reference`` tunes.

    Melody i takes the meter and the number of bars (at most ``max_bars``) of a reference tune drawn
    with ``seed``, and seed ``seed + i``, so the two sets have the same mix of meters and lengths."""
    from model.generation.params import GenerationParams
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    ref = token_arrays(reference)
    if not ref:
        raise ValueError("reference must hold at least one tune, got none")
    from model.generation.endings import ending_statistics
    from model.evaluation.form_figures import form_statistics
    rng = np.random.default_rng(seed)
    generated, matched, redrawn = [], [], 0
    for i, r in enumerate(rng.integers(0, len(ref), size=count)):
        _, meters = tokenizer.decode_notes(ref[r])
        bars = max(1, min(tokenizer.bar_count(ref[r]), max_bars))
        gen = generator.generate(GenerationParams(bars=bars, meter=meters[0][1], seed=seed + i, **params))
        generated.append(gen.melodies[0].tokens)
        redrawn += gen.melodies[0].info.get("redrawn", 0) > 0
        if tokenizer.bar_count(ref[r]) <= max_bars:
            matched.append(ref[r])
    key, scale = params.get("key"), params.get("scale") or ("major" if params.get("key") else None)
    return {**metrics.compare_melodies(generated, ref, tokenizer, key=key, scale=scale),
            # the quality gate's work: melodies whose first draw was degenerate (redrawn before returning)
            "redrawn_share": redrawn / count,
            # how they end, beside the reference tunes (all of them, and those the draws could match in length)
            "endings": ending_statistics(generated, tokenizer),
            "reference_endings": ending_statistics(ref, tokenizer),
            "reference_endings_matched": ending_statistics(matched, tokenizer),
            # their form: bars that come back (exactly, by rhythm), pickups, empty first bars, section forms
            "form": form_statistics(generated, tokenizer),
            "reference_form": form_statistics(ref, tokenizer),
            "reference_form_matched": form_statistics(matched, tokenizer),
            "seed": seed, "max_bars": max_bars,
            "params": {k: v for k, v in params.items()}}


def checkpoint_splits(checkpoint, data: str | None = None, corpus=None, progress: bool = False):
    """(network, tokenizer, checkpoint dict, data spec, {train, valid, test} tunes) of a checkpoint:
    its corpus is ``corpus``, else ``data`` loaded, else the data it was trained on, split as in training."""
    from model.network.checkpoint import load_checkpoint
    from model.representation.corpora import load_corpus, split_corpus
    model, tokenizer, ckpt = load_checkpoint(checkpoint)
    trained = ckpt.get("train_config") or {}
    data = data or trained.get("data")
    if corpus is None:
        if not data:
            raise ValueError("data must be given (the checkpoint does not name its training data)")
        corpus = load_corpus(data, tokenizer.config, progress=progress)
    splits = split_corpus(corpus, seed=trained.get("seed", 0), valid=trained.get("valid", 0.05),
                          test=trained.get("test", 0.05))
    return model, tokenizer, ckpt, data, splits


def add_short_term(checkpoint, data: str | None = None, corpus=None, progress: bool = False) -> dict:
    """Fit the short-term model to a checkpoint's network on the valid split of its corpus (``data``
    or the one it was trained on) and store it in the checkpoint (what ``tunesmith train`` does at
    the end of a run); returns the fitted parameters and the valid figures."""
    from model.network.checkpoint import update_checkpoint
    model, tokenizer, _, data, splits = checkpoint_splits(checkpoint, data, corpus, progress)
    if not splits["valid"]:
        raise ValueError(f"the valid split of {data!r} holds no tunes")
    copy_model, figures = fit_short_term(model, tokenizer, splits["valid"])
    update_checkpoint(checkpoint, short_term=copy_model.to_dict())
    return {"model": str(checkpoint), "data": data, "short_term": copy_model.to_dict(), "valid": figures}


# ---- everything `tunesmith evaluate` prints ----------------------------------------------------

def evaluate_report(checkpoint=None, data: str | None = None, split: str = "test", samples: int = 100,
                    ngram_model: str | None = "auto", ngram_out: str | None = None, seed: int = 0,
                    progress: bool = False, corpus=None, ngram_orders=NGRAM_ORDERS, short_term: bool = True) -> dict:
    """Score a checkpoint (None = the shipped model) on a split of its corpus; with ``ngram_model``
    ("auto": fit on the train split, best of ``ngram_orders`` on the valid split; or a saved model's path; None:
    skip) score the n-gram reference on the same tunes; with ``samples`` > 0 generate that many
    melodies and compare them with the split. ``corpus`` replaces loading ``data``. With the
    checkpoint's short-term model (and ``short_term``), the figures and samples are the mixture's and
    ``network_only`` holds the network's own figures; ``short_term=False`` leaves it out everywhere."""
    from model import DEFAULT_MODEL_PATH
    from model.generation.sampling import Generator
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be train, valid or test, got {split!r}")
    path = checkpoint if checkpoint is not None else DEFAULT_MODEL_PATH
    model, tokenizer, ckpt, data, splits = checkpoint_splits(path, data, corpus, progress)
    if not splits[split]:
        raise ValueError(f"split {split!r} of {data!r} holds no tunes")
    copy_model = shortterm.CopyModel.from_checkpoint(ckpt) if short_term else None
    report = {"model": str(path), "data": data, "split": split,
              **evaluate_model(model, tokenizer, splits[split], copy_model=copy_model)}
    if copy_model is not None:  # the figures above are the network with its short-term model; these without
        report["short_term"] = copy_model.to_dict()
        report["network_only"] = evaluate_model(model, tokenizer, splits[split])
    if model.config.remaining_dim:  # the same tunes read with their end hidden (as a length range samples)
        report["end_unknown"] = evaluate_model(model, tokenizer, splits[split], copy_model=copy_model, known_end=False)
    if model.config.key_dim:  # the figures above read the key as unknown; these are given each tune's own key
        report["key_known"] = evaluate_model(model, tokenizer, splits[split], copy_model=copy_model, known_key=True)
    if model.config.style_dim:  # each tune's style (its collection), as a request names one
        report["style_known"] = evaluate_model(model, tokenizer, splits[split], copy_model=copy_model, told=("style",))
    if model.config.form_dim:  # each tune's own form alone, as a default request tells its sampled plan
        report["form_known"] = evaluate_model(model, tokenizer, splits[split], copy_model=copy_model, told=("form",))
    if model.config.form_dim or model.config.chord_dim:  # and its own form and chords: the network given the plan
        report["plan_known"] = evaluate_model(model, tokenizer, splits[split], copy_model=copy_model,
                                              known_key=True, told=("form", "chords", "style"))
    if ngram_model:
        if ngram_model == "auto":
            kn, table = fit_ngram(splits["train"], splits["valid"], tokenizer, ngram_orders)
            report["ngram"] = {**evaluate_ngram(kn, tokenizer, splits[split]), "fitted_on": "train",
                               "valid_nats_per_token_by_order": {str(k): v for k, v in table.items()}}
        else:
            kn = ngram.KneserNeyModel.load(ngram_model)
            report["ngram"] = {**evaluate_ngram(kn, tokenizer, splits[split]), "file": str(ngram_model)}
        if ngram_out:
            kn.save(ngram_out)
    generator = Generator(path) if samples else None
    if samples:
        report["samples"] = sample_statistics(generator, tokenizer, splits[split], count=samples, seed=seed,
                                              **({} if short_term else {"short_term": False}))
    if model.config.style_dim:  # each style's tunes of the split, told their style, and melodies asked for it
        report["styles"] = style_report(model, tokenizer, splits[split], copy_model, generator, samples, seed,
                                        short_term)
    return report


def style_report(model, tokenizer, tunes, copy_model, generator, samples: int, seed: int, short_term: bool) -> dict:
    """Per style of the network's that ``tunes`` hold: their figures with the style told, and (with
    ``samples``) sample statistics of melodies requested in that style against them."""
    from model.representation.styles import style_of
    out = {}
    for name in model.config.styles:
        own = [t for t in tunes if style_of(getattr(t, "id", "")) == name]
        if not own:
            continue
        out[name] = {"tunes": len(own), **evaluate_model(model, tokenizer, own, copy_model=copy_model, told=("style",))}
        if samples:
            out[name]["samples"] = sample_statistics(generator, tokenizer, own, count=samples, seed=seed, style=name,
                                                     **({} if short_term else {"short_term": False}))
    return out
