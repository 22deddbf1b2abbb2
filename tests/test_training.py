"""Tests for model/training/trainer.py and model/network/checkpoint.py on tiny models and tiny synthetic corpora."""
import os
import signal

import numpy as np
import math

import pytest
import torch
import torch.nn.functional as F

from model.network.checkpoint import load_checkpoint, read_checkpoint
from model.representation.corpora import Corpus, Tune, split_of
from model.evaluation.report import evaluate_model
from model.network.scoring import tune_batch
from model.network.conditions import tune_positions
from model.network.melody import MelodyNetwork, NetworkConfig
from model.representation.tokens import MelodyTokenizer, Note, TokenizerConfig
from model.training.trainer import Trainer, train
from model.training.config import TrainConfig
from model.training.bptt import bptt_loss, clip_gradients, repackage_state

TOK = MelodyTokenizer()


def melody(i: int, meter: str = "4/4") -> list[int]:
    """A short, very regular tune: a rising then falling figure from a tonic that depends on i."""
    tonic = 60 + (i % 5) * 2
    steps = [0, 2, 4, 5, 7, 5, 4, 2]
    notes = [Note(tonic + steps[k % 8], 2 * k, 2 * k + 2) for k in range(16)]
    return TOK.encode_notes(notes, meter)


def corpus_of(n: int, seed: int = 0, valid: float = 0.3) -> Corpus:
    meters = ["4/4" if i % 3 else "3/4" for i in range(n)]
    tunes = [Tune(f"t{i}", np.asarray(melody(i, m), dtype=np.int32), m) for i, m in enumerate(meters)]
    assert any(split_of(t.id, seed, valid, 0.0) == "valid" for t in tunes)
    return Corpus(tunes, [], {"spec": "synthetic"}, TokenizerConfig())


def tiny(tmp_path, **overrides) -> TrainConfig:
    settings = dict(data="synthetic", out=str(tmp_path / "m.pt"), hidden_size=16, layers=2, embedding_dim=8,
                    dropout=0.1, bptt=8, window=16, batch_size=3, lr=5e-3, lr_patience=1, epochs=2, patience=5, threads=1,
                    transpose=(-2, 2), valid=0.3, test=0.0)
    settings.update(overrides)
    return TrainConfig(**settings)


def net(dropout=0.0, layers=2):
    torch.manual_seed(0)
    return MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, hidden_size=12, embedding_dim=6,
                                       num_layers=layers, dropout=dropout, position_dim=4,
                                       max_positions=TOK.max_bar_steps))


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


def batch_of(*tunes):
    tokens = [np.asarray(t) for t in tunes]
    return tune_batch(tokens, tune_positions(TOK, tokens), TOK.pad_id)


# ---- BPTT mechanics ---------------------------------------------------------------------------

def test_truncated_bptt_with_k_at_least_the_length_equals_full_bptt():
    model = net()
    inputs, positions, targets = batch_of(melody(0), melody(1, "3/4"))
    T = inputs.shape[1]
    logits, _ = model(inputs, positions)  # the reference: one graph over whole tunes
    F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=TOK.pad_id, reduction="sum").backward()
    full = grads(model)
    for k in (T, T + 7):
        model.zero_grad()
        loss, _ = bptt_loss(model, inputs, positions, targets, model.init_state(2), k, TOK.pad_id)
        loss.backward()
        for a, b in zip(full, grads(model)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the truncation is real: with k < T the loss is the same but recurrent gradients change
    model.zero_grad()
    loss_short, _ = bptt_loss(model, inputs, positions, targets, model.init_state(2), 5, TOK.pad_id)
    loss_short.backward()
    assert loss_short.item() == pytest.approx(loss.item(), rel=1e-6)
    w_hh = dict(model.named_parameters())["rnn.weight_hh_l0"]
    assert not torch.allclose(w_hh.grad, full[[n for n, _ in model.named_parameters()].index("rnn.weight_hh_l0")])


def test_repackage_state_detaches_and_keeps_values():
    h = torch.randn(2, 3, 4, requires_grad=True) * 2
    c = torch.randn(2, 3, 4, requires_grad=True) * 3
    h2, c2 = repackage_state((h, c))
    assert not h2.requires_grad and not c2.requires_grad and torch.equal(h2, h) and torch.equal(c2, c)
    assert not repackage_state(h).requires_grad


def test_training_full_and_truncated_with_long_k_agree_on_one_tune(tmp_path):
    # one training tune, one lane: stream mode with k >= its length sees exactly the full-BPTT batch
    ids = [f"u{i}" for i in range(200)]
    train_id = next(i for i in ids if split_of(i, 0, 0.3, 0.0) == "train")
    valid_id = next(i for i in ids if split_of(i, 0, 0.3, 0.0) == "valid")
    corpus = Corpus([Tune(train_id, np.asarray(melody(0), dtype=np.int32), "4/4"),
                     Tune(valid_id, np.asarray(melody(1), dtype=np.int32), "4/4")], [], {}, TokenizerConfig())
    weights = []
    for bptt in ("full", 500):
        cfg = tiny(tmp_path / str(bptt), bptt=bptt, window=500, batch_size=1, dropout=0.0, transpose=(0, 0),
                   epochs=3)
        train(cfg, corpus=corpus, show_progress=False)
        weights.append(read_checkpoint(cfg.resume_path())["last_model"])
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-5, atol=1e-6)


def test_clipping_bounds_the_norm_and_returns_the_norm_before():
    model = net()
    inputs, positions, targets = batch_of(melody(2))
    loss, _ = bptt_loss(model, inputs, positions, targets, None, 8, TOK.pad_id)
    (loss * 100).backward()
    before = grads(model)
    norm_before = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in before])).item()
    assert norm_before > 1.0
    reported = clip_gradients(model, 0.5)
    assert reported == pytest.approx(norm_before, rel=1e-5)
    after = grads(model)
    norm_after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in after])).item()
    assert norm_after == pytest.approx(0.5, rel=1e-4)
    for a, b in zip(before, after):  # same direction, scaled
        torch.testing.assert_close(b, a * (0.5 / norm_before), rtol=1e-4, atol=1e-7)


def test_training_logs_the_norm_before_clipping(tmp_path):
    norms = []
    train(tiny(tmp_path, clip=1e-3, epochs=1), corpus=corpus_of(12), show_progress=False,
          progress=lambda e: norms.append(e["grad_norm"]) if e["event"] == "step" else None)
    assert norms and min(norms) > 1e-3  # the logged norm is the one before clipping


# ---- learning -----------------------------------------------------------------------------------

def test_a_tiny_model_overfits_a_tiny_corpus(tmp_path):
    # three melodies, each under four ids: validation copies training, so the schedule keeps the rate up
    tunes = [Tune(f"t{i}", np.asarray(melody(i % 3), dtype=np.int32), "4/4") for i in range(12)]
    corpus = Corpus(tunes, [], {}, TokenizerConfig())
    cfg = tiny(tmp_path, bptt="full", hidden_size=32, dropout=0.0, transpose=(0, 0), lr=2e-2, epochs=40,
               patience=100, batch_size=4)
    torch.manual_seed(0)
    start = evaluate_model(MelodyNetwork(cfg.network_config(TOK)), TOK, tunes)["nats_per_token"]
    result = train(cfg, corpus=corpus, show_progress=False)
    model, tokenizer, _ = load_checkpoint(cfg.out)
    end = evaluate_model(model, tokenizer, tunes)["nats_per_token"]
    assert start > 4.0  # about log(vocab size) untrained
    assert end < 1.0 and end < start / 4  # far below the token frequencies (about 1.8 nats): it learned the tunes
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"] / 3


# ---- checkpoints, resume, reproducibility ---------------------------------------------------------

def test_checkpoint_round_trip_describes_itself(tmp_path):
    cfg = tiny(tmp_path)
    result = train(cfg, corpus=corpus_of(12), show_progress=False)
    model, tokenizer, ckpt = load_checkpoint(result["checkpoint"])
    for key in ("format", "network_config", "tokenizer_config", "vocab", "model", "epoch", "step", "metrics",
                "history", "train_config", "data", "code_version"):
        assert key in ckpt, key
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2 and ckpt["data"]["spec"] == "synthetic"
    assert ckpt["train_config"]["hidden_size"] == 16 and tokenizer.vocab == TOK.vocab
    assert ckpt["metrics"]["valid_loss"] == min(h["valid_loss"] for h in ckpt["history"])
    resume = read_checkpoint(cfg.resume_path())
    for key in ("optimizer", "scheduler", "rng", "last_model", "best"):
        assert key in resume, key
    # the loaded network computes what the saved weights compute
    fresh = MelodyNetwork(NetworkConfig.from_dict(ckpt["network_config"]))
    fresh.load_state_dict(resume["best"]["model"])
    fresh.eval()
    inputs, positions, _ = batch_of(melody(3))
    torch.testing.assert_close(model(inputs, positions)[0], fresh(inputs, positions)[0], rtol=0, atol=0)
    assert torch.load(cfg.out, weights_only=True)["format"] == ckpt["format"]


def test_a_checkpoint_every_epoch(tmp_path):
    cfg, seen = tiny(tmp_path, epochs=3), []

    def progress(event):
        if event["event"] == "epoch":
            seen.append((event["epoch"], read_checkpoint(cfg.out)["epoch"], read_checkpoint(cfg.resume_path())["epoch"]))
    train(cfg, corpus=corpus_of(12), progress=progress, show_progress=False)
    assert seen == [(1, 1, 1), (2, 2, 2), (3, 3, 3)]


@pytest.mark.parametrize("bptt", ["full", 8])
def test_resume_after_a_stop_gives_the_uninterrupted_weights(tmp_path, bptt):
    corpus = corpus_of(15)
    whole = tiny(tmp_path / "whole", bptt=bptt, epochs=3)
    train(whole, corpus=corpus, show_progress=False)
    split = tiny(tmp_path / "split", bptt=bptt, epochs=3)
    calls = {"n": 0}

    def stop_after_4_steps():
        calls["n"] += 1
        return calls["n"] == 4
    first = train(split, corpus=corpus, should_stop=stop_after_4_steps, show_progress=False)
    assert first["stopped"] == "should_stop"
    saved = read_checkpoint(split.resume_path())
    if bptt == 8:
        assert (saved["epoch"], saved["step"]) == (0, 4)  # mid-epoch: the lane state is carried over
        assert saved["lane_state"] is not None
    else:
        assert saved["epoch"] < 3
    second = train(split, corpus=corpus, resume=True, show_progress=False)
    assert second["stopped"] == "epochs"
    a, b = read_checkpoint(whole.resume_path()), read_checkpoint(split.resume_path())
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    for name in a["last_model"]:
        assert torch.equal(a["last_model"][name], b["last_model"][name]), name
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name


def test_ctrl_c_saves_and_resume_finishes(tmp_path):
    cfg, corpus = tiny(tmp_path, epochs=2), corpus_of(12)

    def progress(event):
        if event["event"] == "step" and event["epoch"] == 1 and event["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C
    result = train(cfg, corpus=corpus, progress=progress, show_progress=False)
    assert result["stopped"] == "interrupted"
    saved = read_checkpoint(cfg.resume_path())
    assert (saved["epoch"], saved["step"]) == (0, 2)
    assert train(cfg, corpus=corpus, resume=True, show_progress=False)["stopped"] == "epochs"
    assert read_checkpoint(cfg.out)["epoch"] == 2


def test_seeded_runs_repeat_bit_for_bit_and_seeds_differ(tmp_path):
    corpus = corpus_of(12)
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        result = train(tiny(tmp_path / name, seed=seed), corpus=corpus, show_progress=False)
        runs.append([h["train_loss"] for h in result["history"]] + [h["valid_loss"] for h in result["history"]])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_time_budget_and_progress_events(tmp_path):
    events = []
    result = train(tiny(tmp_path, max_minutes=1e-6, epochs=5), corpus=corpus_of(12), progress=events.append,
                   show_progress=False)
    assert result["stopped"] == "time_budget"
    assert [e["event"] for e in events] == ["step", "done"]
    for key in ("event", "epoch", "epochs", "step", "steps_per_epoch", "train_loss", "valid_loss", "tokens_per_s",
                "grad_norm", "eta_s", "history"):
        assert key in events[0]
    assert events[0]["tokens_per_s"] > 0 and events[0]["steps_per_epoch"] > 1
    assert read_checkpoint(tmp_path / "m.resume.ckpt")["step"] == 1


def test_early_stopping_keeps_the_best_model_and_lowers_the_rate(tmp_path, monkeypatch):
    losses = iter([1.0, 2.0, 3.0, 4.0, 5.0])
    monkeypatch.setattr(Trainer, "validate", lambda self: next(losses))
    cfg = tiny(tmp_path, epochs=5, patience=2)
    best_weights = {}

    def progress(event):
        if event["event"] == "epoch" and event["epoch"] == 1:
            best_weights.update(read_checkpoint(cfg.resume_path())["last_model"])
    result = train(cfg, corpus=corpus_of(12), progress=progress, show_progress=False)
    assert result["stopped"] == "early_stopping" and len(result["history"]) == 3
    model_file, resume = read_checkpoint(cfg.out), read_checkpoint(cfg.resume_path())
    assert model_file["metrics"]["best_epoch"] == 1 and model_file["metrics"]["valid_loss"] == 1.0
    for name, value in best_weights.items():
        assert torch.equal(model_file["model"][name], value)
    assert not all(torch.equal(resume["last_model"][n], v) for n, v in best_weights.items())
    assert resume["optimizer"]["param_groups"][0]["lr"] == pytest.approx(cfg.lr / 2)


def test_lr_patience_sets_how_long_the_rate_waits_before_halving(tmp_path, monkeypatch):
    for lr_patience, halvings in ((1, 1), (3, 0)):       # two epochs without a better loss after the first
        losses = iter([1.0, 2.0, 3.0])
        monkeypatch.setattr(Trainer, "validate", lambda self: next(losses))
        cfg = tiny(tmp_path, epochs=3, patience=5, lr_patience=lr_patience, out=str(tmp_path / f"p{lr_patience}.pt"))
        train(cfg, corpus=corpus_of(12), show_progress=False)
        lr = read_checkpoint(cfg.resume_path())["optimizer"]["param_groups"][0]["lr"]
        assert lr == pytest.approx(cfg.lr / 2 ** halvings)


@pytest.mark.parametrize("bptt", [8, "full"])
def test_sampled_inputs_replace_only_grid_steps_with_the_networks_own_draws(tmp_path, bptt):
    trainer = Trainer(tiny(tmp_path, bptt=bptt, sampled_inputs=0.5), corpus_of(12), show_progress=False)
    steps = {t for t in range(TOK.vocab_size) if TOK.is_step(t)}
    changed = total = 0
    for inputs, positions, targets, _ in trainer.epoch_batches(0):
        mixed = trainer.sampled_inputs(inputs, positions, None)
        assert mixed.shape == inputs.shape and torch.equal(mixed[:, 0], inputs[:, 0])
        differ = mixed != inputs
        for a, b in zip(inputs[differ].tolist(), mixed[differ].tolist()):
            assert a in steps and b in steps               # barlines, meters, BOS/EOS and padding stay
        changed += int(differ.sum())
        total += sum(int(t in steps) for t in inputs[:, 1:].flatten().tolist())
    assert 0 < changed < 0.5 * total                      # about half the steps drawn, some draws equal the tune's
    result = train(tiny(tmp_path, bptt=bptt, sampled_inputs=0.5, epochs=1, out=str(tmp_path / "s.pt")),
                   corpus=corpus_of(12), show_progress=False)
    assert math.isfinite(result["history"][-1]["train_loss"])


def test_bad_settings_name_the_setting():
    with pytest.raises(ValueError, match="bptt must be 'full' or an integer >= 1, got 'half'"):
        TrainConfig(bptt="half")
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        TrainConfig(dropout=1.5)
    with pytest.raises(ValueError, match="transpose must be"):
        TrainConfig(transpose=(3, -3))


def test_resume_refuses_changed_settings(tmp_path):
    corpus = corpus_of(12)
    train(tiny(tmp_path, epochs=1), corpus=corpus, show_progress=False)
    with pytest.raises(ValueError, match="hidden_size: 16 -> 20"):
        train(tiny(tmp_path, epochs=2, hidden_size=20), corpus=corpus, resume=True, show_progress=False)


def test_auto_backend_trains_each_cell_on_its_faster_implementation():
    tok = MelodyTokenizer()
    picked = {cell: TrainConfig(data="x", out="x.pt", cell=cell, backend="auto").network_config(tok).backend for cell in ("lstm", "gru", "rnn")}
    assert picked == {"lstm": "fused", "gru": "cells", "rnn": "cells"}
    assert TrainConfig(data="x", out="x.pt", cell="gru", backend="fused").network_config(tok).backend == "fused"
    with pytest.raises(ValueError, match="backend must be auto, fused or cells"):
        TrainConfig(data="x", out="x.pt", backend="cuda")


# ---- the end weight and fine-tuning -----------------------------------------------------------------

def test_end_weights_mark_the_last_bar_and_eos_only():
    from model.training.trainer import end_weights
    ids = melody(0)
    w = end_weights(ids, TOK.bar_id, 3.0)
    last_bar = max(i for i, t in enumerate(ids) if t == TOK.bar_id)
    assert (w[:last_bar + 1] == 1.0).all()
    assert (w[last_bar + 1:] == 3.0).all() and ids[-1] == TOK.eos_id
    assert len(w) == len(ids)


def test_a_weighted_loss_is_the_weighted_mean_of_the_token_losses():
    model = net()
    inputs, positions, targets = batch_of(melody(0), melody(1, "3/4"))
    weights = torch.rand(targets.shape) + 0.5
    weighted, _ = bptt_loss(model, inputs, positions, targets, None, 8, TOK.pad_id, weights)
    logits, _ = model(inputs, positions)
    per_token = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=TOK.pad_id, reduction="none")
    assert torch.allclose(weighted, (per_token * weights.flatten()).sum(), rtol=1e-5)
    plain, _ = bptt_loss(model, inputs, positions, targets, None, 8, TOK.pad_id)
    assert not torch.allclose(weighted, plain)


@pytest.mark.parametrize("bptt", ["full", 8])
def test_the_end_weight_weighs_exactly_the_last_bars(tmp_path, bptt):
    corpus = corpus_of(12)
    trainer = Trainer(tiny(tmp_path, bptt=bptt, end_weight=5.0), corpus, show_progress=False)
    targets = torch.cat([b[2].flatten() for b in trainer.epoch_batches(0)])
    weights = torch.cat([b[3].flatten() for b in trainer.epoch_batches(0)])
    assert set(weights.unique().tolist()) == {1.0, 5.0}
    assert (weights[targets == TOK.eos_id] == 5.0).all()  # every tune's EOS ...
    assert not (targets[weights == 5.0] == TOK.bar_id).any()  # ... and its last bar's steps, never a barline
    last_bars = sum(len(t) - 1 - max(i for i, x in enumerate(t) if x == TOK.bar_id) for t in trainer.train_tokens)
    weighted = int((weights == 5.0).sum())
    if bptt == "full":
        assert weighted == last_bars
    else:  # the stream drops the few tokens that do not fill its lanes
        assert last_bars - len(trainer.train_tokens[0]) <= weighted <= last_bars
    assert all(b[3] is None for b in Trainer(tiny(tmp_path, bptt=bptt), corpus, show_progress=False).epoch_batches(0))


def test_init_starts_from_a_checkpoints_weights_and_refuses_another_network(tmp_path):
    corpus = corpus_of(12)
    first = tiny(tmp_path, epochs=1)
    train(first, corpus=corpus, show_progress=False)
    trained, _, _ = load_checkpoint(first.out)
    tuned = Trainer(tiny(tmp_path, out=str(tmp_path / "tuned.pt"), init=first.out), corpus, show_progress=False)
    for a, b in zip(trained.state_dict().values(), tuned.model.state_dict().values()):
        assert torch.equal(a, b)
    fresh = Trainer(tiny(tmp_path, out=str(tmp_path / "fresh.pt")), corpus, show_progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), fresh.model.state_dict().values()))
    with pytest.raises(ValueError, match="init .* cannot start this run: its network differs from this run.s: hidden_size 16 .here 24."):
        Trainer(tiny(tmp_path, out=str(tmp_path / "other.pt"), init=first.out, hidden_size=24), corpus, show_progress=False)
    with pytest.raises(ValueError, match=r"end_weight must be in \(0, 100\], got 0"):
        TrainConfig(end_weight=0)


def test_the_key_input_reads_each_tunes_key_drops_it_and_moves_it_with_transposition(tmp_path):
    from model.network.conditions import tune_key
    corpus = corpus_of(12)
    cfg = tiny(tmp_path, key_inputs=True, key_dropout=0.5, transpose=(0, 0), bptt="full")
    trainer = Trainer(cfg, corpus, show_progress=False)
    S = trainer.model.config.key_stride
    keys = [tune_key(TOK, t) for t in trainer.train_tokens]
    assert [int(p[0]) // S for p in trainer.train_positions] == keys and len(set(keys)) >= 3
    assert sum(trainer.key_prior) == pytest.approx(1.0)
    assert trainer.key_prior[keys[0]] == pytest.approx(keys.count(keys[0]) / len(keys))
    read = [set((b[1][row] // S).tolist()) - {24} for b in trainer.epoch_batches(0) for row in range(len(b[1]))]
    hidden = sum(1 for r in read if not r)
    assert 0 < hidden < len(read)  # key_dropout 0.5: some tunes read it as unknown, the others their own
    moved = Trainer(tiny(tmp_path, key_inputs=True, key_dropout=0.0, transpose=(2, 2), bptt="full"), corpus,
                    show_progress=False)
    shifted = sorted(int(b[1][row, 0]) // S for b in moved.epoch_batches(0) for row in range(len(b[1])))
    assert shifted == sorted((k % 12 + 2) % 12 + 12 * (k // 12) for k in keys)  # two semitones up, mode kept
    result = train(cfg, corpus=corpus, show_progress=False)
    assert read_checkpoint(result["checkpoint"])["key_prior"] == trainer.key_prior


def test_init_grows_a_key_input_without_changing_what_the_network_computes(tmp_path):
    corpus = corpus_of(12)
    plain = tiny(tmp_path, out=str(tmp_path / "plain.pt"), epochs=1, remaining_inputs=True)
    train(plain, corpus=corpus, show_progress=False)
    before, _, _ = load_checkpoint(plain.out)
    grown = Trainer(tiny(tmp_path, out=str(tmp_path / "grown.pt"), init=plain.out, key_inputs=True,
                         remaining_inputs=True), corpus, show_progress=False).model.eval()
    assert grown.config.key_dim > 0 and before.config.key_dim == 0
    tokens = [np.asarray(melody(3))]
    inputs = torch.tensor(np.stack(tokens))
    a, _ = before.eval()(inputs, torch.tensor(np.stack(tune_positions(TOK, tokens, before.config))))
    b, _ = grown(inputs, torch.tensor(np.stack(tune_positions(TOK, tokens, grown.config))))
    torch.testing.assert_close(a, b)
