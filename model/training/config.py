"""What a training run is: ``TrainConfig``, one field per setting with its default, checked on
construction. ``tunesmith train``'s flags are generated from its fields (model/cli.py) and the
service's training request takes its defaults from them (service/schemas.py); model/training/trainer.py
runs it. Nothing here imports torch, so the API process can read the defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from model.representation.styles import STYLES

if TYPE_CHECKING:
    from model.network.melody import NetworkConfig
    from model.representation.tokens import MelodyTokenizer

POSITION_DIM = 16  # size of the position-in-bar embedding when position_inputs is on
REMAINING_DIM = 8  # size of the bars-remaining embedding when remaining_inputs is on
KEY_DIM = 8        # size of the key embedding when key_inputs is on
FORM_DIM = 8       # size of each of the form's two embeddings (relation, pointer) when form_inputs is on
CHORD_DIM = 8      # size of the chord embedding when chord_inputs is on
STYLE_DIM = 4      # size of the style embedding when style_inputs is on


@dataclass
class TrainConfig:
    data: str = "music21:essenFolksong"
    out: str = "model/weights/default.pt"
    cell: str = "lstm"                   # lstm | gru | rnn
    hidden_size: int = 256
    layers: int = 2
    embedding_dim: int = 64
    dropout: float = 0.2
    position_inputs: bool = True         # feed the position in the bar as a second embedding
    remaining_inputs: bool = True        # feed the bars remaining to the end of the tune (capped) as a third embedding
    max_remaining: int = 8               # the cap: "8" means 8 bars or more to go
    remaining_dropout: float = 0.25      # share of training tunes (drawn per epoch) read with the end "unknown",
                                         # so the model also learns to end on its own (a min_bars/max_bars range)
    key_inputs: bool = False             # feed the tune's key (estimated from its notes; 24 keys) as a fourth embedding
    key_dropout: float = 0.25            # share of training tunes (drawn per epoch) read with the key "unknown"
    form_inputs: bool = False            # feed each bar's form label (relation to an earlier bar, bars back)
    form_dropout: float = 0.25           # share of training tunes (per epoch) read with the form "unknown"
    form_bar_dropout: float = 0.15       # in the others, the share of bars whose label is hidden ("unknown")
    chord_inputs: bool = False           # feed the chord under each step (the tune's own, estimated)
    chord_dropout: float = 0.5           # share of training tunes (per epoch) read with the chords "unknown"
    style_inputs: bool = False           # feed the tune's style (its collection: model/representation/styles.py)
    style_dropout: float = 0.2           # share of training tunes (per epoch) read with the style "unknown"
    end_weight: float = 1.0              # loss weight of each tune's last bar (its tokens after the last barline,
                                         # EOS included), so the few tokens that end a tune count for more
    init: str | None = None              # start from this checkpoint's network weights (same network and tokenizer);
                                         # unset: the shipped model when it fits (model/training/plan.py)
    from_scratch: bool = False           # a fresh network, even where the shipped model would fit
    sampled_inputs: float = 0.0          # parallel scheduled sampling: share of step inputs replaced by the
                                         # network's own draw there (a first, gradient-free pass); 0 = off
    short_term: bool = True              # fit the short-term model (model/network/shortterm.py) on valid at the end
    bptt: int | str = 128                # "full" (whole tunes) or k: truncate gradients every k steps
    window: int = 128                    # tokens per lane per optimizer step (truncated BPTT only)
    # None = chosen from the training split's size by model/training/recipe.py when the run starts
    batch_size: int | None = None
    lr: float | None = None
    lr_patience: int | None = None       # epochs without a better validation loss before the lr is halved
    clip: float = 1.0                    # max total gradient norm
    epochs: int | None = None
    max_minutes: float | None = None     # time budget; the run stops cleanly (resumable) when spent
    patience: int | None = None          # epochs without a better validation loss before stopping
    seed: int = 0
    # semitone range drawn per tune and epoch, e.g. (-5, 6); (0, 0) = off. The rule turns it on for small
    # corpora only: on Essen it slowed learning and spread the model over all keys (docs/model-card.md)
    transpose: tuple[int, int] | None = None
    backend: str = "cells"               # cells (model.network.cells, our own equations: the shipped recipe) | fused
                                         # (torch.nn.*) | auto: fused for the LSTM, cells for GRU and RNN
    threads: int | None = None           # torch threads; None: the cores not busy when the run starts
    steps_per_quarter: int = 4           # tokenizer grid (when the corpus is loaded from `data`)
    valid: float = 0.05                  # split fractions, by tune
    test: float = 0.05

    def __post_init__(self):
        if isinstance(self.bptt, str) and self.bptt != "full":
            try:
                self.bptt = int(self.bptt)
            except ValueError:
                raise ValueError(f"bptt must be 'full' or an integer >= 1, got {self.bptt!r}") from None
        if self.transpose is not None:
            self.transpose = tuple(int(s) for s in self.transpose)
        checks = [
            ("hidden_size", self.hidden_size >= 1, ">= 1"), ("layers", self.layers >= 1, ">= 1"),
            ("embedding_dim", self.embedding_dim >= 1, ">= 1"), ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("bptt", self.bptt == "full" or self.bptt >= 1, "'full' or an integer >= 1"),
            ("window", self.window >= 2, ">= 2"), ("batch_size", self.batch_size is None or self.batch_size >= 1, ">= 1"),
            ("lr", self.lr is None or 0 < self.lr <= 1, "in (0, 1]"), ("lr_patience", self.lr_patience is None or self.lr_patience >= 0, ">= 0"),
            ("clip", self.clip > 0, "> 0"),
            ("epochs", self.epochs is None or self.epochs >= 1, ">= 1"), ("patience", self.patience is None or self.patience >= 1, ">= 1"),
            ("max_minutes", self.max_minutes is None or self.max_minutes > 0, "> 0 or None"),
            ("transpose", self.transpose is None or (len(self.transpose) == 2
             and -12 <= self.transpose[0] <= self.transpose[1] <= 12),
             "(low, high) with -12 <= low <= high <= 12, or None"),
            ("threads", self.threads is None or self.threads >= 1, ">= 1"),
            ("max_remaining", 1 <= self.max_remaining <= 64, "in [1, 64]"),
            ("remaining_dropout", 0 <= self.remaining_dropout < 1, "in [0, 1)"),
            ("end_weight", 0 < self.end_weight <= 100, "in (0, 100]"),
            ("sampled_inputs", 0 <= self.sampled_inputs < 1, "in [0, 1)"),
            ("key_dropout", 0 <= self.key_dropout < 1, "in [0, 1)"),
            ("form_dropout", 0 <= self.form_dropout < 1, "in [0, 1)"),
            ("form_bar_dropout", 0 <= self.form_bar_dropout < 1, "in [0, 1)"),
            ("chord_dropout", 0 <= self.chord_dropout < 1, "in [0, 1)"),
            ("style_dropout", 0 <= self.style_dropout < 1, "in [0, 1)"),
            ("backend", self.backend in ("auto", "fused", "cells"), "auto, fused or cells"),
            ("valid", 0 < self.valid < 0.5, "in (0, 0.5)"), ("test", 0 <= self.test < 0.5, "in [0, 0.5)"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")
        if self.from_scratch and self.init:
            raise ValueError(f"from_scratch must be off when init names a model to start from, got init {self.init!r}")

    def network_config(self, tokenizer: MelodyTokenizer) -> NetworkConfig:
        from model.network.melody import NetworkConfig  # torch: only where a network is built
        return NetworkConfig(
            vocab_size=tokenizer.vocab_size, cell=self.cell, embedding_dim=self.embedding_dim,
            hidden_size=self.hidden_size, num_layers=self.layers, dropout=self.dropout,
            position_dim=POSITION_DIM if self.position_inputs else 0,
            max_positions=tokenizer.max_bar_steps,
            remaining_dim=REMAINING_DIM if self.remaining_inputs else 0, max_remaining=self.max_remaining,
            key_dim=KEY_DIM if self.key_inputs else 0,
            form_dim=FORM_DIM if self.form_inputs else 0, chord_dim=CHORD_DIM if self.chord_inputs else 0,
            style_dim=STYLE_DIM if self.style_inputs else 0, styles=STYLES if self.style_inputs else (),
            backend=self.resolved_backend())

    def resolved_backend(self) -> str:
        """The backend that trains. `auto` is a fixed rule, not a measurement: torch's fused LSTM, our GRU
        and RNN layers (the faster of each at batch 64 in bench/bench_core.py on the machine it was measured on)."""
        if self.backend != "auto":
            return self.backend
        return "fused" if self.cell == "lstm" else "cells"

    def resume_path(self) -> Path:
        out = Path(self.out)
        return out.with_name(out.stem + ".resume.ckpt")
