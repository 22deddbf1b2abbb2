"""Recurrent cells written from their equations: ``RNNCell`` (tanh), ``LSTMCell`` and ``GRUCell``.

They take torch's constructor arguments, hold torch's parameter names and shapes (gate order i, f,
g, o for the LSTM and r, z, n for the GRU) and are called like ``torch.nn.*Cell``, so state_dicts
move between ours and torch's in both directions. One step at a time, they read like the
equations; ``Recurrent`` (model/network/recurrent.py) unrolls the same equations over whole sequences with
a hand-written BPTT, fast, and is re-exported here with the kernels it uses (model/network/kernels.py),
where model/network/melody.py and the tests import them from.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.network.recurrent import init_uniform


class _Cell(nn.Module):
    """Parameters and input handling shared by the three cells."""

    num_gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"input_size and hidden_size must be >= 1, got {input_size}, {hidden_size}")
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        G = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size))  # all gates' input weights, stacked
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size))  # all gates' recurrent weights
        self.bias_ih = nn.Parameter(torch.empty(G)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(G)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_uniform(self, self.hidden_size)

    def _batched(self, input: torch.Tensor, hx):
        """Add a batch dimension to unbatched input (like torch) and default hx to zeros."""
        unbatched = input.dim() == 1
        if unbatched:
            input = input.unsqueeze(0)
            hx = None if hx is None else tuple(h.unsqueeze(0) for h in hx) if isinstance(hx, tuple) \
                else hx.unsqueeze(0)
        if hx is None:
            zeros = input.new_zeros(input.shape[0], self.hidden_size)
            hx = (zeros, zeros) if self.num_gates == 4 else zeros
        return input, hx, unbatched

    def _gates(self, x: torch.Tensor, h: torch.Tensor):
        # one matmul per operand computes every gate's pre-activation at once: (B, G*H) each
        return F.linear(x, self.weight_ih, self.bias_ih), F.linear(h, self.weight_hh, self.bias_hh)


class RNNCell(_Cell):
    """Elman cell: h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""

    num_gates = 1

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        x, h, unbatched = self._batched(input, hx)
        gx, gh = self._gates(x, h)
        h1 = torch.tanh(gx + gh)  # the new hidden state
        return h1.squeeze(0) if unbatched else h1


class LSTMCell(_Cell):
    """Long short-term memory cell; hx = (h, c), returns (h', c')."""

    num_gates = 4

    def forward(self, input: torch.Tensor, hx=None):
        x, (h, c), unbatched = self._batched(input, hx)
        gx, gh = self._gates(x, h)
        i, f, g, o = (gx + gh).chunk(4, dim=1)  # decode the gates, each (B, H)
        i = torch.sigmoid(i)  # input gate: how much of the candidate to write
        f = torch.sigmoid(f)  # forget gate: how much of the old cell to keep
        g = torch.tanh(g)  # candidate cell values
        o = torch.sigmoid(o)  # output gate: how much of the cell to show
        c1 = f * c + i * g  # the cell update
        h1 = o * torch.tanh(c1)  # the new hidden state
        return (h1.squeeze(0), c1.squeeze(0)) if unbatched else (h1, c1)


class GRUCell(_Cell):
    """Gated recurrent unit; the reset gate scales the recurrent part of the candidate (as torch)."""

    num_gates = 3

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        x, h, unbatched = self._batched(input, hx)
        gx, gh = self._gates(x, h)
        x_r, x_z, x_n = gx.chunk(3, dim=1)  # input parts of the gates, each (B, H)
        h_r, h_z, h_n = gh.chunk(3, dim=1)  # recurrent parts, each (B, H)
        r = torch.sigmoid(x_r + h_r)  # reset gate: how much of the old state feeds the candidate
        z = torch.sigmoid(x_z + h_z)  # update gate: how much of the old state to keep
        n = torch.tanh(x_n + r * h_n)  # candidate state
        h1 = (1 - z) * n + z * h  # blend old state and candidate
        return h1.squeeze(0) if unbatched else h1
