"""A tune's form read from its tokens: which bars come back, its sections, and whether it has a pickup.

Everything here is read from the step tokens of each bar (``model.representation.tokens``: NOTE_p,
HOLD, REST, ``bar_steps`` of them a bar), so the labels cost nothing to compute for every training
tune and a generated melody is read the same way.

**Bar labels.** Each bar is compared with every earlier bar of the same length:
- ``exact``: the same step tokens (same onsets, same holds and rests, same pitches);
- ``variant``: the same rhythm and more than half of its onsets on the same pitch (but not all);
- ``rhythm``: the same rhythm (the onset/hold/rest pattern), half of the pitches or fewer the same;
- ``new``: none of these.
The label is the best kind found (exact > variant > rhythm) and ``ref`` the nearest earlier bar of
that kind: the nearest, because a folk tune varies the bar it has just stated more often than one
it stated long ago, and because it needs no phrase length. A bar that starts with HOLD (a note
tied over the barline) only matches bars that do too. The first bar is always ``new``.

**Pickup.** The tokenizer pads a short first measure (an anacrusis) with leading rests
(``model.representation.parsing.encode_stream``), so a tune has a pickup when its first bar begins
with REST and holds a note. A first bar of nothing but rests is an *empty* first bar, which no
Essen tune has. The first note's position is its grid step in its bar over the bar's steps.

**Sections.** ``section_form`` splits the bars into phrases of ``phrase_bars`` bars, counted from the
first full bar (a pickup bar is left out; a short last phrase is compared on the bars it has) and
gives each a letter: the letter of the first earlier section (each letter's first statement) whose
bars it repeats exactly throughout; that letter primed (A') when at least half of its bars repeat
that section's exactly or as variants (a B that only shares A's rhythm is a B); else the next new letter. ``phrase_length``
is the default: 4 bars, 2 in a tune of fewer than 8.

``python -m model.representation.form --data music21:styles --out model/weights/forms.json``
writes the table of training tunes' bar labels that generation samples default forms from
(``model.generation.form_plan``): all of them, and those of each style apart, so that a request for
a style draws its form from that tradition's tunes.
"""
from __future__ import annotations

import argparse
import json
import string
from dataclasses import dataclass

EXACT, VARIANT, RHYTHM, NEW = "exact", "variant", "rhythm", "new"
KIND_CODES = {EXACT: "e", VARIANT: "v", RHYTHM: "r", NEW: "n"}  # the table's one-letter codes
REST_CODE, HOLD_CODE, ONSET_CODE = 0, 1, 2                      # a step's part in a bar's rhythm
TABLE_FORMAT = 2  # 2: "plans" of all training tunes and "styles": the same per style (1: "plans" only)
# the network's form input (model.network.conditions): a relation id per label, and the pointer, how many
# bars back the bar refers (1..MAX_POINTER; a bar further back or a new bar has none)
RELATION_IDS = {NEW: 0, EXACT: 1, RHYTHM: 2, VARIANT: 3}
MAX_POINTER = 16
NO_POINTER = MAX_POINTER                           # the pointer id of a bar that refers to none
MAX_PLANS = 24  # plans kept per (meter, bars) in the table: a seeded sample of the training tunes'


@dataclass(frozen=True)
class BarLabel:
    kind: str              # exact, variant, rhythm or new
    ref: int | None        # the bar it refers to (0-based), None for a new bar


def tune_bars(ids, tokenizer) -> list[tuple[int, ...]]:
    """The step tokens of every bar of a tune (or of a prefix: its last bar may be short)."""
    bars = []
    for t in ids:
        t = int(t)
        if t == tokenizer.bar_id:
            bars.append([])
        elif bars and tokenizer.is_step(t):
            bars[-1].append(t)
    return [tuple(b) for b in bars]


def rhythm_of(bar, tokenizer) -> tuple[int, ...]:
    """A bar's rhythm: per step REST_CODE, HOLD_CODE or ONSET_CODE."""
    return tuple(REST_CODE if t == tokenizer.rest_id else HOLD_CODE if t == tokenizer.hold_id else ONSET_CODE
                 for t in bar)


def _kind(bar, other, rhythm, other_rhythm, tokenizer) -> str:
    if bar == other:
        return EXACT
    if rhythm != other_rhythm:
        return NEW
    onsets = [i for i, code in enumerate(rhythm) if code == ONSET_CODE]
    same = sum(bar[i] == other[i] for i in onsets)
    return VARIANT if onsets and same * 2 > len(onsets) else RHYTHM


def bar_labels(bars, tokenizer) -> list[BarLabel]:
    """Per bar, its label and the bar it refers to (the rule in the module docstring)."""
    rhythms = [rhythm_of(b, tokenizer) for b in bars]
    rank = {EXACT: 3, VARIANT: 2, RHYTHM: 1, NEW: 0}
    labels = []
    for b, bar in enumerate(bars):
        best, ref = NEW, None
        for j in range(b - 1, -1, -1):  # nearest first: a later match of the same kind does not replace it
            if len(bars[j]) != len(bar):
                continue
            kind = _kind(bar, bars[j], rhythms[b], rhythms[j], tokenizer)
            if rank[kind] > rank[best]:
                best, ref = kind, j
                if kind == EXACT:
                    break
        labels.append(BarLabel(best, ref))
    return labels


def relation_pointer(label: BarLabel, bar: int) -> tuple[int, int]:
    """A bar's label as the network's form input: (relation id, pointer id: bars back - 1, or
    NO_POINTER for a new bar or one further back than MAX_POINTER)."""
    back = bar - label.ref if label.ref is not None else None
    return RELATION_IDS[label.kind], (back - 1 if back is not None and back <= MAX_POINTER else NO_POINTER)


def first_onset(bars, tokenizer) -> tuple[int, int] | None:
    """(bar index, step in the bar) of the tune's first note, None when it has none."""
    for b, bar in enumerate(bars):
        for i, t in enumerate(bar):
            if tokenizer.pitch_of(t) is not None:
                return b, i
    return None


def has_pickup(bars, tokenizer) -> bool:
    """Whether the first bar is a pickup: it begins with rests and holds a note."""
    return bool(bars) and bars[0][:1] == (tokenizer.rest_id,) and first_onset(bars[:1], tokenizer) is not None


def empty_first_bar(bars, tokenizer) -> bool:
    """Whether the first bar is nothing but rests."""
    return bool(bars) and all(t == tokenizer.rest_id for t in bars[0])


def phrase_length(bar_count: int) -> int:
    """The default phrase length of ``section_form``: 4 bars, 2 in a tune of fewer than 8 bars."""
    return 4 if bar_count >= 8 else 2


def section_form(bars, tokenizer, phrase_bars: int | None = None) -> str:
    """The tune's sections as letters, e.g. "AABA'" (the rule in the module docstring)."""
    if bars and has_pickup(bars, tokenizer) and len(bars) > 1:
        bars = bars[1:]
    phrase_bars = phrase_bars or phrase_length(len(bars))
    phrases = [bars[i:i + phrase_bars] for i in range(0, len(bars), phrase_bars)]
    letters, firsts, out = iter(string.ascii_uppercase), [], []
    for phrase in phrases:
        best = None  # (score, letter) of the best earlier section it repeats
        for letter, first in firsts:
            pairs = list(zip(phrase, first))
            kinds = [_kind(a, b, rhythm_of(a, tokenizer), rhythm_of(b, tokenizer), tokenizer) for a, b in pairs]
            if all(k == EXACT for k in kinds):
                score, name = 2, letter
            elif sum(k in (EXACT, VARIANT) for k in kinds) * 2 >= len(pairs):
                score, name = 1, letter + "'"
            else:
                continue
            if best is None or score > best[0]:
                best = (score, name)
        if best is None:
            letter = next(letters, "?")
            firsts.append((letter, phrase))
            out.append(letter)
        else:
            out.append(best[1])
    return "".join(out)


def tune_form(ids, tokenizer) -> dict:
    """Everything this module reads from one tune: labels, pickup, first note, sections."""
    bars = tune_bars(ids, tokenizer)
    onset = first_onset(bars, tokenizer)
    return {"bars": len(bars), "labels": bar_labels(bars, tokenizer), "pickup": has_pickup(bars, tokenizer),
            "empty_first_bar": empty_first_bar(bars, tokenizer),
            "first_onset": onset, "first_note_position": onset[1] / len(bars[onset[0]]) if onset else None,
            "form": section_form(bars, tokenizer)}


# ---- the table of training tunes' forms --------------------------------------------------------

def encode_labels(labels: list[BarLabel]) -> str:
    """Labels as the table writes them: one code a bar, with how many bars back it refers ("n n e1 r2")."""
    return " ".join(KIND_CODES[lab.kind] + (str(b - lab.ref) if lab.ref is not None else "")
                    for b, lab in enumerate(labels))


def decode_labels(text: str) -> list[BarLabel]:
    """The inverse of ``encode_labels``."""
    kinds = {code: kind for kind, code in KIND_CODES.items()}
    return [BarLabel(kinds[item[0]], b - int(item[1:]) if len(item) > 1 else None)
            for b, item in enumerate(text.split())]


def form_table(tunes, tokenizer, seed: int = 0, max_plans: int = MAX_PLANS) -> dict:
    """{meter: {bars: [[pickup onset step or 0, bar steps, encoded labels], ...]}} of ``tunes`` (Tune objects
    with ``tokens`` and ``meter``), at most ``max_plans`` per group, a seeded sample where there are more."""
    import numpy as np
    groups: dict = {}
    for tune in tunes:
        bars = tune_bars(tune.tokens, tokenizer)
        if not bars or empty_first_bar(bars, tokenizer):
            continue
        onset = first_onset(bars, tokenizer)
        pickup = onset[1] if has_pickup(bars, tokenizer) else 0
        groups.setdefault(tune.meter, {}).setdefault(str(len(bars)), []).append(
            [pickup, len(bars[0]), encode_labels(bar_labels(bars, tokenizer))])
    rng = np.random.default_rng(seed)
    for meter in groups:
        for bars, plans in groups[meter].items():
            if len(plans) > max_plans:
                groups[meter][bars] = [plans[i] for i in sorted(rng.choice(len(plans), max_plans, replace=False))]
    return groups


def main(argv=None) -> int:
    from model.representation.corpora import load_corpus, split_corpus
    from model.representation.styles import style_of
    from model.representation.tokens import MelodyTokenizer
    p = argparse.ArgumentParser(description="Write the table of the training tunes' bar labels that generation "
                                            "samples default forms from.")
    p.add_argument("--data", default="music21:styles", help="the shipped model's corpus (default %(default)s)")
    p.add_argument("--out", required=True)
    p.add_argument("--split-seed", type=int, default=0, help="the corpus split's seed (the shipped model's: 0)")
    p.add_argument("--seed", type=int, default=0, help="the seed of the sample kept per meter and length")
    args = p.parse_args(argv)
    corpus = load_corpus(args.data)
    tokenizer = MelodyTokenizer(corpus.tokenizer_config)
    train = split_corpus(corpus, seed=args.split_seed)["train"]
    by_style: dict = {}
    for tune in train:
        if style_of(tune.id) is not None:
            by_style.setdefault(style_of(tune.id), []).append(tune)
    table = {"format": TABLE_FORMAT, "data": args.data, "split": "train", "tunes": len(train),
             "command": "python -m model.representation.form --data " + args.data + " --out " + args.out,
             "max_plans": MAX_PLANS, "plans": form_table(train, tokenizer, args.seed),
             "styles": {name: form_table(tunes, tokenizer, args.seed) for name, tunes in sorted(by_style.items())}}
    from model.representation.files import atomic_write
    atomic_write(args.out, (json.dumps(table, separators=(",", ":"), sort_keys=True) + "\n").encode())
    print(f"{args.out}: {sum(len(v) for g in table['plans'].values() for v in g.values())} plans "
          f"from {len(train)} training tunes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
