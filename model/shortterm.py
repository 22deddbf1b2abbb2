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

``beta`` and the gate logits (one per bucket) are the only parameters; ``fit`` chooses them to
maximise the likelihood of the validation tunes under the mixture, given the network's predictions.
The match lengths are updated in O(t) numpy work per step (``CopyState``), so generation pays
microseconds per token for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

# Longest-match buckets: [1], [2], [3], [4, 6), [6, 8), [8, 12), ..., [48, 64), [64, inf)
BUCKET_EDGES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


@dataclass
class CopyModel:
    """Parameters of the short-term copy model; see the module docstring."""
    beta: float = 1.0
    gate: list[float] = field(default_factory=lambda: [-4.0] * len(BUCKET_EDGES))
    max_match: int = 64
    window: int = 512                 # lags considered: the last `window` tokens (32 bars of 4/4)

    def __post_init__(self):
        if len(self.gate) != len(BUCKET_EDGES):
            raise ValueError(f"gate must hold {len(BUCKET_EDGES)} logits, got {len(self.gate)}")
        if self.max_match < 1:
            raise ValueError(f"max_match must be >= 1, got {self.max_match}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")

    def to_dict(self) -> dict:
        return {"beta": float(self.beta), "gate": [float(g) for g in self.gate], "max_match": int(self.max_match),
                "window": int(self.window)}

    @classmethod
    def from_dict(cls, d: dict) -> "CopyModel":
        return cls(beta=float(d["beta"]), gate=[float(g) for g in d["gate"]], max_match=int(d["max_match"]),
                   window=int(d["window"]))

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "CopyModel | None":
        """The short-term model a checkpoint holds (``ckpt["short_term"]``), or None (a network alone)."""
        d = ckpt.get("short_term")
        return cls.from_dict(d) if d else None

    def gate_of(self, longest: int) -> float:
        """The mixing weight of the copy distribution when the longest match is ``longest``."""
        if longest < 1:
            return 0.0
        return float(1.0 / (1.0 + np.exp(-self.gate[bucket(longest)])))

    def mix(self, log_probs: np.ndarray, tokens) -> np.ndarray:
        """Teacher-forced: the network's natural-log next-token distributions over a whole tune
        ((len(tokens) - 1, V), row t predicting token t + 1) -> those of the mixture."""
        log_probs = np.asarray(log_probs, dtype=np.float64)
        out = log_probs.copy()
        state = CopyState(self, log_probs.shape[1])
        for t, token in enumerate(np.asarray(tokens, dtype=np.int64)[:-1]):
            state.push(int(token))
            copy, gate = state.distribution()
            if gate[0] > 0:
                out[t] = np.log((1.0 - gate[0]) * np.exp(log_probs[t]) + gate[0] * copy[0])
        return out


def bucket(longest: int) -> int:
    """Index of the bucket of a longest-match length >= 1."""
    return int(np.searchsorted(BUCKET_EDGES, longest, side="right")) - 1


class CopyState:
    """The copy model's running state over ``batch`` tunes advanced in lockstep: ``push`` each step's
    tokens as they are read or written, then ``votes``/``distribution``/``mix_logits`` predict the next.

    Match lengths are kept by lag d = t - j rather than by position j, because a match at lag d
    only grows from the match at the same lag one step earlier: ``m_t(d) = [x_{t-d} = x_t] *
    (m_{t-1}(d) + 1)``. A step is then three in-place numpy calls on (batch, min(t, window)) arrays;
    lengths are capped at ``max_match`` where they are used, through the weight and gate tables.
    The history is stored newest last at the end of its buffer (``history[:, -1-t:]`` is x_t,
    x_{t-1}, ..., x_0), so the tokens at lags 1..k and the tokens that followed them are both plain
    slices. Only lags up to ``window`` are kept, so a step costs the same however long the tune grows.
    """

    def __init__(self, model: CopyModel, vocab_size: int, batch: int = 1, capacity: int = 512):
        self.model, self.vocab_size, self.batch = model, vocab_size, batch
        self.length = 0
        self.history = np.zeros((batch, 0), dtype=np.int64)              # filled from the end, newest last
        self.match = np.zeros((batch, model.window + 1), dtype=np.int64)  # match[:, d - 1]: length at lag d
        self._grow(max(capacity, 2))
        self.offsets = (np.arange(batch) * vocab_size)[:, None]
        # stored lengths stay below 2 max_match + 1: push clamps them every max_match steps (see there)
        lengths = np.minimum(np.arange(2 * model.max_match + 2), model.max_match)
        self.weight_of = np.where(lengths > 0, lengths.astype(np.float64) ** model.beta, 0.0)
        gates = np.array([model.gate_of(n) for n in range(model.max_match + 1)])
        self.gate_of = gates[lengths]  # by match length; 0 -> 0

    def _grow(self, capacity: int) -> None:
        extra = capacity - self.history.shape[1]
        self.history = np.concatenate([np.zeros((self.batch, extra), dtype=np.int64), self.history], axis=1)

    def push(self, tokens) -> None:
        """Append one token per tune: an int (batch 1) or a (batch,) int array."""
        t = self.length
        if t == self.history.shape[1]:
            self._grow(2 * t)
        start = self.history.shape[1] - t
        new = tokens if isinstance(tokens, np.ndarray) else np.array([tokens], dtype=np.int64)
        k = min(t, self.model.window)
        if k:
            m = self.match[:, :k]  # lags 1..k (lag t was 0 one step ago: there is no position -1)
            m += 1
            m *= self.history[:, start:start + k] == new[:, None]  # x_{t-1}, ..., x_{t-k} against x_t
            if t % self.model.max_match == 0:  # every length >= max_match counts as max_match: clamp now and then
                np.minimum(m, self.model.max_match, out=m)
        self.history[:, start - 1] = new
        self.length = t + 1

    def reorder(self, rows) -> None:
        """Keep rows ``rows`` (beam search's parents), in that order."""
        self.history, self.match = self.history[rows], self.match[rows]

    def _lags(self) -> tuple[np.ndarray, np.ndarray]:
        """(match lengths (batch, k), the tokens that followed those contexts (batch, k)) for lags 1..k."""
        t = self.length - 1
        k = min(t, self.model.window)
        start = self.history.shape[1] - 1 - t  # x_t
        return self.match[:, :k], self.history[:, start:start + k]  # x_t, ..., x_{t-k+1}

    def candidates(self, row: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(match lengths >= 1, capped at max_match; the tokens that followed those contexts) of one tune."""
        lengths, nexts = self._lags()
        where = np.flatnonzero(lengths[row])
        return np.minimum(lengths[row, where], self.model.max_match), nexts[row, where]

    def votes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unnormalised p_copy (batch, V), its sums (batch,), gate (batch,)); a row with no match
        has zero votes and gate 0."""
        lengths, nexts = self._lags()
        if not lengths.shape[1]:
            return np.zeros((self.batch, self.vocab_size)), np.zeros(self.batch), np.zeros(self.batch)
        weights = self.weight_of[lengths]
        if self.batch == 1:
            copy = np.bincount(nexts[0], weights=weights[0], minlength=self.vocab_size)[None]
        else:
            copy = np.bincount((nexts + self.offsets).ravel(), weights=weights.ravel(),
                               minlength=self.batch * self.vocab_size).reshape(self.batch, -1)
        return copy, weights.sum(1), self.gate_of[lengths.max(1)]

    def distribution(self) -> tuple[np.ndarray, np.ndarray]:
        """(p_copy (batch, V), gate (batch,)); a row with no match has gate 0 and p_copy 0."""
        copy, total, gate = self.votes()
        return copy / np.where(total > 0, total, 1.0)[:, None], gate

    def mix_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Network logits (batch, V) -> the mixture's logits (float64), equal up to a constant per row to
        log((1 - g) p_network + g p_copy): log(e^logits + c votes), c = g sum(e^logits) / ((1 - g) sum(votes))."""
        if self.batch == 1:  # the common case, on Python floats: each numpy call on a (1,) array costs ~1 µs
            lengths, nexts = self._lags()
            if not lengths.shape[1]:
                return logits
            gate = float(self.gate_of[lengths[0].max()])
            if gate == 0.0:
                return logits
            weights = self.weight_of[lengths[0]]
            votes = np.bincount(nexts[0], weights=weights, minlength=self.vocab_size)
            e = np.exp(logits.numpy()[0], dtype=np.float64)
            votes *= gate * float(e.sum()) / ((1.0 - gate) * float(weights.sum()))
            e += votes
            return torch.from_numpy(np.log(e, out=e)[None])
        votes, total, gate = self.votes()
        if not gate.any():
            return logits
        e = np.exp(logits.numpy(), dtype=np.float64)
        votes *= (gate * e.sum(1) / ((1.0 - gate) * np.maximum(total, 1e-300)))[:, None]
        e += votes
        return torch.from_numpy(np.log(e, out=e))


# ---- fitting -----------------------------------------------------------------------------------

def collect(log_probs: list[np.ndarray], tokens: list[np.ndarray], max_match: int = 64, window: int = 512) -> dict:
    """The statistics ``fit`` needs from teacher-forced network predictions over tunes: per predicted
    token its network log-probability and longest match, and per candidate its match length, row and
    whether it voted for the true token."""
    probe = CopyModel(max_match=max_match, window=window)
    net, longest, cand_len, cand_row, cand_hit = [], [], [], [], []
    row = 0
    for lp, toks in zip(log_probs, tokens):
        toks = np.asarray(toks, dtype=np.int64)
        state = CopyState(probe, 1)
        for t in range(len(toks) - 1):
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
            "cand_hit": np.concatenate(cand_hit), "rows": row, "max_match": max_match, "window": window}


def mixture_nll(stats: dict, beta: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood (nats) of the mixture over the rows of ``stats``."""
    rows = stats["rows"]
    length = torch.from_numpy(stats["cand_len"]).double()
    row = torch.from_numpy(stats["cand_row"])
    hit = torch.from_numpy(stats["cand_hit"]).double()
    w = torch.exp(beta * torch.log(length))
    total = torch.zeros(rows, dtype=torch.float64).index_add_(0, row, w)
    voted = torch.zeros(rows, dtype=torch.float64).index_add_(0, row, w * hit)
    longest = torch.from_numpy(stats["longest"])
    matched = longest > 0
    buckets = torch.from_numpy(np.searchsorted(BUCKET_EDGES, np.maximum(stats["longest"], 1), side="right") - 1)
    g = torch.where(matched, torch.sigmoid(gate[buckets]), torch.zeros((), dtype=torch.float64))
    p_copy = torch.where(matched, voted / total.clamp_min(1e-300), torch.zeros((), dtype=torch.float64))
    p_net = torch.exp(torch.from_numpy(stats["net"]))
    return -torch.log((1 - g) * p_net + g * p_copy).sum()


GATE_PRIOR_SD = 3.0  # gate logits ~ N(0, 3^2): without data a bucket's gate would run off to 0 or 1


def gate_prior(gate: torch.Tensor) -> torch.Tensor:
    """Negative log of the gate logits' Gaussian prior (up to a constant): a small valid split cannot
    make the gate certain (a gate of 1 - 1e-9 would cost a wrong copy 20 nats), while Essen's
    90,000 validation tokens outweigh it many times."""
    return 0.5 * (gate / GATE_PRIOR_SD).pow(2).sum()


def fit(stats: dict, steps: int = 200) -> tuple[CopyModel, float]:
    """Maximum a-posteriori ``beta`` and gate logits on ``stats`` (from ``collect``; the likelihood and
    ``gate_prior``); returns the model and its mean nats per token there."""
    beta = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    gate = torch.zeros(len(BUCKET_EDGES), dtype=torch.float64, requires_grad=True)
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
    return CopyModel(beta=float(beta.detach()), gate=gate.detach().tolist(), max_match=stats["max_match"],
                     window=stats["window"]), loss
