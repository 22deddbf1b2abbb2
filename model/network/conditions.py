"""The network's condition input at every token: the position in the bar, the bars remaining and
the tune's key.

``condition_ids`` packs them into one id per token (``NetworkConfig.condition_id``), for training,
scoring (``model.evaluation.report``) and generation (``model.generation.rows``) alike, so the three read the same
numbers. No torch here: it works on token ids and the tokenizer's grammar.

The **key** is what an ABC tune states in its header: a tonic and a mode. For a training tune it is
the Krumhansl-Schmuckler estimate of its notes (``tune_key``), as id tonic + 12 for minor (0..23;
24: unknown). Generation sets it from the requested key and scale, else from the primer's key
signature, else draws one from the training tunes' keys (``model.generation.sampling``), so the melody is
written in a key from its first note, as a folk tune is, and ends in it.
"""
from __future__ import annotations

import numpy as np

MINOR_SCALES = ("minor", "harmonic_minor", "dorian", "phrygian", "pentatonic_minor")  # the minor key ids


def key_id(tonic_pc: int, scale: str | None = None) -> int:
    """The key id of a tonic pitch class and a scale (or mode: "major"/"minor"; None: major)."""
    return int(tonic_pc) % 12 + (12 if scale in MINOR_SCALES else 0)


def tune_key(tokenizer, ids) -> int | None:
    """The key id of a tune's notes (Krumhansl-Schmuckler), or None when it has no notes."""
    from model.representation.keys import estimate_key
    from model.representation.tokens import melody_notes
    notes, _, _ = melody_notes([int(t) for t in ids], tokenizer)
    if not notes:
        return None
    tonic, mode, _ = estimate_key(notes)
    return key_id(tonic, mode)


def condition_ids(tokenizer, ids, config, known_end: bool = True, key: int | None = None) -> list[int]:
    """The network's condition input at every index of ``ids`` (``NetworkConfig.condition_id``): the
    position in the bar of the next grid step, when ``known_end`` the bars remaining after token i
    (``MelodyTokenizer.bars_remaining``), else "unknown", and the key id ``key`` (None: unknown)."""
    positions = tokenizer.positions(ids)
    if not config.remaining_dim and not config.key_dim:
        return positions
    remaining = tokenizer.bars_remaining(ids) if known_end and config.remaining_dim else [None] * len(positions)
    return [config.condition_id(p, r, key) for p, r in zip(positions, remaining)]


def tune_positions(tokenizer, tokens: list[np.ndarray], config=None, known_end: bool = True,
                   known_key: bool = True) -> list[np.ndarray]:
    """The network's condition input for every tune (see ``condition_ids``; config None: positions
    only); with ``known_key`` each tune's own key (``tune_key``), else "unknown"."""
    if config is None:
        return [np.asarray(tokenizer.positions(t), dtype=np.int64) for t in tokens]
    keys = [tune_key(tokenizer, t) if known_key and config.key_dim else None for t in tokens]
    return [np.asarray(condition_ids(tokenizer, t, config, known_end, k), dtype=np.int64) for t, k in zip(tokens, keys)]
