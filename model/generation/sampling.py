"""Generating melodies from a trained network, one token at a time.

The recurrent state is carried from step to step (a primer is fed once through the network; the
prefix is never run again); the per-request loop lives in ``model.generation.rows`` so that a worker can run
many requests in one batch. **Length.** ``bars`` fixes the shape ``BOS TS (BAR step*S)*bars EOS``:
the structural tokens are forced and only the S grid steps of each bar are chosen, and the network's
bars-remaining input counts down to the end. A range (``min_bars``..``max_bars``) instead samples
BAR or EOS at each barline inside it (EOS forced at the maximum) with the end "unknown" to the
network until the last possible bar (there it is known: 0 bars remain), so the tune ends where the
model ends it. At a step the choices are REST, HOLD (only while
a note sounds) and the NOTE tokens that pass the key/scale and pitch-range masks; the logits then go
through temperature, top-k and top-p, and a seeded ``torch.Generator`` draws all ``count`` melodies in
one batched pass (Gumbel-max). Beam search (``beam_width`` > 1) keeps the w most likely masked
sequences instead and returns the best ``count``.

**Cadence** (``cadence="tonic"``, ``model.generation.endings``): masks in the last bar make the last note the
tonic, on a strong beat, held to the barline (at least a beat); in a range EOS is allowed only
after a bar whose last note is the tonic on a strong beat, at least a beat long. Without it the
**tonic pull** (``tonic_pull`` nats, on by default) leans the same way softly: the tonic gets more
at the last bar's cadence points, and in a range EOS gets more after a bar that cadences.
**Quality gate** (``redraw_degenerate``): a melody whose generated part is degenerate by
``model.evaluation.metrics``' rule is drawn again with a seed derived from the request's (``derived_seed``), at
most ``MAX_REDRAWS`` times; the result says how many were redrawn. A primer's tempo and key
signature are kept unless the request sets tempo and key.

Anti-degeneracy guard (``avoid_repetition``, on by default): at every barline the last two bars are
inspected; if they hold at least 4 onsets on only one or two pitches, those pitches' logits are
lowered by ``REPETITION_PENALTY`` nats for the next bar; if they are all rests (or one note held
throughout), REST (or HOLD) is lowered the same way. Continuing the pattern stays possible, just rarer.
Two hard caps come with it, because the bar count is forced (EOS waits for the last bar) and a model
that has "finished" its tune early would otherwise fill the remaining bars with rests: after a bar of
nothing but rests the next bar must start with a note (REST is masked at its first step), and after
a bar of nothing but HOLD the held note must end (HOLD is masked there). Any stretch longer than two
bars contains a whole bar, so no silence and no single note lasts longer than two bars. Checked once
a bar on plain ints, the caps cost nothing per token.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from model import DEFAULT_MODEL_PATH
from model.network.checkpoint import load_checkpoint
from model.network.conditions import condition_ids
from model.generation.batcher import Request, StepLoop
from model.generation.endings import pitch_class_columns
from model.generation.infill import infill_draws
from model.generation.form_plan import FORM_TABLE, load_form_table
from model.generation.quality import degenerate_reason
from model.generation.rows import HOLD, NO_TIME, REST, Draw, MelodyRows
from model.generation.params import (DEFAULT_TEMPO, MAX_REDRAWS, MAX_SEED, GenerationParams, ParameterError, primer_notes)
from model.representation.keys import PITCH_CLASSES
from model.representation.styles import ANY
from model.network.shortterm import CopyModel
from model.representation.tokens import MelodyTokenizer, Note

__all__ = ["Generation", "GenerationFailed", "Generator", "Melody", "REPETITION_PENALTY", "generate_melody"]

REPETITION_PENALTY = 2.0  # nats taken off a repeated pattern's logits (probability x ~0.14)


class GenerationFailed(ValueError):
    """No acceptable melody within the quality gate's bound (the message says what to change)."""


def derived_seed(seed: int, index: int, attempt: int) -> int:
    """The seed of redraw ``attempt`` of melody ``index``: a hash of the three, so it is reproducible."""
    digest = hashlib.blake2b(f"{seed}:{index}:{attempt}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


@dataclass
class Melody:
    index: int
    tokens: list[int]
    notes: list[Note]
    meter: str
    tempo: float
    tokenizer: MelodyTokenizer = field(repr=False)
    info: dict = field(default_factory=dict, repr=False)  # model, seed, params
    score: float | None = None                             # beam search: total masked log-probability

    def midi_bytes(self) -> bytes:
        return self.tokenizer.decode_midi_bytes(self.tokens, qpm=self.tempo)

    def musicxml_bytes(self) -> bytes:
        return self.tokenizer.decode_musicxml(self.tokens, qpm=self.tempo)

    def to_json(self) -> dict:
        spq, sec = self.tokenizer.steps_per_quarter, 60.0 / self.tempo
        notes = [{"pitch": n.pitch, "start_beats": n.start / spq, "end_beats": n.end / spq,
                  "start_s": n.start / spq * sec, "end_s": n.end / spq * sec} for n in self.notes]
        return {"index": self.index, **self.info, "tempo": self.tempo, "meter": self.meter,
                "bars": self.tokenizer.bar_count(self.tokens), "steps_per_quarter": spq, "score": self.score,
                "notes": notes, "tokens": [self.tokenizer.vocab[t] for t in self.tokens]}


@dataclass
class Prefix:
    """What generation continues: BOS TS, or a primer's tokens (without EOS), with what the primer sets."""
    ids: list[int]
    meter: str                   # the meter in effect at its end
    tempo: float | None = None   # the primer's tempo (quarter notes per minute)
    key_pc: int | None = None    # the tonic of the primer's last key signature
    key_minor: bool = False      # ... and whether it is a minor key
    after: list[int] = field(default_factory=list)  # infilling: the kept tokens after the generated bars
                                                    # (from the BAR that follows them to EOS); empty otherwise


@dataclass
class Generation:
    melodies: list[Melody]
    seed: int
    params: GenerationParams
    model: str
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"model": self.model, "seed": self.seed, "params": self.params.to_dict(), "seconds": self.seconds,
                "redrawn": sum(m.info.get("redrawn", 0) for m in self.melodies),
                "melodies": [m.to_json() for m in self.melodies]}


class Generator:
    """A loaded model ready to generate; build once per process (a worker keeps one)."""

    def __init__(self, checkpoint_path=None):
        self.path = Path(checkpoint_path) if checkpoint_path is not None else DEFAULT_MODEL_PATH
        self.model, self.tokenizer, ckpt = load_checkpoint(self.path)
        self.copy_model = CopyModel.from_checkpoint(ckpt)  # the short-term model, or None
        self.form_table = load_form_table(self.path.with_name(FORM_TABLE))  # default forms (model.generation.form_plan)
        self.train_config = ckpt.get("train_config")  # how it was trained (its data: worker/registry.py reports it)
        self.key_prior = ckpt.get("key_prior")  # the training tunes' share of each key (a network with a key input)
        self.style_key_priors = ckpt.get("style_key_priors") or {}  # the same per style (model/training/key_priors.py)
        self.styles = self.model.config.styles  # the styles the network's style input knows (none: no such input)
        self.name = self.path.stem
        self.model.prepare_for_inference()
        tok, V = self.tokenizer, self.tokenizer.vocab_size
        self.note_ids = torch.tensor([i for i in range(V) if tok.pitch_of(i) is not None])
        self.note_set = frozenset(self.note_ids.tolist())
        # (V,) 1 for NOTE and HOLD: after them HOLD may follow (row 1 of the step bias)
        self.sounding = torch.tensor([int(tok.pitch_of(i) is not None or i == tok.hold_id) for i in range(V)])
        self._step_masks = {}  # allowed pitches -> step_masks' table
        self._condition_ids = {}  # (placeholder tokens, known_end, key) -> condition_ids
        self._start_states = {}  # (prefix ids, batch, parameter versions) -> state after them; see prefix_state
        self.tonic_columns = pitch_class_columns(tok)  # (12, V) for the tonic pull
        # (V,) per token: a NOTE's pitch class, or REST, HOLD, NO_TIME (model.generation.rows' codes; for the key so far)
        self.step_codes = np.array([tok.pitch_of(i) % 12 if tok.pitch_of(i) is not None else REST if i == tok.rest_id
                                    else HOLD if i == tok.hold_id else NO_TIME for i in range(V)])
        self.finished_row = torch.full((V,), float("-inf"))  # an ended row's only choice: REST
        self.finished_row[tok.rest_id] = 0.0

    # ---- the prefix: BOS TS or the primer -------------------------------------------------------

    def prefix(self, params: GenerationParams) -> Prefix:
        tok = self.tokenizer
        primer = primer_notes(params.primer, tok.steps_per_quarter)
        if primer is None:
            return Prefix(tok.start_ids(params.meter or "4/4"), params.meter or "4/4")
        tempo = key_pc = None
        key_minor = False
        try:
            if isinstance(primer, bytes):
                from model.representation.parsing import encode_midi, load_midi
                pm = load_midi(primer)
                ids = encode_midi(tok, pm)
                tempo = round(float(pm.get_tempo_changes()[1][0]), 2)  # the first tempo (120 when none is set)
                if pm.key_signature_changes:  # pretty_midi: 0..11 major, 12..23 minor keys, tonic first
                    key_pc = pm.key_signature_changes[-1].key_number % 12
                    key_minor = pm.key_signature_changes[-1].key_number >= 12
            else:
                ids = tok.encode_notes(primer, params.meter or "4/4")
        except ValueError as e:
            raise ParameterError("primer", "a melody the tokenizer can read", str(e)) from None
        meters = [tok.meter_of(t) for t in ids if tok.meter_of(t) is not None]
        return Prefix(ids[:-1], meters[-1], tempo, key_pc, key_minor)  # without EOS; the meter in effect at its end

    # ---- the rules a request's rows apply (model/generation/rows.py calls these) -----------------

    def style_id(self, params: GenerationParams) -> int | None:
        """The style id the network is told for a request (None: unknown, "any"); a ParameterError
        when the model does not know the style asked for."""
        if params.style in (None, ANY):
            return None
        if params.style not in self.styles:
            known = ", ".join((*self.styles, ANY)) if self.styles else f"null or {ANY!r}"
            raise ParameterError("style", f"{known} (this model's styles)" if self.styles else
                                 f"{known}: this model has no style input", params.style)
        return self.styles.index(params.style)

    def step_bias(self, params: GenerationParams) -> torch.Tensor:
        """(2, V) additive logit masks for a grid step: row 0 when no note sounds, row 1 when HOLD may follow."""
        tok = self.tokenizer
        bias = torch.full((2, tok.vocab_size), float("-inf"))
        bias[:, tok.rest_id] = 0.0
        bias[1, tok.hold_id] = 0.0
        bias[:, [tok.note_id(p) for p in params.allowed_pitches(tok.config.min_pitch, tok.config.max_pitch)]] = 0.0
        return bias

    def step_masks(self, params: GenerationParams) -> torch.Tensor:
        """(V + 1, V) the additive mask of a grid step after step token t (row t: ``step_bias`` row 1
        after a NOTE or HOLD, row 0 otherwise), and a last row of zeros (no mask); one table per
        set of allowed pitches, shared by the requests that allow the same ones."""
        tok = self.tokenizer
        allowed = tuple(params.allowed_pitches(tok.config.min_pitch, tok.config.max_pitch))
        return _kept(self._step_masks, allowed, 64, lambda: torch.cat(
            [self.step_bias(params)[self.sounding], torch.zeros(1, tok.vocab_size)]))

    def condition_ids(self, ids: list[int], known_end: bool, key: int | None) -> list[int]:
        """``model.network.conditions.condition_ids`` of a template's placeholder tokens (a new list),
        kept per (tokens, known_end, key): every request of one shape and key has the same ones."""
        return list(_kept(self._condition_ids, (tuple(ids), known_end, key), 256, lambda: condition_ids(
            self.tokenizer, ids, self.model.config, known_end=known_end, key=key)))

    def prefix_state(self, tokens: torch.Tensor, positions: list[int] | None, rows: int, reuse: bool):
        """The state after running tokens (1, T) (T may be 0; positions: a list for at least T ids),
        repeated for ``rows`` rows. It is computed for one row whatever ``rows`` is, so a row's state
        does not depend on how many melodies a request asks for.

        Without a primer the prefix fed here is BOS alone: its state is kept (per parameter versions),
        since one call of the fused LSTM costs ~2 ms here (oneDNN set-up per call), as much as ~25
        generation steps.
        """
        model, T = self.model, tokens.shape[1]
        if T == 0:
            return model.init_state(rows)
        key = (tuple(tokens[0].tolist()), tuple(positions[:T]) if positions is not None else None,
               tuple(p._version for p in model.parameters())) if reuse else None
        state = self._start_states.get(key) if key is not None else None
        if state is None:
            _, state = model(tokens, torch.tensor([positions[:T]]) if positions is not None else None)
            if key is not None:
                if len(self._start_states) >= 16:  # old parameter versions go
                    self._start_states.clear()
                self._start_states[key] = state
        expand = lambda s: s.repeat(1, rows, 1)  # (L, 1, H) -> (L, rows, H)
        return tuple(expand(s) for s in state) if isinstance(state, tuple) else expand(state)

    # ---- generation ------------------------------------------------------------------------------

    def generate(self, params: GenerationParams, on_bar=None) -> Generation:
        """Generate for one request through the step loop a generate worker's batcher runs
        (model/generation/batcher.py), with the same kernels, so one request and one seed give the
        same bytes here (the CLI, evaluation) as from the service, idle or busy. ``on_bar`` as in
        ``model.generation.batcher.Request``."""
        loop = StepLoop(self)
        request = Request(self.plan(params), on_bar)
        loop.waiting.append(request)
        loop.run()
        return request.result()

    def plan(self, params: GenerationParams):
        """A request as a generator of draws: it yields a ``model.generation.rows.Draw``, is sent back that
        draw's [(ids, score)], and returns the Generation. The first draw is the request's;
        the quality gate's redraws follow. Whoever runs the draws (``generate`` one after another,
        the batcher inside its shared step loop) gets the same melodies."""
        started = time.perf_counter()
        params.validate(self.tokenizer)
        self.style_id(params)  # a style this model knows
        seed = params.seed if params.seed is not None else secrets.randbelow(MAX_SEED + 1)
        params = replace(params, seed=seed, scale=params.scale or ("major" if params.key else None))
        prefix = self.prefix(params)
        # a continuation keeps its primer's tempo and meter unless the request sets them
        params = replace(params, tempo=float(params.tempo if params.tempo is not None
                                             else prefix.tempo or DEFAULT_TEMPO))
        key_pc = PITCH_CLASSES[params.key] if params.key else prefix.key_pc
        if params.regenerate is not None:
            drawn = yield from infill_draws(self, params, prefix, key_pc, seed)
            redrawn = [0] * len(drawn)
        elif params.redraw_degenerate:
            drawn, redrawn = yield from self._gate(params, prefix, key_pc, seed)
        else:
            drawn = yield Draw(params, prefix, key_pc, seed, params.count)
            redrawn = [0] * len(drawn)
        info = {"model": self.name, "seed": seed, "params": params.to_dict()}
        melodies = []
        for b, (ids, score) in enumerate(drawn):
            notes, _ = self.tokenizer.decode_notes(ids)  # validates the grammar
            melodies.append(Melody(b, ids, notes, params.meter or prefix.meter, params.tempo, self.tokenizer,
                                   {**info, "redrawn": redrawn[b]}, score))
        return Generation(melodies, seed, params, self.name, time.perf_counter() - started)

    def _gate(self, params, prefix: Prefix, key_pc, seed: int, drawn: list | None = None):
        """The quality gate (a generator of draws, see ``plan``): a melody whose generated part is
        degenerate (``model.evaluation.metrics``' rule) is drawn again with a seed derived from (seed, index,
        attempt), at most MAX_REDRAWS times, so the same request still gives the same bytes. Beam
        search takes the next best beam instead, and a sampled melody when no beam is left;
        ``redrawn`` then counts the beams passed over as well. Returns (drawn, redrawn per melody)."""
        meter = params.meter or prefix.meter
        bar_steps = self.tokenizer.bar_steps(meter)
        bad = lambda ids: degenerate_reason(self._generated_part(ids, prefix, meter, params), self.tokenizer, bar_steps)
        if params.beam_width > 1:  # the next best beams; where none is left, a sampled melody (gated below)
            ranked = yield Draw(params, prefix, key_pc, seed, params.beam_width)
            good = [d for d in ranked if bad(d[0]) is None][:params.count]
            skipped = [sum(1 for d in ranked[:ranked.index(g)] if bad(d[0])) for g in good]
            if len(good) == params.count:
                return good, skipped
            sampled, counts = yield from self._gate(replace(params, beam_width=1), prefix, key_pc, seed,
                                                    [(ranked[0][0], None)] * (params.count - len(good)))
            return good + sampled, skipped + [params.beam_width + c for c in counts]
        if drawn is None:
            drawn = yield Draw(params, prefix, key_pc, seed, params.count)
        out, counts = [], []
        for b, (ids, score) in enumerate(drawn):
            attempt, reason = 0, bad(ids)
            while reason is not None:
                if attempt == MAX_REDRAWS:
                    raise GenerationFailed(f"melody {b} was degenerate in {MAX_REDRAWS + 1} draws (last: {reason}); "
                                           "try a higher temperature, a wider pitch range or another seed")
                attempt += 1  # the draw names melody b (a batcher streams its bars as melody b's)
                (ids, score), = yield Draw(params, prefix, key_pc, derived_seed(seed, b, attempt), 1, replaces=b)
                reason = bad(ids)
            out.append((ids, score))
            counts.append(attempt)
        return out, counts

    def _generated_part(self, ids: list[int], prefix: Prefix, meter: str, params) -> list[int]:
        """The melody without its primer (what the gate judges: a primer is the user's own); a draw
        made with ``include_primer`` false comes without it already."""
        if len(prefix.ids) <= 2 or (params.primer is not None and not params.include_primer):
            return ids
        return self.without_primer(ids[len(prefix.ids):], meter)

    def run_draw(self, draw: Draw) -> list:
        """A draw's ``count`` melodies (beam search: the best ``count`` beams) as [(ids, score or None)]:
        the rows' loop of ``model.generation.rows`` for this request alone, at its own batch size. Beam
        search runs here (its rows reorder by parent), wherever the request runs; sampled draws
        run in ``model.generation.batcher.StepLoop``."""
        rows = MelodyRows(self, *draw)
        state = rows.start_state()
        while not rows.done:
            logits, state = self.model.step(*rows.inputs(), state)  # (B, V)
            parent = rows.advance(logits)
            if parent is not None:  # beam search reordered its rows
                state = tuple(s[:, parent] for s in state) if isinstance(state, tuple) else state[:, parent]
        return rows.result(draw.count)

    @staticmethod
    def gumbel(shape, gen) -> torch.Tensor:
        """Standard Gumbel noise -log(-log(U)) from the seeded generator."""
        u = torch.rand(shape, generator=gen).clamp_(1e-10, 1.0 - 1e-7)
        return u.log_().neg_().log_().neg_()

    def sample(self, logits, params, gumbel) -> torch.Tensor:
        """Temperature, top-k, top-p, then one draw per row -> (B,). May overwrite ``logits``.

        The draw is the Gumbel-max trick: argmax(logits / T + G) with G ~ Gumbel(0, 1) is an exact
        sample of softmax(logits / T), in two tensor ops instead of softmax + multinomial
        (``model.generation.batcher.StepLoop`` makes them once for all its rows).
        """
        return self.tempered(logits, params).add_(gumbel).argmax(-1)

    @staticmethod
    def tempered(logits, params) -> torch.Tensor:
        """The logits to draw from: temperature, top-k, top-p (``logits`` itself at the defaults, else a new tensor)."""
        temperature = params.sampling_temperature
        if temperature != 1.0:
            logits = logits / temperature
        if 0 < params.top_k < logits.shape[1]:
            kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]  # (B, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if params.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            beyond = probs.cumsum(-1) - probs > params.top_p  # tokens after the nucleus (the first always stays)
            logits = logits.scatter(1, order, sorted_logits.masked_fill(beyond, float("-inf")))
        return logits

    def repetition_penalty(self, recent: torch.Tensor) -> torch.Tensor | None:
        """recent (B, W) step tokens of the last two bars -> (B, V) logit penalty, or None."""
        tok, (B, W) = self.tokenizer, recent.shape
        # most bars trigger nothing: decide that on Python ints first (the tensor ops below cost ~50 µs)
        if not any(self._repeats(row) for row in recent.tolist()):
            return None
        counts = torch.zeros(B, self.tokenizer.vocab_size).scatter_add_(1, recent, torch.ones(B, W))
        played = counts[:, self.note_ids] > 0  # (B, pitches)
        onsets = counts[:, self.note_ids].sum(1)
        penalty = torch.zeros_like(counts)
        loop = (onsets >= 4) & (played.sum(1) <= 2)  # a one- or two-pitch loop
        penalty[:, self.note_ids] -= REPETITION_PENALTY * (played & loop[:, None])
        penalty[:, tok.rest_id] -= REPETITION_PENALTY * (counts[:, tok.rest_id] == W)  # silence
        penalty[:, tok.hold_id] -= REPETITION_PENALTY * (counts[:, tok.hold_id] == W)  # one endless note
        return penalty if bool(penalty.any()) else None

    def stuck_bar_ban(self, bar: torch.Tensor) -> torch.Tensor | None:
        """bar (B, S) step tokens of the bar just ended -> (B, V) -inf on REST where it was all rests and
        on HOLD where it was all HOLD (the next step must then play, or end the note), or None."""
        tok = self.tokenizer
        rows = bar.tolist()
        stuck = [(all(t == tok.rest_id for t in row), all(t == tok.hold_id for t in row)) for row in rows]
        if not any(r or h for r, h in stuck):
            return None
        ban = torch.zeros(len(rows), tok.vocab_size)
        for b, (rests, holds) in enumerate(stuck):
            if rests or holds:
                ban[b, tok.rest_id if rests else tok.hold_id] = float("-inf")
        return ban

    def _repeats(self, row: list[int]) -> bool:
        """One melody's last two bars: the same test as repetition_penalty's, on a list of ids."""
        notes = [t for t in row if t in self.note_set]
        rest, hold = self.tokenizer.rest_id, self.tokenizer.hold_id
        return len(notes) >= 4 and len(set(notes)) <= 2 or all(t == rest for t in row) or all(t == hold for t in row)

    def without_primer(self, generated: list[int], meter: str) -> list[int]:
        """BOS TS + the generated bars; a note held over from the primer becomes rests."""
        tok = self.tokenizer
        ids = tok.start_ids(meter) + [t for j, t in enumerate(generated) if not (j == 1 and tok.meter_of(t))]
        i = 3  # first step of the first bar (BOS TS BAR ...)
        while i < len(ids) and ids[i] == tok.hold_id:
            ids[i] = tok.rest_id
            i += 1
        return ids


_GENERATORS: dict = {}


def generate_melody(params: GenerationParams | dict, model=None) -> Generation:
    """Generate from parameters (a GenerationParams or a dict of its fields).

    ``model``: None (the shipped default), a checkpoint path, or a Generator. Generators built
    from paths are cached per process (keyed by path and modification time).
    """
    if isinstance(params, dict):
        unknown = sorted(set(params) - set(GenerationParams.__dataclass_fields__))
        if unknown:
            raise ParameterError(unknown[0], "one of " + ", ".join(GenerationParams.__dataclass_fields__),
                                 params[unknown[0]])
        params = GenerationParams(**params)
    if not isinstance(model, Generator):
        path = Path(model) if model is not None else DEFAULT_MODEL_PATH
        key = (str(path.resolve()), path.stat().st_mtime_ns if path.exists() else None)
        if key not in _GENERATORS:
            _GENERATORS.clear()  # one model per process at a time
            _GENERATORS[key] = Generator(path)
        model = _GENERATORS[key]
    return model.generate(params)



def _kept(cache: dict, key, limit: int, make):
    """``cache[key]``, made by ``make()`` when missing; a cache at ``limit`` entries starts over."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= limit:
            cache.clear()
        value = cache[key] = make()
    return value
