"""Scoring a melody network on held-out tunes.

Every tune is scored whole, from BOS with a zero state (the way generation starts), teacher
forced: the loss is the mean negative log-likelihood of each next token, in nats per token,
over every predicted token of every tune (BOS itself is never predicted; EOS is).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


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


def tune_positions(tokenizer, tokens: list[np.ndarray]) -> list[np.ndarray]:
    """The network's position input for every tune (see ``MelodyTokenizer.positions``)."""
    return [np.asarray(tokenizer.positions(t), dtype=np.int64) for t in tokens]


@torch.no_grad()
def tune_nll(model, tokenizer, tokens: list[np.ndarray], positions: list[np.ndarray] | None = None,
             batch_size: int = 32) -> tuple[float, int]:
    """(summed NLL in nats, number of predicted tokens) over whole tunes."""
    use_positions = model.config.position_dim > 0
    if use_positions and positions is None:
        positions = tune_positions(tokenizer, tokens)
    was_training = model.training
    model.eval()
    order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))  # similar lengths: little padding
    total, count = 0.0, 0
    try:
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            inputs, pos, targets = tune_batch([tokens[i] for i in idx],
                                              [positions[i] for i in idx] if use_positions else None,
                                              tokenizer.pad_id)
            logits, _ = model(inputs, pos)  # (B, T, V)
            total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=tokenizer.pad_id,
                                     reduction="sum").item()
            count += int((targets != tokenizer.pad_id).sum())
    finally:
        model.train(was_training)
    return total, count


def evaluate_model(model, tokenizer, tunes, batch_size: int = 32) -> dict:
    """Nats (and bits) per token of ``model`` on ``tunes`` (Tune objects or id sequences)."""
    tokens = token_arrays(tunes)
    if not tokens:
        raise ValueError("tunes must hold at least one tune, got none")
    nll, count = tune_nll(model, tokenizer, tokens, batch_size=batch_size)
    nats = nll / count
    return {"nats_per_token": nats, "bits_per_token": nats / math.log(2), "tokens": count, "tunes": len(tokens)}
