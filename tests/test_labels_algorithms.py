"""The label-scoring functions on small arrays whose answers are computed by hand."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from imagesieve_server.analysis.labels import count, filter as filt, predict, rank, score_labels

LABELS = np.array([0, 0, 1, 1, 2])
PROBS = np.array([[0.9, 0.1, 0.0],
                  [0.2, 0.7, 0.1],
                  [0.1, 0.8, 0.1],
                  [0.6, 0.3, 0.1],
                  [0.1, 0.1, 0.8]])


def test_self_confidence_and_labelfix_inner_product():
    np.testing.assert_allclose(rank.self_confidence(LABELS, PROBS), [0.9, 0.2, 0.8, 0.3, 0.8])
    np.testing.assert_allclose(rank.labelfix_score(LABELS, PROBS), [0.9, 0.2, 0.8, 0.3, 0.8])


def test_normalized_margin():
    # (p_given - max other + 1) / 2
    np.testing.assert_allclose(rank.normalized_margin(LABELS, PROBS), [0.9, 0.25, 0.85, 0.35, 0.85])


def test_thresholds_and_confident_joint():
    # t_j = mean p[:, j] over items labelled j: t0 = (.9+.2)/2, t1 = (.8+.3)/2, t2 = .8
    np.testing.assert_allclose(count.per_class_thresholds(LABELS, PROBS), [0.55, 0.55, 0.8])
    cj = count.confident_joint(LABELS, PROBS)
    # item 1 (given 0) is confidently 1; item 3 (given 1) is confidently 0
    np.testing.assert_array_equal(cj, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert count.estimated_noise_rate(cj) == pytest.approx(0.4)
    assert count.noise_pairs(cj) == [(0, 1, 1.0), (1, 0, 1.0)]


def test_confident_joint_skips_items_below_every_threshold_and_calibrates():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.2, 0.8]])
    # t0 = 0.7, t1 = 0.8: item 1 (0.5, 0.5) clears neither
    np.testing.assert_array_equal(count.confident_joint(labels, probs), [[1, 0], [0, 2]])
    # calibrated: each row rescaled to its label count (2, 2), total N = 4
    np.testing.assert_allclose(count.confident_joint(labels, probs, calibrate=True), [[2, 0], [0, 2]])


def test_top_fraction_worst_first_and_rounding():
    scores = rank.self_confidence(LABELS, PROBS)
    np.testing.assert_array_equal(filt.top_fraction(scores, 0.4), [1, 3])
    np.testing.assert_array_equal(filt.top_fraction(scores, 0.01), [1])  # at least one
    assert filt.top_count(1000, 0.03) == 30
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="top fraction"):
            filt.top_fraction(scores, bad)


def test_neighbours_exclude_self_and_agreement():
    # three points near (1, 0) labelled 0, 0, 1; three near (0, 1) labelled 1
    v = np.array([[1, 0.05], [1, -0.05], [1, 0], [0.05, 1], [-0.05, 1], [0, 1]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1, 1, 1])
    idx, sims = rank.nearest_neighbors(v * 7.0, k=2)  # scale must not matter (cosine)
    assert idx.shape == (6, 2) and not (idx == np.arange(6)[:, None]).any()
    assert set(idx[2]) == {0, 1} and set(idx[0]) == {1, 2}
    assert np.all(sims <= 1.0 + 1e-6) and np.all(np.diff(sims, axis=1) <= 1e-6)
    np.testing.assert_allclose(rank.neighbor_agreement(idx, labels), [0.5, 0.5, 0.0, 1, 1, 1])
    dist = rank.neighbor_label_distribution(idx, labels, 2)
    np.testing.assert_allclose(dist[2], [1.0, 0.0])
    blended = rank.blend_with_neighbors(np.full((6, 2), 0.5), dist, 0.5)
    np.testing.assert_allclose(blended[2], [0.75, 0.25])


def test_exact_duplicates_keep_k_neighbours():
    v = np.array([[1, 0], [1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    idx, sims = rank.nearest_neighbors(v, k=1)
    assert idx[0, 0] == 1 and idx[1, 0] == 0


def test_labelfix_four_steps_by_hand():
    # 1-D points; labelfix with an in-sample 3-NN classifier (each point is its own neighbour).
    # Point x=2 is labelled 1 but its 3 nearest (2, 1, 0) carry 1, 0, 0 -> p = (2/3, 1/3),
    # score <one_hot(1), p> = 1/3, the lowest; x=0 and x=1 get 2/3; the far cluster 1.
    X = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    y = np.array([0, 0, 1, 1, 1, 1])
    res = score_labels(X, y, method="labelfix", classifier=lambda seed: KNeighborsClassifier(3),
                       top_fraction=1 / 6, neighbors=0)
    np.testing.assert_allclose(res.scores, [2 / 3, 2 / 3, 1 / 3, 1, 1, 1])
    np.testing.assert_array_equal(res.suspects, [2])
    assert res.suggested[2] == 0 and res.suggested_probability[2] == pytest.approx(2 / 3)


def test_out_of_fold_rows_never_see_their_own_label():
    # With a 1-NN classifier, out-of-fold probabilities are one-hot on another item's label.
    X = np.array([[0.0], [0.1], [5.0], [5.1]])
    y = np.array([0, 0, 1, 0])
    probs = predict.out_of_fold_probabilities(X, y, lambda s: KNeighborsClassifier(1), folds=4)
    # item 3 (x=5.1, labelled 0) is predicted from item 2 (x=5.0, labelled 1) and vice versa
    np.testing.assert_allclose(probs, [[1, 0], [1, 0], [1, 0], [0, 1]])


def test_validation_errors_are_clear():
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match="2 distinct classes"):
        score_labels(X, np.zeros(4, int))
    with pytest.raises(ValueError, match="unknown method"):
        score_labels(X, np.array([0, 1, 0, 1]), method="magic")
    with pytest.raises(ValueError, match="folds"):
        score_labels(X, np.array([0, 1, 0, 1]), folds=1)
    with pytest.raises(ValueError, match="rows"):
        score_labels(X, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="unknown classifier"):
        score_labels(X, np.array([0, 1, 0, 1]), classifier="svm")
    with pytest.raises(ValueError, match="pred_probs"):
        rank.self_confidence(np.array([0]), np.array([0.5, 0.5]))


def test_ensemble_and_cnn_classifiers_fit_real_digits():
    from sklearn.datasets import load_digits

    from imagesieve_server.analysis.classifiers import make_classifier

    X, y = load_digits(return_X_y=True)
    for name, feats in (("ensemble", X), ("cnn", X.reshape(-1, 8, 8) / 16.0)):
        model = make_classifier(name, seed=0)
        if name == "cnn":
            model.epochs = 5
        model.fit(feats[:1200], y[:1200])
        p = model.predict_proba(feats[1200:])
        assert p.shape == (len(y) - 1200, 10)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
        assert (model.predict(feats[1200:]) == y[1200:]).mean() > 0.8, name


def test_pixel_cnn_stops_at_the_next_mini_batch_when_told():
    """A cancelled job's CNN stops within one mini-batch, not at the end of
    its fold (what ScoreLabels' pixels path relies on)."""
    from imagesieve_server.analysis.classifiers import PixelsAndEmbeddings

    class Stop(Exception):
        pass

    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise Stop

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (600, 16, 16), dtype=np.uint8)
    est = PixelsAndEmbeddings(pixels, rng.normal(size=(600, 8)).astype(np.float32), "lda", check=check)
    with pytest.raises(Stop):
        est.fit(np.arange(600)[:, None], rng.integers(0, 3, 600))
    assert len(calls) == 3          # 600 images = 5 mini-batches an epoch, 15 in all: stopped at the third


def test_torch_is_looked_up_not_imported():
    """A server asks on its event loop: importing torch there stalled every call ~1 s."""
    import subprocess
    import sys
    code = ("import sys; from imagesieve_server.analysis.classifiers import torch_available; "
            "print(torch_available(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]


def test_pixel_scorer_folds_need_two_classes_like_named_classifiers():
    """The pixel path's factory asks for two classes in every fold's training
    images, so a hopeless split gets the clear fold message."""
    from imagesieve_server.analysis.classifiers import pixels_and_embeddings
    rng = np.random.default_rng(0)
    factory = pixels_and_embeddings(rng.integers(0, 255, (7, 8, 8), dtype=np.uint8), rng.normal(size=(7, 4)))
    with pytest.raises(ValueError, match="one class"):
        score_labels(np.arange(7)[:, None], np.array([0] * 6 + [1]), classifier=factory, folds=2,
                     neighbor_vectors=rng.normal(size=(7, 4)))


def test_label_checks_say_why_they_were_skipped():
    """An audit of a project folder put every image in one class (its one
    subfolder, 'res'); the notes said only "needs a label for every image
    and at least 2 classes", though every image had one. They now name the
    reason: the single class, or how many images lack a label."""
    from imagesieve_server.checks import label_issues, sample_size

    x = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
    one_class = ["res"] * 120
    for result in (label_issues.run(x, one_class), sample_size.run(x, one_class)):
        assert result.measured == 0
        assert any("one class ('res')" in n for n in result.notes), result.notes
    some_missing = ["a", "b"] * 59 + ["", ""]
    assert any("2 of 120 images have no label" in n for n in label_issues.run(x, some_missing).notes)
