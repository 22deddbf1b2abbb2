"""A network's teacher-forced scores of whole tunes, shared by training (validation loss, the
short-term model fitted after training) and evaluation.

Every tune is scored whole, from BOS with a zero state (the way generation starts), teacher forced;
row j of a tune's distributions predicts token j + 1.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from model.network import shortterm
from model.network.conditions import tune_positions

def token_arrays(tunes) -> list[np.ndarray]:
    """Tune objects (with ``.tokens``) or id sequences -> int64 arrays."""
    return [np.asarray(getattr(t, "tokens", t), dtype=np.int64) for t in tunes]


def tune_batch(tokens: list[np.ndarray], positions: list[np.ndarray] | None, pad_id: int):
    """Whole tunes padded to one length -> (inputs (B,T), positions (B,T) or None, targets (B,T)).

    Targets are the inputs shifted by one; padding targets are ``pad_id`` (ignored by the loss).
    """
    T = max(len(t) for t in tokens)
    ids = torch.full((len(tokens), T), pad_id, dtype=torch.long)
    pos = torch.zeros((len(tokens), T), dtype=torch.long) if positions is not None else None
    for i, t in enumerate(tokens):
        ids[i, :len(t)] = torch.from_numpy(np.asarray(t, dtype=np.int64))
        if pos is not None:
            pos[i, :len(t)] = torch.from_numpy(np.asarray(positions[i], dtype=np.int64))
    return ids[:, :-1], None if pos is None else pos[:, :-1], ids[:, 1:]


def _whole_tune_batches(model, tokenizer, tokens: list[np.ndarray], positions: list[np.ndarray] | None,
                        batch_size: int, known_end: bool = True, known_key: bool = False, told=(), tune_ids=None):
    """Teacher-forced logits over whole tunes, batched by similar length (little padding), in eval mode:
    yields (tune indices, logits (B, T, V), targets (B, T)); row j of a tune's logits predicts token j + 1.
    ``told``: the tunes' own labels the network is told (``model.network.conditions.tune_positions``:
    form, chords, style from ``tune_ids``); the others read "unknown"."""
    use_positions = model.config.conditioned
    if use_positions and positions is None:
        positions = tune_positions(tokenizer, tokens, model.config, known_end, known_key, tune_ids=tune_ids,
                                   told=told)
    was_training = model.training
    model.eval()
    order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
    try:
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            inputs, pos, targets = tune_batch([tokens[i] for i in idx],
                                              [positions[i] for i in idx] if use_positions else None,
                                              tokenizer.pad_id)
            logits, _ = model(inputs, pos)  # (B, T, V)
            yield idx, logits, targets
    finally:
        model.train(was_training)


@torch.no_grad()
def tune_nll(model, tokenizer, tokens: list[np.ndarray], positions: list[np.ndarray] | None = None,
             batch_size: int = 32) -> tuple[float, int]:
    """(summed NLL in nats, number of predicted tokens) over whole tunes."""
    total, count = 0.0, 0
    for _, logits, targets in _whole_tune_batches(model, tokenizer, tokens, positions, batch_size):
        total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=tokenizer.pad_id,
                                 reduction="sum").item()
        count += int((targets != tokenizer.pad_id).sum())
    return total, count


@torch.no_grad()
def tune_distributions(model, tokenizer, tokens: list[np.ndarray], batch_size: int = 32, known_end: bool = True,
                       known_key: bool = False, told=(), tune_ids=None, positions=None):
    """Yields (index, natural-log next-token distributions (len - 1, V)) for every tune, row j
    predicting token j + 1, in an order of similar lengths (``told``, ``tune_ids``: ``_whole_tune_batches``;
    ``positions``: the tunes' condition ids, when the caller made them)."""
    for idx, logits, _ in _whole_tune_batches(model, tokenizer, tokens, positions, batch_size, known_end, known_key,
                                              told, tune_ids):
        log_p = torch.log_softmax(logits.double(), dim=-1)  # (B, T, V)
        for row, i in enumerate(idx):
            yield i, log_p[row, :len(tokens[i]) - 1].numpy()


TARGET_TOLD = ("form", "style")  # what target_logprobs tells the network of each tune (with its key)


def target_logprobs(model, tokenizer, tokens: list[np.ndarray], batch_size: int = 32,
                    known_key: bool = True, tune_ids=None, positions=None) -> list[np.ndarray]:
    """Per tune (in the order of ``tokens``): the network's natural-log probability of each true next
    token (a network with a key, form or style input told each tune's own, as generation tells it
    them by default: a key, a form plan, the requested style; chords only when a request gives them).
    ``positions``: those condition ids, when the caller made them (``tune_positions`` with TARGET_TOLD)."""
    out = [None] * len(tokens)
    for i, dist in tune_distributions(model, tokenizer, tokens, batch_size, known_key=known_key,
                                      told=TARGET_TOLD, tune_ids=tune_ids, positions=positions):
        out[i] = dist[np.arange(len(dist)), tokens[i][1:]]
    return out


def fit_short_term(model, tokenizer, tunes, batch_size: int = 32) -> tuple[shortterm.CopyModel, dict]:
    """The short-term model that best complements ``model`` on ``tunes`` (the valid split), and
    {"network_nats_per_token", "mixture_nats_per_token"} there; a network with a form input also gets
    gates per form relation (``shortterm.fit_relation_gates``, on each tune's own form, as a plan tells
    it) and the mixture's figure with the form told, ``form_told_mixture_nats_per_token``."""
    tokens = token_arrays(tunes)
    if not tokens:
        raise ValueError("tunes must hold at least one tune, got none")
    ids = [t.id for t in tunes] if all(hasattr(t, "id") for t in tunes) else None
    positions = relations = None
    if model.config.form_dim:  # what the network is told of each step's bar, read by the relation gates too
        positions = tune_positions(tokenizer, tokens, model.config, True, True, tune_ids=ids, told=TARGET_TOLD)
        relations = [model.config.fields(p)["relation"] for p in positions]
    stats = shortterm.collect(target_logprobs(model, tokenizer, tokens, batch_size, tune_ids=ids, positions=positions),
                              tokens,
                              last_bars=[shortterm.last_barline(t, tokenizer.bar_id) for t in tokens],
                              relations=relations)
    copy_model, nats = shortterm.fit(stats)
    figures = {"network_nats_per_token": float(-stats["net"].mean()), "mixture_nats_per_token": nats}
    if relations is not None:
        copy_model, figures["form_told_mixture_nats_per_token"] = shortterm.fit_relation_gates(stats, copy_model)
    return copy_model, figures
