"""Recurrent cells written from their equations, and a layer stack that unrolls them over time.

``RNNCell`` (tanh), ``LSTMCell`` and ``GRUCell`` take torch's constructor arguments, hold torch's
parameter names and shapes (gate order i, f, g, o for the LSTM and r, z, n for the GRU) and are
called like ``torch.nn.*Cell``, so state_dicts move between ours and torch's in both directions.

``Recurrent(mode, ...)`` stacks layers with ``torch.nn.LSTM/GRU/RNN(batch_first=True)``'s
parameter names (``weight_ih_l0`` ...). Each layer is one autograd Function with the same cell
equations and a hand-written backpropagation through time, because that is what makes it fast:

- the input projection x @ W_ih^T + b of all T steps is one matmul before the time loop;
- the forward loop does one matmul (h @ W_hh^T, all gates fused) and a few in-place
  element-wise ops per step, writing into preallocated (T, B, .) buffers, with no autograd graph;
- the backward loop does one matmul per step (dgates @ W_hh); the weight gradient
  dW_hh = sum_t dgates_t^T h_{t-1} is one matmul over all steps after the loop, and the gate
  derivative factors that do not depend on the incoming gradient are computed for all steps at once.

Everything runs time-major (T, B, .) inside, so every per-step slice is contiguous.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NUM_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _init_uniform(module: nn.Module, hidden_size: int) -> None:
    """torch's initialisation: every weight and bias uniform in [-1/sqrt(H), 1/sqrt(H)]."""
    bound = 1.0 / math.sqrt(hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


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
        _init_uniform(self, self.hidden_size)

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


# ---- one layer over a whole sequence, with a hand-written BPTT ------------------------------------
# Each Function takes xproj (T, B, G*H) = x W_ih^T + biases for all steps, computed outside by
# autograd (so autograd also gives dW_ih, db and dx), and returns the outputs h_1..h_T (T, B, H).


class _RNNLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xproj, h0, w_hh):
        T, B, H = xproj.shape
        out = xproj.new_empty(T, B, H)
        w_hh_t, h = w_hh.t(), h0
        for x_t, out_t in zip(xproj.unbind(0), out.unbind(0)):
            h = torch.addmm(x_t, h, w_hh_t, out=out_t).tanh_()  # h_t = tanh(x_t + h_{t-1} W_hh^T)
        ctx.save_for_backward(h0, w_hh, out)
        return out

    @staticmethod
    def backward(ctx, d_out):
        h0, w_hh, out = ctx.saved_tensors
        T, B, H = out.shape
        d_out = d_out.contiguous()
        slope = 1 - out * out  # tanh' for every step at once, (T, B, H)
        da = torch.empty_like(out)  # gradient of the pre-activations
        dh = d_out[T - 1]
        for t in range(T - 1, -1, -1):
            torch.mul(dh, slope[t], out=da[t])
            dh = torch.addmm(d_out[t - 1], da[t], w_hh) if t > 0 else da[0] @ w_hh  # into h_{t-1}
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]])  # (T, B, H)
        d_w_hh = da.view(T * B, H).t() @ h_prev.view(T * B, H)  # sum_t da_t^T h_{t-1}
        return da, dh, d_w_hh


class _LSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xproj, h0, c0, w_hh):
        T, B, G = xproj.shape
        H = G // 4
        acts = torch.empty_like(xproj, memory_format=torch.contiguous_format)  # gate activations
        cs, tcs, out = (xproj.new_empty(T, B, H) for _ in range(3))  # c_t, tanh(c_t), h_t
        w_hh_t, h, c = w_hh.t(), h0, c0
        steps = zip(xproj.unbind(0), acts.unbind(0), cs.unbind(0), tcs.unbind(0), out.unbind(0))
        for x_t, a, c_t, tc_t, h_t in steps:
            torch.addmm(x_t, h, w_hh_t, out=a)  # all four gates' pre-activations, (B, 4H)
            a[:, :2 * H].sigmoid_()  # input and forget gates
            a[:, 2 * H:3 * H].tanh_()  # candidate cell
            a[:, 3 * H:].sigmoid_()  # output gate
            c = torch.mul(a[:, H:2 * H], c, out=c_t).addcmul_(a[:, :H], a[:, 2 * H:3 * H])  # f*c + i*g
            h = torch.mul(a[:, 3 * H:], torch.tanh(c, out=tc_t), out=h_t)  # o * tanh(c)
        ctx.save_for_backward(h0, c0, w_hh, out)
        ctx.buffers = acts, cs, tcs
        return out, c.clone()

    @staticmethod
    def backward(ctx, d_out, d_cT):
        h0, c0, w_hh, out = ctx.saved_tensors
        acts, cs, tcs = ctx.buffers
        del ctx.buffers
        T, B, H = out.shape
        d_out = d_out.contiguous()
        i, f, g, o = acts.view(T, B, 4, H).unbind(2)
        c_prev = torch.cat([c0.unsqueeze(0), cs[:-1]])
        # Factors of the pre-activation gradients that do not depend on the incoming gradient:
        # da_i = dc*g*i(1-i), da_f = dc*c_prev*f(1-f), da_g = dc*i*(1-g^2), da_o = dh*tanh(c)*o(1-o)
        k = torch.stack([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), tcs * o * (1 - o)], 2)
        dc_dh = o * (1 - tcs * tcs)  # d c_t / d h_t through h_t = o * tanh(c_t)
        dgates = torch.empty_like(k)  # (T, B, 4, H)
        dh, dc_next = d_out[T - 1], d_cT  # dc_next: gradient reaching c_t from later steps
        for t in range(T - 1, -1, -1):
            dc = torch.addcmul(dc_next, dh, dc_dh[t])
            torch.mul(dc.unsqueeze(1), k[t, :, :3], out=dgates[t, :, :3])  # i, f, g
            torch.mul(dh, k[t, :, 3], out=dgates[t, :, 3])  # o
            dc_next = dc * f[t]
            da = dgates[t].view(B, 4 * H)
            dh = torch.addmm(d_out[t - 1], da, w_hh) if t > 0 else da @ w_hh  # into h_{t-1}
        dgates = dgates.view(T, B, 4 * H)
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]])
        d_w_hh = dgates.view(T * B, 4 * H).t() @ h_prev.view(T * B, H)  # sum_t dgates_t^T h_{t-1}
        return dgates, dh, dc_next, d_w_hh


class _GRULayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xproj, h0, w_hh, b_hh):
        T, B, G = xproj.shape
        H = G // 3
        gh = torch.empty_like(xproj, memory_format=torch.contiguous_format)  # h W_hh^T + b_hh
        rz = xproj.new_empty(T, B, 2 * H)  # reset and update gates
        ns, out = xproj.new_empty(T, B, H), xproj.new_empty(T, B, H)  # candidates, h_t
        w_hh_t, h = w_hh.t(), h0
        steps = zip(xproj.unbind(0), gh.unbind(0), rz.unbind(0), ns.unbind(0), out.unbind(0))
        for x_t, gh_t, rz_t, n_t, h_t in steps:
            if b_hh is None:
                torch.mm(h, w_hh_t, out=gh_t)  # recurrent parts of r, z, n: (B, 3H)
            else:
                torch.addmm(b_hh, h, w_hh_t, out=gh_t)
            torch.add(x_t[:, :2 * H], gh_t[:, :2 * H], out=rz_t).sigmoid_()  # r and z
            torch.addcmul(x_t[:, 2 * H:], rz_t[:, :H], gh_t[:, 2 * H:], out=n_t).tanh_()  # n
            h = torch.sub(h, n_t, out=h_t).mul_(rz_t[:, H:]).add_(n_t)  # h' = n + z*(h - n)
        ctx.save_for_backward(h0, w_hh, out)
        ctx.buffers = gh, rz, ns
        ctx.has_bias = b_hh is not None
        return out

    @staticmethod
    def backward(ctx, d_out):
        h0, w_hh, out = ctx.saved_tensors
        gh, rz, n = ctx.buffers
        del ctx.buffers
        T, B, H = out.shape
        d_out = d_out.contiguous()
        r, z = rz[..., :H], rz[..., H:]
        gh_n = gh[..., 2 * H:]
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]])
        # pre-activation gradients as dh times these factors: da_n = dh*(1-z)(1-n^2),
        # da_z = dh*(h_prev-n)*z(1-z), da_r = da_n*gh_n*r(1-r); the recurrent part of n sees da_n*r
        k_n = (1 - z) * (1 - n * n)
        k = torch.stack([k_n * gh_n * r * (1 - r), (h_prev - n) * z * (1 - z), k_n], 2)  # (T, B, 3, H)
        k_h = k.clone()
        k_h[:, :, 2] *= r
        dx, dgh = torch.empty_like(k), torch.empty_like(k)  # d xproj and d (h W_hh^T + b_hh)
        dh = d_out[T - 1]
        for t in range(T - 1, -1, -1):
            torch.mul(dh.unsqueeze(1), k[t], out=dx[t])
            torch.mul(dh.unsqueeze(1), k_h[t], out=dgh[t])
            first = d_out[t - 1].addcmul(dh, z[t]) if t > 0 else dh * z[0]  # direct path z*h
            dh = first.addmm_(dgh[t].view(B, 3 * H), w_hh)  # into h_{t-1}
        dgh = dgh.view(T * B, 3 * H)
        d_w_hh = dgh.t() @ h_prev.view(T * B, H)  # sum_t dgh_t^T h_{t-1}
        d_b_hh = dgh.sum(0) if ctx.has_bias else None
        return dx.view(T, B, 3 * H), dh, d_w_hh, d_b_hh


class Recurrent(nn.Module):
    """A stack of recurrent layers over (B, T, I) input, with torch.nn.LSTM/GRU/RNN's parameter names.

    Called like torch's batch_first modules: ``out (B, T, H), state = rnn(x, state)`` with state
    ``(h, c)`` each (L, B, H) for the LSTM and ``h`` (L, B, H) for the GRU and RNN (None = zeros).
    Dropout applies to the outputs of every layer but the last, in training mode, as in torch.
    """

    batch_first = True

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if mode not in NUM_GATES:
            raise ValueError(f"mode must be one of {tuple(NUM_GATES)}, got {mode!r}")
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError("input_size, hidden_size and num_layers must be >= 1, got "
                             f"{input_size}, {hidden_size}, {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.dropout, self.bias = num_layers, dropout, bias
        G = NUM_GATES[mode] * hidden_size
        for k in range(num_layers):
            layer_input = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(G, layer_input)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(G, hidden_size)))
            if bias:
                self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(G)))
                self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(G)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_uniform(self, self.hidden_size)

    def forward(self, input: torch.Tensor, hx=None):
        unbatched = input.dim() == 2
        if unbatched:  # (T, I) -> (1, T, I), state (L, H) -> (L, 1, H)
            input = input.unsqueeze(0)
            if hx is not None:
                hx = tuple(h.unsqueeze(1) for h in hx) if self.mode == "lstm" else hx.unsqueeze(1)
        B = input.shape[0]
        if hx is None:
            zeros = input.new_zeros(self.num_layers, B, self.hidden_size)
            hx = (zeros, zeros) if self.mode == "lstm" else zeros
        h0s = hx[0] if self.mode == "lstm" else hx
        x = input.transpose(0, 1)  # (T, B, I), time-major inside
        h_n, c_n = [], []
        for k in range(self.num_layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            b_ih, b_hh = (getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")) if self.bias \
                else (None, None)
            if self.mode == "gru":  # b_hn stays on the recurrent side: n = tanh(x_n + r*(W_hn h + b_hn))
                xproj = F.linear(x, w_ih, b_ih)  # (T, B, 3H), every step in one matmul
                x = _GRULayer.apply(xproj, h0s[k], w_hh, b_hh)
            else:
                bias = None if b_ih is None else b_ih + b_hh
                xproj = F.linear(x, w_ih, bias)  # (T, B, G), every step in one matmul
                if self.mode == "lstm":
                    x, c = _LSTMLayer.apply(xproj, h0s[k], hx[1][k], w_hh)
                    c_n.append(c)
                else:
                    x = _RNNLayer.apply(xproj, h0s[k], w_hh)
            h_n.append(x[-1])
            if self.dropout > 0 and self.training and k < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        out = x.transpose(0, 1).contiguous()  # (B, T, H)
        h_n = torch.stack(h_n)  # (L, B, H)
        state = (h_n, torch.stack(c_n)) if self.mode == "lstm" else h_n
        if unbatched:
            out = out.squeeze(0)
            state = tuple(s.squeeze(1) for s in state) if self.mode == "lstm" else state.squeeze(1)
        return out, state
