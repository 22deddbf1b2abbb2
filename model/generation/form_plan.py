"""A form as masks during sampling: bars that copy earlier bars or their rhythm, and the first bar.

A **plan** says how each generated bar is drawn: ``FREE`` (the network's, under the usual masks),
``COPY`` of an earlier bar r (at each step the only token allowed is bar r's token at that step) or
``RHYTHM`` of bar r (at each step only a token of the same kind as bar r's: a NOTE of any pitch the
key and range allow, HOLD, or REST). Notes are never edited afterwards.

**A requested form** (``form="AABB"``, ``phrase_bars``, ``form_strict``): sections of ``phrase_bars``
bars; a section whose letter came before refers, bar by bar, to that letter's first section:
- ``form_strict``: every bar is a COPY (primed letters too: note for note);
- a plain repeated letter: COPY, except the section's last bar, which keeps only the rhythm (a second
  ending: it may cadence where the first did not); a one-bar section is a COPY;
- a primed letter (A'): RHYTHM, and its last bar FREE (it may end differently); a one-bar section: RHYTHM.
The first section of each letter is FREE.

**The default** (``form`` null, a fixed number of bars, no primer): the plan of a training tune of the
same meter and number of bars (of the requested style's tunes, when a style is asked for), from the
table shipped beside the model (``forms.json``, written by ``python -m model.representation.form``); a tune of another meter with that many bars where the
meter has none; no plan where none has it. Each melody draws its own from its seed and row
(beams share row 0's). Over given chords, a bar copies only a bar under the same chords, else it
keeps the rhythm (``under_chords``). Its labels become masks: exact -> COPY, variant -> RHYTHM, rhythm
-> RHYTHM for a share ``RHYTHM_KEPT`` of them (drawn from the plan's seed) and FREE for the rest, new -> FREE,
the last bar FREE without any mask (the ending's); another bar not labelled exact may not end up an exact copy of an
earlier bar (at its last step the tokens that would complete one are masked; in a bar under a
RHYTHM mask, already at its copied bar's last onset, after which the mask leaves no choice), since
the network, reading the copies, repeats whole bars more often than the tunes do; with ``pickup`` null it also brings the tune's start: its first note at the same place in the
bar (beat one, or a pickup's position). ``form: "none"`` turns all of this off.

**The first bar** (without a primer) is never all rests: at its last step a row that has not played
yet must play. ``pickup=True``: its first step is a REST (and a note comes before the barline);
``pickup=False``: its first step is a NOTE.

**Precedence.** These masks come after the grammar, key/scale/range masks, the repetition guard and
the cadence: where a row's form mask and those leave nothing (a copied pitch outside the range, a
HOLD after a rest, the cadence's tonic), the row takes that step without the form mask.
"""
from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.generation.params import FORM_OFF, form_sections
from model.representation.form import EXACT, RHYTHM as RHYTHM_ONLY, VARIANT, BarLabel, decode_labels, relation_pointer

FREE, COPY, RHYTHM = 0, 1, 2
FORM_TABLE = "forms.json"  # the table's name beside a checkpoint (the shipped one: model/weights/forms.json)
FORM_STREAM = 0x666F726D  # mixed into the seed for the plan draw, so it draws from its own stream
_KINDS = {EXACT: COPY, VARIANT: RHYTHM}  # new bars: FREE; rhythm-only bars: see RHYTHM_KEPT
# The share of a default plan's rhythm-only bars drawn under a RHYTHM mask (the others FREE): all of
# them overshoot the tunes' rhythm repeats, none undershoots; chosen on the valid split
# (docs/model-card.md, "Form").
RHYTHM_KEPT = 0.30


@dataclass(frozen=True)
class FormPlan:
    kinds: tuple[int, ...]            # per generated bar: FREE, COPY or RHYTHM
    refs: tuple[int, ...]             # per bar: the bar it copies (its own index for a FREE bar)
    first_onset: int | None = None    # a default plan's start: the first note's step in bar 0 (0: beat one)
    distinct: tuple[bool, ...] = ()   # per bar: it may not end up an exact copy of an earlier bar
    labels: tuple = ()                # per bar: (relation id, pointer id) the network's form input is told, or None


def letters_plan(form: str, bars: int, phrase_bars: int | None, strict: bool) -> FormPlan:
    """The plan of a requested form (validated by ``GenerationParams``); the rule in the module docstring."""
    sections = form_sections(form)
    phrase = phrase_bars or bars // len(sections)
    first: dict[str, int] = {}
    kinds, refs, labels = [], [], []
    for k, (letter, primes) in enumerate(sections):
        source = first.setdefault(letter, k)
        for o in range(phrase):
            last = o == phrase - 1 and phrase > 1
            if source == k:
                kind = FREE
            elif strict:
                kind = COPY
            elif primes:
                kind = FREE if last else RHYTHM
            else:
                kind = RHYTHM if last else COPY
            kinds.append(kind)
            refs.append(source * phrase + o if kind != FREE else k * phrase + o)
            bar = k * phrase + o
            # the network is told what the masks draw: a copy is an exact repeat, a rhythm-masked bar
            # a variant of the bar it follows; a free bar's relation is left unknown
            labels.append(None if kind == FREE else relation_pointer(
                BarLabel(EXACT if kind == COPY else VARIANT, source * phrase + o), bar))
    return FormPlan(tuple(kinds), tuple(refs), labels=tuple(labels))


def load_form_table(path) -> dict | None:
    """The plans of a ``forms.json`` table by style ({None: every training tune's, style: that
    style's}), or None when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return {None: doc["plans"], **doc.get("styles", {})}


def table_plan(table: dict, meter: str, bars: int, bar_steps: int, seed: int, row: int) -> FormPlan | None:
    """A training tune's plan for a melody of ``bars`` bars in ``meter``, drawn with (seed, row)."""
    plans = table.get(meter, {}).get(str(bars))
    if not plans:  # another meter's tunes of this length (the labels do not depend on the meter)
        plans = [p for group in table.values() for p in group.get(str(bars), [])]
    if not plans:
        return None
    rng = np.random.default_rng([int(seed), FORM_STREAM, row])
    pickup, source_steps, text = plans[int(rng.integers(len(plans)))]
    labels = decode_labels(text)
    first = min(bar_steps - 1, round(pickup * bar_steps / source_steps))
    kept = rng.random(len(labels)) < RHYTHM_KEPT  # which rhythm-only bars keep their rhythm
    kinds = [RHYTHM if lab.kind == RHYTHM_ONLY and keep else _KINDS.get(lab.kind, FREE)
             for lab, keep in zip(labels, kept)]
    kinds[-1] = FREE  # the last bar is the ending's (the cadence, the tonic pull)
    return FormPlan(tuple(kinds),
                    tuple(lab.ref if k != FREE else b for b, (k, lab) in enumerate(zip(kinds, labels))), first,
                    tuple(lab.kind != EXACT for lab in labels[:-1]) + (False,),
                    tuple(relation_pointer(lab, b) for b, lab in enumerate(labels)))  # the tune's own labels


def request_plans(params, table, meter: str, bar_steps: int, seed: int, rows: int, beam: bool) -> list | None:
    """Each row's plan for a request (None: no form), by the rules in the module docstring."""
    if params.form == FORM_OFF or params.ranged:
        return None
    if params.form is not None:
        return [letters_plan(params.form, params.bars, params.phrase_bars, params.form_strict)] * rows
    if table is None or params.primer is not None:
        return None
    table = table.get(params.style) or table[None]  # the requested style's tunes, where it has a table
    plans = [table_plan(table, meter, params.bars, bar_steps, seed, 0 if beam else r) for r in range(rows)]
    if not all(p is not None for p in plans):
        return None
    progression = params.progression()
    return [under_chords(p, progression) for p in plans] if progression else plans


def under_chords(plan: FormPlan, progression) -> FormPlan:
    """A sampled plan over given chords: a bar copies its bar only where both lie under the same
    chords (a copy under other chords would repeat notes chosen for those); elsewhere it keeps the
    rhythm, and the network is told it is a variant."""
    def chords_of(bar: int):
        return tuple(progression[bar % len(progression)])
    kinds, labels = list(plan.kinds), list(plan.labels)
    for b, (kind, ref) in enumerate(zip(plan.kinds, plan.refs)):
        if kind == COPY and chords_of(b) != chords_of(ref):
            kinds[b] = RHYTHM
            if labels and labels[b] is not None:
                labels[b] = relation_pointer(BarLabel(VARIANT, ref), b)
    return FormPlan(tuple(kinds), plan.refs, plan.first_onset, plan.distinct, tuple(labels))


class FormMasks:
    """The (B, V) form masks of one request's rows at each grid step (see the module docstring).

    ``acts(bar, pos)`` says whether a step has a form mask; ``reads_out(bar, pos)`` whether it reads
    the melody so far (the caller writes its pending tokens first); ``apply(logits, bar, pos, out)``
    adds the mask in place, row by row where it leaves a choice."""

    def __init__(self, tokenizer, plans: list[FormPlan] | None, where: list, rows: int, bar_steps: int,
                 first_bar: bool, pickup: bool | None):
        self.S, self.B = bar_steps, rows
        self.plans = plans  # each row's plan (None: no form): its labels feed a network's form input
        # per token: 0 REST, 1 HOLD, 2 NOTE, 3 structural; (4, V) the tokens of each kind allowed; (V, V)
        # per token, the tokens of its kind allowed
        self.kind_of, self.kind_rows, self.same_kind = token_kinds(tokenizer)
        cols = {w: i for i, w in enumerate(where) if w is not None}  # (bar, pos) -> column of `out`
        self.kinds = self.refcols = self.shared = self.distinct = None
        self.form_bars, self.distinct_bars = set(), set()
        self.varied = None  # (B, bars): rows whose bar keeps an earlier bar's rhythm but may not copy it
        self.last_onsets = {}  # bar -> (B,) the step of its copied bar's last onset in the rows of `varied` (else -1)
        self.bar_cols = torch.tensor([[cols[(b, q)] for q in range(bar_steps)]
                                      for b in range(max(b for b, _ in cols) + 1)])  # (bars, S)
        if plans is not None:
            bars = len(plans[0].kinds)
            self.kinds = torch.tensor([p.kinds for p in plans])  # (B, bars)
            self.form_bars = {b for b in range(bars) if any(p.kinds[b] for p in plans)}
            if all(p.distinct for p in plans):
                self.distinct = torch.tensor([p.distinct for p in plans])  # (B, bars)
                self.distinct_bars = {b for b in range(1, bars) if any(p.distinct[b] for p in plans)}
                self.varied = self.distinct & (self.kinds == RHYTHM)
            # one plan for every row (a requested form, beams, one melody): its copied columns as ints;
            # else (B, bars, S) each row's copied bar's columns
            self.shared = [[cols[(r, q)] for q in range(bar_steps)] for r in plans[0].refs] \
                if all(p == plans[0] for p in plans) else None
            if self.shared is None:
                self.refcols = torch.tensor([[[cols[(r, q)] for q in range(bar_steps)] for r in p.refs]
                                             for p in plans])
            # per bar: the kind every row draws it as, or None where rows differ
            self.uniform = [plans[0].kinds[b] if all(p.kinds[b] == plans[0].kinds[b] for p in plans) else None
                            for b in range(bars)]
        # the first bar: rows rest before rest_until, play at note_at (-1: nowhere), and never stay silent
        rest_until, note_at = [0] * rows, [-1] * rows
        for r in range(rows):
            start = plans[r].first_onset if plans is not None and pickup is None else None
            if pickup is True:
                rest_until[r] = 1
            elif pickup is False:
                note_at[r] = 0
            elif start is not None:
                rest_until[r], note_at[r] = start, start
        self.first_bar = first_bar
        self.rest_until, self.note_at = torch.tensor(rest_until), torch.tensor(note_at)
        self.rests_before, self.notes_at = max(rest_until), set(note_at)  # the same, for the steps without any
        self.first_cols = [cols[(0, q)] for q in range(bar_steps)] if first_bar else []

    def acts(self, bar: int, pos: int) -> bool:
        return bar in self.form_bars or (bar == 0 and self.first_bar) or self.reads_out(bar, pos)

    def reads_out(self, bar: int, pos: int) -> bool:
        last = pos == self.S - 1
        return (pos == 0 and bar in self.form_bars) or (bar == 0 and self.first_bar and last) \
            or (last and bar in self.distinct_bars) or (bar in self.last_onsets and pos in self.last_onsets[bar][1])

    def apply(self, logits: torch.Tensor, bar: int, pos: int, out: torch.Tensor) -> None:
        """Add the step's form mask to logits (B, V) in place; ``out`` (B, N) holds the melody so far."""
        mask = self._first_bar(pos, out) if bar == 0 and self.first_bar else None
        if pos == self.S - 1 and bar in self.distinct_bars:
            ban = self._no_repeat(bar, out)
            if ban is not None:
                mask = ban if mask is None else mask + ban
        if bar in self.form_bars:
            col = self.shared[bar][pos] if self.shared is not None else None
            # (B, 1) the copied bar's token at this step
            ref = out[:, col:col + 1] if col is not None else out.gather(1, self.refcols[:, bar, pos:pos + 1])
            if self.varied is not None and bool(self.varied[:, bar].any()):
                ban = self._no_copy_by_rhythm(bar, pos, out)
                if ban is not None:
                    mask = ban if mask is None else mask + ban
            if mask is None and self._uniform(logits, bar, ref):
                return
            copied = self._copy(bar, ref)
            mask = copied if mask is None else mask + copied
        if mask is None:
            return
        ok = torch.isfinite(logits + mask).any(-1)  # (B,) rows left a choice with the mask
        if bool(ok.all()):
            logits += mask
        elif bool(ok.any()):
            logits[ok] += mask[ok]

    def _uniform(self, logits: torch.Tensor, bar: int, ref: torch.Tensor) -> bool:
        """The fast path of a bar all rows draw alike (one plan, or one row): done when every row keeps a choice."""
        kind = self.uniform[bar]
        if kind == COPY:
            keep = logits.gather(1, ref)                             # (B, 1) the copied token's logit
            if keep.min().item() > float("-inf"):
                logits.fill_(float("-inf")).scatter_(1, ref, keep)
                return True
        elif kind == RHYTHM:
            masked = logits + self.same_kind[ref[:, 0]]             # (B, V)
            if masked.max(-1).values.min().item() > float("-inf"):
                logits.copy_(masked)
                return True
        return False

    def _copy(self, bar: int, ref: torch.Tensor) -> torch.Tensor:
        kinds, ref = self.kinds[:, bar], ref[:, 0]                   # (B,), (B,)
        mask = self.same_kind[ref]                                   # (B, V) RHYTHM: a token of its kind
        mask[kinds == FREE] = 0.0
        copy = (kinds == COPY).nonzero().flatten()
        if len(copy):
            mask[copy] = float("-inf")
            mask[copy, ref[copy]] = 0.0                              # COPY: that token alone
        return mask

    def _no_repeat(self, bar: int, out: torch.Tensor) -> torch.Tensor | None:
        """(B, V): at a distinct bar's last step, -inf on the tokens that would make it an earlier bar's copy."""
        return self._copy_ban(bar, self.S - 1, out, self.distinct[:, bar].nonzero().flatten())

    def _no_copy_by_rhythm(self, bar: int, pos: int, out: torch.Tensor) -> torch.Tensor | None:
        """(B, V) or None: in a bar that keeps an earlier bar's rhythm but is not labelled exact, at its
        copied bar's last onset, -inf on each pitch that would make the bar an exact copy of an earlier
        bar, since the steps after that onset are forced by the rhythm mask (HOLD or REST): the pitch of
        every earlier bar that equals this one so far and whose steps after it are the copied bar's.
        The last onsets are read at the bar's first step."""
        if pos == 0:
            copied = out.gather(1, self.refcols[:, bar]) if self.shared is None else out[:, self.shared[bar]]  # (B, S)
            steps = torch.arange(self.S).expand_as(copied)
            last = torch.where(self.kind_of[copied] == 2, steps, torch.full_like(steps, -1)).max(1).values  # (B,)
            last = torch.where(self.varied[:, bar], last, torch.full_like(last, -1))
            self.last_onsets[bar] = (last, set(last.tolist()) - {-1}, copied)
        last, steps, copied = self.last_onsets[bar]
        if pos not in steps:
            return None
        rows = (last == pos).nonzero().flatten()
        return self._copy_ban(bar, pos, out, rows, copied[rows, pos + 1:])

    def _copy_ban(self, bar: int, pos: int, out: torch.Tensor, rows: torch.Tensor,
                  after: torch.Tensor | None = None) -> torch.Tensor | None:
        """(B, V) or None: in the rows ``rows``, -inf on each token at step ``pos`` of ``bar`` that would
        make the bar equal an earlier bar, given the bar so far and, with ``after`` (R, S - pos - 1), the
        steps that will follow it (else ``pos`` is the last step)."""
        before = out[rows][:, self.bar_cols[:bar]]                   # (R, bar, S) the earlier bars
        now = out[rows][:, self.bar_cols[bar, :pos]]                  # (R, pos) the bar so far
        same = (before[:, :, :pos] == now[:, None, :]).all(-1)       # (R, bar)
        if after is not None:
            same &= (before[:, :, pos + 1:] == after[:, None, :]).all(-1)
        if not bool(same.any()):
            return None
        r, b = same.nonzero(as_tuple=True)
        mask = torch.zeros(self.B, self.kind_of.shape[0])
        mask[rows[r], before[r, b, pos]] = float("-inf")
        return mask

    def _first_bar(self, pos: int, out: torch.Tensor) -> torch.Tensor | None:
        if pos >= self.rests_before and pos not in self.notes_at and pos != self.S - 1:
            return None                                              # no row must rest or play here
        rest = pos < self.rest_until                                 # (B,) rows that must rest here
        play = pos == self.note_at                                   # (B,) rows that must play here
        if pos == self.S - 1:  # the last chance: a row with no note yet in the bar must play
            so_far = out[:, self.first_cols[:-1]]                    # (B, S - 1)
            play |= ~(self.kind_of[so_far] == 2).any(1)
        if not bool(rest.any() or play.any()):
            return None
        mask = torch.zeros(self.B, self.kind_of.shape[0])
        mask[rest] = self.kind_rows[0]
        mask[play] = self.kind_rows[2]
        return mask


_TOKEN_KINDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_kinds(tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kind of each token (V,): 0 REST, 1 HOLD, 2 NOTE, 3 structural; (4, V) 0 on the tokens of
    each kind, -inf elsewhere; (V, V) the row of each token's kind), built once per tokenizer."""
    tables = _TOKEN_KINDS.get(tokenizer)
    if tables is None:
        tok, V = tokenizer, tokenizer.vocab_size
        kind_of = torch.full((V,), 3)
        kind_of[tok.rest_id], kind_of[tok.hold_id] = 0, 1
        notes = torch.tensor([i for i in range(V) if tok.pitch_of(i) is not None])
        kind_of[notes] = 2
        kind_rows = torch.full((4, V), float("-inf"))
        kind_rows[0, tok.rest_id], kind_rows[1, tok.hold_id] = 0.0, 0.0
        kind_rows[2, notes], kind_rows[3] = 0.0, 0.0
        tables = _TOKEN_KINDS[tokenizer] = (kind_of, kind_rows, kind_rows[kind_of])
    return tables


def form_masks(generator, params, where: list, seed: int, rows: int, bar_steps: int,
               meter: str) -> FormMasks | None:
    """A request's FormMasks, or None when neither a form nor the first bar's rules apply."""
    plans = request_plans(params, generator.form_table, meter, bar_steps, seed, rows, params.beam_width > 1)
    first_bar = params.primer is None
    if plans is None and not first_bar:
        return None
    return FormMasks(generator.tokenizer, plans, where, rows, bar_steps, first_bar, params.pickup)

