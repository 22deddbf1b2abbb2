"""The CPU kernels the recurrent layers' time loops run on (model/network/recurrent.py, and
MelodyNetwork.step): a matmul that picks the faster library for the batch size, a tanh that is
faster than torch's on large tensors here, and layer 0's input rows looked up and summed in one
compiled call. Each choice was measured (bench/bench_core.py, docs/benchmarks.md).
"""
from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F

# ---- matmul kernels -------------------------------------------------------------------------------
# On this machine kind (AMD EPYC, AVX-512) MKL's sgemm, behind torch.mm/addmm, runs a (64, 256) x
# (256, 1024) product at about half the speed of oneDNN's, the kernel torch.nn.LSTM itself uses; oneDNN
# costs more per call for a handful of rows. So float32 products with >= 8 rows go through oneDNN's
# linear (torch.ops.mkldnn._linear_pointwise, the op torch.compile emits on CPU); others through MKL.
_ONEDNN = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
ONEDNN_MIN_ROWS = 8


def _onednn_ok(t: torch.Tensor, rows: int | None) -> bool:
    """oneDNN for this tensor: float32 on the CPU, and ``rows`` >= ONEDNN_MIN_ROWS (None: any rows)."""
    return _ONEDNN is not None and t.dtype == torch.float32 and t.device.type == "cpu" and \
        (rows is None or rows >= ONEDNN_MIN_ROWS)


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (N, in) @ w (out, in)^T + b, no autograd (used inside the layers' autograd Functions)."""
    if _onednn_ok(x, x.shape[0]):
        return _ONEDNN(x, w.contiguous(), b, "none", [], "")
    return F.linear(x, w, b)


# On this CPU torch's vectorised tanh runs ~7x slower than its sigmoid, so tensors beyond a couple of
# thousand elements take tanh(x) = 2 sigmoid(2x) - 1 (error ~2e-7 in float32); small ones, where the
# three extra calls cost more than they save, keep torch.tanh.
TANH_VIA_SIGMOID_MIN = 2048


def tanh(t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    if t.numel() < TANH_VIA_SIGMOID_MIN:
        return torch.tanh(t, out=out)
    return tanh_stable(t, out)


def tanh_(t: torch.Tensor) -> torch.Tensor:
    if t.numel() < TANH_VIA_SIGMOID_MIN:
        return t.tanh_()
    return tanh_stable_(t)


def tanh_stable(t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """tanh in its sigmoid form at every size: what a row gets does not depend on how many rows
    the tensor has (the batcher's steps with oneDNN's products, model/network/stable_kernels.py)."""
    return torch.mul(t, 2, out=out).sigmoid_().mul_(2).sub_(1)


def tanh_stable_(t: torch.Tensor) -> torch.Tensor:
    return t.mul_(2).sigmoid_().mul_(2).sub_(1)


class StepMatmul:
    """acc + h @ w^T for one time step with the faster kernel for the batch size (also used by
    MelodyNetwork.step). oneDNN's product followed by an in-place add measured faster here than
    its fused "binary add" form."""

    def __init__(self, w: torch.Tensor, rows: int, kernel: str = "auto", transposed: torch.Tensor | None = None):
        """``kernel``: "auto" picks by the row count; "onednn" (where it is available) or "mkl" use
        that library whatever the rows, for steps whose rows must not depend on the batch (which of
        the two keeps that promise depends on the machine: model/network/stable_kernels.py measures it).
        ``transposed``: w^T, contiguous, made once by a caller that builds many of these (MKL's layout)."""
        if kernel not in ("auto", "onednn", "mkl"):
            raise ValueError(f"kernel must be auto, onednn or mkl, got {kernel!r}")
        self.mkl = kernel == "mkl" or not _onednn_ok(w, None if kernel == "onednn" else rows)
        if self.mkl:  # (in, out)
            self.w = transposed if transposed is not None else w.t().contiguous()
        else:         # (out, in)
            self.w = w.contiguous()

    def __call__(self, h: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
        """acc += h @ w^T, in place."""
        return acc.addmm_(h, self.w) if self.mkl else acc.add_(_ONEDNN(h, self.w, None, "none", [], ""))

    def into(self, out: torch.Tensor, h: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
        """out = acc + h @ w^T, where acc is out itself, another (B, out) tensor or a bias (out,)."""
        if acc is out:
            return self(h, out)
        if self.mkl:
            return torch.addmm(acc, h, self.w, out=out)
        return torch.add(_ONEDNN(h, self.w, None, "none", [], ""), acc, out=out)

    def linear(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """A new tensor bias + h @ w^T."""
        return torch.addmm(bias, h, self.w) if self.mkl else _ONEDNN(h, self.w, bias, "none", [], "")


# ---- layer 0's input at a generation step ------------------------------------------------------------
# MelodyNetwork.step looks layer 0's input up instead of multiplying: a token row plus one row per
# condition input (position and bars remaining, key, form, chord, style), each row chosen by a
# digit of the condition id. As torch calls that is three or four ops per input (divide, remainder,
# index, add), each costing more than its arithmetic at one or two rows; one compiled call does it
# all. The rows are added in the same order, one float32 rounding after each, as those ops added
# them, so the sum is the same to the bit.


@numba.njit(cache=True, nogil=True)
def _sum_input_rows(token_rows, tokens, condition_rows, parts, conditions, out):  # pragma: no cover - compiled
    """out[b] = token_rows[tokens[b]] + condition_rows[part 0's row] + ... (added left to right),
    where part k's row is first_k + (conditions[b] // stride_k) % radix_k, parts[k] = (stride, radix, first)."""
    V, G = token_rows.shape
    for b in range(out.shape[0]):
        t = tokens[b]
        if t < 0 or t >= V:
            raise IndexError("token id out of range of the network's vocabulary")
        for g in range(G):
            out[b, g] = token_rows[t, g]
        c = conditions[b]
        for k in range(parts.shape[0]):
            row = parts[k, 2] + (c // parts[k, 0]) % parts[k, 1]
            for g in range(G):
                out[b, g] += condition_rows[row, g]


class InputRows:
    """Layer 0's input part of the gates for a step: token_rows[token] + the condition rows of the
    condition id, written into a (B, G) buffer. ``parts``: (stride, radix, table (radix, G)) per
    condition input, in the order they are added; the tables are stacked once here."""

    def __init__(self, token_rows: torch.Tensor, parts: list):
        for _, radix, table in parts:  # the compiled call does not check its indices: the shapes are checked here
            if table.shape[0] != radix:
                raise ValueError(f"a condition table must have one row per id (radix {radix}), got {table.shape[0]}")
        self.token_rows = token_rows.contiguous()  # (V, G)
        self.condition_rows = torch.cat([table for _, _, table in parts]).contiguous()  # (sum of radices, G)
        firsts = np.cumsum([0] + [table.shape[0] for _, _, table in parts[:-1]])
        self.parts = np.array([(stride, radix, first) for (stride, radix, _), first in zip(parts, firsts)],
                              dtype=np.int64).reshape(-1, 3)  # (inputs, 3)
        self._arrays = (self.token_rows.numpy(), self.condition_rows.numpy())  # the same memory, for numba

    def into(self, out: torch.Tensor, tokens: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """out (B, G) = the token's row + each condition input's row, for tokens and condition ids (B,)."""
        token_rows, condition_rows = self._arrays
        _sum_input_rows(token_rows, tokens.numpy(), condition_rows, self.parts, conditions.numpy(), out.numpy())
        return out
