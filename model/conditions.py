"""The network's condition input at every token: the position in the bar and the bars remaining.

``condition_ids`` packs both into one id per token (``NetworkConfig.condition_id``), for training,
scoring (``model.evaluation``) and generation (``model.rows``) alike, so the three read the same
numbers. No torch here: it works on token ids and the tokenizer's grammar.
"""
from __future__ import annotations

import numpy as np


def condition_ids(tokenizer, ids, config, known_end: bool = True) -> list[int]:
    """The network's condition input at every index of ``ids`` (``NetworkConfig.condition_id``): the
    position in the bar of the next grid step and, when ``known_end``, the bars remaining after token
    i (``MelodyTokenizer.bars_remaining``), else "unknown"."""
    positions = tokenizer.positions(ids)
    if not config.remaining_dim:
        return positions
    remaining = tokenizer.bars_remaining(ids) if known_end else [None] * len(positions)
    return [config.condition_id(p, r) for p, r in zip(positions, remaining)]


def tune_positions(tokenizer, tokens: list[np.ndarray], config=None, known_end: bool = True) -> list[np.ndarray]:
    """The network's condition input for every tune (see ``condition_ids``; config None: positions only)."""
    if config is None:
        return [np.asarray(tokenizer.positions(t), dtype=np.int64) for t in tokens]
    return [np.asarray(condition_ids(tokenizer, t, config, known_end), dtype=np.int64) for t in tokens]
