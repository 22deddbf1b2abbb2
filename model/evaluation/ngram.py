"""Interpolated modified Kneser-Ney n-gram model on melody token ids: the reference the LSTM must beat.

The model predicts token i of a tune from the (order - 1) tokens before it, exactly the task of the
network, so the same bits-per-note and pitch-bits computations (`model.evaluation.metrics`) apply to both.
Every tune starts with BOS, so a context that begins with BOS can only mean "start of the tune": near
the start the model simply uses the shorter history that exists (no padding).

Estimator (Chen & Goodman 1998, interpolated modified Kneser-Ney), for a context h of k-1 tokens:

    P_k(w | h) = max(c_k(hw) - D_k(c_k(hw)), 0) / c_k(h)  +  gamma_k(h) * P_{k-1}(w | h')
    gamma_k(h) = (D_k1 * N1(h) + D_k2 * N2(h) + D_k3 * N3+(h)) / c_k(h)

h' drops the oldest token of h; N1/N2/N3+(h) count the words seen 1, 2, >=3 times after h;
P_0 is uniform over the support (the vocabulary minus `exclude_ids`, e.g. PAD and BOS, which are
never a next token). A context never seen (c_k(h) = 0) backs off: P_k = P_{k-1}. At the top order
c_k is the raw count; below it c_k(g) is the continuation count, the number of distinct tokens seen
directly before g (plus the occurrences of g at a tune start, which have none: SRILM's rule).
Discounts per order come from the count-of-counts n1..n4: Y = n1 / (n1 + 2 n2),
D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3.

Storage is numpy, not dicts: the k-grams of the training data get dense ids built from the left,
id_k(x_1..x_k) = index of the key x_1 * M_{k-1} + id_{k-1}(x_2..x_k) among the sorted distinct keys,
so one fit up to `max_order` holds every lower-order model too (`with_order`), and choosing the best
order on validation data costs one fit. Log-probabilities are natural logs, like the network's loss.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

FORMAT = "tunesmith-kneser-ney-1"


@dataclass
class _Order:
    """The k-grams of one order k (k = 1..max_order), sorted by key; index = the gram's id."""

    keys: np.ndarray      # int64 (G,)  first_token * M_{k-1} + id of the (k-1)-gram suffix
    context: np.ndarray   # int32 (G,)  id of the (k-1)-gram prefix (the context); 0 for k = 1
    word: np.ndarray      # int32 (G,)  last token
    raw: np.ndarray       # int32 (G,)  raw count
    cont: np.ndarray      # int32 (G,)  continuation count (+ tune-start occurrences)


def _discounts(counts: np.ndarray) -> np.ndarray:
    """Modified KN discounts (D1, D2, D3+) from count-of-counts; clipped so each D lies in (0, c]."""
    n = [float(np.sum(counts == c)) for c in (1, 2, 3, 4)]
    y = n[0] / (n[0] + 2 * n[1]) if n[0] + 2 * n[1] > 0 else 0.5
    d = [
        1 - 2 * y * n[1] / n[0] if n[0] > 0 else 0.5,
        2 - 3 * y * n[2] / n[1] if n[1] > 0 else 1.0,
        3 - 4 * y * n[3] / n[2] if n[2] > 0 else 1.5,
    ]
    return np.array([min(max(di, 0.05), c) for di, c in zip(d, (1.0, 2.0, 3.0))])


def _discounted(counts: np.ndarray, d: np.ndarray) -> np.ndarray:
    """max(c - D(c), 0) for each count c (0 for c = 0)."""
    c = counts.astype(np.float64)
    return np.where(c > 0, np.maximum(c - d[np.clip(counts, 1, 3) - 1], 0.0), 0.0)


class KneserNeyModel:
    """An interpolated modified Kneser-Ney model; build with `KneserNeyModel.fit`."""

    def __init__(self, orders: list[_Order], vocab_size: int, order: int, exclude_ids: Sequence[int],
                 _tables: dict | None = None):
        self._orders = orders
        self.vocab_size = int(vocab_size)
        self.max_order = len(orders)
        if not 1 <= order <= self.max_order:
            raise ValueError(f"order must be in [1, {self.max_order}], got {order}")
        self.order = int(order)
        self.exclude_ids = sorted(int(i) for i in exclude_ids)
        self._base = np.full(self.vocab_size, 1.0)
        self._base[self.exclude_ids] = 0.0
        self._base /= self._base.sum()                     # P_0: uniform over the support
        self._tables = {} if _tables is None else _tables  # (k, kind) -> per-context sums, built lazily

    # ---- fitting -------------------------------------------------------------------------
    @classmethod
    def fit(cls, tunes: Iterable[Sequence[int]], vocab_size: int, order: int = 5,
            max_order: int | None = None, exclude_ids: Sequence[int] = ()) -> "KneserNeyModel":
        """Counts every k-gram (k <= max_order, default `order`) of the tunes (each a sequence of ids)."""
        max_order = order if max_order is None else max_order
        if not 1 <= order <= max_order:
            raise ValueError(f"order must be in [1, max_order={max_order}], got {order}")
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        seqs = [np.asarray(t, dtype=np.int64) for t in tunes]
        seqs = [s for s in seqs if len(s) > 0]
        if not seqs:
            raise ValueError("tunes must hold at least one non-empty tune")
        tokens = np.concatenate(seqs)
        if tokens.min() < 0 or tokens.max() >= vocab_size:
            raise ValueError(f"token ids must be in [0, {vocab_size}), got {tokens.min()}..{tokens.max()}")
        offset = np.concatenate([np.arange(len(s)) for s in seqs])  # index of each token in its tune

        orders: list[_Order] = []
        starts = np.nonzero(offset == 0)[0]               # first token of each tune
        at_start = []                                      # per order: ids of the k-grams opening a tune
        gram = tokens                                      # id of the (k-1)-gram ending at each position
        for k in range(1, max_order + 1):
            ends = np.nonzero(offset >= k - 1)[0]          # positions where a whole k-gram ends
            if k == 1:
                keys_at = tokens[ends]
            else:
                keys_at = tokens[ends - (k - 1)] * len(orders[-1].keys) + gram[ends]
            keys, inverse = np.unique(keys_at, return_inverse=True)
            # raw counts of predicted events only: the BOS opening a tune is a context, never a target
            raw = np.bincount(inverse[offset[ends] >= 1], minlength=len(keys))
            first = np.zeros(len(keys), dtype=np.int64)
            first[inverse] = ends                          # one position where each gram ends
            # the context of the gram ending at i is the (k-1)-gram ending at i-1
            context = np.zeros(len(keys), dtype=np.int64) if k == 1 else gram[first - 1]
            orders.append(_Order(keys, context.astype(np.int32), tokens[first].astype(np.int32),
                                 raw.astype(np.int32), raw[:0].astype(np.int32)))
            new_gram = np.full(len(tokens), -1, dtype=np.int64)
            new_gram[ends] = inverse
            opening = starts + (k - 1) if k > 1 else starts[:0]
            opening = opening[opening < len(tokens)]
            opening = opening[offset[opening] == k - 1]    # tunes at least k tokens long
            at_start.append(new_gram[opening])
            gram = new_gram

        # continuation counts: distinct left neighbours, from the distinct (k+1)-grams, plus tune starts
        for k in range(1, max_order + 1):
            o = orders[k - 1]
            opened = np.bincount(at_start[k - 1], minlength=len(o.keys))
            if k < max_order:
                suffix = orders[k].keys % len(o.keys)      # id of the k-gram suffix of each (k+1)-gram
                o.cont = (np.bincount(suffix, minlength=len(o.keys)) + opened).astype(np.int32)
            else:
                o.cont = o.raw.copy()                      # the top order uses raw counts
        return cls(orders, vocab_size, order, exclude_ids)

    def with_order(self, order: int) -> "KneserNeyModel":
        """The same counts used as an order-`order` model (order <= max_order); holds only orders <= order."""
        if not 1 <= order <= self.max_order:
            raise ValueError(f"order must be in [1, {self.max_order}], got {order}")
        shared = {key: t for key, t in self._tables.items() if key[0] <= order}
        return KneserNeyModel(self._orders[:order], self.vocab_size, order, self.exclude_ids, shared)

    def _table(self, k: int, kind: str) -> dict:
        """Order k with raw or continuation counts: the counts, discounts, and per context id c_k(h)
        ("total") and the gamma numerator; kind "children" groups each context's grams for full distributions."""
        key = (k, kind)
        if key not in self._tables:
            o = self._orders[k - 1]
            n_contexts = 1 if k == 1 else len(self._orders[k - 2].keys)
            if kind == "children":                         # gram ids sorted by context, and each context's slice
                by_context = np.argsort(o.context, kind="stable").astype(np.int32)
                ptr = np.searchsorted(o.context[by_context], np.arange(n_contexts + 1))
                self._tables[key] = {"children": by_context, "ptr": ptr}
            else:
                counts = o.raw if kind == "raw" else o.cont
                d = _discounts(counts)
                disc = np.where(counts > 0, d[np.clip(counts, 1, 3) - 1], 0.0)
                self._tables[key] = {
                    "counts": counts, "d": d,
                    "total": np.bincount(o.context, weights=counts, minlength=n_contexts),
                    "gamma": np.bincount(o.context, weights=disc, minlength=n_contexts),
                }
        return self._tables[key]

    # ---- scoring -------------------------------------------------------------------------
    def _lookup(self, tune: np.ndarray) -> list[np.ndarray]:
        """gram[k-1][i] = id of the training k-gram ending at position i of `tune`, -1 if unseen."""
        grams = []
        prev = None
        for k in range(1, self.order + 1):
            o = self._orders[k - 1]
            ids = np.full(len(tune), -1, dtype=np.int64)
            if k == 1:
                keys_at, where = tune, np.arange(len(tune))
            else:
                where = np.nonzero(prev[k - 1:] >= 0)[0] + (k - 1)
                keys_at = tune[where - (k - 1)] * len(self._orders[k - 2].keys) + prev[where]
            pos = np.searchsorted(o.keys, keys_at)
            found = pos < len(o.keys)
            found[found] = o.keys[pos[found]] == keys_at[found]
            ids[where[found]] = pos[found]
            grams.append(ids)
            prev = ids
        return grams

    def _contexts(self, tune: np.ndarray, grams: list[np.ndarray]) -> list[np.ndarray]:
        """ctx[k-1][j] = context id at order k for predicting token j+1 (-1: no such context)."""
        n = len(tune) - 1
        ctxs = [np.zeros(n, dtype=np.int64)]               # order 1: the empty context
        for k in range(2, self.order + 1):
            ctxs.append(grams[k - 2][:n])                  # the (k-1)-gram ending at j
        return ctxs

    def _kind(self, k: int) -> str:
        return "raw" if k == self.order else "cont"

    def score(self, tunes: Iterable[Sequence[int]]) -> list[np.ndarray]:
        """Per tune, the natural-log probability of each token after the first: array of len(tune)-1."""
        return [self._score_one(np.asarray(t, dtype=np.int64)) for t in tunes]

    def _score_one(self, tune: np.ndarray) -> np.ndarray:
        self._check_ids(tune)
        if len(tune) < 2:
            return np.zeros(0)
        grams = self._lookup(tune)
        ctxs = self._contexts(tune, grams)
        target = tune[1:]
        p = self._base[target].copy()
        for k in range(1, self.order + 1):
            t = self._table(k, self._kind(k))
            h = ctxs[k - 1]
            ok = h >= 0
            ok[ok] = t["total"][h[ok]] > 0
            hk = h[ok]
            g = grams[k - 1][1:][ok]                       # the k-gram (h, w) itself, -1 if unseen
            num = np.where(g >= 0, _discounted(t["counts"][np.maximum(g, 0)], t["d"]), 0.0)
            p[ok] = (num + t["gamma"][hk] * p[ok]) / t["total"][hk]
        with np.errstate(divide="ignore"):
            return np.log(p)                               # -inf only for an excluded id

    def log_probabilities(self, tune: Sequence[int]) -> np.ndarray:
        """(len(tune)-1, vocab) natural-log distribution over the next token before each token 1.."""
        tune = np.asarray(tune, dtype=np.int64)
        self._check_ids(tune)
        n = len(tune) - 1
        if n < 1:
            return np.zeros((0, self.vocab_size))
        grams = self._lookup(tune)
        ctxs = self._contexts(tune, grams)
        p = np.tile(self._base, (n, 1))                    # (n, V)
        for k in range(1, self.order + 1):
            table = self._table(k, "children")
            t = self._table(k, self._kind(k))
            h = ctxs[k - 1]
            ok = h >= 0
            ok[ok] = t["total"][h[ok]] > 0
            rows = np.nonzero(ok)[0]
            hk = h[rows]
            p[rows] *= (t["gamma"][hk] / t["total"][hk])[:, None]
            # add the discounted counts of every child (h, w) of each row's context
            lo, hi = table["ptr"][hk], table["ptr"][hk + 1]
            lengths = hi - lo
            row_rep = np.repeat(rows, lengths)
            within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            child = table["children"][np.repeat(lo, lengths) + within]
            add = _discounted(t["counts"][child], t["d"]) / t["total"][h[row_rep]]
            p[row_rep, self._orders[k - 1].word[child]] += add   # (row, word) pairs are distinct
        with np.errstate(divide="ignore"):
            return np.log(p)

    def _check_ids(self, tune: np.ndarray) -> None:
        if len(tune) and (tune.min() < 0 or tune.max() >= self.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got {tune.min()}..{tune.max()}")

    # ---- persistence ---------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Writes an .npz file holding the counts up to this model's order (no pickle)."""
        arrays = {}
        for k in range(1, self.order + 1):
            o = self._orders[k - 1]
            cont = o.cont if k < self.order else o.raw    # the top order never uses cont
            for name, a in (("keys", o.keys), ("context", o.context), ("word", o.word),
                            ("raw", o.raw), ("cont", cont)):
                arrays[f"{name}_{k}"] = a
        meta = {"format": FORMAT, "vocab_size": self.vocab_size, "order": self.order,
                "exclude_ids": self.exclude_ids}
        with open(path, "wb") as f:
            np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: str) -> "KneserNeyModel":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} is not a {FORMAT} file (format={meta.get('format')!r})")
            orders = [_Order(*(z[f"{name}_{k}"] for name in ("keys", "context", "word", "raw", "cont")))
                      for k in range(1, meta["order"] + 1)]
        return cls(orders, meta["vocab_size"], meta["order"], meta["exclude_ids"])


def mean_nats(model: KneserNeyModel, tunes: Sequence[Sequence[int]]) -> float:
    """Average negative log-likelihood per predicted token (nats) over the tunes."""
    scores = model.score(tunes)
    total = sum(float(-s.sum()) for s in scores)
    count = sum(len(s) for s in scores)
    return total / max(count, 1)


def select_order(train: Sequence[Sequence[int]], valid: Sequence[Sequence[int]], vocab_size: int,
                 orders: Sequence[int] = range(3, 9), exclude_ids: Sequence[int] = ()
                 ) -> tuple[KneserNeyModel, dict[int, float]]:
    """Fits once up to max(orders) and returns the order with the lowest validation nats/token."""
    orders = list(orders)
    if not orders or min(orders) < 1:
        raise ValueError(f"orders must be a non-empty list of integers >= 1, got {orders}")
    full = KneserNeyModel.fit(train, vocab_size, order=max(orders), exclude_ids=exclude_ids)
    table = {n: mean_nats(full.with_order(n), valid) for n in orders}
    best = min(table, key=table.get)
    return full.with_order(best), table
