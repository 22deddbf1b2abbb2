"""One request's melodies as rows that advance one token at a time, so many requests can share a step.

``MelodyRows`` holds everything a request's rows need between two network steps: the template of
columns (forced tokens, grid steps to choose, barlines that may end a length range), the tokens so
far, the masks' state (grammar, key/scale/range, repetition guard, cadence), the short-term model's
state and the request's own random stream. The caller owns the network and its recurrent state:

    rows = MelodyRows(generator, *draw)                # a Draw (model.generation.sampling.Generator.plan yields them)
    state = rows.start_state()                        # the prefix (or primer) run through the network
    while not rows.done:
        logits, state = net.step(*rows.inputs(), state)
        parent = rows.advance(logits)                 # beam search: reorder the state rows by parent

``model.generation.batcher.StepLoop`` runs this loop for many requests at once (one alone, for
``Generator.generate``) by concatenating their inputs and slicing the logits (beam search runs it
alone, in ``Generator.run_draw``), so a request's bytes do not depend on what else
is in the batch (see ``MIN_ROWS``). Sampling draws from each request's own ``torch.Generator``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from model.generation.chord_tones import ChordTones
from model.generation.endings import Cadence, TonicPull, ends_in_cadence
from model.generation.form_plan import form_masks
from model.network.conditions import key_id
from model.network.melody import UNKNOWN_CHORD, UNKNOWN_POINTER, UNKNOWN_RELATION
from model.representation.chords import chord_at
from model.representation.keys import key_of_weights
from model.representation.keys import PITCH_CLASSES
from model.network.shortterm import CopyState
from model.network.stable_kernels import MIN_ROWS

CHOOSE, DECIDE = -1, -2  # template columns: a grid step to sample; a barline that may be EOS (a length range)
REST, HOLD, NO_TIME = -1, -2, -3  # step codes (Generator.step_codes) of tokens that are not a NOTE
# A shared batch steps with MelodyNetwork.step(batch_stable=True), with the kernel set measured
# row-stable on this machine (model/network/stable_kernels.py): from 2 rows on, a row's logits are then the
# same whatever the batch size and the row's place in it (tests/test_batcher.py); a single row takes
# another code path, so a shared batch is padded to at least min_rows(model) rows. (It was once 8
# rows, past the switches of the fast kernels; docs/benchmarks.md.)


def min_rows(model) -> int:
    """The fewest rows a shared batch runs with (see above)."""
    return MIN_ROWS


class Draw(NamedTuple):
    """One draw a request's plan asks for (``model.generation.sampling.Generator.plan``): ``count`` melodies (or
    beams) with these settings and seed; a quality-gate redraw also names the melody it replaces."""
    params: object          # model.generation.params.GenerationParams
    prefix: object          # model.generation.sampling.Prefix
    key_pc: int | None
    seed: int
    count: int
    replaces: int | None = None


KEY_STREAM = 0x6B6579  # mixed into the seed for the key draw, so it draws from its own stream


def melody_key(generator, params, prefix, seed: int) -> int | None:
    """The key id a request's melody is written in (``model.network.conditions``): the requested key and
    scale; else the primer's key signature; else, without a primer, one drawn from the training
    tunes' keys with the request's seed (the same request, the same key); a primer without a key
    signature leaves it unknown, and the network reads the key from the primer's notes."""
    if params.key:
        return key_id(PITCH_CLASSES[params.key], params.scale)
    if prefix.key_pc is not None:
        return key_id(prefix.key_pc, "minor" if prefix.key_minor else "major")
    if params.primer is not None or not generator.key_prior:
        return None
    # the requested style's tunes' keys, where the model knows them
    prior = np.asarray(generator.style_key_priors.get(params.style) or generator.key_prior, dtype=np.float64)
    return int(np.random.default_rng([int(seed), KEY_STREAM]).choice(len(prior), p=prior / prior.sum()))


class MelodyRows:
    """The rows of one request (``count`` samples, or ``beam_width`` beams), advanced token by token."""

    def __init__(self, generator, params, prefix, key_pc, seed: int, count: int, replaces: int | None = None):
        """``MelodyRows(generator, *draw)`` for a ``Draw``; ``replaces``: the melody a redraw replaces."""
        self.g, self.params, self.prefix, self.key_pc = generator, params, prefix, key_pc
        self.replaces = replaces
        tok, model = generator.tokenizer, generator.model
        self.tok = tok
        self.meter = params.meter or prefix.meter
        self.template, where, self.bars = self._template()
        self.full = full = prefix.ids + self.template
        placeholder = [tok.rest_id if t == CHOOSE else tok.bar_id if t == DECIDE else t for t in full]
        self.placeholder = placeholder
        self.where = [None] * len(prefix.ids) + where  # per column: (bar, position) of a grid step to choose
        # the key the network is told (a network with a key input; None: unknown)
        self.key = melody_key(generator, params, prefix, seed) if model.config.key_dim else None
        # (N,) condition ids: position in the bar, bars remaining (known when the template fixes the end:
        # infilling counts the kept bars after the span too), key
        self.tail = len(prefix.after) > 1  # infilling inside the tune: kept bars follow the generated ones
        ahead = placeholder[:-1] + [tok.rest_id if t == tok.hold_id else t for t in prefix.after] if self.tail \
            else placeholder  # (a step is a step to the conditions: the placeholders are rests)
        self.positions = generator.condition_ids(ahead, known_end=not params.ranged, key=self.key)[:len(full)] \
            if model.config.conditioned else None
        if params.ranged and self.positions is not None and model.config.remaining_dim:
            # a range's last possible bar is its last for certain (EOS is forced after it): from its
            # barline on the network is told so, as in a tune of fixed length
            known = generator.condition_ids(placeholder, known_end=True, key=self.key)
            last = len(prefix.ids) + max(j for j, t in enumerate(self.template) if t in (DECIDE, tok.bar_id))
            self.positions[last:] = known[last:]
        self.beam = params.beam_width > 1
        B, N, P = (params.beam_width if self.beam else count), len(full), len(prefix.ids)
        self.B, self.N, self.P = B, N, P
        self.out = torch.tensor(placeholder).repeat(B, 1)  # (B, N)
        self.gen = torch.Generator().manual_seed(seed)
        self.noise, self.noise_used = (), 0
        self.forced = {t: torch.full((B,), t) for t in {*self.template, full[P - 1], tok.bar_id} if t >= 0}
        self.x = self.forced[full[P - 1]]  # (B,) the token fed at the next step
        self.mask_after = generator.step_masks(params)  # (V + 1, V) step mask after token t; row V: none
        last_steps = [t for t in prefix.ids if tok.is_step(t)]
        # (B,) the last step token; it selects the mask row (any sounding token stands for NOTE/HOLD)
        self.last = torch.full((B,), tok.hold_id if last_steps and last_steps[-1] != tok.rest_id else tok.rest_id)
        self.pending = []  # sampled (column, (B,) tokens) not yet in `out`: written once a bar, not once a step
        self.step_cols = [i for i, t in enumerate(full) if t == CHOOSE or tok.is_step(t)]  # grid step columns
        self.bar_steps = tok.bar_steps(self.meter)
        self.penalty = self.ban = None  # the repetition guard's (B, V) penalty and the caps' -inf mask
        self.scores = torch.full((B,), float("-inf"))
        self.scores[0] = 0.0
        self.done_steps = len(last_steps)
        self.finished = torch.zeros(B, dtype=torch.bool)  # rows that chose EOS inside a length range
        self.any_finished = False
        allowed = params.allowed_pitches(tok.config.min_pitch, tok.config.max_pitch)
        # the ending's rules belong to the tune's last bar: not to a span that kept bars follow
        self.cadence = Cadence(tok, self.meter, allowed, B) if params.cadence == "tonic" and not self.tail else None
        # the soft ending, where no cadence is required, when sampling (beam search keeps its scores
        # the sequences' masked log-probabilities, and already seeks the likeliest ending)
        self.pull = TonicPull(tok, self.meter, params.tonic_pull, generator.tonic_columns) \
            if self.cadence is None and params.tonic_pull > 0 and params.beam_width == 1 and not self.tail else None
        progression = params.progression()  # given chords: chord tones on strong beats (chord_tones.py)
        self.chords = ChordTones(tok, self.meter, progression, params.chord_tones, generator.tonic_columns,
                                 cadence_bar=self.bars - 1 if self.cadence is not None else None) \
            if progression and params.chord_tones != "none" else None
        # the form's copy and rhythm masks, and the first bar's (model.generation.form_plan)
        self.form = form_masks(generator, params, self.where, seed, B, self.bar_steps, self.meter)
        self.row_positions = None  # (B, N) condition ids per row (rows differ: each row's own form plan)
        config = model.config
        if self.positions is not None and (config.form_dim or config.chord_dim or config.style_dim):
            self._label_conditions(generator.style_id(params), progression)
        if self.row_positions is None and self.positions is not None:  # (B, N) the same for every row (a view)
            self.row_positions = torch.tensor(self.positions).expand(B, N)
        self.copy = None  # the short-term model's state over each melody so far
        if generator.copy_model is not None and params.short_term:
            self.copy = CopyState(generator.copy_model, tok.vocab_size, batch=B, capacity=N)
            for t in prefix.ids[:-1]:
                self.copy.push(t)
        self.copy_rows = self._copy_gate_rows()
        self.i = P - 1  # the column whose token is fed next
        self.ended = False  # all rows chose EOS inside a length range
        self.bars_completed = 0  # generated bars finished (streamed by the batcher as they complete)

    def _copy_gate_rows(self) -> np.ndarray | None:
        """(N, B) or None without a short-term model: its gate row (``CopyModel.gate_rows``) for the
        step each column feeds: the last bar's own (a range's last possible bar is the last for
        certain; not in a span that kept bars follow), else, where the model has gates per form
        relation, the relation each row's plan tells the network there."""
        if self.copy is None:
            return None
        final = np.zeros((self.N, self.B), dtype=bool)
        for i in range(self.N - 1):
            w = self.where[i + 1]
            final[i] = w is not None and w[0] == self.bars - 1 and not self.tail
        relation = None
        if self.g.copy_model.relation_gate is not None and self.g.model.config.form_dim \
                and self.row_positions is not None:
            relation = self.g.model.config.fields(np.asarray(self.row_positions))["relation"].T  # (N, B)
        return np.ascontiguousarray(self.g.copy_model.gate_rows(final, relation))

    def _label_conditions(self, style: int | None, progression) -> None:
        """The style, chord and form parts of the condition ids, for a network with those inputs: the
        style everywhere, the given chords and each row's form plan at the generated grid steps (a
        column's conditions describe the next grid step: ``model.network.conditions``); the rest unknown."""
        config, B, N = self.g.model.config, self.B, self.N
        upcoming, following = None, [None] * N  # per column: (bar, position) of the generated step after it
        for i in range(N - 1, -1, -1):
            following[i] = upcoming
            if self.where[i] is not None:
                upcoming = self.where[i]
        f = config.fields(np.asarray(self.positions, dtype=np.int64))
        if config.style_dim and style is not None:
            f["style"] = np.full(N, style)
        if config.chord_dim and progression:
            f["chord"] = np.array([chord_at(progression, w[0], w[1], self.bar_steps).id if w is not None
                                   else UNKNOWN_CHORD for w in following])
        shared = config.pack(f)
        plans = self.form.plans if self.form is not None else None
        if config.form_dim and plans is not None:
            relation, pointer = np.full((B, N), UNKNOWN_RELATION), np.full((B, N), UNKNOWN_POINTER)
            for r, plan in enumerate(plans):
                for i, w in enumerate(following):
                    if w is not None and plan.labels and plan.labels[w[0]] is not None:
                        relation[r, i], pointer[r, i] = plan.labels[w[0]]
            rows = config.with_fields(np.broadcast_to(shared, (B, N)), relation=relation, pointer=pointer)
            if (rows == rows[:1]).all():
                shared = rows[0]
            else:
                self.row_positions = torch.from_numpy(np.ascontiguousarray(rows))
        self.positions = [int(p) for p in shared]

    # ---- the template --------------------------------------------------------------------------

    def _template(self):
        """The generated part's columns: forced tokens, CHOOSE and DECIDE (BAR or EOS inside a range),
        with each CHOOSE column's (bar index, position in the bar)."""
        tok, params, prefix, meter = self.tok, self.params, self.prefix, self.meter
        bars = params.max_bars if params.ranged else params.bars
        first_end = (params.min_bars or 1) if params.ranged else bars
        template, where = [], []
        for b in range(bars):
            template.append(DECIDE if params.ranged and b >= first_end else tok.bar_id)
            where.append(None)
            if b == 0 and meter != prefix.meter:
                template.append(tok.meter_id(meter))  # a meter change after the primer
                where.append(None)
            template += [CHOOSE] * tok.bar_steps(meter)
            where += [(b, p) for p in range(tok.bar_steps(meter))]
        template.append(tok.eos_id)
        where.append(None)
        return template, where, bars

    # ---- the loop's three calls ------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Every column fed, or (a length range) every row has ended."""
        return self.i >= self.N - 1 or self.ended

    @property
    def progress(self) -> float:
        """Share of the generated columns done (a range counts towards its maximum)."""
        return 1.0 if self.done else (self.i - self.P + 1) / (self.N - self.P)

    def start_state(self):
        """The recurrent state after the prefix (all but its last token, which the loop feeds)."""
        return self.g.prefix_state(self.out[:1, :self.P - 1], self.positions, self.B,
                                    reuse=self.params.primer is None)

    def inputs(self):
        """(tokens (B,), condition ids (B,) or None) for the next network step."""
        return self.x, self.row_positions[:, self.i] if self.row_positions is not None else None

    def advance(self, logits: torch.Tensor):
        """Take the step's logits (B, V) (may be modified in place): choose or force the next column's
        token. Returns the beams' parents (B,) when beam search reordered the rows, else None.
        The four parts below, in this order; ``model.generation.batcher.StepLoop`` runs them for many
        requests at once, with the key mask and the draw made once for the whole batch."""
        kind = self.begin(logits)
        if kind is None:
            return None
        self.bias(logits, kind)
        if self.beam:
            return self._beam_step(logits)
        self.take(self.g.sample(logits, self.params, self.draw_noise(kind)), kind)
        return None

    def begin(self, logits) -> int | None:
        """A step's first part: the short-term model reads the token fed (and is mixed into the logits,
        a (B, V) float32 tensor or array, in place, before a grid step), the repetition guard looks at
        a finished bar, and a forced structural token is taken. Returns the column to draw, CHOOSE or
        DECIDE, or None when it was forced."""
        tok, params, i = self.tok, self.params, self.i
        nxt = self.full[i + 1]
        self.i += 1
        if self.copy is not None:  # the short-term model reads x; at a grid step it is mixed into the logits
            if nxt == CHOOSE:  # in place: log((1 - g) p_network + g p_copy) + a constant; each row's gates
                self.copy.push_and_mix(self.x, logits, gate_rows=self.copy_rows[i])
            else:
                self.copy.push(self.x)
        if nxt in (tok.bar_id, DECIDE) and params.avoid_repetition and self.done_steps >= self.bar_steps:
            self._write_pending()
            recent = self.step_cols
            self.ban = self.g.stuck_bar_ban(self.out[:, recent[self.done_steps - self.bar_steps:self.done_steps]])
            if self.done_steps >= 2 * self.bar_steps:
                self.penalty = self.g.repetition_penalty(
                    self.out[:, recent[self.done_steps - 2 * self.bar_steps:self.done_steps]])
        if nxt in (tok.bar_id, DECIDE, tok.eos_id) and i + 1 > self.P:
            self.bars_completed += 1  # the barline (or EOS) after a generated bar
        if nxt not in (CHOOSE, DECIDE):
            self.x = self.forced[nxt]
            return None  # a forced structural token, already in `out`
        return nxt

    def bias(self, logits: torch.Tensor, kind: int, masked: bool = False) -> None:
        """A step's second part, in place, in this order: at a grid step the grammar and key/scale/range
        mask (unless the caller added it: ``masked``; it is 0 or -inf, so where it is added does not
        change a bit), the repetition guard, the ending, the chords, the form, ended rows; at a
        barline inside a range, BAR or EOS."""
        if kind == DECIDE:  # BAR or EOS; with a cadence, EOS only after a bar that cadenced
            self._write_pending()
            logits.add_(self._decide_bias())
            return
        i = self.i - 1
        bar, pos = self.where[i + 1]
        if not masked:
            logits.add_(self.mask_after.index_select(0, self.last))  # (B, V) grammar + key/scale/range masks
        if self.penalty is not None:
            logits += self.penalty
        if self.ban is not None:  # first step after a bar of only rests or only HOLD
            logits += self.ban
            self.ban = None
        if bar == self.bars - 1 and (self.cadence is not None or self.pull is not None):
            ending = self.cadence or self.pull
            if pos == 0:
                self._write_pending()
                ending.begin_bar(self._tonics(self.out[:, :i + 1]))
            if self.cadence is not None:
                logits += self.cadence.mask(pos)
            elif (pull := self.pull.bias(pos)) is not None:
                logits += pull
        if self.chords is not None and (chord_bias := self.chords.bias(bar, pos)) is not None:
            logits += chord_bias  # (V,) over the B rows
        if self.form is not None and self.form.acts(bar, pos):  # after the masks it must respect
            if self.form.reads_out(bar, pos):
                self._write_pending()
            self.form.apply(logits, bar, pos, self.out)
        if self.any_finished:  # ended rows only mark time (one choice: REST, log-probability 0)
            logits[self.finished] = self.g.finished_row

    def draw_noise(self, kind: int) -> torch.Tensor:
        """A sampled step's third part: its (B, V) Gumbel noise from the request's own stream (a grid
        step's from the bar's, drawn in one call when the bar begins)."""
        if kind == DECIDE:
            return self.g.gumbel((self.B, self.tok.vocab_size), self.gen)
        if self.noise_used == len(self.noise):  # Gumbel noise for the next bar's draws, in one call
            self.noise = self.g.gumbel((self.bar_steps, self.B, self.tok.vocab_size), self.gen).unbind(0)
            self.noise_used = 0
        self.noise_used += 1
        return self.noise[self.noise_used - 1]

    def take(self, choice: torch.Tensor, kind: int) -> None:
        """A step's last part: the (B,) tokens drawn (or beam search's) become the next input."""
        tok, i = self.tok, self.i - 1
        if not self.beam:
            self.pending.append((i + 1, choice))
        self.x = choice
        if kind == DECIDE:
            self.finished |= choice == tok.eos_id
            self.any_finished = bool(self.finished.any())
            self.ended = bool(self.finished.all()) and not self.beam  # beams stop at the template's end
            return
        if self.cadence is not None and self.cadence.active:
            self.cadence.advance(self.where[i + 1][1], choice.tolist())
        elif self.pull is not None and self.pull.ringing is not None:  # in the last bar
            self.pull.advance(self.where[i + 1][1], choice.tolist())
        self.last = choice
        self.done_steps += 1

    def _beam_step(self, logits: torch.Tensor) -> torch.Tensor:
        """Beam search's draw: the best B continuations of the beams; returns their parents (B,)."""
        logp = torch.log_softmax(logits / self.params.sampling_temperature, dim=-1)  # (B, V)
        top, flat = torch.topk((self.scores[:, None] + logp).flatten(), self.B)  # best B continuations
        parent, choice = flat // logp.shape[1], flat % logp.shape[1]
        dead = ~torch.isfinite(top)  # fewer legal continuations than beams: copy the best one
        parent[dead], choice[dead] = parent[0], choice[0]
        self.out, self.scores = self.out[parent], top
        self.last, self.finished = self.last[parent], self.finished[parent]
        self.any_finished = bool(self.finished.any())
        self.penalty = self.penalty[parent] if self.penalty is not None else None
        self.ban = self.ban[parent] if self.ban is not None else None
        if self.copy is not None:
            self.copy.reorder(parent)
        if self.cadence is not None and self.cadence.active:
            self.cadence.reorder(parent)
        self.out[:, self.i] = choice
        self.take(choice, self.full[self.i])
        return parent

    def result(self, count: int) -> list:
        """The finished melodies as [(ids, score or None)] (beam search: the best ``count`` beams)."""
        self._write_pending()
        out, scores, P, tok = self.out, self.scores, self.P, self.tok
        if self.beam:
            order = torch.argsort(scores, descending=True, stable=True)[:count]
            out, scores = out[order], scores[order]
        drawn = []
        for b in range(out.shape[0]):
            ids = out[b].tolist()
            if tok.eos_id in ids[P:]:  # a range ended early: cut after its EOS
                ids = ids[:P + ids[P:].index(tok.eos_id) + 1]
            if self.params.primer is not None and not self.params.include_primer:
                ids = self.g.without_primer(ids[P:], self.meter)
            drawn.append((ids, float(scores[b]) if self.beam else None))
        return drawn

    def finished_bar_notes(self, bar: int) -> list[list[dict]]:
        """Per row, the notes that start in generated bar ``bar`` (for streaming a bar once it is done)."""
        self._write_pending()
        tok, spq = self.tok, self.tok.steps_per_quarter
        cols = [i for i, w in enumerate(self.where) if w is not None and w[0] == bar]
        if not cols:
            return [[] for _ in range(self.B)]
        first_step = self.step_cols.index(cols[0])
        rows = []
        for row in self.out[:, cols[0]:].tolist():
            notes, step = [], first_step
            for j, t in enumerate(row[:len(cols)]):
                pitch = tok.pitch_of(t)
                if pitch is not None:
                    length = 1
                    while j + length < len(row) and row[j + length] == tok.hold_id:
                        length += 1
                    notes.append({"pitch": pitch, "start_beats": step / spq, "end_beats": (step + length) / spq})
                step += 1
            rows.append(notes)
        return rows

    # ---- helpers -----------------------------------------------------------------------------------

    def _write_pending(self) -> None:
        """Write the sampled columns held in ``pending`` into ``out`` (B, N) in one call; empties it."""
        if self.pending:
            cols, tokens = zip(*self.pending)
            self.out[:, list(cols)] = torch.stack(tokens, 1)  # (B, len(pending))
            self.pending.clear()

    def _decide_bias(self) -> torch.Tensor:
        """(B, V) mask for a barline inside a length range: BAR or EOS; EOS only after a bar that
        cadenced when a cadence is asked for, else (the tonic pull) EOS more likely after such a bar;
        rows already ended only mark time (BAR)."""
        tok, B, out = self.tok, self.B, self.out
        bias = torch.full((B, tok.vocab_size), float("-inf"))
        bias[:, tok.bar_id] = 0.0
        bias[:, tok.eos_id] = 0.0
        if self.cadence is not None or self.pull is not None:
            cols = self.step_cols[self.done_steps - self.bar_steps:self.done_steps]
            bar = out[:, cols].tolist()
            tonics = self._tonics(out[:, :cols[-1] + 1])
            for b in range(B):
                cadenced = tonics[b] is not None and ends_in_cadence(bar[b], tok, tonics[b], self.meter)
                if self.cadence is not None and not cadenced:
                    bias[b, tok.eos_id] = float("-inf")
                elif self.cadence is None and cadenced:
                    bias[b, tok.eos_id] = self.pull.pull
        bias[self.finished, tok.eos_id] = float("-inf")
        return bias

    def _tonics(self, so_far: torch.Tensor) -> list:
        """Each row's cadence tonic: the requested or primer key's, else the Krumhansl-Schmuckler
        estimate from its notes so far (None while it has none)."""
        if self.key_pc is not None:
            return [self.key_pc] * so_far.shape[0]
        return [sounding_tonic(codes) for codes in self.g.step_codes[so_far.numpy()]]


def sounding_tonic(codes: np.ndarray) -> int | None:
    """The estimated tonic of a row of step codes (``Generator.step_codes``: the pitch class of a NOTE,
    HOLD, REST or NO_TIME per token): each step weighs for the pitch class sounding in it, as the
    notes' durations weigh in ``estimate_key``; None when no note sounds."""
    codes = codes[codes != NO_TIME]
    steps = np.arange(len(codes))
    started = np.maximum.accumulate(np.where(codes != HOLD, steps, 0))  # the step each sound began on
    sounding = codes[started]
    sounding = sounding[sounding >= 0]
    if len(sounding) == 0:
        return None
    return key_of_weights(np.bincount(sounding, minlength=12).astype(np.float64))[0]
