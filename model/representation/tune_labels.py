"""The labels of a training tune that become the network's form and chord inputs, per token.

Every condition of the network describes the **next grid step** after token i (as the position in
the bar does, ``MelodyTokenizer.positions``): the form input is the label of the bar that step lies
in (``model.representation.form``: its relation to an earlier bar and how many bars back), the chord
input the chord under that step (``model.representation.harmony``'s estimate of the tune's own
chords). Both cost nothing but a pass over the tokens, so every training tune carries them. After
the last grid step (the final barline, EOS) the last bar's values stay. Nothing here imports torch.
"""
from __future__ import annotations

from bisect import bisect_right

from model.representation.form import NEW, BarLabel, bar_labels, relation_pointer, tune_bars
from model.representation.harmony import HarmonyModel, score_chord_steps


def next_step_places(ids, tokenizer) -> list[tuple[int, int]]:
    """Per index i: (bar index, grid step from the tune's start) of the next grid step after token i."""
    ids = [int(t) for t in ids]
    out = [(0, 0)] * len(ids)
    bar, steps, nxt = -1, 0, None
    places = []  # (index, bar, absolute step) of every step token
    for i, t in enumerate(ids):
        if t == tokenizer.bar_id:
            bar += 1
        elif tokenizer.is_step(t):
            places.append((i, max(bar, 0), steps))
            steps += 1
    k = len(places)
    for i in range(len(ids) - 1, -1, -1):  # the nearest step token after i
        while k > 0 and places[k - 1][0] > i:
            k -= 1
            nxt = places[k]
        if nxt is None:  # after the last step: the last bar, the step after the end
            out[i] = (max(bar, 0), steps)
        else:
            out[i] = (nxt[1], nxt[2])
    return out


def form_labels(ids, tokenizer, places=None) -> list[tuple[int, int]]:
    """Per index: the (relation id, pointer id) of the bar holding the next grid step (``form.relation_pointer``)."""
    places = places or next_step_places(ids, tokenizer)
    labels = bar_labels(tune_bars(ids, tokenizer), tokenizer)
    per_bar = [relation_pointer(lab, b) for b, lab in enumerate(labels)] or [relation_pointer(BarLabel(NEW, None), 0)]
    return [per_bar[min(bar, len(per_bar) - 1)] for bar, _ in places]


def chord_labels(ids, tokenizer, harmony: HarmonyModel, places=None) -> list[int | None]:
    """Per index: the id of the estimated chord under the next grid step (None where there is none:
    a tune without notes)."""
    places = places or next_step_places(ids, tokenizer)
    try:
        spans = score_chord_steps(tokenizer.score(ids), harmony)
    except ValueError:
        return [None] * len(places)
    if not spans:
        return [None] * len(places)
    starts = [s for s, _, _ in spans]
    ids_ = [c.id for _, _, c in spans]
    return [ids_[max(0, bisect_right(starts, step) - 1)] for _, step in places]  # the last span starting <= step
