"""Why gates and clipping matter, measured on real melodies.

Two measurements on a small probe network (embedding -> one recurrent layer -> projection):

1. Gradient through time. For a window of T tokens, L_T is the loss at the last step. Unrolling our
   cell (`model.network.cells.RNNCell/GRUCell/LSTMCell`) step by step and keeping every hidden state
   (`retain_grad`), one backward pass gives ||dL_T / dh_{T-k}|| for every distance k = 0..T-1.
   The curve is averaged over several windows, for the vanilla RNN, the GRU and the LSTM, at
   initialisation and after a short training. A norm that falls by orders of magnitude within a few
   dozen steps means the loss cannot teach the cell anything about tokens that far back.
2. Gradient norms during training, with and without clipping: the total norm of the gradient before
   clipping (what `clip_grad_norm_` returns) at every step of two otherwise identical runs.

Training uses the fast `model.network.cells.Recurrent` layer; its weights load into the single cell by name
(weight_ih_l0 -> weight_ih ...), so both see the same network.

    python -m model.training.diagnostics --out docs/img        # plots + diagnostics.json, ~4 minutes on 1 thread
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.network.cells import GRUCell, LSTMCell, RNNCell
from model.network.recurrent import Recurrent
from model.representation.corpora import cached_corpus, split_corpus
from model.representation.tokens import MelodyTokenizer
from model.representation.parsing import encode_stream

CELLS = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}
NAMES = {"rnn": "vanilla RNN (tanh)", "gru": "GRU", "lstm": "LSTM"}


@dataclass
class DiagnoseConfig:
    data: str = "music21:essenFolksong"
    cells: tuple[str, ...] = ("rnn", "gru", "lstm")
    embedding_dim: int = 32
    hidden_size: int = 128
    window: int = 300            # tokens per measured window: distances k = 0..window-1
    windows: int = 16            # windows averaged per curve
    train_steps: int = 1000      # Adam steps of the short training, per cell
    train_window: int = 100      # truncated-BPTT length of training batches
    batch_size: int = 32
    lr: float = 2e-3
    clip: float = 1.0
    clip_cell: str = "rnn"       # the cell of the with/without clipping runs
    clip_steps: int = 300
    # optimizer:learning rate of each pair of runs: plain SGD (the setting of the lecture) and Adam (ours)
    clip_optimizers: tuple[str, ...] = ("sgd:1.0", "adam:0.01")
    seed: int = 0

    def validate(self) -> None:
        for c in (*self.cells, self.clip_cell):
            if c not in CELLS:
                raise ValueError(f"cells must be among {tuple(CELLS)}, got {c!r}")
        for name in ("embedding_dim", "hidden_size", "window", "windows", "train_window", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("train_steps", "clip_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for spec in self.clip_optimizers:
            name, _, lr = spec.partition(":")
            if name not in ("sgd", "adam") or not _is_positive(lr):
                raise ValueError(f"clip_optimizers must hold 'sgd:<lr>' or 'adam:<lr>' with lr > 0, got {spec!r}")
        if not self.clip > 0:
            raise ValueError(f"clip must be > 0, got {self.clip}")


def _is_positive(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


class ProbeNetwork(nn.Module):
    """Embedding -> one recurrent layer (ours) -> projection; trains fast, unrolls for measurement."""

    def __init__(self, cell: str, vocab_size: int, embedding_dim: int, hidden_size: int):
        super().__init__()
        self.cell = cell
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = Recurrent(cell, embedding_dim, hidden_size)
        self.projection = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor, state=None):
        out, state = self.rnn(self.embedding(tokens), state)  # (B, T, H)
        return self.projection(out), state                   # (B, T, V)

    def unrolled_cell(self) -> nn.Module:
        """Our single cell holding this layer's weights."""
        cell = CELLS[self.cell](self.rnn.input_size, self.rnn.hidden_size)
        cell.load_state_dict({name: getattr(self.rnn, f"{name}_l0").detach().clone()
                              for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        return cell


def gradient_by_distance(net: ProbeNetwork, windows: torch.Tensor) -> np.ndarray:
    """Mean over windows of ||dL_T / dh_{T-k}|| for k = 0..T-1, where windows is (N, T+1) token ids and
    L_T is the cross-entropy of the last prediction (tokens[:, T] from tokens[:, :T])."""
    inputs, target = windows[:, :-1], windows[:, -1]          # (N, T), (N,)
    N, T = inputs.shape
    # float64: at initialisation the norms fall below float32's range (1e-38) within ~100 steps
    cell = net.unrolled_cell().double()
    projection = nn.Linear(net.rnn.hidden_size, net.projection.out_features).double()
    projection.load_state_dict(net.projection.state_dict())
    x = net.embedding(inputs).detach().double()              # (N, T, E): the cell's inputs
    h = x.new_zeros(N, net.rnn.hidden_size)
    c = torch.zeros_like(h)
    states = []
    for t in range(T):
        if net.cell == "lstm":
            h, c = cell(x[:, t], (h, c))
        else:
            h = cell(x[:, t], h)
        h.retain_grad()                                      # keep dL/dh_t on this intermediate node
        states.append(h)
    logits = projection(h)                                   # (N, V), the prediction at the last step
    # summed over windows: window n's loss depends only on window n's states, so each row stays separate
    F.cross_entropy(logits, target, reduction="sum").backward()
    norms = torch.stack([s.grad.norm(dim=1) for s in reversed(states)], dim=1)  # (N, T), column k = T-1-t
    return norms.mean(dim=0).numpy()


def token_stream(tunes: list[np.ndarray]) -> np.ndarray:
    """The tunes one after another, as a language-model training stream."""
    return np.concatenate([np.asarray(t, dtype=np.int64) for t in tunes])


def sample_windows(stream: np.ndarray, length: int, count: int, rng: np.random.Generator) -> torch.Tensor:
    if len(stream) <= length:
        raise ValueError(f"the corpus holds {len(stream)} tokens, fewer than one window of {length + 1}")
    starts = rng.integers(0, len(stream) - length, size=count)
    return torch.from_numpy(np.stack([stream[s:s + length + 1] for s in starts]))  # (count, length+1)


def train_probe(net: ProbeNetwork, stream: np.ndarray, steps: int, window: int, batch_size: int, lr: float,
                clip: float | None, rng: np.random.Generator, optimizer: str = "adam") -> dict:
    """Adam (or plain SGD) on random windows; records the gradient norm before clipping and the loss at
    every step. clip=None trains without clipping."""
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(net.parameters(), lr=lr)
    norms, losses = [], []
    net.train()
    for _ in range(steps):
        batch = sample_windows(stream, window, batch_size, rng)
        logits, _ = net(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        # clip_grad_norm_ returns the norm before clipping; max_norm=inf measures without changing anything
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), clip if clip is not None else math.inf)
        opt.step()
        norms.append(float(norm))
        losses.append(loss.item())
    return {"grad_norm": norms, "loss": losses}


def load_tunes(spec: str, tokenizer: MelodyTokenizer, min_tokens: int = 150_000
               ) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """(training tunes, held-out tunes, description) of real melodies: the train and valid splits of the
    cached corpus, or else the first music21 files of the collection up to `min_tokens` tokens, every
    tenth tune held out."""
    corpus = cached_corpus(spec, tokenizer.config)    # parsing the whole collection would take minutes
    if corpus is not None:
        splits = split_corpus(corpus)
        return ([np.asarray(t.tokens) for t in splits["train"]], [np.asarray(t.tokens) for t in splits["valid"]],
                f"{spec}, cached corpus: {len(splits['train'])} train / {len(splits['valid'])} valid tunes")
    if not spec.startswith("music21:"):
        raise ValueError(f"data must be music21:<collection> unless the corpus is cached, got {spec!r}")
    from music21 import converter, corpus as m21corpus
    tunes, used = [], []
    for path in sorted(m21corpus.getComposer(spec.split(":", 1)[1])):
        opus = converter.parse(path)
        for score in getattr(opus, "scores", [opus]):
            try:
                tunes.append(np.asarray(encode_stream(tokenizer, score), dtype=np.int64))
            except ValueError:
                continue
        used.append(os.path.basename(str(path)))
        if sum(len(t) for t in tunes) >= min_tokens:
            break
    held = set(range(0, len(tunes), 10))
    return ([t for i, t in enumerate(tunes) if i not in held], [tunes[i] for i in sorted(held)],
            f"{spec}, music21 sample (corpus not cached): {', '.join(used)}, {len(tunes)} tunes, every tenth held out")


def diagnose(out_dir: str | None = None, config: DiagnoseConfig | None = None, tunes: list | None = None,
             vocab_size: int | None = None, log=print) -> dict:
    """Runs both measurements; with out_dir, writes the plots and diagnostics.json there. Returns the figures.

    `tunes` (token arrays) replaces the corpus; the gradient windows are then drawn from them too."""
    cfg = config or DiagnoseConfig()
    cfg.validate()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if tunes is None:
        tokenizer = MelodyTokenizer()
        tunes, held_out, source = load_tunes(cfg.data, tokenizer)
        vocab_size = tokenizer.vocab_size
    else:
        held_out, source = tunes, "given tunes"
    stream = token_stream(tunes)
    vocab_size = vocab_size or int(stream.max()) + 1
    measure = sample_windows(token_stream(held_out), cfg.window, cfg.windows, rng)  # (windows, window+1)
    log(f"data: {source}; {len(stream)} training tokens")

    results = {"config": asdict(cfg), "data": source, "tokens": int(len(stream)), "curves": {}, "training": {}}
    for cell in cfg.cells:
        torch.manual_seed(cfg.seed)
        net = ProbeNetwork(cell, vocab_size, cfg.embedding_dim, cfg.hidden_size)
        t0 = time.time()
        at_init = gradient_by_distance(net, measure)
        run = train_probe(net, stream, cfg.train_steps, cfg.train_window, cfg.batch_size, cfg.lr, cfg.clip, rng)
        trained = gradient_by_distance(net, measure)
        results["curves"][cell] = {"init": at_init.tolist(), "trained": trained.tolist()}
        results["training"][cell] = {"first_loss": run["loss"][0] if run["loss"] else None,
                                     "last_loss": float(np.mean(run["loss"][-20:])) if run["loss"] else None,
                                     "seconds": time.time() - t0}
        log(f"{cell}: loss {results['training'][cell]['first_loss']} -> {results['training'][cell]['last_loss']}, "
            f"|dL/dh| ratio k=50/k=0 init {at_init[50] / at_init[0]:.2e} trained {trained[50] / trained[0]:.2e}"
            if cfg.window > 50 else f"{cell}: done")

    clipping = {}
    for spec in cfg.clip_optimizers:
        optimizer, lr = spec.split(":")[0], float(spec.split(":")[1])
        for name, clip in (("clipped", cfg.clip), ("unclipped", None)):
            torch.manual_seed(cfg.seed)
            net = ProbeNetwork(cfg.clip_cell, vocab_size, cfg.embedding_dim, cfg.hidden_size)
            run_rng = np.random.default_rng(cfg.seed + 1)    # the same batches in both runs
            run = train_probe(net, stream, cfg.clip_steps, cfg.train_window, cfg.batch_size, lr, clip, run_rng,
                              optimizer)
            clipping.setdefault(spec, {})[name] = run
            g, loss = np.array(run["grad_norm"] or [0.0]), np.array(run["loss"] or [0.0])
            log(f"{cfg.clip_cell} {spec} {name}: grad norm median {np.median(g):.3g} p99 {np.percentile(g, 99):.3g} "
                f"max {g.max():.3g}; loss max after step 50 {loss[50:].max(initial=0):.2f}, "
                f"last 20 steps {loss[-20:].mean():.3f}")
    results["clipping"] = clipping
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "diagnostics.json"), "w") as f:
            json.dump(results, f)
        plot(results, out_dir)
    return results


def plot(results: dict, out_dir: str) -> list[str]:
    """Writes gradient-by-distance.png and gradient-norms-clipping.png; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, stage, title in zip(axes, ("init", "trained"), ("at initialisation", "after a short training")):
        for cell, curves in results["curves"].items():
            y = np.asarray(curves[stage])
            ax.semilogy(np.arange(len(y)), y / y[0], label=NAMES[cell])
        ax.set_title(f"||dL_T/dh_(T-k)|| / ||dL_T/dh_T||, {title}")
        ax.set_xlabel("distance k (tokens; 16 per 4/4 bar)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("relative gradient norm")
    axes[0].legend()
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "gradient-by-distance.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    cfg = results["config"]
    runs = results["clipping"]
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.6 * len(runs)), squeeze=False)
    for row, (spec, pair) in zip(axes, runs.items()):
        norms = np.concatenate([r["grad_norm"] for r in pair.values()])
        bins = np.logspace(np.log10(max(norms.min(), 1e-4)), np.log10(norms.max() * 1.01 + 1e-12), 40)
        for name, run in pair.items():
            row[0].hist(run["grad_norm"], bins=bins, alpha=0.55, label=name)
            row[1].plot(run["loss"], label=name, lw=0.8)
        row[0].axvline(cfg["clip"], color="k", ls="--", lw=1, label=f"clip = {cfg['clip']}")
        row[0].set_xscale("log")
        row[0].xaxis.set_minor_formatter(NullFormatter())   # decade labels only: minor ones overlap
        row[0].set_xlabel("gradient norm before clipping")
        row[0].set_ylabel("training steps")
        row[0].set_title(f"{NAMES[cfg['clip_cell']]}, {spec.replace(':', ' lr ')}: gradient norms")
        row[0].legend()
        row[1].set_yscale("log")
        row[1].set_xlabel("step")
        row[1].set_ylabel("training loss (nats/token)")
        row[1].set_title(f"{spec.replace(':', ' lr ')}: training loss")
        row[1].legend()
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "gradient-norms-clipping.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.training.diagnostics", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/img", help="folder for the plots and diagnostics.json")
    defaults = DiagnoseConfig()
    for name, value in asdict(defaults).items():
        if isinstance(value, tuple):
            parser.add_argument(f"--{name.replace('_', '-')}", nargs="+", default=list(value))
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = vars(parser.parse_args(argv))
    out, threads = args.pop("out"), args.pop("threads")
    torch.set_num_threads(threads)
    args["cells"] = tuple(args["cells"])
    t0 = time.time()
    diagnose(out, DiagnoseConfig(**args))
    print(f"wrote {out}/gradient-by-distance.png, {out}/gradient-norms-clipping.png, {out}/diagnostics.json "
          f"in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
