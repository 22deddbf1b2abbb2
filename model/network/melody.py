"""The melody network: token embedding -> stacked recurrent layers -> dropout -> projection to logits.

Two interchangeable backends run the recurrent stack with one state_dict layout:
``"fused"`` uses torch.nn.LSTM/GRU/RNN (the default: the faster for the LSTM, ~1.4x ours in training
here) and ``"cells"`` uses our own ``model.network.cells.Recurrent`` written from the equations (the faster
for the GRU and RNN; see docs/benchmarks.md). A model trained on one runs on the other (``set_backend``).

``step`` is the generation hot path. It never calls the recurrent module: stepping torch.nn.LSTM
one token at a time costs about 1 ms per token here (oneDNN setup per call), so ``step`` runs the
cell equations directly on the same parameters, with layer 0's input projection precomputed as a
lookup table (token embedding @ W_ih0^T + biases), the gates computed in per-batch-size scratch
buffers and the matmul kernel chosen by batch size (see ``model.network.cells.StepMatmul``). The tables are
rebuilt whenever a parameter changes (keyed on the parameters' in-place version counters), so
training between generations is safe.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import torch
from torch import nn

from model.network.recurrent import NUM_GATES, Recurrent
from model.representation.chords import UNKNOWN_CHORD_ID
from model.representation.form import NO_POINTER, RELATION_IDS
from model.network.kernels import InputRows, StepMatmul
from model.network.kernels import tanh as tanh_fast, tanh_ as tanh_fast_, tanh_stable, tanh_stable_

# tanh per kernel set (MelodyNetwork._step): by size (the fastest), the sigmoid form at every size
# (with oneDNN's products), or torch's own at every size (with MKL's)
TANH = {"fast": (tanh_fast, tanh_fast_), "onednn": (tanh_stable, tanh_stable_), "mkl": (torch.tanh, torch.Tensor.tanh_)}
MATMUL = {"fast": "auto", "onednn": "onednn", "mkl": "mkl"}  # StepMatmul's kernel per kernel set

CELLS = ("lstm", "gru", "rnn")
KEYS = 25  # key ids: tonic pitch class 0..11 (major), 12..23 (minor), 24 unknown (model.network.conditions.key_id)
UNKNOWN_KEY = KEYS - 1
# the form input (model.network.conditions): the bar's relation to an earlier bar, and how many bars back
RELATIONS = len(RELATION_IDS) + 1  # new, exact, rhythm, variant, then unknown
UNKNOWN_RELATION = RELATIONS - 1
POINTERS = NO_POINTER + 2  # 1..MAX_POINTER bars back (ids 0..15), none (NO_POINTER), then unknown
UNKNOWN_POINTER = POINTERS - 1
CHORDS = UNKNOWN_CHORD_ID + 1  # model.representation.chords' 48 chord ids, then unknown (48)
UNKNOWN_CHORD = UNKNOWN_CHORD_ID
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
    remaining_dim: int = 0  # > 0: embed the bars remaining to the end (capped) and concatenate it too
    max_remaining: int = 8  # remaining ids: 0..max_remaining (that many bars or more), max_remaining + 1 unknown
    key_dim: int = 0  # > 0: embed the tune's key (KEYS ids: 12 major, 12 minor tonics, then unknown) and concatenate it
    form_dim: int = 0  # > 0: embed the bar's form relation and its pointer (each form_dim wide) and concatenate them
    chord_dim: int = 0  # > 0: embed the chord under the next grid step (CHORDS ids) and concatenate it
    style_dim: int = 0  # > 0: embed the tune's style (one of ``styles``, then unknown) and concatenate it
    styles: tuple = ()  # the style names of the style input (model.representation.styles), in id order
    backend: str = "fused"  # fused (torch.nn.LSTM/GRU/RNN) | cells (model.network.cells.Recurrent)

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
        for name in ("position_dim", "remaining_dim", "key_dim", "form_dim", "chord_dim", "style_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_remaining < 0:
            raise ValueError(f"max_remaining must be >= 0, got {self.max_remaining}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.styles = tuple(self.styles)
        if self.style_dim and not self.styles:
            raise ValueError("styles must name at least one style when style_dim > 0, got none")

    @property
    def conditioned(self) -> bool:
        """Whether the network reads a condition id (position in the bar, bars remaining, key) per step."""
        return (self.position_dim > 0 or self.remaining_dim > 0 or self.key_dim > 0 or self.form_dim > 0
                or self.chord_dim > 0 or self.style_dim > 0)

    # A condition id packs every input in mixed radix, lowest first: position, remaining, key, form
    # (relation + RELATIONS * pointer), chord, style; an input the network lacks takes radix 1.
    @property
    def key_stride(self) -> int:
        """Condition ids below this hold the position and bars remaining; (id // key_stride) % KEYS is the key id."""
        return self.max_positions * (self.max_remaining + 2 if self.remaining_dim else 1)

    @property
    def form_stride(self) -> int:
        return self.key_stride * (KEYS if self.key_dim else 1)

    @property
    def chord_stride(self) -> int:
        return self.form_stride * (RELATIONS * POINTERS if self.form_dim else 1)

    @property
    def style_stride(self) -> int:
        return self.chord_stride * (CHORDS if self.chord_dim else 1)

    @property
    def unknown_style(self) -> int:
        return len(self.styles)

    def input_parts(self) -> list[tuple[str, int]]:
        """(name, width) of each part of layer 0's input, in the order ``MelodyNetwork._inputs``
        concatenates them (an input the network lacks: width 0); new inputs come last, so a network
        grown from a checkpoint keeps the checkpoint's columns (model/training/trainer.py)."""
        return [("token", self.embedding_dim), ("position", self.position_dim), ("remaining", self.remaining_dim),
                ("key", self.key_dim), ("relation", self.form_dim), ("pointer", self.form_dim),
                ("chord", self.chord_dim), ("style", self.style_dim)]

    def input_offsets(self) -> dict[str, int]:
        """Each input part's first column in layer 0's input weights."""
        out, at = {}, 0
        for name, width in self.input_parts():
            out[name], at = at, at + width
        return out

    def fields(self, ids):
        """The inputs packed in condition ids (ints or an integer array/tensor): a dict of
        position, remaining, key, relation, pointer, chord, style (each where the network has it)."""
        out = {"position": ids % self.max_positions}
        if self.remaining_dim:
            out["remaining"] = (ids % self.key_stride) // self.max_positions
        if self.key_dim:
            out["key"] = (ids // self.key_stride) % KEYS
        if self.form_dim:
            form = (ids // self.form_stride) % (RELATIONS * POINTERS)
            out["relation"], out["pointer"] = form % RELATIONS, form // RELATIONS
        if self.chord_dim:
            out["chord"] = (ids // self.chord_stride) % CHORDS
        if self.style_dim:
            out["style"] = ids // self.style_stride
        return out

    def with_fields(self, ids, **values):
        """``ids`` with the named fields (key, relation, pointer, chord, style) replaced by ``values``
        (ints or arrays broadcast against ``ids``); the others kept."""
        f = self.fields(ids)
        f.update(values)
        return self.pack(f)

    def pack(self, f: dict):
        """Condition ids from a dict of fields (the inverse of ``fields``; a missing field: unknown)."""
        ids = f["position"]
        if self.remaining_dim:
            ids = ids + self.max_positions * f.get("remaining", self.unknown_remaining)
        if self.key_dim:
            ids = ids + self.key_stride * f.get("key", UNKNOWN_KEY)
        if self.form_dim:
            ids = ids + self.form_stride * (f.get("relation", UNKNOWN_RELATION)
                                            + RELATIONS * f.get("pointer", UNKNOWN_POINTER))
        if self.chord_dim:
            ids = ids + self.chord_stride * f.get("chord", UNKNOWN_CHORD)
        if self.style_dim:
            ids = ids + self.style_stride * f.get("style", self.unknown_style)
        return ids

    @property
    def unknown_remaining(self) -> int:
        """The remaining id meaning "the end is not known" (a length range, or a tune read without its end)."""
        return self.max_remaining + 1

    def condition_id(self, position: int, remaining: int | None, key: int | None = None, relation: int | None = None,
                     pointer: int | None = None, chord: int | None = None, style: int | None = None) -> int:
        """One step's condition id: the position in the bar, the bars remaining after the current
        one (capped at max_remaining; None: unknown), the tune's key id (``model.network.conditions``),
        the bar's form relation and pointer, the chord and the style (each None: unknown), packed as
        position + max_positions * remaining_id + key_stride * key_id + form_stride * form_id + ...
        (the strides above)."""
        f = {"position": position}
        if remaining is not None:
            f["remaining"] = min(remaining, self.max_remaining)
        for name, value in (("key", key), ("relation", relation), ("pointer", pointer), ("chord", chord),
                            ("style", style)):
            if value is not None:
                f[name] = value
        return int(self.pack(f))

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
        if config.remaining_dim > 0:  # ids 0..max_remaining and one for "unknown"
            self.remaining_embedding = nn.Embedding(config.max_remaining + 2, config.remaining_dim)
        else:
            self.remaining_embedding = None
        self.key_embedding = nn.Embedding(KEYS, config.key_dim) if config.key_dim > 0 else None
        self.relation_embedding = nn.Embedding(RELATIONS, config.form_dim) if config.form_dim > 0 else None
        self.pointer_embedding = nn.Embedding(POINTERS, config.form_dim) if config.form_dim > 0 else None
        self.chord_embedding = nn.Embedding(CHORDS, config.chord_dim) if config.chord_dim > 0 else None
        self.style_embedding = nn.Embedding(len(config.styles) + 1, config.style_dim) if config.style_dim > 0 else None
        input_size = sum(width for _, width in config.input_parts())
        self.rnn = build_recurrent(config.cell, config.backend, input_size, config.hidden_size,
                                   config.num_layers, config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.projection = nn.Linear(config.hidden_size, config.vocab_size)
        self._step_tables = None  # built by prepare_for_inference()
        self._stable_kernels = None  # (kernel set, rows checked), measured by stable_kernels()

    # ---- training / scoring path -------------------------------------------------------------

    def _inputs(self, tokens: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        x = self.embedding(tokens)  # (..., E)
        if not self.config.conditioned:
            return x
        if positions is None:
            raise ValueError("positions (condition ids) are required when position_dim or remaining_dim > 0, got None")
        if positions.shape != tokens.shape:
            raise ValueError(f"positions must have the shape of tokens {tuple(tokens.shape)}, "
                             f"got {tuple(positions.shape)}")
        parts = [x]
        f = self.config.fields(positions)
        if self.position_embedding is not None:
            parts.append(self.position_embedding(f["position"]))  # (..., P_dim)
        if self.remaining_embedding is not None:
            parts.append(self.remaining_embedding(f["remaining"]))  # (..., R_dim)
        if self.key_embedding is not None:
            parts.append(self.key_embedding(f["key"]))  # (..., K_dim)
        if self.relation_embedding is not None:
            parts += [self.relation_embedding(f["relation"]), self.pointer_embedding(f["pointer"])]  # (..., F_dim) x 2
        if self.chord_embedding is not None:
            parts.append(self.chord_embedding(f["chord"]))  # (..., C_dim)
        if self.style_embedding is not None:
            parts.append(self.style_embedding(f["style"]))  # (..., S_dim)
        return torch.cat(parts, dim=-1)  # (..., I): the embeddings in this order, new inputs last

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None, state=None):
        """tokens (B, T) long, positions (B, T) long condition ids (``NetworkConfig.condition_id``) or
        None -> (logits (B, T, V), state)."""
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
        for param_name, p in old.named_parameters():
            setattr(new, param_name, p)  # the same Parameter objects: an optimizer built on them keeps working
        new.train(old.training)
        self.rnn = new
        self.config.backend = name
        self._step_tables = None

    # ---- generation path ---------------------------------------------------------------------

    def _apply(self, fn, *args, **kwargs):  # .to(), .double(), ...: the step tables are stale
        self._step_tables = self._stable_kernels = None
        return super()._apply(fn, *args, **kwargs)

    def prepare_for_inference(self) -> "StepTables":
        """The step() tables for the current parameters, rebuilt only when a parameter changed."""
        tables = self._step_tables
        if tables is None or not tables.current():
            tables = self._step_tables = StepTables(self)
        return tables

    def step(self, tokens: torch.Tensor, positions: torch.Tensor | None, state, batch_stable: bool = False):
        """One generation step: tokens (B,) long, positions (B,) or None -> (logits (B, V), state).

        Inference only (no gradients, no dropout); the given state is not modified. ``batch_stable``:
        kernels whose result for a row does not depend on the other rows, from 2 rows on (the set
        ``stable_kernels()`` measured on this machine; model/generation/batcher.py); otherwise the fastest
        kernels for the batch size.
        """
        kernels = self.stable_kernels() if batch_stable else "fast"
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self._step(tokens, positions, state, kernels)
        return self._step(tokens, positions, state, kernels)

    def stable_kernels(self, max_rows: int | None = None) -> str:
        """The kernel set ("mkl" or "onednn") that keeps a row's step result independent of its batch
        on this machine, for batches up to ``max_rows`` (None: model.network.stable_kernels.MAX_ROWS or what
        was already measured), measured once per network (model/network/stable_kernels.py)."""
        known = self._stable_kernels
        if known is not None and (max_rows is None or max_rows <= known[1]):
            return known[0]
        from model.network.stable_kernels import MAX_ROWS, choose
        rows = max(max_rows or MAX_ROWS, MAX_ROWS)
        self._stable_kernels = (choose(self, rows), rows)
        self.prepare_for_inference().forget_thread(threading.get_ident())  # the measurement's buffers
        return self._stable_kernels[0]

    def _step(self, tokens, positions, state, kernels="fast"):
        """``kernels``: "fast" (by batch size), or a row-stable set, "mkl" or "onednn"."""
        tables = self.prepare_for_inference()
        cell = tables.cell
        scratch, head = tables.scratch(tokens.shape[0], kernels)
        tanh, tanh_ = TANH[kernels]
        hs = (state[0] if cell == "lstm" else state).unbind(0)  # per layer (B, H)
        cs = state[1].unbind(0) if cell == "lstm" else None
        new_h, new_c = [], []
        x = tokens
        for k, ((inputs, b_h), s) in enumerate(zip(tables.layers, scratch)):
            gx = s.gx  # the gates' input part, (B, G)
            if k == 0:
                if tables.input_rows is None:
                    torch.index_select(inputs, 0, tokens, out=gx)  # embedding @ W_ih0^T + biases, looked up
                else:
                    if positions is None:
                        raise ValueError("positions (condition ids) are required when the network is "
                                         "conditioned, got None")
                    # the token's row + the position and remaining part + each further input's part
                    # (key, form, chord, style), looked up and added in one compiled call
                    tables.input_rows.into(gx, tokens, positions)
            else:
                s.mm_ih.into(gx, x, inputs)  # x @ W_ih^T + biases
            h = hs[k]
            if cell == "lstm":
                s.mm_hh.into(gx, h, gx)  # + h @ W_hh^T: all four gates' pre-activations, order i, f, g, o
                s.i_f.sigmoid_()  # input and forget gates
                tanh_(s.g)  # candidate cell
                s.o.sigmoid_()  # output gate
                c = torch.mul(s.f, cs[k]).addcmul_(s.i, s.g)  # c' = f*c + i*g
                x = tanh(c).mul_(s.o)  # h' = o * tanh(c')
                new_c.append(c)
            elif cell == "gru":
                s.mm_hh.into(s.gh, h, b_h)  # recurrent parts h @ W_hh^T + b_hh, order r, z, n
                s.rz.add_(s.gh_rz).sigmoid_()  # reset and update gates
                tanh_(s.n.addcmul_(s.r, s.gh_n))  # candidate n = tanh(x_n + r * h_n)
                x = torch.sub(h, s.n).mul_(s.z).add_(s.n)  # h' = n + z*(h - n)
            else:
                x = tanh(s.mm_hh.into(gx, h, gx))  # h' = tanh(W_ih x + W_hh h + b)
            new_h.append(x)
        logits = head.linear(x, tables.projection_bias)  # (B, V)
        if cell == "lstm":
            return logits, (torch.stack(new_h), torch.stack(new_c))
        return logits, torch.stack(new_h)


class StepTables:
    """MelodyNetwork's parameters rearranged for step(), and per-batch-size scratch buffers.

    Layer 0's input matmul becomes a lookup: table = embedding @ W_ih0^T + biases (V, G), plus a
    condition table (condition ids, G) when positions and/or bars remaining are inputs: row
    pos + max_positions * rem holds position_embedding[pos] @ W_pos^T + remaining_embedding[rem] @ W_rem^T,
    and a table per further input (key, form, chord, style; ``_field_tables``); a step looks them up
    and adds them in one call (``model.network.kernels.InputRows``). The tables follow the
    parameters' version counters, which every in-place change (optimizer step, load_state_dict) bumps.
    """

    def __init__(self, net: MelodyNetwork):
        cfg, rnn, E = net.config, net.rnn, net.config.embedding_dim
        self.cell, self.hidden_size = cfg.cell, cfg.hidden_size
        self.params = list(net.parameters())
        self.versions = self._versions()
        self.layers = []  # per layer: (input table or input bias, recurrent bias)
        self.input_rows = None  # a conditioned network's layer 0 input lookup (model.network.kernels.InputRows)
        self.weights = []  # per layer: (W_ih or None for layer 0, W_hh)
        with torch.no_grad():
            for k in range(cfg.num_layers):
                w_ih, w_hh = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")
                b_ih, b_hh = getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}")
                # the GRU keeps b_hh on the recurrent side: n = tanh(x_n + r * (W_hn h + b_hn))
                b_x, b_h = (b_ih.detach(), b_hh.detach()) if cfg.cell == "gru" else (b_ih + b_hh, None)
                if k == 0:
                    table = torch.addmm(b_x, net.embedding.weight, w_ih[:, :E].t())  # (V, G)
                    pos_table = self._condition_table(net, w_ih, E)
                    if pos_table is not None:  # the position part first (condition id % key_stride), then the rest
                        self.input_rows = InputRows(table, [(1, cfg.key_stride, pos_table),
                                                            *self._field_tables(net, w_ih)])
                    self.layers.append((table, b_h))
                    self.weights.append((None, w_hh.detach()))
                else:
                    self.layers.append((b_x, b_h))
                    self.weights.append((w_ih.detach(), w_hh.detach()))
        self.projection_weight = net.projection.weight.detach()
        # MKL's layout of every matrix, made once and shared by the per-batch-size kernels (a copy
        # per batch size would cost 3.4 MB each for the shipped 2x256 network)
        self.transposed = {id(w): w.t().contiguous() for pair in self.weights for w in pair if w is not None}
        self.transposed[id(self.projection_weight)] = self.projection_weight.t().contiguous()
        self.projection_bias = net.projection.bias.detach()
        self._scratch = {}

    @staticmethod
    def _condition_table(net: MelodyNetwork, w_ih: torch.Tensor, E: int) -> torch.Tensor | None:
        """(condition ids, G): the input part of every condition id, or None without conditions."""
        cfg = net.config
        if not cfg.conditioned:
            return None
        G, P, off = w_ih.shape[0], cfg.max_positions, E
        pos = torch.zeros(P, G)  # the key alone (no position, no remaining): every position adds nothing
        if net.position_embedding is not None:
            pos = net.position_embedding.weight @ w_ih[:, off:off + cfg.position_dim].t()  # (P, G)
            off += cfg.position_dim
        if net.remaining_embedding is None:
            return pos
        rem = net.remaining_embedding.weight @ w_ih[:, off:off + cfg.remaining_dim].t()  # (R, G)
        return (rem[:, None, :] + pos[None, :, :]).reshape(-1, G)  # (R * P, G), row rem * P + pos

    @staticmethod
    def _field_tables(net: MelodyNetwork, w_ih: torch.Tensor) -> list:
        """[(stride, radix, table (radix, G))]: the input part of each input above the position and bars
        remaining, looked up at (condition id // stride) % radix. The form's relation and pointer
        share one table (RELATIONS * POINTERS rows: row relation + RELATIONS * pointer)."""
        cfg, out = net.config, []
        offsets, widths = cfg.input_offsets(), dict(cfg.input_parts())

        def part(embedding, name):
            at = offsets[name]
            return embedding.weight @ w_ih[:, at:at + widths[name]].t()  # (ids, G)

        if net.key_embedding is not None:
            out.append((cfg.key_stride, KEYS, part(net.key_embedding, "key")))
        if net.relation_embedding is not None:
            rel, ptr = part(net.relation_embedding, "relation"), part(net.pointer_embedding, "pointer")
            out.append((cfg.form_stride, RELATIONS * POINTERS,
                        (ptr[:, None, :] + rel[None, :, :]).reshape(RELATIONS * POINTERS, -1)))
        if net.chord_embedding is not None:
            out.append((cfg.chord_stride, CHORDS, part(net.chord_embedding, "chord")))
        if net.style_embedding is not None:
            out.append((cfg.style_stride, len(cfg.styles) + 1, part(net.style_embedding, "style")))
        return out

    def _versions(self):
        return tuple(p._version for p in self.params)

    def current(self) -> bool:
        return self.versions == self._versions()

    def forget_thread(self, ident: int) -> None:
        """Drop the scratch buffers made for thread ``ident`` (one that ends, as a measurement's)."""
        self._scratch = {k: v for k, v in self._scratch.items() if k[0] != ident}

    def scratch(self, batch: int, kernels: str = "fast"):
        """Gate buffers (with views on each gate) and matmul kernels for one batch size, kernel set
        (``MelodyNetwork._step``) and thread."""
        key = (threading.get_ident(), batch, kernels)
        if key not in self._scratch:
            self._scratch[key] = self._make_scratch(batch, kernels)
        return self._scratch[key]

    def _make_scratch(self, batch: int, kernels: str = "fast"):
        H, p = self.hidden_size, self.projection_weight
        layers = []
        for w_ih, w_hh in self.weights:
            gx = p.new_empty(batch, NUM_GATES[self.cell] * H)
            mm = lambda w: StepMatmul(w, batch, MATMUL[kernels], self.transposed[id(w)])  # noqa: E731
            s = SimpleNamespace(gx=gx, mm_hh=mm(w_hh), mm_ih=None if w_ih is None else mm(w_ih))
            if self.cell == "lstm":
                s.i_f, s.i, s.f, s.g, s.o = gx[:, :2 * H], gx[:, :H], gx[:, H:2 * H], gx[:, 2 * H:3 * H], gx[:, 3 * H:]
            elif self.cell == "gru":
                s.gh = torch.empty_like(gx)
                s.rz, s.r, s.z, s.n = gx[:, :2 * H], gx[:, :H], gx[:, H:2 * H], gx[:, 2 * H:]
                s.gh_rz, s.gh_n = s.gh[:, :2 * H], s.gh[:, 2 * H:]
            layers.append(s)
        return layers, StepMatmul(p, batch, MATMUL[kernels], self.transposed[id(p)])
