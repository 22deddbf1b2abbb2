"""A stack of recurrent layers that unrolls the cells' equations over time, fast, with
``torch.nn.LSTM/GRU/RNN(batch_first=True)``'s parameter names (``weight_ih_l0`` ...).

Each layer is one autograd Function with the same equations as model/network/cells.py and a hand-written
backpropagation through time, because that is what makes it fast:

- the input projection x @ W_ih^T + b of all T steps is one matmul before the time loop;
- the forward loop does one matmul (h @ W_hh^T, all gates fused) and a few in-place
  element-wise ops per step, writing into preallocated (T, B, .) buffers, with no autograd graph;
- the backward loop does one matmul per step (dgates @ W_hh); the weight gradient
  dW_hh = sum_t dgates_t^T h_{t-1} is one matmul over all steps after the loop, and the gate
  derivative factors that do not depend on the incoming gradient are computed for all steps at once.

Everything runs time-major (T, B, .) inside, so every per-step slice is contiguous. The matmul and
tanh kernels are in model/network/kernels.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.network.kernels import StepMatmul, _linear, tanh, tanh_

NUM_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def init_uniform(module: nn.Module, hidden_size: int) -> None:
    """torch's initialisation: every weight and bias uniform in [-1/sqrt(H), 1/sqrt(H)]."""
    bound = 1.0 / math.sqrt(hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


# ---- one layer over a whole sequence, with a hand-written BPTT ------------------------------------
# Each Function takes the layer input x (T, B, I) time-major and returns its outputs h_1..h_T (T, B, H)
# and the final state. The backward pass receives d_out (T, B, H) and the final state's gradients.


def _input_grads(ctx, x, dpre, w_ih, bias_index):
    """Gradients of pre = x W_ih^T + b: dx, dW_ih, db (None where not needed)."""
    T, B, I = x.shape
    dpre = dpre.reshape(T * B, -1)
    dx = _linear(dpre, w_ih.t()).view(T, B, I) if ctx.needs_input_grad[0] else None
    # MKL here: oneDNN would need both operands transposed into fresh copies, which cost more than it saves
    d_w_ih = dpre.t() @ x.reshape(T * B, I)  # sum over steps and batch of dpre^T x
    d_b = dpre.sum(0) if ctx.needs_input_grad[bias_index] else None
    return dx, d_w_ih, d_b


def _recurrent_weight_grad(dpre, h0, out):
    """dW_hh = sum_t dpre_t^T h_{t-1}, one matmul over all steps (h_0 = h0 for the first)."""
    T, B, H = out.shape
    dpre = dpre.reshape(T, B, -1)
    d_w_hh = dpre[1:].reshape(-1, dpre.shape[2]).t() @ out[:-1].reshape(-1, H)
    return d_w_hh.addmm_(dpre[0].t(), h0)


def _owned_grad(d_out, d_hT):
    """A contiguous copy of d_out that we may write into, with the final state's gradient added."""
    d_out = d_out.clone(memory_format=torch.contiguous_format)
    d_out[-1] += d_hT
    return d_out


class _RNNLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, bias):
        T, B, _ = x.shape
        out = _linear(x.reshape(T * B, -1), w_ih, bias).view(T, B, -1)  # x W_ih^T + b, every step at once
        step_mm, h = StepMatmul(w_hh, B), h0
        for out_t in out.unbind(0):  # in place: (T, B, H) pre-activations become the outputs
            h = tanh_(step_mm.into(out_t, h, out_t))  # h_t = tanh(x_t W_ih^T + b + h_{t-1} W_hh^T)
        ctx.save_for_backward(x, h0, w_ih, w_hh, out)
        return out, h.clone()

    @staticmethod
    def backward(ctx, d_out, d_hT):
        x, h0, w_ih, w_hh, out = ctx.saved_tensors
        T, B, H = out.shape
        d_out = _owned_grad(d_out, d_hT)
        dpre = torch.addcmul(torch.ones_like(out), out, out, value=-1)  # tanh' = 1 - h^2, then times dh
        step_mm, dh = StepMatmul(w_hh.t(), B), d_out[T - 1]
        d_outs, dpres = d_out.unbind(0), dpre.unbind(0)
        for t in range(T - 1, -1, -1):
            dpres[t].mul_(dh)
            dh = step_mm(dpres[t], d_outs[t - 1]) if t > 0 else dpres[0] @ w_hh  # into h_{t-1}
        dx, d_w_ih, d_b = _input_grads(ctx, x, dpre, w_ih, bias_index=4)
        return dx, dh, d_w_ih, _recurrent_weight_grad(dpre, h0, out), d_b


class _LSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, bias):
        T, B, _ = x.shape
        H = w_hh.shape[1]
        # x W_ih^T + b for every step at once; turned into the gate activations in place
        acts = _linear(x.reshape(T * B, -1), w_ih, bias).view(T, B, 4 * H)
        cs, tcs, out = (x.new_empty(T, B, H) for _ in range(3))  # c_t, tanh(c_t), h_t
        gates = acts.view(T, B, 4, H)  # decode the gates: per-step views, made once
        steps = zip(acts.unbind(0), acts[..., :2 * H].unbind(0), *(gates[:, :, k].unbind(0) for k in range(4)),
                    cs.unbind(0), tcs.unbind(0), out.unbind(0))
        step_mm, h, c = StepMatmul(w_hh, B), h0, c0
        for a, i_f, i, f, g, o, c_t, tc_t, h_t in steps:
            step_mm.into(a, h, a)  # + h_{t-1} W_hh^T: all four gates' pre-activations, (B, 4H)
            i_f.sigmoid_()  # input and forget gates
            tanh_(g)  # candidate cell
            o.sigmoid_()  # output gate
            c = torch.mul(f, c, out=c_t).addcmul_(i, g)  # c_t = f*c_{t-1} + i*g
            h = torch.mul(o, tanh(c, out=tc_t), out=h_t)  # h_t = o * tanh(c_t)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, out)
        ctx.buffers = acts, cs, tcs
        return out, h.clone(), c.clone()

    @staticmethod
    def backward(ctx, d_out, d_hT, d_cT):
        x, h0, c0, w_ih, w_hh, out = ctx.saved_tensors
        acts, cs, tcs = ctx.buffers
        del ctx.buffers
        T, B, H = out.shape
        d_out = _owned_grad(d_out, d_hT)
        i, f, g, o = acts.view(T, B, 4, H).unbind(2)
        # The pre-activation gradients are dc or dh times factors that we compute for all steps at once:
        # da_i = dc*i(1-i)*g, da_f = dc*f(1-f)*c_{t-1}, da_g = dc*i(1-g^2), da_o = dh*o(1-o)*tanh(c_t)
        k = x.new_empty(T, B, 4, H)
        torch.addcmul(i, i, i, value=-1, out=k[:, :, 0]).mul_(g)
        k_f = torch.addcmul(f, f, f, value=-1, out=k[:, :, 1])
        k_f[1:].mul_(cs[:-1])
        k_f[0].mul_(c0)
        k_g = torch.mul(i, g, out=k[:, :, 2])
        torch.addcmul(i, k_g, g, value=-1, out=k_g)
        torch.addcmul(o, o, o, value=-1, out=k[:, :, 3]).mul_(tcs)
        dc_dh = o * tcs
        torch.addcmul(o, dc_dh, tcs, value=-1, out=dc_dh)  # o(1 - tanh(c)^2): how dh reaches c_t
        dpre = k  # step t overwrites k[t] with the pre-activation gradients: (T, B, 4, H)
        step_mm, dh, dc_next = StepMatmul(w_hh.t(), B), d_out[T - 1], d_cT  # dc_next: from c_{t+1}
        views = (d_out.unbind(0), dc_dh.unbind(0), k[:, :, :3].unbind(0), k[:, :, 3].unbind(0),
                 dpre.view(T, B, 4 * H).unbind(0), f.unbind(0))
        d_outs, dc_dhs, k_ifg, k_o, dpre_flat, fs = views
        for t in range(T - 1, -1, -1):
            dc = torch.addcmul(dc_next, dh, dc_dhs[t])  # total gradient at c_t
            k_ifg[t].mul_(dc.unsqueeze(1))  # i, f, g
            k_o[t].mul_(dh)  # o
            dc_next = dc * fs[t]  # into c_{t-1}
            dh = step_mm(dpre_flat[t], d_outs[t - 1]) if t > 0 else dpre_flat[0] @ w_hh  # into h_{t-1}
        dx, d_w_ih, d_b = _input_grads(ctx, x, dpre, w_ih, bias_index=5)
        return dx, dh, dc_next, d_w_ih, _recurrent_weight_grad(dpre, h0, out), d_b


class _GRULayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_hh, b_ih):
        T, B, _ = x.shape
        H = w_hh.shape[1]
        pre = _linear(x.reshape(T * B, -1), w_ih, b_ih).view(T, B, 3 * H)  # input parts of r, z, n
        gh = (x.new_zeros(T, B, 3 * H) if b_hh is None else b_hh.expand(T, B, 3 * H).clone())
        rz = x.new_empty(T, B, 2 * H)  # reset and update gates
        ns, out = x.new_empty(T, B, H), x.new_empty(T, B, H)  # candidates, h_t
        steps = zip(pre[..., :2 * H].unbind(0), pre[..., 2 * H:].unbind(0), gh.unbind(0), gh[..., :2 * H].unbind(0),
                    gh[..., 2 * H:].unbind(0), rz.unbind(0), rz[..., :H].unbind(0), rz[..., H:].unbind(0),
                    ns.unbind(0), out.unbind(0))  # per-step views, made once
        step_mm, h = StepMatmul(w_hh, B), h0
        for x_rz, x_n, gh_t, gh_rz, gh_n, rz_t, r, z, n_t, h_t in steps:
            step_mm.into(gh_t, h, gh_t)  # recurrent parts h W_hh^T + b_hh of r, z, n: (B, 3H)
            torch.add(x_rz, gh_rz, out=rz_t).sigmoid_()  # reset and update gates
            tanh_(torch.addcmul(x_n, r, gh_n, out=n_t))  # candidate n = tanh(x_n + r * h_n)
            h = torch.sub(h, n_t, out=h_t).mul_(z).add_(n_t)  # h_t = n + z*(h_{t-1} - n)
        ctx.save_for_backward(x, h0, w_ih, w_hh, out)
        ctx.buffers = gh, rz, ns
        return out, h.clone()

    @staticmethod
    def backward(ctx, d_out, d_hT):
        x, h0, w_ih, w_hh, out = ctx.saved_tensors
        gh, rz, n = ctx.buffers
        del ctx.buffers
        T, B, H = out.shape
        d_out = _owned_grad(d_out, d_hT)
        r, z, gh_n = rz[..., :H], rz[..., H:], gh[..., 2 * H:]
        # pre-activation gradients are dh times: da_n = (1-z)(1-n^2), da_z = (h_{t-1}-n) z(1-z),
        # da_r = da_n*h_n*r(1-r); the recurrent part h_n of the candidate sees da_n*r
        k = x.new_empty(T, B, 3, H)
        k_n = torch.mul(1 - z, 1 - n * n, out=k[:, :, 2])
        torch.addcmul(r, r, r, value=-1, out=k[:, :, 0]).mul_(gh_n).mul_(k_n)
        k_z = torch.addcmul(z, z, z, value=-1, out=k[:, :, 1])
        k_z[1:].mul_(out[:-1] - n[1:])
        k_z[0].mul_(h0 - n[0])
        k_h = k.clone()
        k_h[:, :, 2].mul_(r)
        dpre, dgh = k, k_h  # overwritten step by step: d (x W_ih^T + b_ih) and d (h W_hh^T + b_hh)
        step_mm, dh = StepMatmul(w_hh.t(), B), d_out[T - 1]
        d_outs, zs, ks, k_hs = d_out.unbind(0), z.unbind(0), k.unbind(0), k_h.unbind(0)
        dgh_flat = dgh.view(T, B, 3 * H).unbind(0)
        for t in range(T - 1, -1, -1):
            dh_ = dh.unsqueeze(1)
            ks[t].mul_(dh_)
            k_hs[t].mul_(dh_)
            direct = d_outs[t - 1].addcmul_(dh, zs[t]) if t > 0 else dh * zs[0]  # through h_t = ... + z*h_{t-1}
            dh = step_mm(dgh_flat[t], direct)  # into h_{t-1}
        d_w_hh = _recurrent_weight_grad(dgh, h0, out)
        d_b_hh = dgh.view(T * B, 3 * H).sum(0) if ctx.needs_input_grad[4] else None
        dx, d_w_ih, d_b_ih = _input_grads(ctx, x, dpre, w_ih, bias_index=5)
        return dx, dh, d_w_ih, d_w_hh, d_b_hh, d_b_ih


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
        init_uniform(self, self.hidden_size)

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
                x, h = _GRULayer.apply(x, h0s[k], w_ih, w_hh, b_hh, b_ih)
            elif self.mode == "lstm":
                bias = None if b_ih is None else b_ih + b_hh
                x, h, c = _LSTMLayer.apply(x, h0s[k], hx[1][k], w_ih, w_hh, bias)
                c_n.append(c)
            else:
                bias = None if b_ih is None else b_ih + b_hh
                x, h = _RNNLayer.apply(x, h0s[k], w_ih, w_hh, bias)
            h_n.append(h)
            if self.dropout > 0 and self.training and k < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        out = x.transpose(0, 1).contiguous()  # (B, T, H)
        h_n = torch.stack(h_n)  # (L, B, H)
        state = (h_n, torch.stack(c_n)) if self.mode == "lstm" else h_n
        if unbatched:
            out = out.squeeze(0)
            state = tuple(s.squeeze(1) for s in state) if self.mode == "lstm" else state.squeeze(1)
        return out, state
