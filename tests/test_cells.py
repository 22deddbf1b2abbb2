"""Our cells and Recurrent against torch.nn in float64: outputs and every gradient to 1e-6."""
import pytest
import torch

from model.network.kernels import ONEDNN_MIN_ROWS, tanh, tanh_
from model.network.cells import GRUCell, LSTMCell, RNNCell
from model.network.recurrent import Recurrent

TOL = {"atol": 1e-6, "rtol": 1e-6}
CELL_PAIRS = [(RNNCell, torch.nn.RNNCell), (LSTMCell, torch.nn.LSTMCell), (GRUCell, torch.nn.GRUCell)]
LAYER_PAIRS = [("rnn", torch.nn.RNN), ("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)]


def leaf(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


def weighted_sum(outputs, weights):
    """A loss that reaches every output with a different weight, so each gradient is checked."""
    return sum((o * w).sum() for o, w in zip(outputs, weights))


def grads_of(outputs, inputs, module, weights):
    return torch.autograd.grad(weighted_sum(outputs, weights), list(inputs) + list(module.parameters()))


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


@pytest.mark.parametrize("ours_cls,theirs_cls", CELL_PAIRS)
@pytest.mark.parametrize("given_state", [False, True])
def test_cell_matches_torch(ours_cls, theirs_cls, given_state):
    theirs = theirs_cls(5, 7).double()
    ours = ours_cls(5, 7).double()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
           [(k, v.shape) for k, v in theirs.state_dict().items()]
    ours.load_state_dict(theirs.state_dict())
    x = leaf(4, 5)
    state = None
    if given_state:
        state = (leaf(4, 7), leaf(4, 7)) if ours_cls is LSTMCell else leaf(4, 7)
    a, b = as_tuple(theirs(x, state)), as_tuple(ours(x, state))
    for ta, tb in zip(a, b):
        torch.testing.assert_close(tb, ta, **TOL)
    weights = [torch.randn_like(t) for t in a]
    inputs = [x] + (list(as_tuple(state)) if given_state else [])
    for ga, gb in zip(grads_of(a, inputs, theirs, weights), grads_of(b, inputs, ours, weights)):
        torch.testing.assert_close(gb, ga, **TOL)


@pytest.mark.parametrize("ours_cls,theirs_cls", CELL_PAIRS)
def test_cell_state_dict_both_ways_and_unbatched(ours_cls, theirs_cls):
    ours, theirs = ours_cls(3, 4, bias=False), theirs_cls(3, 4, bias=False)
    assert list(ours.state_dict()) == ["weight_ih", "weight_hh"]
    theirs.load_state_dict(ours.state_dict())  # ours -> torch
    x = torch.randn(3)  # unbatched input, as torch allows
    for ta, tb in zip(as_tuple(theirs(x)), as_tuple(ours(x))):
        assert ta.shape == tb.shape == (4,)
        torch.testing.assert_close(tb, ta)


def test_cell_init_is_uniform_within_torch_bound():
    cell = LSTMCell(10, 64)
    bound = 1 / 64 ** 0.5
    for p in cell.parameters():
        assert p.abs().max() <= bound
        assert p.abs().max() > 0.8 * bound  # spread over the range, not near zero
    assert cell.weight_ih.shape == (256, 10) and cell.bias_hh.shape == (256,)


@pytest.mark.parametrize("mode,theirs_cls", LAYER_PAIRS)
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("given_state", [False, True])
def test_recurrent_matches_torch(mode, theirs_cls, num_layers, given_state):
    theirs = theirs_cls(5, 6, num_layers, batch_first=True).double()
    ours = Recurrent(mode, 5, 6, num_layers).double()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
           [(k, v.shape) for k, v in theirs.state_dict().items()]
    ours.load_state_dict(theirs.state_dict())
    x = leaf(3, 9, 5)  # (B, T, I)
    state = None
    if given_state:
        state = (leaf(num_layers, 3, 6), leaf(num_layers, 3, 6)) if mode == "lstm" else leaf(num_layers, 3, 6)
    out_a, state_a = theirs(x, state)
    out_b, state_b = ours(x, state)
    a, b = (out_a,) + as_tuple(state_a), (out_b,) + as_tuple(state_b)
    for ta, tb in zip(a, b):
        torch.testing.assert_close(tb, ta, **TOL)
    weights = [torch.randn_like(t) for t in a]
    inputs = [x] + (list(as_tuple(state)) if given_state else [])
    for ga, gb in zip(grads_of(a, inputs, theirs, weights), grads_of(b, inputs, ours, weights)):
        torch.testing.assert_close(gb, ga, **TOL)


@pytest.mark.parametrize("mode,theirs_cls", LAYER_PAIRS)
@pytest.mark.parametrize("batch,hidden", [(2, 16), (ONEDNN_MIN_ROWS + 1, 16), (ONEDNN_MIN_ROWS + 1, 240)])
def test_recurrent_float32_kernels_match_torch(mode, theirs_cls, batch, hidden):
    """float32 runs MKL (few rows) or oneDNN (many rows) matmuls, and big tensors take tanh through
    the sigmoid: every path must agree with torch."""
    theirs = theirs_cls(6, hidden, 2, batch_first=True)
    ours = Recurrent(mode, 6, hidden, 2)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(batch, 11, 6, requires_grad=True)
    out_a, state_a = theirs(x)
    out_b, state_b = ours(x)
    a, b = (out_a,) + as_tuple(state_a), (out_b,) + as_tuple(state_b)
    for ta, tb in zip(a, b):
        torch.testing.assert_close(tb, ta, atol=1e-5, rtol=1e-4)
    weights = [torch.randn_like(t) for t in a]
    for ga, gb in zip(grads_of(a, [x], theirs, weights), grads_of(b, [x], ours, weights)):
        torch.testing.assert_close(gb, ga, atol=1e-4, rtol=1e-4)


def test_tanh_matches_torch_small_and_large():
    for n in (100, 5000):
        x = torch.randn(n, dtype=torch.float64) * 4
        torch.testing.assert_close(tanh_(x.clone()), torch.tanh(x), atol=1e-12, rtol=0)
        x32 = x.float()
        torch.testing.assert_close(tanh_(x32.clone()), torch.tanh(x32), atol=5e-7, rtol=0)
        torch.testing.assert_close(tanh(x32), torch.tanh(x32), atol=5e-7, rtol=0)


@pytest.mark.parametrize("mode,theirs_cls", LAYER_PAIRS)
def test_recurrent_state_dict_both_ways(mode, theirs_cls):
    ours = Recurrent(mode, 4, 5, num_layers=2)
    theirs = theirs_cls(4, 5, 2, batch_first=True)
    theirs.load_state_dict(ours.state_dict())  # ours -> torch
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=1e-6, rtol=1e-5)
    ours_again = Recurrent(mode, 4, 5, num_layers=2)
    ours_again.load_state_dict(theirs.state_dict())  # torch -> ours
    torch.testing.assert_close(ours_again(x)[0], theirs(x)[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode,theirs_cls", LAYER_PAIRS)
def test_recurrent_without_bias_and_unbatched(mode, theirs_cls):
    theirs = theirs_cls(4, 5, 2, bias=False, batch_first=True).double()
    ours = Recurrent(mode, 4, 5, num_layers=2, bias=False).double()
    ours.load_state_dict(theirs.state_dict())
    x = leaf(6, 4)  # unbatched (T, I)
    out_a, _ = theirs(x)
    out_b, _ = ours(x)
    assert out_b.shape == (6, 5)
    torch.testing.assert_close(out_b, out_a, **TOL)
    gx_a, = torch.autograd.grad(out_a.sum(), x)
    gx_b, = torch.autograd.grad(out_b.sum(), x)
    torch.testing.assert_close(gx_b, gx_a, **TOL)


def test_recurrent_dropout_only_between_layers_in_training():
    rnn = Recurrent("lstm", 4, 8, num_layers=2, dropout=0.5)
    x = torch.randn(2, 5, 4)
    rnn.eval()
    torch.testing.assert_close(rnn(x)[0], rnn(x)[0])  # deterministic in eval mode
    rnn.train()
    assert (rnn(x)[0] - rnn(x)[0]).abs().max() > 1e-4  # dropout on layer 0's output changes layer 1
    single = Recurrent("lstm", 4, 8, num_layers=1, dropout=0.5).train()
    torch.testing.assert_close(single(x)[0], single(x)[0])  # no dropout after the last layer


def test_recurrent_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        Recurrent("transformer", 4, 8)
    with pytest.raises(ValueError, match="dropout"):
        Recurrent("lstm", 4, 8, dropout=1.0)
