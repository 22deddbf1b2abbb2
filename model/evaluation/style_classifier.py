"""A style classifier on melody features: does a melody sound German, Chinese or Irish?

Issue 19 asks whether a model told a style writes in it. A classifier fitted on real tunes (the train
split, tagged by ``model.representation.styles.style_of``) is asked about held-out real tunes and
about generated melodies; ``confusion`` gives both matrices, read the same way.

**Features** (``tune_features``, ``FEATURE_NAMES``): read from the notes alone, so that neither the
absolute key nor the meter a request sets can tell the style. A generated melody's meter and length
come from the test tune it is paired with, and the Irish collections' 6/8 and 2/2 would otherwise
give the style away without a note being heard.
- ``degree_*`` (12): pitch classes relative to the tonic of the estimated key
  (``model.representation.keys.estimate_key``), weighted by duration, summing to 1. This is the
  scale itself: pentatonic or heptatonic, major or minor, the raised or flattened seventh.
- ``minor``: 1 when the estimated key is minor. The degree histogram is measured from the tonic
  either way, and this tells whether a minor third above it is the key's third.
- ``final_*`` (12): the scale degree of the last note, one-hot. Chinese songs often end on a degree
  other than the Krumhansl-Schmuckler tonic; German songs rarely do.
- ``interval_*`` (25): melodic steps between consecutive notes, in semitones clipped to +-12, as
  shares. This covers stepwise motion against leaps, repeated notes, and the pentatonic minor third.
- ``length_*`` (10): note lengths relative to the tune's *pulse* (its commonest note length, the
  shorter one on a tie), each assigned to the nearest (in log scale) of ``LENGTH_RATIOS``, as shares.
  Lengths measured against the pulse rather than the beat stay the same whether a tune is notated in
  quarters or eighths, in 6/8 or 3/4. Reels and jigs are nearly all pulse notes; songs hold notes
  at phrase ends and use dotted rhythms.
- ``rest_share``: silent steps between the first onset and the last note's end (bar padding before
  a pickup and after the last note is left out) over that span.
- ``range_octaves``, ``spread_octaves``: highest minus lowest pitch, and the duration-weighted
  standard deviation of pitch, both in octaves.
Scale-degree bigrams are left out. Their 144 values would outnumber the Chinese training tunes'
useful signal, and the interval histogram together with the degree histogram already says most of
it. Every feature is unchanged by transposition (up to a tie in key estimation) and by rebarring
the same notes in another meter (tests/test_style_classifier.py).

**Classifier** (``fit_style_classifier``): multinomial logistic regression on standardised features
(the train split's mean and spread). The training loss weights each tune by N / (K N_style), so
1,049 Chinese tunes count as much as 6,294 German ones; otherwise the classifier would learn the
prior and recall would measure the corpus mix. It adds an L2 penalty on the weights (not the biases),
and the penalty is chosen from ``L2_GRID`` by balanced accuracy (mean per-style recall) on the valid
split, the larger penalty on a tie. The fit uses Newton's method, because the loss is convex with only
(F + 1) x K parameters: it reaches the optimum in a few steps, so the chosen penalty is a property of
the data, not of an iteration count.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from model.representation.keys import estimate_key

INTERVAL_CLIP = 12
LENGTH_RATIOS = (1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1, 3 / 2, 2, 3, 4)  # note length / pulse
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
FEATURE_NAMES = (*(f"degree_{d}" for d in range(12)), "minor", *(f"final_{d}" for d in range(12)),
                 *(f"interval_{s:+d}" for s in range(-INTERVAL_CLIP, INTERVAL_CLIP + 1)),
                 *(f"length_{r:.3g}" for r in LENGTH_RATIOS), "rest_share", "range_octaves", "spread_octaves")
_LOG_RATIOS = np.log2(LENGTH_RATIOS)


# ---- features ------------------------------------------------------------------------------------
def tune_features(ids, tokenizer) -> np.ndarray:
    """The (F,) features of the module docstring for one tune's token ids; zeros for a tune without notes."""
    notes, _ = tokenizer.decode_notes(ids)
    out = np.zeros(len(FEATURE_NAMES))
    if not notes:
        return out
    pitches = np.array([n.pitch for n in notes])
    lengths = np.array([n.end - n.start for n in notes], dtype=np.float64)
    tonic, mode, _ = estimate_key(notes)
    degrees = (pitches - tonic) % 12
    i = 0
    out[i:i + 12] = np.bincount(degrees, weights=lengths, minlength=12) / lengths.sum()
    i += 12
    out[i] = float(mode == "minor")
    i += 1
    out[i + degrees[-1]] = 1.0
    i += 12
    steps = np.clip(np.diff(pitches), -INTERVAL_CLIP, INTERVAL_CLIP) + INTERVAL_CLIP
    if len(steps):
        out[i:i + 2 * INTERVAL_CLIP + 1] = np.bincount(steps, minlength=2 * INTERVAL_CLIP + 1) / len(steps)
    i += 2 * INTERVAL_CLIP + 1
    counts = Counter(lengths.tolist())
    pulse = min(counts, key=lambda length: (-counts[length], length))      # commonest, shorter on a tie
    nearest = np.abs(np.log2(lengths / pulse)[:, None] - _LOG_RATIOS[None, :]).argmin(1)
    out[i:i + len(LENGTH_RATIOS)] = np.bincount(nearest, minlength=len(LENGTH_RATIOS)) / len(notes)
    i += len(LENGTH_RATIOS)
    span = notes[-1].end - notes[0].start
    out[i] = 1.0 - lengths.sum() / span                                     # notes never overlap
    mean = float(pitches @ lengths / lengths.sum())
    out[i + 1] = (pitches.max() - pitches.min()) / 12
    out[i + 2] = math.sqrt(float((pitches - mean) ** 2 @ lengths / lengths.sum())) / 12
    return out


def features(tunes, tokenizer) -> np.ndarray:
    """(N, F) features of token sequences."""
    return np.array([tune_features(t, tokenizer) for t in tunes]).reshape(-1, len(FEATURE_NAMES))


# ---- the classifier -----------------------------------------------------------------------------
@dataclass
class StyleClassifier:
    """Multinomial logistic regression on standardised features (see the module docstring)."""
    styles: tuple[str, ...]
    mean: np.ndarray          # (F,) the training tunes' feature means
    scale: np.ndarray         # (F,) their standard deviations (1 where a feature is constant)
    weights: np.ndarray       # (F + 1, K): the last row is the bias
    l2: float
    valid_balanced_accuracy: dict = field(default_factory=dict)  # l2 -> mean valid recall, the choice's evidence

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(N, K) style probabilities of (N, F) features."""
        return _softmax(_design(x, self.mean, self.scale) @ self.weights)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N,) style indices into ``styles``."""
        return (_design(x, self.mean, self.scale) @ self.weights).argmax(1)

    def to_dict(self) -> dict:
        return {"styles": list(self.styles), "l2": self.l2, "features": len(FEATURE_NAMES),
                "valid_balanced_accuracy": {f"{k:g}": v for k, v in self.valid_balanced_accuracy.items()}}


def _design(x, mean, scale) -> np.ndarray:
    """(N, F + 1): standardised features and a column of ones for the bias."""
    x = (np.asarray(x, dtype=np.float64) - mean) / scale
    return np.hstack([x, np.ones((len(x), 1))])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def fit_logistic(x: np.ndarray, y: np.ndarray, classes: int, l2: float, start: np.ndarray | None = None,
                 iterations: int = 50) -> np.ndarray:
    """(F + 1, K) weights minimising the class-balanced mean cross-entropy of design matrix x (N, F + 1)
    (last column ones) with labels y (N,), plus l2 / 2 * |weights without bias|^2, by Newton's method
    with step halving from ``start`` (default zeros). The bias gets a tiny penalty too, so the Hessian
    is invertible (softmax weights are only defined up to a shift shared by all classes)."""
    n, d = x.shape
    counts = np.bincount(y, minlength=classes)
    if (counts == 0).any():
        raise ValueError(f"every class needs training examples, got counts {counts.tolist()}")
    w_tune = (n / (classes * counts))[y] / n                              # (N,) balanced, summing to 1
    onehot = np.eye(classes)[y]                                           # (N, K)
    penalty = np.full(d, l2)
    penalty[-1] = 1e-8

    def loss(weights):
        z = x @ weights
        log_p = z - z.max(1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
        return -float(w_tune @ (onehot * log_p).sum(1)) + 0.5 * float((penalty[:, None] * weights ** 2).sum())

    weights = np.zeros((d, classes)) if start is None else start.copy()
    current = loss(weights)
    for _ in range(iterations):
        p = _softmax(x @ weights)                                         # (N, K)
        grad = x.T @ (w_tune[:, None] * (p - onehot)) + penalty[:, None] * weights   # (d, K)
        # Hessian blocks (a, b): X^T diag(w (p_a [a == b] - p_a p_b)) X, flattened class-major
        hess = np.zeros((classes * d, classes * d))
        for a in range(classes):
            for b in range(a, classes):                                   # symmetric: b >= a, then mirrored
                c = w_tune * p[:, a] * ((a == b) - p[:, b])
                hess[a * d:(a + 1) * d, b * d:(b + 1) * d] = (x * c[:, None]).T @ x
                hess[b * d:(b + 1) * d, a * d:(a + 1) * d] = hess[a * d:(a + 1) * d, b * d:(b + 1) * d].T
        hess += np.diag(np.tile(penalty, classes))
        step = np.linalg.solve(hess, grad.T.reshape(-1)).reshape(classes, d).T
        t = 1.0
        while t > 1e-6 and loss(weights - t * step) > current:
            t /= 2
        weights = weights - t * step
        previous, current = current, loss(weights)
        if previous - current < 1e-10:
            break
    return weights


def balanced_accuracy(matrix: np.ndarray) -> float:
    """Mean per-class recall of a confusion matrix (rows: true class), over classes that have examples."""
    rows = matrix.sum(1)
    return float(np.mean(np.diag(matrix)[rows > 0] / rows[rows > 0]))


def fit_style_classifier(train_by_style: dict, valid_by_style: dict, tokenizer,
                         l2_grid=L2_GRID) -> StyleClassifier:
    """Fit on ``train_by_style`` ({style: token sequences}) for each penalty in ``l2_grid`` and keep
    the one whose balanced accuracy on ``valid_by_style`` is highest (the larger penalty on a tie).
    Penalties are fitted from the largest down, each starting from the last one's weights (the same
    optimum, fewer Newton steps)."""
    if not l2_grid:
        raise ValueError("l2_grid must hold at least one penalty, got none")
    styles = tuple(train_by_style)
    x = features([t for s in styles for t in train_by_style[s]], tokenizer)
    y = np.array([k for k, s in enumerate(styles) for _ in train_by_style[s]])
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    design = _design(x, mean, scale)
    valid_x = {s: features(valid_by_style.get(s, []), tokenizer) for s in styles}
    best, scores, weights = None, {}, None
    for l2 in sorted(l2_grid, reverse=True):
        weights = fit_logistic(design, y, len(styles), l2, start=weights)
        model = StyleClassifier(styles, mean, scale, weights, l2)
        scores[l2] = balanced_accuracy(confusion_of_features(model, valid_x))
        if best is None or scores[l2] > scores[best.l2]:
            best = model
    best.valid_balanced_accuracy = dict(sorted(scores.items()))
    return best


# ---- confusion matrices -------------------------------------------------------------------------
def confusion_of_features(classifier: StyleClassifier, features_by_style: dict) -> np.ndarray:
    """(K, K) counts: row = the true (or requested) style, column = the style predicted, in
    ``classifier.styles`` order; a style missing from ``features_by_style`` gives a row of zeros."""
    k = len(classifier.styles)
    matrix = np.zeros((k, k), dtype=np.int64)
    for row, style in enumerate(classifier.styles):
        x = features_by_style.get(style)
        if x is not None and len(x):
            matrix[row] = np.bincount(classifier.predict(x), minlength=k)
    return matrix


def confusion(classifier: StyleClassifier, tunes_by_style: dict, tokenizer) -> np.ndarray:
    """``confusion_of_features`` for {style: token sequences}."""
    return confusion_of_features(classifier, {s: features(t, tokenizer) for s, t in tunes_by_style.items()})


def recall(matrix: np.ndarray, styles) -> dict:
    """{style: share of its row classified as itself} (NaN for a style without tunes)."""
    rows = matrix.sum(1)
    return {s: float(matrix[i, i] / rows[i]) if rows[i] else math.nan for i, s in enumerate(styles)}
