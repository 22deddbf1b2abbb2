"""Form figures of a set of tunes: how often bars come back, pickups, first bars, section forms.

The labels are ``model.representation.form``'s, read the same way from generated and real tunes:
- ``exact_repeat_share``: bars that repeat an earlier bar exactly, over all bars (first bars included);
- ``rhythm_repeat_share``: bars whose rhythm (onset/hold/rest pattern) an earlier bar has, exact
  repeats included, over all bars; ``variant_share``: bars labelled ``variant``;
- ``pickup_share``: tunes whose first bar is a pickup; ``first_note_position``: the mean position of
  a tune's first note in its bar, as a fraction of the bar; ``empty_first_bars``: tunes whose first
  bar is all rests (a count);
- ``forms``: the share of each section form (4-bar phrases, 2 below 8 bars), the ``MAX_FORMS``
  commonest, the rest as "other".
"""
from __future__ import annotations

import math
from collections import Counter

from model.representation.form import EXACT, NEW, VARIANT, tune_form

MAX_FORMS = 12


def form_statistics(melodies, tokenizer) -> dict:
    """The figures in the module docstring for token sequences ``melodies``."""
    forms = [tune_form([int(t) for t in ids], tokenizer) for ids in melodies]
    forms = [f for f in forms if f["bars"]]
    bars = sum(f["bars"] for f in forms)
    if not forms or not bars:
        return {"tunes": 0, "bars": 0, "exact_repeat_share": math.nan, "rhythm_repeat_share": math.nan,
                "variant_share": math.nan, "pickup_share": math.nan, "first_note_position": math.nan,
                "empty_first_bars": 0, "forms": {}}
    kinds = Counter(label.kind for f in forms for label in f["labels"])
    positions = [f["first_note_position"] for f in forms if f["first_note_position"] is not None]
    counted = Counter(f["form"] for f in forms).most_common()
    shares = {form: n / len(forms) for form, n in counted[:MAX_FORMS]}
    if len(counted) > MAX_FORMS:
        shares["other"] = sum(n for _, n in counted[MAX_FORMS:]) / len(forms)
    return {"tunes": len(forms), "bars": bars,
            "exact_repeat_share": kinds[EXACT] / bars,
            "rhythm_repeat_share": (bars - kinds[NEW]) / bars,
            "variant_share": kinds[VARIANT] / bars,
            "pickup_share": sum(f["pickup"] for f in forms) / len(forms),
            "first_note_position": sum(positions) / len(positions) if positions else math.nan,
            "empty_first_bars": sum(f["empty_first_bar"] for f in forms),
            "forms": shares}
