"""ShrunkLDA (the batch audit's classifier) and the row protocol that lets
label scoring and the sweep train on folds and subsets without copying the
vectors, on scikit-learn's digits (real 8x8 images, 1,797 of them)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from imagesieve_server.analysis.classifiers import (EMBEDDING_CLASSIFIERS, ShrunkLDA, fit_on_rows,
                                                    make_classifier, predict_proba_on_rows)
from imagesieve_server.analysis.labels import predict


def test_lda_learns_digits_and_its_probabilities_are_distributions(digits):
    X, y = digits
    train, test = np.arange(0, 1797, 2), np.arange(1, 1797, 2)
    lda = fit_on_rows(ShrunkLDA(), X, y, train)
    p = predict_proba_on_rows(lda, X, test)
    assert p.shape == (len(test), 10) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    acc = (lda.classes_[p.argmax(axis=1)] == y[test]).mean()
    assert acc > 0.9, acc
    # Close to scikit-learn's LDA with Ledoit-Wolf shrinkage on the same split.
    ref = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(X[train], y[train]).score(X[test], y[test])
    assert acc > ref - 0.03, (acc, ref)


def test_lda_on_rows_equals_lda_on_the_gathered_copy(digits):
    X, y = digits
    rows = np.random.default_rng(0).choice(len(X), 700, replace=False)
    in_place = ShrunkLDA(chunk_rows=64).fit_rows(X, y, rows)      # many chunks
    copied = ShrunkLDA().fit(X[rows].copy(), y[rows])
    np.testing.assert_allclose(in_place.coef_, copied.coef_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(in_place.predict_proba_rows(X, rows[:50]), copied.predict_proba(X[rows[:50]]),
                               atol=1e-6)
    np.testing.assert_array_equal(in_place.predict(X[:40]), copied.predict(X[:40]))


def test_lda_keeps_class_order_for_string_labels_and_validates(digits):
    X, y = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])[y]
    lda = make_classifier("lda").fit(X, names)
    assert list(lda.classes_) == sorted(set(names))
    assert (lda.predict(X) == names).mean() > 0.9
    with pytest.raises(ValueError, match="shrinkage"):
        ShrunkLDA(shrinkage=1.5)
    with pytest.raises(ValueError, match="2 classes"):
        ShrunkLDA().fit(X[:10], np.zeros(10))
    # A constant feature (zero variance: the corner pixels of digits) stays solvable.
    assert np.all(X[:, 0] == 0) and np.isfinite(lda.coef_).all()


def test_every_embedding_classifier_is_built_by_name():
    for name in EMBEDDING_CLASSIFIERS:
        assert hasattr(make_classifier(name), "fit")
    with pytest.raises(ValueError, match="unknown classifier"):
        make_classifier("svm")


def test_stratified_folds_spread_each_class_evenly():
    labels = np.repeat(np.arange(3), [10, 7, 2])
    folds = predict.stratified_folds(labels, 5, seed=1)
    for c, size in zip(range(3), (10, 7, 2)):
        per_fold = np.bincount(folds[labels == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == size
    np.testing.assert_array_equal(folds, predict.stratified_folds(labels, 5, seed=1))     # seeded
    assert not np.array_equal(folds, predict.stratified_folds(labels, 5, seed=2))


def test_out_of_fold_with_lda_never_predicts_an_item_from_its_own_label(digits):
    """Flip one label to a class it cannot belong to: out of fold, its
    prediction must still be its true class (the flip was never trained on)."""
    X, y = digits
    noisy = y.copy()
    noisy[0] = 7                      # item 0 is a zero
    p = predict.out_of_fold_probabilities(X, noisy, "lda", folds=5, seed=0)
    assert p[0].argmax() == 0 and p[0, 7] < 0.05


@pytest.mark.parametrize("name", ["mlp", "ensemble"])
def test_the_mlp_trains_on_a_handful_of_images(name):
    """On 8 images of 2 classes the MLP's early-stopping split failed in
    scikit-learn's words ("The test_size = 1 should be greater or equal to
    the number of classes = 2"), which ScoreLabels passed on. There it now
    trains on every image; on a set its tenth can stratify, it still stops
    early on that tenth."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 4)
    X = rng.normal(size=(8, 16)) + 3 * y[:, None]
    model = make_classifier(name, seed=0)
    model.fit(X, y)
    probs = model.predict_proba(X)
    assert probs.shape == (8, 2) and (probs.argmax(1) == y).mean() >= 0.75
    big_y = np.repeat([0, 1, 2], 40)
    big = make_classifier("mlp", seed=0).fit(rng.normal(size=(120, 16)) + 3 * big_y[:, None], big_y)
    assert big[-1].early_stopping and big[-1].validation_scores_ is not None
