"""The consensus check (``checks.consensus``), which the ``consensus``
command and the Consensus job both run: its parameters are validated when
built, a model asked for and impossible is an error (never a silent
fallback), and it flags the images annotators dispute, worst first.
Real data: scikit-learn's digits as the images' features, labels from
simulated annotators of known reliability."""
from __future__ import annotations

import numpy as np
import pytest

from imagesieve_server.checks import consensus


def annotate(y: np.ndarray, accuracies, rng) -> np.ndarray:
    """(N, M) labels: annotator m keeps the true label with its accuracy, else a random other class."""
    k = int(y.max()) + 1
    out = np.empty((len(y), len(accuracies)), np.int64)
    for m, acc in enumerate(accuracies):
        wrong = rng.random(len(y)) > acc
        other = (y + rng.integers(1, k, len(y))) % k
        out[:, m] = np.where(wrong, other, y)
    return out


def test_params_are_checked_when_built():
    with pytest.raises(ValueError, match="crowdlab needs the model"):
        consensus.Params(method="crowdlab", model=False)
    with pytest.raises(ValueError, match="unknown method"):
        consensus.Params(method="vote")
    with pytest.raises(ValueError, match="folds"):
        consensus.Params(folds=1)
    assert consensus.Params(model=False, folds=1).folds == 1          # no model: no folds to check
    with pytest.raises(ValueError, match="weak"):
        consensus.Params(weak=1.5)


def test_the_model_helps_and_the_disputed_images_are_flagged(digits):
    X, y = digits
    X, y = X[:600].astype(np.float32), y[:600]
    labels = annotate(y, (0.9, 0.75, 0.6), np.random.default_rng(0))
    without = consensus.run(labels, 10, None, consensus.Params(model=False))
    with_model = consensus.run(labels, 10, X, consensus.Params())
    acc = {name: float(np.mean(r.details.result.consensus == y)) for name, r in
           (("without", without), ("with", with_model))}
    assert acc["with"] > acc["without"] > 0.8, acc
    d = with_model.details
    assert d.probs.shape == (600, 10) and "5-fold" in d.model_note
    flagged = with_model.issues["weak_consensus"]
    np.testing.assert_array_equal(flagged.positions, d.result.review)
    assert np.all(np.diff(flagged.scores) >= -1e-6)               # worst first
    disputed = set(np.flatnonzero((labels != labels[:, :1]).any(axis=1)).tolist())
    assert disputed <= set(flagged.positions.tolist())
    # The images the consensus gets wrong are mostly in the review queue.
    wrong = np.flatnonzero(d.result.consensus != y)
    assert np.isin(wrong, flagged.positions).mean() >= 0.8


def test_a_model_that_cannot_be_trained_is_an_error_not_a_fallback(digits):
    X, _ = digits
    labels = np.array([[0, 0], [1, 1], [0, 1]])          # majority: 0, 1, 0 -> a class of one image
    with pytest.raises(ValueError, match="cannot be trained.*or pass --no-model$"):
        consensus.run(labels, 2, X[:3].astype(np.float32), consensus.Params(method="crowdlab"),
                      without_model="pass --no-model")
    assert consensus.run(labels, 2, None, consensus.Params(model=False)).measured == 3
    # A majority of one class: no classifier can learn it; said the same way, with the caller's words.
    one_class = np.array([[0, 1], [0, 0], [0, 0], [0, 0]])
    with pytest.raises(ValueError, match="cannot be trained.*or set no_model$"):
        consensus.run(one_class, 2, X[:4].astype(np.float32), without_model="set no_model")
