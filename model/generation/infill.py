"""Bars regenerated in place (infilling): a span of a primer's bars drawn anew, every note outside it kept.

A left-to-right network cannot read what comes after the span, so the span is drawn by importance
sampling. ``INFILL_CANDIDATES`` candidate spans continue the bars before the span (rows of one
draw, so they run in the batcher like any request: the network is told how many bars remain to the
tune's real end, and the ending's rules stay with the tune's last bar); each candidate k is weighted
by the probability the model gives the kept bars after the span when it has read the candidate,

    w_k ∝ p(right | left, span_k)    (teacher forced, the network mixed with its short-term model),

and the ``count`` melodies are drawn from the candidates by those weights (without replacement), with
the request's seed. When candidates come from the model's own distribution this draws from
p(span | left, right); temperature, top-k/top-p and the key and range masks change the proposal, so
the draw is then from the weighted proposal (the kept right side still decides). Beam search takes
the candidates (beams) with the highest sum of the span's and the right side's log-probabilities.

What is kept: every token before the span's first barline and from the barline after its last bar to
the end, so every note that starts and ends outside the span keeps its onset, length and pitch. A
note tied into the span from the left ends at the span's barline unless a candidate holds it; when
the kept bars after the span begin by holding a note, only candidates whose last step sounds can
precede them (the others weigh nothing). A candidate whose whole tune is degenerate (the quality
gate's rule) weighs nothing too; when no candidate is left the request fails with a message.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from model.generation.params import ParameterError
from model.generation.quality import degenerate_reason
from model.generation.rows import Draw, melody_key
from model.network.conditions import condition_ids
from model.network.shortterm import last_barline

INFILL_CANDIDATES = 16   # candidate spans weighed per request (count alternatives are drawn among them)
INFILL_STREAM = 0x696E66  # mixed into the seed for the draw among candidates, so it has its own stream


def split_at_bars(tokenizer, ids: list[int], first: int, last: int) -> tuple[list[int], list[int]]:
    """(left, right) of a tune's ids around bars ``first``..``last`` (1-based, inclusive): left is every
    token before bar ``first``'s barline; right every token from the barline after bar ``last`` to EOS
    (just EOS when the span reaches the end). Raises ParameterError for a span outside the tune or one
    that changes meter inside it."""
    tok = tokenizer
    ids = list(ids) if ids and ids[-1] == tok.eos_id else list(ids) + [tok.eos_id]
    bars = [i for i, t in enumerate(ids) if t == tok.bar_id]
    if not 1 <= first <= last <= len(bars):
        raise ParameterError("regenerate", f"bars inside the primer's 1..{len(bars)} (from_bar <= to_bar)",
                             {"from_bar": first, "to_bar": last})
    end = bars[last] if last < len(bars) else len(ids) - 1
    if any(tok.meter_of(t) is not None for t in ids[bars[first - 1] + 2:end]):
        raise ParameterError("regenerate", "a span without a change of meter inside it",
                             {"from_bar": first, "to_bar": last})
    return ids[:bars[first - 1]], ids[end:]


def infill_draws(generator, params, prefix, key_pc, seed: int):
    """The plan of an infilling request (a generator of draws, see ``Generator.plan``): one draw of
    candidate spans, then the choice among them. Returns [(whole tune ids, score or None)]."""
    tok = generator.tokenizer
    first, last = params.span
    left, right = split_at_bars(tok, prefix.ids, first, last)
    meters = [tok.meter_of(t) for t in left if tok.meter_of(t) is not None]
    around = replace(prefix, ids=left, meter=meters[-1], after=right)
    beam = params.beam_width > 1
    rows = params.beam_width if beam else max(INFILL_CANDIDATES, params.count)
    span_params = replace(params, bars=last - first + 1, meter=None, include_primer=True, regenerate=None,
                          count=rows)
    drawn = yield Draw(span_params, around, key_pc, seed, span_params.count)
    start = len(drawn[0][0]) - 1  # where the kept right side begins in every candidate's whole tune
    tunes = [ids[:-1] + right for ids, _ in drawn]
    key = melody_key(generator, span_params, around, seed) if generator.model.config.key_dim else None
    logp = right_logprob(generator, tunes, start, key, span_params)
    for k, ids in enumerate(tunes):
        if degenerate_reason(generator.without_primer(ids[len(left):start] + [tok.eos_id], meters[-1]), tok) is not None:
            logp[k] = -math.inf
    alive = np.flatnonzero(np.isfinite(logp))
    if len(alive) < params.count:
        raise ParameterError("regenerate", f"a span the model can fill: {len(alive)} of {len(tunes)} candidates fit "
                             "the kept bars (try another seed, a higher temperature or a wider pitch range)",
                             params.regenerate)
    if beam:
        total = logp + np.array([score for _, score in drawn])
        chosen = sorted(alive, key=lambda k: -total[k])[:params.count]
        return [(tunes[k], float(total[k])) for k in chosen]
    weights = np.exp(logp[alive] - logp[alive].max())
    rng = np.random.default_rng([int(seed), INFILL_STREAM])
    chosen = rng.choice(alive, size=params.count, replace=False, p=weights / weights.sum())
    return [(tunes[k], None) for k in chosen]


@torch.inference_mode()
def right_logprob(generator, tunes: list[list[int]], start: int, key: int | None, params) -> np.ndarray:
    """(K,) natural-log probability of each tune's tokens from index ``start`` on (the kept right
    side), teacher forced from BOS through the network (told the tune's key, bars remaining and style, as
    generation tells it), mixed with the short-term model when the request uses it. A right side
    that begins by holding a note after a candidate's rest is impossible: -inf."""
    tok, model = generator.tokenizer, generator.model
    out = np.zeros(len(tunes))
    for k, ids in enumerate(tunes):
        before = [t for t in ids[:start] if tok.is_step(t)]
        after = [t for t in ids[start:] if tok.is_step(t)]
        if after and after[0] == tok.hold_id and (not before or before[-1] == tok.rest_id):
            out[k] = -math.inf
    batch = torch.tensor(tunes)  # (K, T): every candidate has the same length
    # the candidates share their structure, so their conditions (a step is a step to them: rests stand in)
    structure = [tok.rest_id if t == tok.hold_id else t for t in tunes[0]]
    style = generator.style_id(params) if model.config.style_dim else None
    positions = torch.tensor([condition_ids(tok, structure, model.config, known_end=True, key=key, style=style)]).expand(
        len(tunes), -1) if model.config.conditioned else None
    logits, _ = model(batch[:, :-1], positions[:, :-1] if positions is not None else None)  # (K, T-1, V)
    log_p = torch.log_softmax(logits.double(), dim=-1).numpy()
    use_copy = generator.copy_model is not None and params.short_term
    for k, ids in enumerate(tunes):
        if not math.isfinite(out[k]):
            continue
        dist = generator.copy_model.mix(log_p[k], ids, last_barline(ids, tok.bar_id)) if use_copy else log_p[k]
        targets = np.asarray(ids[start:])
        out[k] = float(dist[np.arange(start - 1, len(ids) - 1), targets].sum())
    return out
