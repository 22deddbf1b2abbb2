"""Gradient diagnostics on tiny settings: vanishing in the vanilla RNN, clipping bounds the update."""
import json

import numpy as np
import pytest
import torch

from model.training.diagnostics import (DiagnoseConfig, ProbeNetwork, diagnose, gradient_by_distance, sample_windows, train_probe)

V = 12


def random_stream(n=3000, seed=0):
    return np.random.default_rng(seed).integers(0, V, size=n)


def test_vanilla_rnn_gradients_vanish_with_distance_at_init():
    torch.manual_seed(0)
    net = ProbeNetwork("rnn", V, embedding_dim=8, hidden_size=32)
    windows = sample_windows(random_stream(), 60, 8, np.random.default_rng(0))
    norms = gradient_by_distance(net, windows)
    assert norms.shape == (60,)
    every_fifth = norms[::5]
    assert (np.diff(every_fifth) < 0).all()                # falls all the way back
    assert norms[40] < 1e-6 * norms[0]                     # by orders of magnitude


def test_gradient_of_the_last_loss_matches_autograd_on_the_fast_layer():
    """The unrolled cell sees the same network as the Recurrent layer: dL_T/dh_T agrees with autograd."""
    torch.manual_seed(1)
    net = ProbeNetwork("lstm", V, embedding_dim=8, hidden_size=16)
    windows = sample_windows(random_stream(), 20, 3, np.random.default_rng(1))
    out, _ = net.rnn(net.embedding(windows[:, :-1]))
    out.retain_grad()
    torch.nn.functional.cross_entropy(net.projection(out[:, -1]), windows[:, -1], reduction="sum").backward()
    expected = out.grad[:, -1].norm(dim=1).mean().item()
    assert gradient_by_distance(net, windows)[0] == pytest.approx(expected, rel=1e-5)


def test_clipping_bounds_the_update_and_records_the_norm_before_clipping():
    stream = random_stream()
    results = {}
    for clip in (0.01, None):
        torch.manual_seed(2)
        net = ProbeNetwork("rnn", V, embedding_dim=8, hidden_size=16)
        before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
        run = train_probe(net, stream, steps=1, window=20, batch_size=4, lr=1.0, clip=clip,
                          rng=np.random.default_rng(0), optimizer="sgd")
        after = torch.cat([p.detach().flatten() for p in net.parameters()])
        results[clip] = (run["grad_norm"][0], (after - before).norm().item())
    assert results[0.01][0] == pytest.approx(results[None][0])   # the same gradient before clipping
    assert results[0.01][0] > 0.01                              # so clipping had something to do
    assert results[0.01][1] == pytest.approx(0.01, rel=1e-4)     # SGD step = lr * clipped gradient
    assert results[None][1] == pytest.approx(results[None][0], rel=1e-4)


def test_diagnose_writes_plots_and_figures(tmp_path):
    tunes = [random_stream(400, seed=s) for s in range(5)]
    cfg = DiagnoseConfig(embedding_dim=4, hidden_size=8, window=30, windows=2, train_steps=3, train_window=10,
                         batch_size=2, clip_steps=3, clip_optimizers=("sgd:0.5",))
    out = diagnose(str(tmp_path), cfg, tunes=tunes, vocab_size=V, log=lambda *a: None)
    assert set(out["curves"]) == {"rnn", "gru", "lstm"}
    assert all(len(c["init"]) == 30 and len(c["trained"]) == 30 for c in out["curves"].values())
    assert (tmp_path / "gradient-by-distance.png").stat().st_size > 1000
    assert (tmp_path / "gradient-norms-clipping.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "diagnostics.json").read_text())
    assert len(saved["clipping"]["sgd:0.5"]["unclipped"]["grad_norm"]) == 3
    with pytest.raises(ValueError, match="cells must be among"):
        diagnose(None, DiagnoseConfig(cells=("transformer",)), tunes=tunes, vocab_size=V)
