"""The Kneser-Ney reference model: a proper distribution, the textbook estimator, better than a unigram."""
import math
from collections import Counter

import numpy as np
import pytest

from model.evaluation.ngram import KneserNeyModel, mean_nats, select_order

V = 12
BOS, EOS, PAD = 1, 2, 0


def toy_corpus(n_tunes=60, seed=0):
    """Tunes with structure: a noisy cycle 3 -> 4 -> 5 -> ... -> 9 -> 3, occasionally skipping."""
    rng = np.random.default_rng(seed)
    tunes = []
    for _ in range(n_tunes):
        x, tune = 3 + int(rng.integers(7)), [BOS]
        for _ in range(int(rng.integers(5, 30))):
            tune.append(x)
            x = 3 + (x - 3 + (1 if rng.random() < 0.85 else int(rng.integers(7)))) % 7
        tunes.append(tune + [EOS])
    return tunes


def reference_kn(tunes, order, vocab_size, support):
    """A direct dict-of-tuples implementation of interpolated modified KN, for comparison."""
    raw = [Counter() for _ in range(order + 1)]
    for t in tunes:
        for i in range(1, len(t)):
            for k in range(1, order + 1):
                if i - k + 1 >= 0:
                    raw[k][tuple(t[i - k + 1:i + 1])] += 1
    cont = [Counter() for _ in range(order + 1)]
    for k in range(1, order):
        for g in raw[k + 1]:
            cont[k][g[1:]] += 1
        for t in tunes:                                    # grams opening a tune have no left neighbour
            if len(t) >= k > 1:
                cont[k][tuple(t[:k])] += 1

    def discounts(counts):
        n = [sum(1 for c in counts.values() if c == j) for j in (1, 2, 3, 4)]
        y = n[0] / (n[0] + 2 * n[1]) if n[0] + 2 * n[1] else 0.5   # fallbacks for tiny count tables
        d = [1 - 2 * y * n[1] / n[0] if n[0] else 0.5, 2 - 3 * y * n[2] / n[1] if n[1] else 1.0,
             3 - 4 * y * n[3] / n[2] if n[2] else 1.5]
        return [min(max(x, 0.05), c) for x, c in zip(d, (1, 2, 3))]

    def prob(history, w):
        p = 1.0 / len(support) if w in support else 0.0
        for k in range(1, order + 1):
            if k - 1 > len(history):
                break
            h = tuple(history[len(history) - (k - 1):]) if k > 1 else ()
            counts = raw[k] if k == order else cont[k]
            d = discounts(counts)
            children = {g[-1]: c for g, c in counts.items() if g[:-1] == h}
            total = sum(children.values())
            if total == 0:
                continue
            gamma = sum(d[min(c, 3) - 1] for c in children.values())
            c = children.get(w, 0)
            p = (max(c - d[min(c, 3) - 1], 0) if c else 0.0) / total + gamma / total * p
        return p

    return prob


@pytest.mark.parametrize("order", [2, 3, 4])
def test_matches_a_direct_implementation_of_the_estimator(order):
    tunes = toy_corpus()
    support = set(range(V)) - {PAD, BOS}
    model = KneserNeyModel.fit(tunes, V, order=order, exclude_ids=[PAD, BOS])
    ref = reference_kn(tunes, order, V, support)
    test = toy_corpus(5, seed=1) + [[BOS, 3, 11, 4, 5, 6, EOS], [BOS, EOS]]  # 11: an unseen token
    for tune, scores in zip(test, model.score(test)):
        for i in range(1, len(tune)):
            assert math.exp(scores[i - 1]) == pytest.approx(ref(tune[:i], tune[i]), rel=1e-9)


def logprob(model, context, next_id) -> float:
    """log P(next_id | context), as the model scores it at the end of the tune context + [next_id]."""
    return float(model.score([list(context) + [next_id]])[0][-1])


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_probabilities_sum_to_one_for_seen_and_unseen_contexts(order):
    model = KneserNeyModel.fit(toy_corpus(), V, order=order, exclude_ids=[PAD, BOS])
    rng = np.random.default_rng(3)
    contexts = [[BOS] + list(rng.integers(0, V, size=int(rng.integers(0, 8)))) for _ in range(20)]
    contexts += [[BOS, 3, 4, 5, 6], [BOS, 11, 11, 11], [BOS]]  # seen, unseen (11 never occurs), start
    for ctx in contexts:
        probs = np.exp([logprob(model, ctx, w) for w in range(V)])
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
        assert probs[PAD] == 0 and probs[BOS] == 0
        assert (probs[[w for w in range(V) if w not in (PAD, BOS)]] > 0).all()


def test_full_distributions_agree_with_scores():
    model = KneserNeyModel.fit(toy_corpus(), V, order=4, exclude_ids=[PAD, BOS])
    tune = toy_corpus(1, seed=7)[0] + [11, 3]
    logp = model.log_probabilities(tune)
    assert logp.shape == (len(tune) - 1, V)
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(logp[np.arange(len(tune) - 1), tune[1:]], model.score([tune])[0], atol=1e-12)


def test_kneser_ney_beats_a_unigram_on_structured_data():
    train, test = toy_corpus(80), toy_corpus(20, seed=5)
    unigram = KneserNeyModel.fit(train, V, order=1, exclude_ids=[PAD, BOS])
    trigram = KneserNeyModel.fit(train, V, order=3, exclude_ids=[PAD, BOS])
    assert mean_nats(trigram, test) < mean_nats(unigram, test) - 0.5


def test_order_one_is_a_discounted_unigram_with_uniform_floor():
    tunes = [t for t in toy_corpus(30) if 8 not in t]       # 8 and 10, 11 never occur
    counts = Counter(w for t in tunes for w in t[1:])
    model = KneserNeyModel.fit(tunes, V, order=1, exclude_ids=[PAD, BOS])
    p = np.exp([logprob(model, [BOS], w) for w in range(V)])
    seen = sorted(counts, key=counts.get)
    assert all(p[a] <= p[b] for a, b in zip(seen, seen[1:]))  # more frequent, more probable
    assert p[8] == pytest.approx(p[10]) and p[8] == pytest.approx(p[11])  # one floor for unseen
    assert 0 < p[8] < min(p[w] for w in seen)
    assert p.sum() == pytest.approx(1.0)
    assert logprob(model, [BOS, 9, 9], 3) == logprob(model, [BOS], 3)  # order 1 ignores the history


def test_select_order_and_save_load_round_trip(tmp_path):
    train, valid = toy_corpus(60), toy_corpus(15, seed=2)
    model, table = select_order(train, valid, V, orders=[1, 2, 3, 4], exclude_ids=[PAD, BOS])
    assert set(table) == {1, 2, 3, 4} and model.order == min(table, key=table.get)
    assert table[model.order] < table[1]
    path = tmp_path / "kn.npz"
    model.save(str(path))
    loaded = KneserNeyModel.load(str(path))
    assert loaded.order == model.order
    for a, b in zip(loaded.score(valid), model.score(valid)):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="order"):
        KneserNeyModel.fit(toy_corpus(), V, order=0)
    with pytest.raises(ValueError, match="token ids"):
        KneserNeyModel.fit([[BOS, V + 3]], V)
    with pytest.raises(ValueError, match="token ids"):          # a next token out of the vocabulary
        KneserNeyModel.fit(toy_corpus(), V, order=2).score([[BOS, V]])
