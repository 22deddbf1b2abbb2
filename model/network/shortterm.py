"""The short-term model: what the melody so far says comes next, mixed into the network's prediction.

Folk tunes repeat themselves: a phrase comes back a bar or eight bars later, a rhythm returns in
every bar. The network learns the style of the corpus (IDyOM calls that the long-term model); the
short-term model learns the tune being read or written, as it goes, and is what IDyOM and its
successors add to reach their figures. Ours is a copy model over the tune's own tokens:

- at step t, every earlier position j whose context matches the current one (the longest common
  suffix of ``x[..j]`` and ``x[..t]``, its *match length* ``L_j``, at least 1) votes for the token
  that followed it, ``x[j+1]``, with weight ``min(L_j, max_match) ** beta``;
- the votes, normalised, are the copy distribution ``p_copy``;
- the prediction is ``(1 - g) p_net + g p_copy``, with the gate ``g = sigmoid(gate[b])`` looked up
  by the bucket ``b`` of the longest match at this step (no match: ``g = 0``). A long match is good
  evidence that a passage is being repeated; a one-token match says little.

A tune's last bar is not a repeat like the others: it ends the tune. When the end is known (the
bars-remaining input tells the network, ``known_end``), the steps of the last bar use their own gate
logits, ``end_gate``, fitted like the others (a model fitted before it existed has none and uses
``gate`` there too).

A bar's form relation says how far to trust a copy, when the network is told it (a form plan, or a
tune's own labels): in a bar that repeats an earlier one a long match is nearly certain to go on, in
a new bar or one that keeps only the rhythm it is weak evidence, and the pooled ``gate`` overrates it
there. So a model may hold ``relation_gate``, one row of gate logits per relation (new, exact,
rhythm, variant: ``model.representation.form.RELATION_IDS``), used at the steps of a bar whose
relation is known and that is not the last bar; an unknown relation keeps ``gate``. They are fitted
after ``gate`` and ``beta``, with those held (``fit_relation_gates``), so a model's figures and
melodies where no relation is told stay what they were.

``beta`` and the gate logits (one per bucket, and one per bucket for the last bar) are the only parameters; ``fit`` chooses them to
maximise the likelihood of the validation tunes under the mixture, given the network's predictions
(with a weak prior on the gate logits, ``gate_prior``). Only the last ``window`` tokens are searched.
``CopyState`` updates the match lengths in one compiled (numba) pass over them per step, so
generation pays about 15 µs per token for it at batch 1 (docs/benchmarks.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numba
import numpy as np
import torch

from model.representation.form import RELATION_IDS

# Longest-match buckets: [1], [2], [3], [4, 6), [6, 8), [8, 12), ..., [48, 64), [64, inf)
BUCKET_EDGES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
RELATION_COUNT = len(RELATION_IDS)  # new, exact, rhythm, variant
# rows of CopyModel.tables()'s gates: the pooled gate, the last bar's, then one per relation
POOLED_ROW, END_ROW, RELATION_ROW = 0, 1, 2
GATE_ROWS = RELATION_ROW + RELATION_COUNT


@dataclass
class CopyModel:
    """Parameters of the short-term copy model; see the module docstring."""
    beta: float = 1.0
    gate: list[float] = field(default_factory=lambda: [-4.0] * len(BUCKET_EDGES))
    max_match: int = 64
    window: int = 512                 # lags considered: the last `window` tokens (32 bars of 4/4)
    end_gate: list[float] | None = None  # gate logits in a tune's last bar when the end is known (None: `gate`)
    relation_gate: list[list[float]] | None = None  # per form relation, gate logits where it is known (None: `gate`)

    def __post_init__(self):
        if len(self.gate) != len(BUCKET_EDGES):
            raise ValueError(f"gate must hold {len(BUCKET_EDGES)} logits, got {len(self.gate)}")
        if self.end_gate is not None and len(self.end_gate) != len(BUCKET_EDGES):
            raise ValueError(f"end_gate must hold {len(BUCKET_EDGES)} logits, got {len(self.end_gate)}")
        if self.relation_gate is not None and (len(self.relation_gate) != RELATION_COUNT or any(
                len(row) != len(BUCKET_EDGES) for row in self.relation_gate)):
            raise ValueError(f"relation_gate must hold {RELATION_COUNT} rows of {len(BUCKET_EDGES)} logits")
        if self.max_match < 1:
            raise ValueError(f"max_match must be >= 1, got {self.max_match}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")

    def to_dict(self) -> dict:
        out = {"beta": float(self.beta), "gate": [float(g) for g in self.gate], "max_match": int(self.max_match),
               "window": int(self.window)}
        if self.end_gate is not None:
            out["end_gate"] = [float(g) for g in self.end_gate]
        if self.relation_gate is not None:
            out["relation_gate"] = [[float(g) for g in row] for row in self.relation_gate]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "CopyModel":
        end, relation = d.get("end_gate"), d.get("relation_gate")
        return cls(beta=float(d["beta"]), gate=[float(g) for g in d["gate"]], max_match=int(d["max_match"]),
                   window=int(d["window"]), end_gate=None if end is None else [float(g) for g in end],
                   relation_gate=None if relation is None else [[float(g) for g in row] for row in relation])

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "CopyModel | None":
        """The short-term model a checkpoint holds (``ckpt["short_term"]``), or None (a network alone)."""
        d = ckpt.get("short_term")
        return cls.from_dict(d) if d else None

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(vote weight by match length 0..max_match, gates (GATE_ROWS, max_match + 1)), float64 arrays
        (length 0 -> 0); the gate rows are ``row_logits``'. Built once per parameter set, since a
        generation call would otherwise spend ~0.2 ms building them."""
        key = (self.beta, tuple(self.gate), self.max_match, None if self.end_gate is None else tuple(self.end_gate),
               None if self.relation_gate is None else tuple(map(tuple, self.relation_gate)))
        cached = getattr(self, "_tables", None)
        if cached is None or cached[0] != key:
            lengths = np.arange(self.max_match + 1)
            weights = np.zeros(len(lengths))
            weights[1:] = lengths[1:].astype(np.float64) ** self.beta  # length 0: no vote (0 ** beta is inf for beta < 0)
            gates = np.array([[self._gate(self.row_logits(row), n) for n in lengths] for row in range(GATE_ROWS)])
            weights.flags.writeable = gates.flags.writeable = False
            cached = self._tables = (key, weights, gates)
        return cached[1], cached[2]

    def row_logits(self, row: int) -> list[float]:
        """The gate logits (one per bucket) of gate row ``row`` (POOLED_ROW, END_ROW, RELATION_ROW + r);
        a row the model lacks falls back to ``gate``."""
        if row == END_ROW and self.end_gate is not None:
            return self.end_gate
        if row >= RELATION_ROW and self.relation_gate is not None:
            return self.relation_gate[row - RELATION_ROW]
        return self.gate

    @staticmethod
    def _gate(logits, longest: int) -> float:
        return 0.0 if longest < 1 else float(1.0 / (1.0 + np.exp(-logits[bucket(longest)])))

    def gate_of(self, longest: int, final: bool = False, relation: int | None = None) -> float:
        """The mixing weight of the copy distribution when the longest match is ``longest`` (``final``:
        at a step of the tune's last bar, with the end known; else ``relation``: the bar's form
        relation, when known: 0..3; anything else is unknown)."""
        return self._gate(self.row_logits(int(self.gate_rows(final, relation))), longest)

    def gate_rows(self, final, relations=None) -> np.ndarray:
        """The row of ``tables``' gates each step uses (int64, shaped like ``final``): the last bar's
        where ``final``, else the step's relation's where ``relations`` holds one (0..3; anything else is
        unknown) and the model has relation gates, else ``gate``'s."""
        final = np.asarray(final, dtype=bool)
        rows = np.where(final, END_ROW, POOLED_ROW).astype(np.int64)
        if relations is not None and self.relation_gate is not None:
            rel = np.asarray(relations, dtype=np.int64)
            known = (rel >= 0) & (rel < RELATION_COUNT) & ~final
            rows = np.where(known, RELATION_ROW + rel, rows)
        return rows

    def mix(self, log_probs: np.ndarray, tokens, last_bar: int | None = None, relations=None) -> np.ndarray:
        """Teacher-forced: the network's natural-log next-token distributions over a whole tune
        ((len(tokens) - 1, V), row t predicting token t + 1) -> those of the mixture. The same
        compiled step as generation (``CopyState.push_and_mix``), then each row renormalised.
        ``last_bar``: the index of the tune's last barline when its end is known (``last_barline``);
        the rows predicting the tokens after it use the last bar's gate. ``relations``: per row, the
        form relation the network was told for the token it predicts (unknown: any other value)."""
        out = np.array(log_probs, dtype=np.float64)  # a copy: mixed in place
        state = CopyState(self, out.shape[1], capacity=len(out) + 1)
        final = np.zeros(len(out), dtype=bool)
        if last_bar is not None:
            final[last_bar:] = True
        rows = self.gate_rows(final, None if relations is None else np.asarray(relations)[:len(out)])
        for t, token in enumerate(np.asarray(tokens, dtype=np.int64)[:-1]):
            state.push_and_mix(int(token), out[t:t + 1], gate_rows=rows[t:t + 1])
        peak = out.max(axis=1, keepdims=True)
        return out - (peak + np.log(np.exp(out - peak).sum(axis=1, keepdims=True)))


def last_barline(tokens, bar_id: int) -> int | None:
    """Index of the last barline of a tune's tokens (None without one): the tokens after it are its last bar."""
    where = np.flatnonzero(np.asarray(tokens) == bar_id)
    return int(where[-1]) if len(where) else None


def bucket(longest: int) -> int:
    """Index of the bucket of a longest-match length >= 1."""
    return int(np.searchsorted(BUCKET_EDGES, longest, side="right")) - 1


@numba.njit(cache=True, nogil=True)
def _push(history, match, start, k, new, max_match):  # pragma: no cover - compiled
    """The match-length update of every row (see CopyState), and x_t written at start - 1."""
    for b in range(history.shape[0]):
        token = new[b]
        for d in range(k):
            if history[b, start + d] == token:
                match[b, d] = min(match[b, d] + 1, max_match)
            else:
                match[b, d] = 0
        history[b, start - 1] = token


@numba.njit(cache=True, nogil=True)
def _votes(history, match, start, k, weight_of, gate_of, gate_row, votes, totals, gates):  # pragma: no cover - compiled
    """Per row: the copy votes (V,), their sum and the gate (from its row ``gate_row[b]`` of the gate
    table ``gate_of``), from lags 1..k."""
    for b in range(history.shape[0]):
        votes[b, :] = 0.0
        total, longest = 0.0, 0
        for d in range(k):
            m = match[b, d]
            if m:
                w = weight_of[m]
                votes[b, history[b, start + d]] += w
                total += w
                longest = max(longest, m)
        totals[b], gates[b] = total, gate_of[gate_row[b], longest]


@numba.njit(cache=True, nogil=True)
def _mix(logits, votes, totals, gates):  # pragma: no cover - compiled
    """logits (B, V) float32 -> log(e^logits + c votes) in place, c = g sum(e^logits) / ((1 - g) sum(votes)),
    i.e. log((1 - g) p_network + g p_copy) up to a constant per row; rows with gate 0 stay as they are."""
    for b in range(logits.shape[0]):
        g = gates[b]
        if g == 0.0:
            continue
        peak = logits[b].max()
        z = 0.0
        for v in range(logits.shape[1]):
            z += np.exp(np.float64(logits[b, v]) - peak)
        c = g * z / ((1.0 - g) * totals[b])
        for v in range(logits.shape[1]):
            logits[b, v] = np.log(np.exp(np.float64(logits[b, v]) - peak) + c * votes[b, v])


@numba.njit(cache=True, nogil=True)
def _push_and_mix(history, match, start, k, new, max_match, weight_of, gate_of, gate_row, votes, totals, gates,
                  logits):  # pragma: no cover - compiled
    """_push, then _votes and _mix for the step after it: one compiled call per generated token."""
    _push(history, match, start, k, new, max_match)
    _votes(history, match, start - 1, k, weight_of, gate_of, gate_row, votes, totals, gates)
    _mix(logits, votes, totals, gates)


class CopyState:
    """The copy model's running state over ``batch`` tunes advanced in lockstep: ``push`` each step's
    tokens as they are read or written, or ``push_and_mix`` to also mix the copy model's prediction of
    the next token into the network's logits (what generation does, and ``CopyModel.mix``).

    Match lengths are kept by lag d = t - j rather than by position j, because a match at lag d
    only grows from the match at the same lag one step earlier: ``m_t(d) = [x_{t-d} = x_t] *
    min(m_{t-1}(d) + 1, max_match)``. The history is stored newest last at the end of its buffer
    (``history[:, -1-t:]`` is x_t, x_{t-1}, ..., x_0), so the tokens at lags 1..k and the tokens that
    followed them are both plain slices. Only lags up to ``window`` are kept, so a step costs the
    same however long the tune grows. The loops are compiled by numba: as numpy calls they cost
    ~60 µs per generated token here (each call ran ~4x slower between two network steps than on
    its own, its code and data evicted by the weights the step streams through the caches); one
    compiled call per update costs a few.
    """

    def __init__(self, model: CopyModel, vocab_size: int, batch: int = 1, capacity: int = 512):
        self.model, self.vocab_size, self.batch = model, vocab_size, batch
        self.length = 0
        self.history = np.zeros((batch, 0), dtype=np.int64)                # filled from the end, newest last
        self.match = np.zeros((batch, model.window + 1), dtype=np.int64)  # match[:, d - 1]: length at lag d
        self._grow(max(capacity, 2))
        self.weight_of, self.gate_table = model.tables()
        self._pooled = np.full(batch, POOLED_ROW, dtype=np.int64)
        self._votes = np.zeros((batch, vocab_size))
        self._totals, self._gates = np.zeros(batch), np.zeros(batch)

    def _grow(self, capacity: int) -> None:
        extra = capacity - self.history.shape[1]
        self.history = np.concatenate([np.zeros((self.batch, extra), dtype=np.int64), self.history], axis=1)

    def _next(self, tokens) -> tuple[np.ndarray, int, int]:
        """(the new tokens as a (batch,) int64 array, start, k) for appending x_t; grows the buffer."""
        t = self.length
        if t == self.history.shape[1]:
            self._grow(2 * t)
        new = tokens.numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens, dtype=np.int64).reshape(-1)
        if len(new) != self.batch:
            new = np.broadcast_to(new, (self.batch,))
        self.length = t + 1
        return new, self.history.shape[1] - t, min(t, self.model.window)

    def push(self, tokens) -> None:
        """Append one token per tune: an int, or a (batch,) int64 array or tensor."""
        new, start, k = self._next(tokens)
        _push(self.history, self.match, start, k, new, self.model.max_match)

    def push_and_mix(self, tokens, logits, gate_rows=None):
        """``push(tokens)``, then the mixture's logits for the next token, in one compiled call (what
        generation does): ``logits`` (batch, V), a float32 tensor or array of the network's logits, becomes,
        in place and up to a constant per row, log((1 - g) p_network + g p_copy); returned.
        ``gate_rows``: each row's gate row for the next token (``CopyModel.gate_rows``: the last bar's,
        its relation's), by default the pooled ``gate``."""
        new, start, k = self._next(tokens)
        _push_and_mix(self.history, self.match, start, k, new, self.model.max_match, self.weight_of,
                      self.gate_table, self._pooled if gate_rows is None else np.asarray(gate_rows, dtype=np.int64),
                      self._votes, self._totals, self._gates,
                      logits.numpy() if isinstance(logits, torch.Tensor) else logits)
        return logits

    def reorder(self, rows) -> None:
        """Keep rows ``rows`` (beam search's parents), in that order."""
        rows = rows.numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        self.history, self.match = self.history[rows], self.match[rows]

    def _lags(self) -> tuple[int, int]:
        """(start, k): lags 1..k are followed by ``history[:, start:start + k]`` (x_t, ..., x_{t-k+1})."""
        t = self.length - 1
        return self.history.shape[1] - 1 - t, max(0, min(t, self.model.window))

    def candidates(self, row: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(match lengths >= 1; the tokens that followed those contexts) of one tune."""
        start, k = self._lags()
        lengths, nexts = self.match[row, :k], self.history[row, start:start + k]
        where = np.flatnonzero(lengths)
        return lengths[where], nexts[where]


# ---- fitting -----------------------------------------------------------------------------------

def collect(log_probs: list[np.ndarray], tokens: list[np.ndarray], max_match: int = 64, window: int = 512,
            last_bars: list[int | None] | None = None, relations: list[np.ndarray] | None = None) -> dict:
    """The statistics ``fit`` needs from teacher-forced network predictions over tunes: per predicted
    token its network log-probability, longest match, whether it is in the tune's last bar (only
    with ``last_bars``, each tune's ``last_barline``) and its bar's form relation (only with
    ``relations``: per tune, per predicted token, as the network was told it), and per candidate its
    match length, row and whether it voted for the true token."""
    probe = CopyModel(max_match=max_match, window=window)
    net, longest, cand_len, cand_row, cand_hit, final = [], [], [], [], [], []
    row = 0
    for i, (lp, toks) in enumerate(zip(log_probs, tokens)):
        toks = np.asarray(toks, dtype=np.int64)
        state = CopyState(probe, 1)
        last = last_bars[i] if last_bars is not None else None
        for t in range(len(toks) - 1):
            final.append(last is not None and t >= last)
            state.push(int(toks[t]))
            lengths, nexts = state.candidates()
            target = int(toks[t + 1])
            net.append(float(lp[t]))
            longest.append(int(lengths.max()) if len(lengths) else 0)
            cand_len.append(lengths)
            cand_row.append(np.full(len(lengths), row, dtype=np.int64))
            cand_hit.append(nexts == target)
            row += 1
    return {"net": np.array(net), "longest": np.array(longest, dtype=np.int64),
            "cand_len": np.concatenate(cand_len), "cand_row": np.concatenate(cand_row),
            "cand_hit": np.concatenate(cand_hit), "rows": row, "max_match": max_match, "window": window,
            "final": np.array(final, dtype=bool) if last_bars is not None else None,
            "relation": None if relations is None else np.concatenate(
                [np.asarray(r, dtype=np.int64)[:len(t) - 1] for r, t in zip(relations, tokens)])}


def _mixture_parts(stats: dict, beta: torch.Tensor) -> tuple:
    """(matched rows, bucket per row, p_copy per row, p_network per row) of ``stats`` under ``beta``."""
    rows = stats["rows"]
    length = torch.from_numpy(stats["cand_len"]).double()
    row = torch.from_numpy(stats["cand_row"])
    hit = torch.from_numpy(stats["cand_hit"]).double()
    w = torch.exp(beta * torch.log(length))
    total = torch.zeros(rows, dtype=torch.float64).index_add_(0, row, w)
    voted = torch.zeros(rows, dtype=torch.float64).index_add_(0, row, w * hit)
    matched = torch.from_numpy(stats["longest"]) > 0
    buckets = torch.from_numpy(np.searchsorted(BUCKET_EDGES, np.maximum(stats["longest"], 1), side="right") - 1)
    p_copy = torch.where(matched, voted / total.clamp_min(1e-300), torch.zeros((), dtype=torch.float64))
    return matched, buckets, p_copy, torch.exp(torch.from_numpy(stats["net"]))


def _nll(parts: tuple, logits: torch.Tensor, select=None) -> torch.Tensor:
    """Summed NLL (nats) of the mixture whose gate logit per row is ``logits`` (over the rows ``select``)."""
    matched, _, p_copy, p_net = parts
    g = torch.where(matched, torch.sigmoid(logits), torch.zeros((), dtype=torch.float64))
    nll = -torch.log((1 - g) * p_net + g * p_copy)
    return nll.sum() if select is None else nll[select].sum()


def mixture_nll(stats: dict, beta: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood (nats) of the mixture over the rows of ``stats``; ``gate`` holds
    one logit per bucket, or two (the last bar's second) when ``stats`` marks the last bars."""
    parts = _mixture_parts(stats, beta)
    buckets = parts[1]
    if len(gate) == 2 * len(BUCKET_EDGES):  # the last bar's gates follow the others
        buckets = buckets + len(BUCKET_EDGES) * torch.from_numpy(stats["final"].astype(np.int64))
    return _nll(parts, gate[buckets])


GATE_PRIOR_SD = 3.0  # gate logits ~ N(0, 3^2): without data a bucket's gate would run off to 0 or 1


def gate_prior(gate: torch.Tensor) -> torch.Tensor:
    """Negative log of the gate logits' Gaussian prior (up to a constant): a small valid split cannot
    make the gate certain (a gate of 1 - 1e-9 would cost a wrong copy 20 nats), while Essen's
    90,000 validation tokens outweigh it many times."""
    return 0.5 * (gate / GATE_PRIOR_SD).pow(2).sum()


def fit(stats: dict, steps: int = 200) -> tuple[CopyModel, float]:
    """Maximum a-posteriori ``beta`` and gate logits on ``stats`` (from ``collect``; the likelihood and
    ``gate_prior``), with the last bar's gates when ``stats`` marks the last bars; returns the model
    and its mean nats per token there."""
    beta = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    ends = stats.get("final") is not None and bool(stats["final"].any())
    gate = torch.zeros(len(BUCKET_EDGES) * (2 if ends else 1), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([beta, gate], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (mixture_nll(stats, beta, gate) + gate_prior(gate)) / stats["rows"]
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # index_add_ over several threads sums in a varying order: not reproducible
    try:
        opt.step(closure)
        with torch.no_grad():
            loss = float(mixture_nll(stats, beta, gate)) / stats["rows"]
    finally:
        torch.set_num_threads(threads)
    logits = gate.detach().tolist()
    n = len(BUCKET_EDGES)
    return CopyModel(beta=float(beta.detach()), gate=logits[:n], max_match=stats["max_match"], window=stats["window"],
                     end_gate=logits[n:] if ends else None), loss


def fit_relation_gates(stats: dict, model: CopyModel, steps: int = 200) -> tuple[CopyModel, float]:
    """``model`` (from ``fit``) with gate logits per form relation (``relation_gate``), fitted like
    ``fit``'s (maximum a posteriori) on the rows of ``stats`` whose relation is known and that are
    not in a last bar, with ``beta`` and the other gates held; returns it and the mean nats per token
    over all rows of ``stats`` with every relation told. ``stats`` must hold ``relation``."""
    relation = stats.get("relation")
    if relation is None:
        raise ValueError("stats must hold each row's form relation (collect(..., relations=...))")
    final = stats["final"] if stats.get("final") is not None else np.zeros(stats["rows"], dtype=bool)
    known = (relation >= 0) & (relation < RELATION_COUNT) & ~final
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in fit: a reproducible summation order
    try:
        parts = _mixture_parts(stats, torch.tensor(model.beta, dtype=torch.float64))
        n = len(BUCKET_EDGES)
        index = torch.from_numpy(np.where(known, relation, 0) * n) + parts[1]
        select = torch.from_numpy(known)
        gate = torch.zeros(RELATION_COUNT * n, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([gate], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = (_nll(parts, gate[index], select) + gate_prior(gate)) / max(1, int(known.sum()))
            loss.backward()
            return loss

        if known.any():
            opt.step(closure)
        told = replace(model, relation_gate=gate.detach().reshape(RELATION_COUNT, n).tolist())
        rows = torch.from_numpy(told.gate_rows(final, relation))
        table = torch.tensor([told.row_logits(r) for r in range(GATE_ROWS)], dtype=torch.float64)
        with torch.no_grad():
            loss = float(_nll(parts, table[rows, parts[1]])) / stats["rows"]
    finally:
        torch.set_num_threads(threads)
    return told, loss

