"""Generating melodies from a trained network, one token at a time.

The recurrent state is carried from step to step (a primer is fed once through the network; the
prefix is never run again). With one meter, a tune of ``bars`` bars has a fixed shape,
``BOS TS (BAR step*S)*bars EOS``, so the structural tokens (BOS, TS, BAR, EOS) are forced and only
the S grid steps of each bar are chosen; every sequence is therefore valid and has exactly ``bars``
new bars. At a step the choices are REST, HOLD (only while a note sounds) and the NOTE tokens that
pass the key/scale and pitch-range masks; the logits then go through temperature, top-k and top-p,
and a seeded ``torch.Generator`` draws all ``count`` melodies in one batched pass (Gumbel-max). Beam search
(``beam_width`` > 1) keeps the w most likely masked sequences instead and returns the best ``count``.

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

import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from model.checkpoint import DEFAULT_MODEL_PATH, load_checkpoint
from model.evaluation import condition_ids
from model.params import (MAX_SEED, PITCH_CLASSES, SCALES, GenerationParams, ParameterError,
                          primer_notes)  # re-exported (__all__): callers look for them here
from model.shortterm import CopyModel, CopyState
from model.tokens import MelodyTokenizer, Note

__all__ = ["Generation", "GenerationParams", "Generator", "MAX_SEED", "Melody", "PITCH_CLASSES", "ParameterError",
           "REPETITION_PENALTY", "SCALES", "generate_melody", "primer_notes"]

REPETITION_PENALTY = 2.0  # nats taken off a repeated pattern's logits (probability x ~0.14)


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
class Generation:
    melodies: list[Melody]
    seed: int
    params: GenerationParams
    model: str
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"model": self.model, "seed": self.seed, "params": self.params.to_dict(), "seconds": self.seconds,
                "melodies": [m.to_json() for m in self.melodies]}


class Generator:
    """A loaded model ready to generate; build once per process (a worker keeps one)."""

    def __init__(self, checkpoint_path=None):
        self.path = Path(checkpoint_path) if checkpoint_path is not None else DEFAULT_MODEL_PATH
        self.model, self.tokenizer, ckpt = load_checkpoint(self.path)
        self.copy_model = CopyModel.from_checkpoint(ckpt)  # the short-term model, or None
        self.name = self.path.stem
        self.model.prepare_for_inference()
        tok, V = self.tokenizer, self.tokenizer.vocab_size
        self.note_ids = torch.tensor([i for i in range(V) if tok.pitch_of(i) is not None])
        self.note_set = frozenset(self.note_ids.tolist())
        # (V,) 1 for NOTE and HOLD: after them HOLD may follow (row 1 of the step bias)
        self.sounding = torch.tensor([int(tok.pitch_of(i) is not None or i == tok.hold_id) for i in range(V)])
        self._start_states = {}  # (prefix ids, batch, parameter versions) -> state after them; see _prefix_state

    # ---- the prefix: BOS TS or the primer -------------------------------------------------------

    def _prefix(self, params: GenerationParams) -> tuple[list[int], str]:
        tok = self.tokenizer
        primer = primer_notes(params.primer, tok.steps_per_quarter)
        if primer is None:
            return tok.start_ids(params.meter or "4/4"), params.meter or "4/4"
        try:
            ids = tok.encode_midi(primer) if isinstance(primer, bytes) else tok.encode_notes(primer, params.meter or "4/4")
        except ValueError as e:
            raise ParameterError("primer", "a melody the tokenizer can read", str(e)) from None
        meters = [tok.meter_of(t) for t in ids if tok.meter_of(t) is not None]
        return ids[:-1], meters[-1]  # without EOS; the meter in effect at its end

    def _step_bias(self, params: GenerationParams) -> torch.Tensor:
        """(2, V) additive logit masks for a grid step: row 0 when no note sounds, row 1 when HOLD may follow."""
        tok = self.tokenizer
        bias = torch.full((2, tok.vocab_size), float("-inf"))
        bias[:, tok.rest_id] = 0.0
        bias[1, tok.hold_id] = 0.0
        bias[:, [tok.note_id(p) for p in params.allowed_pitches(tok.config.min_pitch, tok.config.max_pitch)]] = 0.0
        return bias

    def _prefix_state(self, tokens: torch.Tensor, positions: list[int] | None, reuse: bool):
        """The state after running tokens (B, T) (T may be 0; positions: a list for at least T ids).

        Without a primer the prefix fed here is BOS alone: its state is kept per batch size (and
        parameter versions), since one call of the fused LSTM costs ~2 ms here (oneDNN set-up per
        call), as much as ~25 generation steps. The kept state is the very tensor that call returned.
        """
        model, (B, T) = self.model, tokens.shape
        if T == 0:
            return model.init_state(B)
        key = (tuple(tokens[0].tolist()), B, tuple(p._version for p in model.parameters())) if reuse else None
        if key in self._start_states:
            return self._start_states[key]
        _, state = model(tokens, torch.tensor(positions[:T]).expand(B, -1) if positions is not None else None)
        if key is not None:
            if len(self._start_states) >= 16:  # a few batch sizes in use; old parameter versions go
                self._start_states.clear()
            self._start_states[key] = state
        return state

    # ---- generation ------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, params: GenerationParams) -> Generation:
        started = time.perf_counter()
        params.validate(self.tokenizer)
        seed = params.seed if params.seed is not None else secrets.randbelow(MAX_SEED + 1)
        params = replace(params, seed=seed, scale=params.scale or ("major" if params.key else None))
        tok, model = self.tokenizer, self.model
        prefix, primer_meter = self._prefix(params)
        meter = params.meter or primer_meter
        template = []  # the generated part: -1 marks a grid step to choose
        for b in range(params.bars):
            template.append(tok.bar_id)
            if b == 0 and meter != primer_meter:
                template.append(tok.meter_id(meter))  # a meter change after the primer
            template += [-1] * tok.bar_steps(meter)
        template.append(tok.eos_id)
        full = prefix + template
        placeholder = [tok.rest_id if t == -1 else t for t in full]
        # (N,) condition ids: position in the bar and bars remaining (known: the template fixes the end)
        positions = condition_ids(tok, placeholder, model.config) if model.config.conditioned else None

        beam = params.beam_width > 1
        B, N, P = (params.beam_width if beam else params.count), len(full), len(prefix)
        out = torch.tensor(placeholder).repeat(B, 1)  # (B, N)
        # warm the state on the prefix (all but its last token, which the loop feeds)
        state = self._prefix_state(out[:, :P - 1], positions, reuse=params.primer is None)
        gen = torch.Generator().manual_seed(seed)
        noise, noise_used = (), 0
        # the loop's inputs are (B,) tensors made once: per position value, per forced token, the draws
        pos_inputs = {p: torch.full((B,), p) for p in set(positions)} if positions is not None else None
        forced_inputs = {t: torch.full((B,), t) for t in {*template, full[P - 1]} if t != -1}
        x = forced_inputs[full[P - 1]]  # (B,) the token fed at step i
        # (V, V): row t = the step mask after step token t (HOLD may follow NOTE and HOLD only)
        mask_after = self._step_bias(params)[self.sounding]
        last_steps = [t for t in prefix if tok.is_step(t)]
        # (B,) the last step token; it selects the mask row (any sounding token stands for NOTE/HOLD)
        last = torch.full((B,), tok.hold_id if last_steps and last_steps[-1] != tok.rest_id else tok.rest_id)
        pending = []  # sampled (column, (B,) tokens) not yet in `out`: written once a bar, not once a step
        step_cols = [i for i, t in enumerate(full) if t == -1 or tok.is_step(t)]  # every grid step column
        window = 2 * tok.bar_steps(meter)
        penalty = None
        bar_steps = tok.bar_steps(meter)
        ban = None  # (B, V) the caps' -inf mask for the first step of a bar, or None
        scores = torch.full((B,), float("-inf"))
        scores[0] = 0.0
        done_steps = len(last_steps)
        copy = None  # the short-term model's state over each melody so far
        if self.copy_model is not None and params.short_term:
            copy = CopyState(self.copy_model, tok.vocab_size, batch=B, capacity=N)
            for t in prefix[:-1]:
                copy.push(t)
        for i in range(P - 1, N - 1):
            logits, state = model.step(x, pos_inputs[positions[i]] if positions is not None else None, state)  # (B, V)
            if copy is not None:  # the short-term model reads x; at a grid step it is mixed into the logits
                if full[i + 1] == -1:
                    copy.push_and_mix(x, logits)  # in place: log((1 - g) p_network + g p_copy) + a constant
                else:
                    copy.push(x)
            if full[i + 1] != -1:
                if full[i + 1] == tok.bar_id and params.avoid_repetition and done_steps >= bar_steps:
                    self._write_pending(out, pending)
                    ban = self._stuck_bar_ban(out[:, step_cols[done_steps - bar_steps:done_steps]])
                    if done_steps >= window:
                        penalty = self._repetition_penalty(out[:, step_cols[done_steps - window:done_steps]])
                x = forced_inputs[full[i + 1]]
                continue  # a forced structural token, already in `out`
            logits.add_(mask_after.index_select(0, last))  # (B, V) grammar + key/scale/range masks
            if penalty is not None:
                logits += penalty
            if ban is not None:  # first step after a bar of only rests or only HOLD
                logits += ban
                ban = None
            if beam:
                logp = torch.log_softmax(logits / params.temperature, dim=-1)  # (B, V)
                top, flat = torch.topk((scores[:, None] + logp).flatten(), B)  # best B continuations
                parent, choice = flat // logp.shape[1], flat % logp.shape[1]
                dead = ~torch.isfinite(top)  # fewer legal continuations than beams: copy the best one
                parent[dead], choice[dead] = parent[0], choice[0]
                out, scores = out[parent], top
                state = tuple(s[:, parent] for s in state) if isinstance(state, tuple) else state[:, parent]
                penalty = penalty[parent] if penalty is not None else None
                if copy is not None:
                    copy.reorder(parent)
                out[:, i + 1] = choice
            else:
                if noise_used == len(noise):  # Gumbel noise for the next bar's draws, in one call
                    noise, noise_used = self._gumbel((tok.bar_steps(meter), B, tok.vocab_size), gen).unbind(0), 0
                choice = self._sample(logits, params, noise[noise_used])
                noise_used += 1
                pending.append((i + 1, choice))
            x = last = choice
            done_steps += 1
        self._write_pending(out, pending)
        if beam:
            order = torch.argsort(scores, descending=True, stable=True)[:params.count]
            out, scores = out[order], scores[order]
        info = {"model": self.name, "seed": seed, "params": params.to_dict()}
        melodies = []
        for b in range(out.shape[0]):
            ids = out[b].tolist()
            if params.primer is not None and not params.include_primer:
                ids = self._without_primer(ids[P:], meter)
            notes, _ = tok.decode_notes(ids)  # validates the grammar
            melodies.append(Melody(b, ids, notes, meter, float(params.tempo), tok, info,
                                   float(scores[b]) if beam else None))
        return Generation(melodies, seed, params, self.name, time.perf_counter() - started)

    @staticmethod
    def _gumbel(shape, gen) -> torch.Tensor:
        """Standard Gumbel noise -log(-log(U)) from the seeded generator."""
        u = torch.rand(shape, generator=gen).clamp_(1e-10, 1.0 - 1e-7)
        return u.log_().neg_().log_().neg_()

    @staticmethod
    def _write_pending(out: torch.Tensor, pending: list) -> None:
        """Write the sampled columns held in ``pending`` into ``out`` (B, N) in one call; empties it."""
        if pending:
            cols, tokens = zip(*pending)
            out[:, list(cols)] = torch.stack(tokens, 1)  # (B, len(pending))
            pending.clear()

    def _sample(self, logits, params, gumbel) -> torch.Tensor:
        """Temperature, top-k, top-p, then one draw per row -> (B,). May overwrite ``logits``.

        The draw is the Gumbel-max trick: argmax(logits / T + G) with G ~ Gumbel(0, 1) is an exact
        sample of softmax(logits / T), in two tensor ops instead of softmax + multinomial.
        """
        if params.temperature != 1.0:
            logits = logits / params.temperature
        if 0 < params.top_k < logits.shape[1]:
            kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]  # (B, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if params.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            beyond = probs.cumsum(-1) - probs > params.top_p  # tokens after the nucleus (the first always stays)
            logits = logits.scatter(1, order, sorted_logits.masked_fill(beyond, float("-inf")))
        return logits.add_(gumbel).argmax(-1)

    def _repetition_penalty(self, recent: torch.Tensor) -> torch.Tensor | None:
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

    def _stuck_bar_ban(self, bar: torch.Tensor) -> torch.Tensor | None:
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
        """One melody's last two bars: the same test as _repetition_penalty's, on a list of ids."""
        notes = [t for t in row if t in self.note_set]
        rest, hold = self.tokenizer.rest_id, self.tokenizer.hold_id
        return len(notes) >= 4 and len(set(notes)) <= 2 or all(t == rest for t in row) or all(t == hold for t in row)

    def _without_primer(self, generated: list[int], meter: str) -> list[int]:
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

