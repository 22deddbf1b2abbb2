"""MelodyNetwork: backends agree, step() matches forward(), position input and state matter."""
import pytest
import torch

from model.network.kernels import InputRows
from model.network.melody import MelodyNetwork, NetworkConfig

CELLS = ["lstm", "gru", "rnn"]


def tiny(cell="lstm", **kw):
    kw = {"vocab_size": 20, "cell": cell, "embedding_dim": 8, "hidden_size": 12, "num_layers": 2, **kw}
    return MelodyNetwork(NetworkConfig(**kw)).eval()


def assert_steps_match_forward(net, tokens, cond):
    """step() token by token gives forward()'s logits over the whole sequence."""
    logits, _ = net(tokens, cond)
    state, steps = net.init_state(tokens.shape[0]), []
    for t in range(tokens.shape[1]):
        out, state = net.step(tokens[:, t], cond[:, t], state)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), logits, atol=1e-5, rtol=1e-5)


def sample_inputs(batch=3, time=7, vocab=20, positions=96):
    g = torch.Generator().manual_seed(1)
    return (torch.randint(0, vocab, (batch, time), generator=g),
            torch.randint(0, positions, (batch, time), generator=g))


@pytest.mark.parametrize("cell", CELLS)
# batch 9 takes the oneDNN kernels; 9 x 240 units the sigmoid form of tanh
@pytest.mark.parametrize("position_dim,batch,hidden", [(0, 3, 12), (4, 3, 12), (4, 9, 12), (4, 9, 240)])
def test_step_matches_forward(cell, position_dim, batch, hidden):
    net = tiny(cell, position_dim=position_dim, hidden_size=hidden)
    tokens, positions = sample_inputs(batch=batch)
    logits, final = net(tokens, positions)
    state = net.init_state(batch)
    steps = []
    for t in range(tokens.shape[1]):
        out, state = net.step(tokens[:, t], positions[:, t], state)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), logits, atol=1e-5, rtol=1e-5)
    for a, b in zip(state if cell == "lstm" else [state], final if cell == "lstm" else [final]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_backends_give_same_logits(cell):
    fused = tiny(cell, position_dim=4)
    cells = tiny(cell, position_dim=4, backend="cells")
    assert list(fused.state_dict()) == list(cells.state_dict())
    cells.load_state_dict(fused.state_dict())
    tokens, positions = sample_inputs()
    a, sa = fused(tokens, positions)
    b, sb = cells(tokens, positions)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    fused.set_backend("cells")
    assert fused.config.backend == "cells"
    torch.testing.assert_close(fused(tokens, positions)[0], a, atol=1e-5, rtol=1e-5)


def test_set_backend_keeps_parameters_for_the_optimizer():
    net = tiny(position_dim=4).train()
    tokens, positions = sample_inputs()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    net.set_backend("cells")
    before = net.rnn.weight_hh_l1.detach().clone()
    logits, _ = net(tokens, positions)
    torch.nn.functional.cross_entropy(logits.reshape(-1, 20), tokens.reshape(-1)).backward()
    optimizer.step()
    assert (net.rnn.weight_hh_l1 - before).abs().max() > 0  # the optimizer moved the live weights
    net.eval()
    with_cells, _ = net(tokens, positions)
    net.set_backend("fused")  # back again: the fused module runs on the updated weights
    assert any(p is net.rnn.weight_hh_l1 for p in optimizer.param_groups[0]["params"])
    torch.testing.assert_close(net(tokens, positions)[0], with_cells, atol=1e-5, rtol=1e-5)


def test_position_input_changes_output():
    net = tiny(position_dim=4)
    tokens, positions = sample_inputs()
    a, _ = net(tokens, positions)
    b, _ = net(tokens, (positions + 1) % 96)
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="positions"):
        net(tokens, None)


@pytest.mark.parametrize("cell", CELLS)
def test_state_carries_across_chunks(cell):
    net = tiny(cell)
    tokens, _ = sample_inputs(time=10)
    whole, _ = net(tokens, None)
    first, state = net(tokens[:, :4], None)
    second, _ = net(tokens[:, 4:], None, state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-5, rtol=1e-5)
    fresh, _ = net(tokens[:, 4:], None)  # without the carried state the output differs
    assert (fresh - second).abs().max() > 1e-4


def test_step_follows_weight_changes():
    net = tiny()
    tokens, _ = sample_inputs()
    before, _ = net.step(tokens[:, 0], None, net.init_state(3))
    with torch.no_grad():
        net.embedding.weight.add_(0.5)  # an in-place change, as an optimizer makes
    after, _ = net.step(tokens[:, 0], None, net.init_state(3))
    expected, _ = net(tokens[:, :1], None)
    assert (before - after).abs().max() > 1e-4
    torch.testing.assert_close(after, expected[:, 0], atol=1e-5, rtol=1e-5)


def test_step_follows_dtype_change():
    net = tiny()
    tokens, _ = sample_inputs()
    net.step(tokens[:, 0], None, net.init_state(3))
    net.double()
    logits, state = net.step(tokens[:, 0], None, net.init_state(3))
    assert logits.dtype == state[0].dtype == torch.float64
    torch.testing.assert_close(logits, net(tokens[:, :1], None)[0][:, 0])


def test_step_leaves_given_state_alone():
    net = tiny()
    tokens, _ = sample_inputs()
    state = net.init_state(3)
    net.step(tokens[:, 0], None, state)
    assert all(s.abs().max() == 0 for s in state)


def test_config_validates():
    with pytest.raises(ValueError, match="cell"):
        NetworkConfig(vocab_size=10, cell="tree")
    with pytest.raises(ValueError, match="backend"):
        NetworkConfig(vocab_size=10, backend="gpu")
    with pytest.raises(ValueError, match="dropout"):
        NetworkConfig(vocab_size=10, dropout=1.5)
    assert NetworkConfig.from_dict(NetworkConfig(vocab_size=10).to_dict()) == NetworkConfig(vocab_size=10)


@pytest.mark.parametrize("cell", CELLS)
def test_cells_backend_learns_with_truncated_bptt(cell):
    """Dropout, carried and detached state, Adam: the cells backend fits a repeating pattern."""
    net = tiny(cell, backend="cells", position_dim=4, dropout=0.1).train()
    pattern = torch.tensor([1, 5, 5, 9, 2, 7])
    tokens = pattern.repeat(2, 8)  # (2, 48)
    positions = torch.arange(48).remainder(6).expand(2, 48)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.03)
    losses = []
    for _ in range(15):
        state = None
        for start in range(0, 47, 12):  # chunks of 12 steps, the state carried and detached between them
            x, y = tokens[:, start:start + 12], tokens[:, start + 1:start + 13]
            logits, state = net(x[:, :y.shape[1]], positions[:, start:start + y.shape[1]], state)
            state = tuple(s.detach() for s in state) if cell == "lstm" else state.detach()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 20), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("position_dim", [0, 4])
def test_step_matches_forward_with_bars_remaining(cell, position_dim):
    net = tiny(cell, position_dim=position_dim, remaining_dim=3, max_remaining=5, max_positions=16)
    cfg = net.config
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 20, (4, 9), generator=g)
    pos = torch.randint(0, 16, (4, 9), generator=g)
    rem = torch.randint(0, cfg.max_remaining + 2, (4, 9), generator=g)  # the last id is "unknown"
    cond = pos + cfg.max_positions * rem
    assert_steps_match_forward(net, tokens, cond)


def test_bars_remaining_changes_the_prediction():
    net = tiny(position_dim=4, remaining_dim=3, max_remaining=5, max_positions=16)
    tokens = torch.zeros(1, 3, dtype=torch.long)
    near = torch.tensor([[net.config.condition_id(2, 0)] * 3])
    far = torch.tensor([[net.config.condition_id(2, 7)] * 3])  # capped at 5
    capped = torch.tensor([[net.config.condition_id(2, 5)] * 3])
    a, _ = net(tokens, near)
    b, _ = net(tokens, far)
    c, _ = net(tokens, capped)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(b, c)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("position_dim,remaining_dim", [(4, 3), (0, 3), (4, 0), (0, 0)])
def test_step_matches_forward_with_a_key(cell, position_dim, remaining_dim):
    net = tiny(cell, position_dim=position_dim, remaining_dim=remaining_dim, key_dim=5, max_remaining=5,
               max_positions=16)
    cfg = net.config
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 20, (4, 9), generator=g)
    pos = torch.randint(0, 16, (4, 9), generator=g)
    rem = torch.randint(0, cfg.max_remaining + 2, (4, 9), generator=g)
    key = torch.randint(0, 25, (4, 9), generator=g)  # 24 keys and "unknown"
    cond = torch.tensor([[cfg.condition_id(int(p), int(r) if r <= cfg.max_remaining else None,
                                           int(k) if k < 24 else None)
                          for p, r, k in zip(*rows)] for rows in zip(pos, rem, key)])
    assert_steps_match_forward(net, tokens, cond)


def test_the_key_changes_the_prediction_and_leaves_position_and_remaining_readable():
    net = tiny(position_dim=4, remaining_dim=3, key_dim=5, max_remaining=5, max_positions=16)
    cfg = net.config
    cond = cfg.condition_id(7, 2, 13)
    assert cond % cfg.max_positions == 7 and (cond % cfg.key_stride) // cfg.max_positions == 2
    assert cond // cfg.key_stride == 13 and cfg.condition_id(7, 2) // cfg.key_stride == 24  # unknown
    tokens = torch.zeros(1, 3, dtype=torch.long)
    a, _ = net(tokens, torch.tensor([[cfg.condition_id(2, 1, 0)] * 3]))
    b, _ = net(tokens, torch.tensor([[cfg.condition_id(2, 1, 7)] * 3]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="key_dim must be >= 0"):
        NetworkConfig(vocab_size=20, key_dim=-1)


def test_layer_0_input_rows_are_summed_as_the_torch_lookups_sum_them_to_the_bit():
    """InputRows' one compiled call adds the token's row, then each condition input's row, rounding
    to float32 after each add in the order index_select + add_ did (so generation's bytes stay)."""
    g = torch.Generator().manual_seed(0)
    token_rows = torch.randn(20, 16, generator=g)
    # (stride, radix, table) per condition input; magnitudes far apart, so the order of the adds shows
    parts = [(1, 12, torch.randn(12, 16, generator=g)), (12, 5, torch.randn(5, 16, generator=g) * 1e-3),
             (60, 7, torch.randn(7, 16, generator=g) * 1e3)]
    tokens = torch.randint(0, 20, (9, 2), generator=g)[:, 0]  # a column: not contiguous, as a step may get
    cond = torch.randint(0, 12 * 5 * 7 * 3, (9,), generator=g)
    want = token_rows.index_select(0, tokens)
    for stride, radix, table in parts:
        want.add_(table.index_select(0, (cond // stride) % radix))
    got = InputRows(token_rows, parts).into(torch.empty(9, 16), tokens, cond)
    assert torch.equal(got, want)
    summed_first = sum(table.index_select(0, (cond // stride) % radix) for stride, radix, table in parts)
    assert not torch.equal(token_rows.index_select(0, tokens) + summed_first, want)  # another order differs
    with pytest.raises(IndexError):
        InputRows(token_rows, parts).into(torch.empty(1, 16), torch.tensor([20]), torch.tensor([0]))
