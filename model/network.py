"""The melody network: token embedding -> stacked recurrent layers -> dropout -> projection to logits.

Two interchangeable backends run the recurrent stack with one state_dict layout:
``"fused"`` uses torch.nn.LSTM/GRU/RNN (fastest for training on this machine, the default) and
``"cells"`` uses our own ``model.cells.Recurrent`` written from the equations. A model trained on
one runs on the other (``set_backend``).

``step`` is the generation hot path. It never calls the recurrent module: stepping torch.nn.LSTM
one token at a time costs about 1 ms per token here (oneDNN setup per call), so ``step`` runs the
cell equations directly on the same parameters, with layer 0's input projection precomputed as a
lookup table (token embedding @ W_ih0^T + biases). The table is rebuilt whenever a parameter
changes (keyed on the parameters' in-place version counters), so training between generations is safe.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

CELLS = ("lstm", "gru", "rnn")
BACKENDS = ("fused", "cells")


@dataclass
class NetworkConfig:
    vocab_size: int
    cell: str = "lstm"  # lstm | gru | rnn (tanh)
    embedding_dim: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.2  # between recurrent layers and before the projection
    position_dim: int = 0  # > 0: embed the position in the bar and concatenate it to the token embedding
    max_positions: int = 96  # position ids must lie in [0, max_positions)
    backend: str = "fused"  # fused (torch.nn.LSTM/GRU/RNN) | cells (model.cells.Recurrent)

    def __post_init__(self):
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {self.vocab_size}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("embedding_dim", "hidden_size", "num_layers", "max_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.position_dim < 0:
            raise ValueError(f"position_dim must be >= 0, got {self.position_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        return cls(**d)


def build_recurrent(cell: str, backend: str, input_size: int, hidden_size: int, num_layers: int,
                    dropout: float) -> nn.Module:
    """The recurrent stack for a backend; both take (B, T, I) and share parameter names."""
    dropout = dropout if num_layers > 1 else 0.0  # torch warns on inter-layer dropout with one layer
    if backend == "fused":
        fused = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        return fused(input_size, hidden_size, num_layers, dropout=dropout, batch_first=True)
    if backend == "cells":
        from model.cells import Recurrent
        return Recurrent(cell, input_size, hidden_size, num_layers, dropout=dropout)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


class MelodyNetwork(nn.Module):
    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        if config.position_dim > 0:
            self.position_embedding = nn.Embedding(config.max_positions, config.position_dim)
        else:
            self.position_embedding = None
        input_size = config.embedding_dim + config.position_dim
        self.rnn = build_recurrent(config.cell, config.backend, input_size, config.hidden_size,
                                   config.num_layers, config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.projection = nn.Linear(config.hidden_size, config.vocab_size)
        self._inference_cache = None  # (key, tables) for step(); see _inference_tables

    # ---- training / scoring path -------------------------------------------------------------

    def _inputs(self, tokens: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        x = self.embedding(tokens)  # (..., E)
        if self.position_embedding is not None:
            if positions is None:
                raise ValueError("positions are required when position_dim > 0, got None")
            if positions.shape != tokens.shape:
                raise ValueError(f"positions must have the shape of tokens {tuple(tokens.shape)}, "
                                 f"got {tuple(positions.shape)}")
            x = torch.cat([x, self.position_embedding(positions)], dim=-1)  # (..., E + P)
        return x

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None, state=None):
        """tokens (B, T) long, positions (B, T) long or None -> (logits (B, T, V), state)."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, time), got shape {tuple(tokens.shape)}")
        x = self._inputs(tokens, positions)  # (B, T, I)
        if state is None:
            state = self.init_state(tokens.shape[0])
        out, state = self.rnn(x, state)  # (B, T, H)
        logits = self.projection(self.dropout(out))  # (B, T, V)
        return logits, state

    def init_state(self, batch_size: int):
        """Zero state: LSTM (h, c) each (L, B, H); GRU/RNN h (L, B, H)."""
        p = self.projection.weight
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        h = torch.zeros(shape, dtype=p.dtype, device=p.device)
        return (h, torch.zeros_like(h)) if self.config.cell == "lstm" else h

    def set_backend(self, name: str) -> None:
        """Swap the recurrent stack between 'fused' and 'cells', keeping the weights."""
        if name == self.config.backend:
            return
        old = self.rnn
        new = build_recurrent(self.config.cell, name, old.input_size, old.hidden_size,
                              old.num_layers, self.config.dropout)
        p = old.weight_hh_l0
        new.to(device=p.device, dtype=p.dtype)
        new.load_state_dict(old.state_dict())
        new.train(old.training)
        self.rnn = new
        self.config.backend = name
        self._inference_cache = None

    # ---- generation path ---------------------------------------------------------------------

    def _parameters_key(self):
        # Changes whenever a parameter is modified in place (optimizer step, load_state_dict)
        # or replaced (.to(), set_backend).
        return tuple((p.data_ptr(), p._version) for p in self.parameters())

    @torch.no_grad()
    def prepare_for_inference(self):
        """Build (or return the cached) step() tables from the current parameters."""
        key = self._parameters_key()
        if self._inference_cache is not None and self._inference_cache[0] == key:
            return self._inference_cache[1]
        cfg, rnn, E = self.config, self.rnn, self.config.embedding_dim
        layers = []
        for k in range(cfg.num_layers):
            w_ih, w_hh = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")
            b_ih, b_hh = getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}")
            if cfg.cell == "gru":  # b_hn sits inside r * (W_hn h + b_hn): keep b_hh on the hidden side
                b_x, b_h = b_ih.clone(), b_hh.clone()
            else:
                b_x, b_h = b_ih + b_hh, None
            if k == 0:
                # lookup tables replace layer 0's input matmul: (V, G) and (max_positions, G)
                table = torch.addmm(b_x, self.embedding.weight, w_ih[:, :E].t())
                pos_table = (self.position_embedding.weight @ w_ih[:, E:].t()
                             if self.position_embedding is not None else None)
                layers.append((table, pos_table, w_hh.t().contiguous(), b_h))
            else:
                layers.append((b_x, w_ih.t().contiguous(), w_hh.t().contiguous(), b_h))
        tables = (layers, self.projection.weight.t().contiguous(), self.projection.bias.clone())
        self._inference_cache = (key, tables)
        return tables

    def step(self, tokens: torch.Tensor, positions: torch.Tensor | None, state):
        """One generation step: tokens (B,) long, positions (B,) or None -> (logits (B, V), state).

        Inference only (no gradients, no dropout). The given state is not modified.
        """
        if torch.is_inference_mode_enabled():
            return self._step(tokens, positions, state)
        with torch.inference_mode():
            return self._step(tokens, positions, state)

    def _step(self, tokens, positions, state):
        layers, proj_w, proj_b = self.prepare_for_inference()
        cell, H = self.config.cell, self.config.hidden_size
        if cell == "lstm":
            hs, cs = state
        else:
            hs = state
        new_h, new_c = [], []
        x = None
        for k, layer in enumerate(layers):
            if k == 0:
                table, pos_table, w_hh_t, b_h = layer
                gx = table[tokens]  # (B, G) input projection of layer 0, biases included
                if pos_table is not None:
                    if positions is None:
                        raise ValueError("positions are required when position_dim > 0, got None")
                    gx += pos_table[positions]
            else:
                b_x, w_ih_t, w_hh_t, b_h = layer
                gx = torch.addmm(b_x, x, w_ih_t)  # (B, G)
            h = hs[k]
            if cell == "lstm":
                gates = gx.addmm_(h, w_hh_t)  # (B, 4H) pre-activations, order i, f, g, o
                sig_if = gates[:, :2 * H].sigmoid_()  # input and forget gates
                g = gates[:, 2 * H:3 * H].tanh_()  # candidate cell
                o = gates[:, 3 * H:].sigmoid_()  # output gate
                c = torch.mul(sig_if[:, H:], cs[k]).addcmul_(sig_if[:, :H], g)  # c' = f*c + i*g
                x = torch.tanh(c).mul_(o)  # h' = o * tanh(c')
                new_c.append(c)
            elif cell == "gru":
                gh = torch.addmm(b_h, h, w_hh_t)  # (B, 3H) hidden projection, order r, z, n
                rz = gx[:, :2 * H].add_(gh[:, :2 * H]).sigmoid_()  # reset and update gates
                n = gx[:, 2 * H:].addcmul_(rz[:, :H], gh[:, 2 * H:]).tanh_()  # candidate
                x = torch.sub(h, n).mul_(rz[:, H:]).add_(n)  # h' = n + z*(h - n)
            else:
                x = gx.addmm_(h, w_hh_t).tanh_()  # h' = tanh(W_ih x + W_hh h + b)
            new_h.append(x)
        logits = torch.addmm(proj_b, x, proj_w)  # (B, V)
        if cell == "lstm":
            return logits, (torch.stack(new_h), torch.stack(new_c))
        return logits, torch.stack(new_h)
