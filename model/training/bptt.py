"""The mechanics of backpropagation through time: the loss over a window with the truncation every
k steps (``repackage_state`` is the truncation, named), and gradient clipping by total norm.

``model/training/trainer.py`` runs these once per optimizer step; full BPTT is ``k`` = the window length.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def repackage_state(state):
    """Detach the recurrent state from the graph that made it: the truncation of truncated BPTT.

    The values carry on into the next chunk; gradients stop here.
    """
    if isinstance(state, torch.Tensor):
        return state.detach()
    return tuple(repackage_state(s) for s in state)


def bptt_loss(model, inputs, positions, targets, state, k: int, pad_id: int, weights=None):
    """Summed cross-entropy over a window (B, T), backpropagating at most ``k`` steps; with
    ``weights`` (B, T), each target's loss is multiplied by its weight.

    The state is detached every k steps (and on entry, cutting it off from the previous window).
    Returns (summed loss, final state).
    """
    total = 0.0
    for s in range(0, inputs.shape[1], k):
        state = repackage_state(state) if state is not None else None
        pos = positions[:, s:s + k] if positions is not None else None
        logits, state = model(inputs[:, s:s + k], pos, state)  # (B, k, V)
        if weights is None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets[:, s:s + k].flatten(),
                                   ignore_index=pad_id, reduction="sum")
        else:
            loss = (F.cross_entropy(logits.flatten(0, 1), targets[:, s:s + k].flatten(), ignore_index=pad_id,
                                    reduction="none") * weights[:, s:s + k].flatten()).sum()
        total = total + loss
    return total, state


def clip_gradients(model, max_norm: float) -> float:
    """Scale all gradients together so their total L2 norm is at most ``max_norm``; returns the norm
    before clipping. One exploding step (long dependencies through tanh/sigmoid can blow up) then
    cannot throw the weights far, while the gradient's direction is kept."""
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
