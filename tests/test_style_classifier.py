"""The style classifier on hand-made and seeded synthetic tunes (model/evaluation/style_classifier.py)."""
import math

import numpy as np
import pytest

from model.evaluation.style_classifier import (FEATURE_NAMES, _design, _softmax, balanced_accuracy, confusion,
                                               features, fit_logistic, fit_style_classifier, recall,
                                               tune_features)
from model.representation.corpora import transpose_tokens
from model.representation.tokens import MelodyTokenizer, Note

TOK = MelodyTokenizer()
PENTATONIC, DIATONIC = (0, 2, 4, 7, 9), (0, 2, 4, 5, 7, 9, 11)
LENGTHS = (2, 2, 2, 4, 4, 6, 8)   # grid steps (sixteenths): eighths, quarters, a dotted quarter, a half


def walk(scale, rng, notes=32, tonic=None, rests=True) -> list[Note]:
    """A seeded melody moving mostly by step through ``scale`` (degrees over a tonic near middle C)."""
    tonic = int(rng.integers(55, 67)) if tonic is None else tonic
    index, step, out = len(scale), 0, []
    for _ in range(notes):
        index = int(np.clip(index + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, 3 * len(scale) - 1))
        pitch = tonic - 12 + 12 * (index // len(scale)) + scale[index % len(scale)]
        length = int(rng.choice(LENGTHS))
        out.append(Note(pitch, step, step + length))
        step += length + (2 if rests and rng.random() < 0.1 else 0)
    return out


def tunes(scale, count, seed, meter="4/4"):
    rng = np.random.default_rng(seed)
    return [TOK.encode_notes(walk(scale, rng), meter) for _ in range(count)]


def test_features_are_named_and_the_histograms_are_shares():
    x = tune_features(tunes(DIATONIC, 1, 0)[0], TOK)
    assert x.shape == (len(FEATURE_NAMES),)
    assert x[:12].sum() == pytest.approx(1.0)                       # degrees
    assert x[13:25].sum() == 1.0                                     # the final degree, one-hot
    assert x[25:50].sum() == pytest.approx(1.0)                      # intervals
    assert x[50:60].sum() == pytest.approx(1.0)                      # lengths over the pulse
    assert not tune_features(TOK.encode_notes([], "4/4"), TOK).any()  # no notes: zeros


def test_features_do_not_change_when_a_tune_is_transposed():
    for ids in tunes(DIATONIC, 10, 1) + tunes(PENTATONIC, 10, 2):
        for semitones in (2, -5):
            moved = transpose_tokens(ids, semitones, TOK)
            assert moved is not None
            np.testing.assert_allclose(tune_features(moved, TOK), tune_features(ids, TOK), atol=1e-12)


def test_features_do_not_change_with_the_meter_or_the_notated_unit():
    rng = np.random.default_rng(3)
    for _ in range(10):
        notes = walk(DIATONIC, rng)
        base = tune_features(TOK.encode_notes(notes, "4/4"), TOK)
        for meter in ("3/4", "6/8", "2/2"):                          # the same notes barred otherwise
            np.testing.assert_allclose(tune_features(TOK.encode_notes(notes, meter), TOK), base, atol=1e-12)
        # every length doubled (written in quarters instead of eighths), and a pickup's leading rests
        doubled = [Note(n.pitch, 2 * n.start + 4, 2 * n.end + 4) for n in notes]
        np.testing.assert_allclose(tune_features(TOK.encode_notes(doubled, "3/4"), TOK), base, atol=1e-12)


def test_the_features_hear_the_scale_the_rests_and_the_ending():
    # C D E G A held as quarters, a rest of a quarter between the 4th and 5th notes, ending on A (degree 9)
    notes = [Note(60, 0, 4), Note(62, 4, 8), Note(64, 8, 12), Note(67, 12, 16), Note(69, 20, 24),
             Note(67, 24, 28), Note(64, 28, 32), Note(62, 32, 36), Note(60, 36, 44), Note(69, 44, 48)]
    x = dict(zip(FEATURE_NAMES, tune_features(TOK.encode_notes(notes, "4/4"), TOK)))
    assert x["degree_5"] == x["degree_11"] == 0.0 and x["degree_0"] == pytest.approx(12 / 44)
    assert x["final_9"] == 1.0
    assert x["rest_share"] == pytest.approx(4 / 48)
    assert x["length_1"] == pytest.approx(0.9) and x["length_2"] == pytest.approx(0.1)
    assert x["range_octaves"] == pytest.approx(9 / 12)


def test_the_classifier_tells_pentatonic_from_diatonic_tunes_it_has_not_seen():
    train = {"pentatonic": tunes(PENTATONIC, 60, 10), "diatonic": tunes(DIATONIC, 60, 11)}
    valid = {"pentatonic": tunes(PENTATONIC, 20, 12), "diatonic": tunes(DIATONIC, 20, 13)}
    test = {"pentatonic": tunes(PENTATONIC, 40, 14, "3/4"), "diatonic": tunes(DIATONIC, 40, 15, "6/8")}
    classifier = fit_style_classifier(train, valid, TOK, l2_grid=(1e-2, 1e-1, 1.0))
    assert classifier.styles == ("pentatonic", "diatonic")
    assert set(classifier.valid_balanced_accuracy) == {1e-2, 1e-1, 1.0}
    assert classifier.valid_balanced_accuracy[classifier.l2] == max(classifier.valid_balanced_accuracy.values())
    matrix = confusion(classifier, test, TOK)
    assert balanced_accuracy(matrix) >= 0.95, matrix
    p = classifier.probabilities(features(test["pentatonic"], TOK))
    assert p.shape == (40, 2) and np.allclose(p.sum(1), 1.0)


def test_confusion_counts_add_up_and_a_missing_style_has_an_empty_row():
    train = {"pentatonic": tunes(PENTATONIC, 30, 20), "diatonic": tunes(DIATONIC, 30, 21),
             "other": tunes((0, 3, 5, 7, 10), 30, 22)}
    classifier = fit_style_classifier(train, train, TOK, l2_grid=(0.1,))
    asked = {"pentatonic": tunes(PENTATONIC, 7, 23), "diatonic": tunes(DIATONIC, 5, 24)}
    matrix = confusion(classifier, asked, TOK)
    assert matrix.shape == (3, 3) and matrix.dtype.kind == "i"
    assert matrix.sum(1).tolist() == [7, 5, 0] and matrix.sum() == 12
    r = recall(matrix, classifier.styles)
    assert r["pentatonic"] == matrix[0, 0] / 7 and r["diatonic"] == matrix[1, 1] / 5 and math.isnan(r["other"])


def test_the_fit_reaches_the_balanced_penalised_optimum():
    """At the returned weights the gradient of the class-balanced, penalised loss is zero, even with
    classes of very different sizes."""
    rng = np.random.default_rng(5)
    x = np.vstack([rng.normal(0.0, 1.0, (200, 4)), rng.normal(0.7, 1.0, (20, 4)), rng.normal(-0.7, 1.0, (50, 4))])
    y = np.repeat([0, 1, 2], [200, 20, 50])
    design, l2 = _design(x, x.mean(0), x.std(0)), 0.05
    w = fit_logistic(design, y, 3, l2)
    balanced = (len(y) / (3 * np.bincount(y)))[y] / len(y)
    grad = design.T @ (balanced[:, None] * (_softmax(design @ w) - np.eye(3)[y]))
    grad[:-1] += l2 * w[:-1]
    grad[-1] += 1e-8 * w[-1]
    assert np.abs(grad).max() < 1e-8
    with pytest.raises(ValueError, match="every class needs training examples"):
        fit_logistic(design, np.zeros(len(y), dtype=int), 3, l2)
