"""Tests for model/network/shortterm.py: match lengths against brute force, batching, the mixture's algebra,
the fit, and its use by generation, training, evaluation and the CLI."""
import json

import numpy as np
import pytest
import torch

from model.network import shortterm
from model.network.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from model.evaluation.report import evaluate_model
from model.network.scoring import fit_short_term
from model.network.melody import MelodyNetwork, NetworkConfig
from model.generation.params import GenerationParams
from model.generation.sampling import Generator
from model.network.shortterm import BUCKET_EDGES, CopyModel, CopyState
from model.representation.tokens import MelodyTokenizer

TOK = MelodyTokenizer()


def brute_candidates(x, t, max_match, window):
    """(match length, next token) for every j in the window whose context ends like x[..t]."""
    found = []
    for j in range(max(0, t - window), t):
        n = 0
        while n < max_match and j - n >= 0 and x[j - n] == x[t - n]:
            n += 1
        if n:
            found.append((n, int(x[j + 1])))
    return sorted(found)


def copy_distribution(state):
    """(p_copy (batch, V), gate (batch,)) as the module docstring defines them, from each row's
    candidates: every match votes for the token that followed it with weight length ** beta."""
    model = state.model
    p, gate = np.zeros((state.batch, state.vocab_size)), np.zeros(state.batch)
    for r in range(state.batch):
        lengths, nexts = state.candidates(r)
        if len(lengths):
            weights = lengths.astype(np.float64) ** model.beta
            np.add.at(p[r], nexts, weights)
            p[r] /= weights.sum()
            gate[r] = model.gate_of(int(lengths.max()))
    return p, gate


def assert_mixture(mixed, logits, copy, gate, atol=1e-9):
    """`mixed` (batch, V) equals log((1 - g) softmax(logits) + g p_copy) up to a constant per row."""
    for r in range(len(mixed)):
        expected = np.log((1 - gate[r]) * torch.softmax(logits[r].double(), -1).numpy() + gate[r] * copy[r])
        shift = np.asarray(mixed[r], dtype=np.float64) - expected
        np.testing.assert_allclose(shift, shift[0], atol=atol)


@pytest.mark.parametrize("max_match,window", [(5, 1000), (64, 7), (3, 40)])
def test_match_lengths_equal_brute_force(max_match, window):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=260)
    x[100:180] = 1  # a long run: matches far longer than max_match, and than their lag
    state = CopyState(CopyModel(beta=2.0, max_match=max_match, window=window), 3, capacity=4)  # grows
    for t in range(len(x)):
        state.push(int(x[t]))
        lengths, nexts = state.candidates()
        assert sorted(zip(lengths.tolist(), nexts.tolist())) == brute_candidates(x, t, max_match, window), t


def test_batched_state_equals_one_state_per_row_and_reorders_like_beams():
    rng = np.random.default_rng(2)
    model = CopyModel(beta=3.0, gate=list(np.linspace(-3, 2, len(BUCKET_EDGES))), max_match=8, window=50)
    X = rng.integers(0, 4, size=(3, 120))
    batch, rows = CopyState(model, 4, batch=3, capacity=8), [CopyState(model, 4, capacity=8) for _ in range(3)]
    for t in range(120):
        batch.push(X[:, t])
        for r in range(3):
            rows[r].push(int(X[r, t]))
        p_b, g_b = copy_distribution(batch)
        for r in range(3):
            p_r, g_r = copy_distribution(rows[r])
            np.testing.assert_allclose(p_b[r], p_r[0])
            assert g_b[r] == pytest.approx(g_r[0])
    batch.reorder(np.array([2, 2, 0]))
    assert np.allclose(copy_distribution(batch)[0], np.stack([copy_distribution(rows[2])[0][0]] * 2
                                                              + [copy_distribution(rows[0])[0][0]]))


def test_copy_distribution_and_gate_on_a_repeated_phrase():
    model = CopyModel(beta=1.0, gate=[-9.0] * 4 + [3.0] * (len(BUCKET_EDGES) - 4))  # trusts matches of 6+
    phrase = [5, 6, 7, 8, 9, 10, 11]
    state = CopyState(model, 20)
    for token in phrase + phrase[:6]:  # the phrase, then its first 6 tokens again
        state.push(token)
    copy, gate = copy_distribution(state)
    assert copy[0].argmax() == 11 and copy[0, 11] == pytest.approx(1.0)  # the phrase went on with 11
    assert gate[0] == pytest.approx(1 / (1 + np.exp(-3.0)))
    fresh = CopyState(model, 20)
    fresh.push(5)
    assert copy_distribution(fresh)[1][0] == 0.0  # nothing to match yet: the network alone
    logits = torch.randn(1, 20)
    assert torch.equal(CopyState(model, 20).push_and_mix(5, logits.clone()), logits)   # the mix leaves it alone


@pytest.mark.parametrize("batch", [1, 3])
def test_push_and_mix_is_the_normalised_mixture_up_to_a_constant(batch):
    rng = np.random.default_rng(3)
    model = CopyModel(beta=2.0, gate=[0.5] * len(BUCKET_EDGES))
    state = CopyState(model, 30, batch=batch)
    for t in rng.integers(0, 6, size=149):
        state.push(np.full(batch, t))
    logits = torch.randn(batch, 30)
    mixed = state.push_and_mix(np.full(batch, 2), logits.clone()).numpy()  # in place
    copy, gate = copy_distribution(state)
    assert (gate > 0).all()
    assert_mixture(mixed, logits, copy, gate)


def test_push_and_mix_mixes_at_every_step_as_the_state_grows():
    rng = np.random.default_rng(8)
    model = CopyModel(beta=3.0, gate=list(np.linspace(-2, 2, len(BUCKET_EDGES))), window=64)
    a, b = CopyState(model, 30, batch=2, capacity=4), CopyState(model, 30, batch=2, capacity=4)
    for t in range(150):
        tokens = torch.from_numpy(rng.integers(0, 4, size=2))
        logits = torch.randn(2, 30)
        b.push(tokens)
        # float32 out: the mixed logits are rounded to float32 (rows without a match stay exact)
        assert_mixture(a.push_and_mix(tokens, logits.clone()).numpy(), logits, *copy_distribution(b), atol=2e-6)


def test_teacher_forced_mix_gives_distributions_and_helps_a_repetitive_tune():
    rng = np.random.default_rng(4)
    phrase = list(rng.integers(10, 30, size=16))
    tokens = [1] + phrase * 4 + [2]
    uniform = np.full((len(tokens) - 1, 40), -np.log(40))
    model = CopyModel(beta=2.0, gate=list(np.linspace(-2, 3, len(BUCKET_EDGES))))
    mixed = model.mix(uniform, tokens)
    np.testing.assert_allclose(np.exp(mixed).sum(1), 1.0)
    rows = np.arange(len(tokens) - 1)
    assert -mixed[rows, tokens[1:]].sum() < 0.5 * -uniform[rows, tokens[1:]].sum()


def test_fit_trusts_long_matches_more_and_beats_the_network_alone():
    rng = np.random.default_rng(5)
    tunes, logprobs = [], []
    for _ in range(30):  # AABA tunes under a "network" that knows only the alphabet
        a, b = list(rng.integers(3, 13, size=12)), list(rng.integers(3, 13, size=12))
        tune = np.array([1] + a + a + b + a + [2])
        tunes.append(tune)
        logprobs.append(np.full(len(tune) - 1, -np.log(12)))
    model, nats = shortterm.fit(shortterm.collect(logprobs, tunes))
    assert nats < 0.8 * np.log(12)
    # inside a repeated A, a match of 6 tokens predicts the next one; a single token says little
    assert model.gate_of(6) > 0.9 > model.gate_of(1)
    assert model.beta > 0


def tiny_network(seed=0):
    torch.manual_seed(seed)
    return MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, hidden_size=16, embedding_dim=8, num_layers=1,
                                       position_dim=4, max_positions=TOK.max_bar_steps))


def test_fit_short_term_on_a_network_and_evaluate_with_it():
    rng = np.random.default_rng(6)
    bar = [TOK.bar_id] + [TOK.note_id(int(p)) for p in rng.integers(60, 72, size=16)]
    tune = TOK.start_ids("4/4") + bar * 6 + [TOK.eos_id]  # one bar six times
    net = tiny_network()
    model, figures = fit_short_term(net, TOK, [tune] * 3)
    assert figures["mixture_nats_per_token"] < figures["network_nats_per_token"]
    alone, mixed = evaluate_model(net, TOK, [tune]), evaluate_model(net, TOK, [tune], copy_model=model)
    assert mixed["bits_per_note"] < alone["bits_per_note"]
    assert mixed["pitch_bits_per_note"] < alone["pitch_bits_per_note"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same tiny network without and with a short-term model that trusts every match."""
    folder = tmp_path_factory.mktemp("short-term")
    net = tiny_network()
    plain = save_checkpoint(folder / "plain.pt", net, TOK)
    strong = CopyModel(beta=4.0, gate=[4.0] * len(BUCKET_EDGES))
    mixed = save_checkpoint(folder / "mixed.pt", net, TOK, short_term=strong.to_dict())
    return plain, mixed


def test_generation_uses_the_short_term_model_and_can_leave_it_out(checkpoints):
    plain, mixed = Generator(checkpoints[0]), Generator(checkpoints[1])
    assert plain.copy_model is None and mixed.copy_model is not None
    for params in (GenerationParams(bars=8, seed=3, count=2), GenerationParams(bars=4, seed=1, beam_width=3, count=2),
                   GenerationParams(bars=4, seed=2, primer=[[60, 0, 1], [62, 1, 1], [64, 2, 2]])):
        without = [m.tokens for m in plain.generate(params).melodies]
        off = [m.tokens for m in mixed.generate(GenerationParams(**{**params.__dict__, "short_term": False})).melodies]
        on = [m.tokens for m in mixed.generate(params).melodies]
        assert off == without  # short_term=False is the network alone, token for token
        assert on != without
        assert on == [m.tokens for m in mixed.generate(params).melodies]  # and still deterministic


def test_a_trusted_copy_model_makes_melodies_repeat_themselves(checkpoints):
    """With every match trusted (gate 0.98), a sampled melody copies its own bars far more than the
    untrained network does alone: count bars equal to an earlier bar."""
    def repeated_bars(tokens):
        bars, current = [], []
        for t in tokens:
            if t == TOK.bar_id and current:
                bars.append(tuple(current))
                current = []
            elif TOK.is_step(t):
                current.append(t)
        return sum(b in bars[:i] for i, b in enumerate(bars))
    params = GenerationParams(bars=16, seed=0, count=8, avoid_repetition=False)
    plain = sum(repeated_bars(m.tokens) for m in Generator(checkpoints[0]).generate(params).melodies)
    mixed = sum(repeated_bars(m.tokens) for m in Generator(checkpoints[1]).generate(params).melodies)
    assert mixed > plain + 16


def test_bad_short_term_flag_is_a_parameter_error():
    with pytest.raises(ValueError, match="short_term"):
        GenerationParams(short_term="yes").validate(TOK)


def test_copy_model_checks_and_round_trips():
    model = CopyModel(beta=3.5, gate=[float(i) for i in range(len(BUCKET_EDGES))], max_match=32, window=100)
    assert CopyModel.from_dict(json.loads(json.dumps(model.to_dict()))) == model
    assert CopyModel.from_checkpoint({}) is None
    with pytest.raises(ValueError, match="gate"):
        CopyModel(gate=[0.0])
    with pytest.raises(ValueError, match="window"):
        CopyModel(window=0)


def test_train_stores_a_fitted_short_term_model(tmp_path):
    from model.representation.corpora import Corpus, Tune
    from model.training.config import TrainConfig
    from model.training.trainer import train
    rng = np.random.default_rng(7)
    tunes = []
    for i in range(40):
        bar = [TOK.bar_id] + [TOK.note_id(int(p)) for p in rng.integers(60, 72, size=16)]
        tunes.append(Tune(f"t{i}", np.array(TOK.start_ids("4/4") + bar * 4 + [TOK.eos_id]), "4/4"))
    corpus = Corpus(tunes, [], tokenizer_config=TOK.config)
    cfg = TrainConfig(data="synthetic", out=str(tmp_path / "m.pt"), hidden_size=16, embedding_dim=8, layers=1,
                      epochs=1, batch_size=4, window=32, threads=1, valid=0.2, test=0.1)
    result = train(cfg, corpus=corpus, show_progress=False)
    stored = read_checkpoint(tmp_path / "m.pt")["short_term"]
    assert 0.99 > CopyModel.from_dict(stored).gate_of(12) > CopyModel.from_dict(stored).gate_of(1)
    figures = result["metrics"]["short_term"]["valid"]
    assert figures["mixture_nats_per_token"] < figures["network_nats_per_token"]
    assert result["metrics"]["short_term_valid_loss"] == figures["mixture_nats_per_token"]  # a number the pages show
    off = TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "n.pt"), "short_term": False})
    train(off, corpus=corpus, show_progress=False)
    assert "short_term" not in read_checkpoint(tmp_path / "n.pt")
    _, _, ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["metrics"]["short_term"]["valid"] == figures


# ---- the last bar's own gate ------------------------------------------------------------------------

def test_the_last_bar_gets_its_own_gate_where_the_end_is_known():
    """AAAA tunes whose last bar breaks the pattern: copying is right everywhere but there, so the fit
    trusts long matches less in the last bar, and scores better than one gate for all bars."""
    rng = np.random.default_rng(7)
    tunes, logprobs, last_bars = [], [], []
    for _ in range(40):
        a, end = list(rng.integers(3, 13, size=12)), list(rng.integers(3, 13, size=6))
        tune = np.array([1] + a * 3 + [0] + a[:6] + end + [2])  # 0 stands for the last barline
        tunes.append(tune)
        logprobs.append(np.full(len(tune) - 1, -np.log(13)))
        last_bars.append(shortterm.last_barline(tune, 0))
    one, one_nats = shortterm.fit(shortterm.collect(logprobs, tunes))
    two, two_nats = shortterm.fit(shortterm.collect(logprobs, tunes, last_bars=last_bars))
    assert one.end_gate is None and two.end_gate is not None
    assert two_nats < one_nats
    assert two.gate_of(12, final=True) < two.gate_of(12) and two.gate_of(12, final=False) == two.gate_of(12)
    assert CopyModel.from_dict(two.to_dict()) == two and "end_gate" not in one.to_dict()
    # the teacher-forced mix switches gates after the last barline only
    uniform = np.full((len(tunes[0]) - 1, 13), -np.log(13))
    before = two.mix(uniform, tunes[0])
    after = two.mix(uniform, tunes[0], last_bars[0])
    assert np.array_equal(before[:last_bars[0]], after[:last_bars[0]])
    assert not np.allclose(before[last_bars[0]:], after[last_bars[0]:])
    plain = CopyModel(gate=two.gate, beta=two.beta)  # no end gate: the last bar reads the same gate
    assert np.array_equal(plain.mix(uniform, tunes[0]), plain.mix(uniform, tunes[0], last_bars[0]))


def test_generation_uses_the_end_gate_in_the_last_bar_of_a_known_end_only(checkpoints):
    net, _, ckpt = load_checkpoint(checkpoints[0])
    base = CopyModel(beta=4.0, gate=[4.0] * len(BUCKET_EDGES))
    ended = CopyModel(beta=4.0, gate=[4.0] * len(BUCKET_EDGES), end_gate=[-20.0] * len(BUCKET_EDGES))
    folder = checkpoints[0].parent
    a = Generator(save_checkpoint(folder / "base.pt", net, TOK, short_term=base.to_dict()))
    b = Generator(save_checkpoint(folder / "ended.pt", net, TOK, short_term=ended.to_dict()))
    steps = TOK.bar_steps("4/4") + 1  # the last bar's steps and EOS
    differ = same = 0
    for seed in range(6):
        p = GenerationParams(bars=6, seed=seed)
        x, y = a.generate(p).melodies[0].tokens, b.generate(p).melodies[0].tokens
        assert x[:-steps] == y[:-steps]  # every bar before the last draws the same tokens
        differ += x[-steps:] != y[-steps:]
        # in a range the end is known only in its last possible bar (EOS is forced after it): one gate
        # until then, so a tune that ends earlier is the same, and one that runs on differs at most there
        ranged = GenerationParams(min_bars=5, max_bars=6, seed=seed)
        rx, ry = a.generate(ranged).melodies[0].tokens, b.generate(ranged).melodies[0].tokens
        same += rx == ry if TOK.bar_count(rx) < 6 else rx[:-steps] == ry[:-steps]
    assert differ >= 1 and same == 6


# ---- gates per form relation ------------------------------------------------------------------------

NEW, EXACT = 0, 1  # model.representation.form.RELATION_IDS


def test_relation_gates_trust_copies_in_repeated_bars_and_leave_the_rest_as_fitted():
    """A B A C tunes (B, C fresh each time): a long match is right in the third bar (exact) and wrong
    in the fourth (new). Told each bar's relation, the fit trusts copies there far more than in new
    bars; the pooled gates and beta stay exactly what ``fit`` gives, and so does the mixture wherever
    no relation is known."""
    rng = np.random.default_rng(3)
    tunes, logprobs, relations = [], [], []
    for _ in range(60):
        a, b, c = (list(rng.integers(3, 13, size=8)) for _ in range(3))
        tune = np.array([1] + a + [0] + b + [0] + a + [0] + c + [2])
        tunes.append(tune)
        logprobs.append(np.full(len(tune) - 1, -np.log(13)))
        bar = np.cumsum(tune[:-1] == 0)  # row t predicts token t + 1: its bar is the barlines up to t
        relations.append(np.where(bar == 2, EXACT, NEW))
    stats = shortterm.collect(logprobs, tunes, relations=relations)
    pooled, pooled_nats = shortterm.fit(stats)
    told, told_nats = shortterm.fit_relation_gates(stats, pooled)
    assert (told.beta, told.gate, told.end_gate) == (pooled.beta, pooled.gate, pooled.end_gate)
    assert told_nats < pooled_nats
    assert told.gate_of(6, relation=EXACT) > pooled.gate_of(6) > told.gate_of(6, relation=NEW)
    assert told.gate_of(6, relation=None) == pooled.gate_of(6) == told.gate_of(6, relation=9)  # unknown: pooled
    assert CopyModel.from_dict(json.loads(json.dumps(told.to_dict()))) == told
    uniform = np.full((len(tunes[0]) - 1, 13), -np.log(13))
    unknown = np.full(len(tunes[0]) - 1, 4)  # model.network.melody.UNKNOWN_RELATION
    assert np.array_equal(told.mix(uniform, tunes[0], relations=unknown), pooled.mix(uniform, tunes[0]))
    assert not np.allclose(told.mix(uniform, tunes[0], relations=relations[0]), pooled.mix(uniform, tunes[0]))
    with pytest.raises(ValueError, match="relation_gate"):
        CopyModel(relation_gate=[[0.0] * len(BUCKET_EDGES)])
    with pytest.raises(ValueError, match="relation"):
        shortterm.fit_relation_gates(shortterm.collect(logprobs, tunes), pooled)


def test_gate_rows_pick_the_last_bar_then_a_known_relation_then_the_pooled_gate():
    model = CopyModel(gate=[1.0] * len(BUCKET_EDGES), end_gate=[-1.0] * len(BUCKET_EDGES),
                      relation_gate=[[float(r)] * len(BUCKET_EDGES) for r in range(4)])
    rows = model.gate_rows([False, False, True, False, False], [EXACT, 4, EXACT, 3, -1])
    weights, gates = model.tables()
    assert [gates[r, 5] for r in rows] == [model.gate_of(5, relation=EXACT), model.gate_of(5),
                                           model.gate_of(5, final=True), model.gate_of(5, relation=3), model.gate_of(5)]
    assert CopyModel(gate=model.gate).gate_rows([False, True], [EXACT, EXACT]).tolist() == [0, 1]  # no relation gates


def test_generation_tells_the_short_term_model_each_bar_relation_under_a_form(tmp_path):
    """A network with a form input and a copy model with gates per relation: under a requested form each
    bar's gates are its relation's (so gates unlike the pooled ones change the melody), and where no
    form is told, or the relation gates equal the pooled ones, the bytes are those of the pooled model."""
    from model.representation.styles import STYLES
    torch.manual_seed(0)
    net = MelodyNetwork(NetworkConfig(vocab_size=TOK.vocab_size, embedding_dim=8, hidden_size=16, num_layers=1,
                                      dropout=0.0, position_dim=4, max_positions=TOK.max_bar_steps, remaining_dim=3,
                                      key_dim=3, form_dim=3, chord_dim=3, style_dim=2, styles=STYLES))
    gate = [4.0] * len(BUCKET_EDGES)
    models = {"pooled": CopyModel(beta=4.0, gate=gate),
              "same": CopyModel(beta=4.0, gate=gate, relation_gate=[gate] * 4),
              "wary": CopyModel(beta=4.0, gate=gate, relation_gate=[[-20.0] * len(BUCKET_EDGES)] * 4)}
    gens = {name: Generator(save_checkpoint(tmp_path / f"{name}.pt", net, TOK, short_term=m.to_dict()))
            for name, m in models.items()}
    differ = 0
    for seed in range(4):
        for form in ({"form": "AABB"}, {"form": "ABAC", "form_strict": True}, {"form": "none"}):
            p = GenerationParams(bars=8, seed=seed, count=2, **form)
            pooled, same, wary = ([m.tokens for m in gens[n].generate(p).melodies] for n in ("pooled", "same", "wary"))
            assert same == pooled
            if form["form"] == "none":
                assert wary == pooled  # no relation told: the pooled gates
            else:
                differ += wary != pooled
                assert wary == [m.tokens for m in gens["wary"].generate(p).melodies]  # deterministic
    assert differ >= 4
