"""Two variants of the short-term model that were tried and left out, against the shipped form.

    python bench/short_term_variants.py [--model model/weights/default.pt]

Each is fitted on the valid split (maximum likelihood given the network's predictions, as
``shortterm.fit``) and scored on the test split, in nats per token of the mixture:
  exact      the shipped copy model: contexts match token for token;
  entropy    the same, with the gate logit also linear in the network's entropy at that step
             (IDyOM weights its models by entropy): gate = sigmoid(gate[bucket] + b * H_network);
  interval   a copy model over transposition-invariant symbols: a note is its interval from the
             previous note, so a motif repeated a step higher matches; a vote for an interval
             becomes a vote for the pitch that interval away from the current last note.
Prints one JSON object per variant.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import DEFAULT_MODEL_PATH  # noqa: E402
from model.evaluation.report import checkpoint_splits  # noqa: E402
from model.network.scoring import token_arrays, tune_distributions
from model.network.shortterm import BUCKET_EDGES, CopyModel, CopyState  # noqa: E402

MAX_INTERVAL = 48


def interval_symbols(tokens, tok) -> list[int]:
    """Structural and REST/HOLD tokens keep their ids; a note becomes V + 48 + its interval from the last note."""
    out, last = [], None
    for t in tokens:
        pitch = tok.pitch_of(int(t))
        if pitch is None:
            out.append(int(t))
        else:
            step = 0 if last is None else max(-MAX_INTERVAL, min(MAX_INTERVAL, pitch - last))
            out.append(tok.vocab_size + MAX_INTERVAL + step)
            last = pitch
    return out


def collect(model, tok, tunes, mode: str) -> dict:
    """``shortterm.collect``'s statistics, plus the network's entropy per row, for one variant's symbols."""
    V, lowest = tok.vocab_size, tok.config.min_pitch
    tokens = token_arrays(tunes)
    stats = {k: [] for k in ("net", "longest", "cand_len", "cand_row", "cand_hit", "entropy")}
    row = 0
    for i, dist in tune_distributions(model, tok, tokens):
        t = tokens[i]
        symbols = interval_symbols(t, tok) if mode == "interval" else [int(x) for x in t]
        state, last = CopyState(CopyModel(), V + 2 * MAX_INTERVAL + 1, capacity=len(t) + 2), None
        for k in range(len(t) - 1):
            state.push(symbols[k])
            last = tok.pitch_of(int(t[k])) if tok.pitch_of(int(t[k])) is not None else last
            lengths, nexts = state.candidates()
            if mode == "interval":  # an interval vote -> the note that far from the last one, if in range
                pitch = (last if last is not None else -999) + nexts - V - MAX_INTERVAL
                ok = (nexts >= V) & (pitch >= lowest) & (pitch <= tok.config.max_pitch)
                nexts = np.where(ok, tok.note_id(lowest) + pitch - lowest, np.where(nexts >= V, -1, nexts))
                lengths, nexts = lengths[nexts >= 0], nexts[nexts >= 0]
            target = int(t[k + 1])
            stats["net"].append(float(dist[k, target]))
            stats["entropy"].append(float(-(np.exp(dist[k]) * dist[k]).sum()))
            stats["longest"].append(int(lengths.max()) if len(lengths) else 0)
            stats["cand_len"].append(lengths)
            stats["cand_row"].append(np.full(len(lengths), row))
            stats["cand_hit"].append(nexts == target)
            row += 1
    out = {k: (np.concatenate(v) if k.startswith("cand") else np.array(v)) for k, v in stats.items()}
    return {**out, "rows": row}


def nll(stats: dict, beta, gate, slope) -> torch.Tensor:
    """Summed mixture NLL, with the gate logit gate[bucket] + slope * entropy."""
    length = torch.from_numpy(stats["cand_len"]).double()
    row = torch.from_numpy(stats["cand_row"])
    w = torch.exp(beta * torch.log(length))
    total = torch.zeros(stats["rows"], dtype=torch.float64).index_add_(0, row, w)
    hit = torch.from_numpy(stats["cand_hit"]).double()
    voted = torch.zeros(stats["rows"], dtype=torch.float64).index_add_(0, row, w * hit)
    matched = torch.from_numpy(stats["longest"] > 0)
    buckets = torch.from_numpy(np.searchsorted(BUCKET_EDGES, np.maximum(stats["longest"], 1), side="right") - 1)
    zero = torch.zeros((), dtype=torch.float64)
    g = torch.where(matched, torch.sigmoid(gate[buckets] + slope * torch.from_numpy(stats["entropy"])), zero)
    p_copy = torch.where(matched, voted / total.clamp_min(1e-300), zero)
    return -torch.log((1 - g) * torch.exp(torch.from_numpy(stats["net"])) + g * p_copy).sum()


def fit_and_score(valid: dict, test: dict, with_entropy: bool) -> dict:
    beta = torch.tensor(8.0, dtype=torch.float64, requires_grad=True)
    gate = torch.zeros(len(BUCKET_EDGES), dtype=torch.float64, requires_grad=True)
    slope = torch.zeros((), dtype=torch.float64, requires_grad=with_entropy)
    opt = torch.optim.LBFGS([beta, gate] + ([slope] if with_entropy else []), lr=0.5, max_iter=200,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nll(valid, beta, gate, slope) / valid["rows"]
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return {"valid_nats_per_token": round(float(nll(valid, beta, gate, slope)) / valid["rows"], 5),
                "test_nats_per_token": round(float(nll(test, beta, gate, slope)) / test["rows"], 5),
                "network_test_nats_per_token": round(float(-test["net"].mean()), 5),
                "beta": round(float(beta), 3), "entropy_slope": round(float(slope), 3)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_PATH))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, tok, _, _, splits = checkpoint_splits(args.model)
    exact = {name: collect(model, tok, splits[name], "exact") for name in ("valid", "test")}
    print(json.dumps({"variant": "exact", **fit_and_score(exact["valid"], exact["test"], False)}), flush=True)
    print(json.dumps({"variant": "entropy", **fit_and_score(exact["valid"], exact["test"], True)}), flush=True)
    interval = {name: collect(model, tok, splits[name], "interval") for name in ("valid", "test")}
    print(json.dumps({"variant": "interval", **fit_and_score(interval["valid"], interval["test"], False)}), flush=True)


if __name__ == "__main__":
    main()
