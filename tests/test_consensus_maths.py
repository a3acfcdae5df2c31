"""The consensus maths on arrays whose answers are known by hand or from the literature."""
from __future__ import annotations

import numpy as np
import pytest

from imagesieve_server.analysis.consensus import (analyse_consensus, ambiguous_pairs, annotator_stats, crowdlab,
                                                  dawid_skene, fleiss_kappa, item_agreement, krippendorff_alpha,
                                                  label_counts, majority_vote, review_order)
from imagesieve_server.analysis.consensus.agreement import coincidence_matrix

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4 coders x 12 units
# example with missing values (values 1..5, "." = missing); nominal alpha = 0.743.
_K2011 = ["1 2 3 3 2 1 4 1 2 . . .",
          "1 2 3 3 2 2 4 1 2 5 . 3",
          ". 3 3 3 2 3 4 2 2 5 1 .",
          "1 2 3 3 2 4 4 1 2 5 1 ."]
KRIPP_2011 = np.array([[-1 if v == "." else int(v) - 1 for v in row.split()] for row in _K2011]).T  # (12, 4)

# Fleiss (1971) as on Wikipedia: 10 subjects, 14 raters, 5 categories; kappa = 0.210.
FLEISS_TABLE = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                         [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])

# 2 annotators: two agreements, two opposite splits, two more agreements on a third class.
SMALL = np.array([[0, 0], [1, 1], [0, 1], [1, 0], [2, 2], [2, 2]])


def test_krippendorff_alpha_textbook_example():
    assert KRIPP_2011.shape == (12, 4)
    assert krippendorff_alpha(KRIPP_2011) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_alpha_by_hand():
    # coincidences: o00 = o11 = 2 (one agreeing unit each, 2 ordered pairs), o01 = o10 = 2, o22 = 4
    o = coincidence_matrix(SMALL)
    assert np.allclose(o, [[2, 2, 0], [2, 2, 0], [0, 0, 4]])
    # n = 12, n_c = (4, 4, 4): alpha = 1 - (n - 1) * 4 / (144 - 48) = 1 - 44 / 96
    assert krippendorff_alpha(SMALL) == pytest.approx(1 - 44 / 96)
    assert krippendorff_alpha(SMALL[:4]) == pytest.approx(1 - 7 * 4 / 32)   # the two-class part: 0.125


def test_krippendorff_alpha_perfect_chance_and_undefined():
    perfect = np.array([[0, 0, -1], [1, -1, 1], [2, 2, 2], [1, 1, 1], [0, -1, -1]])
    assert krippendorff_alpha(perfect) == pytest.approx(1.0)
    # independent uniform labels: about 0
    rng = np.random.default_rng(0)
    assert abs(krippendorff_alpha(rng.integers(0, 4, size=(4000, 3)))) < 0.03
    # systematic disagreement: negative
    assert krippendorff_alpha(np.array([[0, 1], [1, 0], [0, 1], [1, 0]])) < 0
    # undefined: one class only, or no image with two labels
    assert np.isnan(krippendorff_alpha(np.array([[1, 1], [1, 1]])))
    assert np.isnan(krippendorff_alpha(np.array([[0, -1], [-1, 1]])))


def test_fleiss_kappa_textbook_and_errors():
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.210, abs=5e-4)
    assert fleiss_kappa(label_counts(np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]]))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(label_counts(KRIPP_2011))
    with pytest.raises(ValueError):
        fleiss_kappa(np.array([1, 2, 3]))


def test_counts_agreement_and_validation():
    labels = np.array([[0, 2, -1], [1, 1, 1], [-1, -1, -1]])
    assert label_counts(labels, 3).tolist() == [[1, 0, 1], [0, 3, 0], [0, 0, 0]]
    ag = item_agreement(labels, np.array([2, 1, 0]), 3)
    assert ag[:2].tolist() == [0.5, 1.0] and np.isnan(ag[2])
    for bad in (np.array([0, 1]), np.array([[0, -2]]), np.array([[0.0, 1.0]]), np.full((2, 2), -1),
                np.zeros((0, 3), dtype=int)):
        with pytest.raises(ValueError):
            label_counts(bad)
    with pytest.raises(ValueError, match="out of range"):
        label_counts(np.array([[0, 3]]), 3)
    with pytest.raises(ValueError, match="pred_probs"):
        majority_vote(np.array([[0, 1]]), 2, np.ones((1, 3)))


def test_majority_vote_ties():
    labels = np.array([[0, 0, 1], [0, 1, -1], [2, 1, -1], [-1, -1, -1], [1, 1, 2]])
    plain = majority_vote(labels, 3)
    # ties go to the overall most frequent class (1: 5 votes), then the lowest index
    assert plain.consensus.tolist() == [0, 1, 1, -1, 1]
    assert plain.quality[0] == pytest.approx(2 / 3) and plain.quality[3] == 0.0
    probs = np.array([[.1, .8, .1], [.9, .05, .05], [.7, .1, .2], [.1, .1, .8], [.3, .3, .4]])
    with_model = majority_vote(labels, 3, probs)
    # the model breaks ties only among the tied classes, and labels the unlabelled image
    assert with_model.consensus.tolist() == [0, 0, 2, 2, 1]


def _simulate(n, k, accuracies, rng, coverage=1.0):
    y = rng.integers(0, k, n)
    labels = np.full((n, len(accuracies)), -1)
    for j, acc in enumerate(accuracies):
        take = rng.random(n) < coverage
        wrong = rng.random(n) >= acc
        other = (y + rng.integers(1, k, n)) % k
        labels[take, j] = np.where(wrong, other, y)[take]
    return y, labels


def test_dawid_skene_recovers_a_systematically_wrong_annotator():
    rng = np.random.default_rng(1)
    y, labels = _simulate(900, 3, [0.75, 0.75], rng)
    labels = np.column_stack([labels, (y + 1) % 3])          # always calls k "k+1": wrong, but informative
    ds = dawid_skene(labels, 3)
    conf = ds.confusions[2]
    assert np.all(conf[np.arange(3), (np.arange(3) + 1) % 3] > 0.9)   # the permutation is learned
    assert np.mean(ds.consensus == y) > 0.97
    assert np.mean(ds.consensus == y) > np.mean(majority_vote(labels, 3).consensus == y) + 0.2
    stats = annotator_stats(labels, ds.posterior, ds.consensus, 3)
    assert stats.estimated_accuracy[2] < 0.05 and stats.agreement_with_consensus[2] < 0.05


def test_dawid_skene_ranks_annotators_and_uses_the_model():
    rng = np.random.default_rng(2)
    true_acc = [0.45, 0.6, 0.75, 0.9]
    y, labels = _simulate(1500, 4, true_acc, rng, coverage=0.5)
    ds = dawid_skene(labels, 4)
    est = annotator_stats(labels, ds.posterior, ds.consensus, 4).estimated_accuracy
    assert np.all(np.diff(est) > 0)                           # same order as the true accuracies
    assert np.max(np.abs(est - true_acc)) < 0.08
    # a model right 80% of the time (probability 0.7 on its pick) as prior
    pick = np.where(rng.random(len(y)) < 0.8, y, (y + 1) % 4)
    probs = np.full((len(y), 4), 0.1)
    probs[np.arange(len(y)), pick] = 0.7
    with_model = dawid_skene(labels, 4, probs)
    assert np.mean(with_model.consensus == y) > np.mean(ds.consensus == y) + 0.02
    assert np.allclose(with_model.posterior.sum(axis=1), 1.0)
    assert np.allclose(with_model.quality, with_model.posterior.max(axis=1))
    # model_weight 0 ignores the model
    assert np.array_equal(dawid_skene(labels, 4, probs, model_weight=0).consensus, ds.consensus)
    with pytest.raises(ValueError):
        dawid_skene(labels, 4, max_iter=0)


def test_crowdlab_weights_and_posterior():
    rng = np.random.default_rng(3)
    y, labels = _simulate(800, 3, [0.5, 0.8, 0.95], rng, coverage=0.6)
    labels[(labels < 0).all(axis=1), 2] = y[(labels < 0).all(axis=1)]
    probs = np.full((len(y), 3), 0.15)
    probs[np.arange(len(y)), y] = 0.7
    cl = crowdlab(labels, probs, 3)
    assert np.all(np.diff(cl.annotator_weights) > 0)
    assert cl.model_weight > 0
    assert np.allclose(cl.posterior.sum(axis=1), 1.0)
    assert np.mean(cl.consensus == y) > np.mean(majority_vote(labels, 3).consensus == y)
    with pytest.raises(ValueError):
        crowdlab(labels, None, 3)


def test_crowdlab_by_hand():
    # 2 annotators always agree; model is always right and matches them.
    labels = np.array([[0, 0], [1, 1], [0, 0], [1, 1]])
    probs = np.array([[.9, .1], [.2, .8], [.6, .4], [.3, .7]])
    cl = crowdlab(labels, probs, 2, eps=1e-3)
    # A_M = 1, A_MLC = 0.5 -> w_M = 1 * sqrt(2); a_j = 1 -> w_j = 1; P clipped to 1 - eps
    assert cl.model_weight == pytest.approx(np.sqrt(2))
    assert np.allclose(cl.annotator_weights, 1.0)
    p_big = 1 - 1e-3
    expect0 = (np.sqrt(2) * 0.9 + 2 * p_big) / (np.sqrt(2) + 2)
    assert cl.posterior[0, 0] == pytest.approx(expect0)
    assert cl.consensus.tolist() == [0, 1, 0, 1]


def test_annotator_stats_by_hand():
    labels = np.array([[0, 0, 1], [1, 1, -1], [0, 1, 1], [-1, 2, 2]])
    post = np.eye(3)[[0, 1, 1, 2]]        # consensus 0, 1, 1, 2 with certainty
    st = annotator_stats(labels, post, num_classes=3)
    assert st.num_labels.tolist() == [3, 4, 3]
    assert st.agreement_with_consensus.tolist() == pytest.approx([2 / 3, 1.0, 2 / 3])
    assert st.estimated_accuracy.tolist() == pytest.approx([2 / 3, 1.0, 2 / 3])
    # annotator 0 overlaps on images 0, 1, 2: agreeing fractions 1/2, 1, 0
    assert st.agreement_with_others[0] == pytest.approx(0.5)


def test_ambiguous_pairs_by_hand():
    pairs = ambiguous_pairs(SMALL, 3, class_names=["cat", "dog", "bird"])
    # rate(cat, dog) = (o01 + o10) / (n0 + n1) = 4 / 8; bird is never confused
    assert len(pairs) == 1 and (pairs[0].a, pairs[0].b) == (0, 1)
    assert pairs[0].annotator_rate == pytest.approx(0.5) and pairs[0].annotator_pairs == pytest.approx(4)
    assert np.isnan(pairs[0].model_rate) and pairs[0].suggestion.startswith("merge 'cat' and 'dog'")
    # the model separates them: clarify the guideline instead
    sep = ambiguous_pairs(SMALL, 3, joint=np.diag([2.0, 2.0, 2.0]), class_names=["cat", "dog", "bird"])
    assert sep[0].model_rate == 0.0 and sep[0].score == pytest.approx(0.25)
    assert sep[0].suggestion.startswith("clarify the guideline for 'cat' vs 'dog': the model separates")
    # the model confuses them too: merge
    both = ambiguous_pairs(SMALL, 3, joint=np.array([[1., 1, 0], [1, 1, 0], [0, 0, 2]]))
    assert both[0].model_rate == pytest.approx(0.5) and both[0].suggestion.startswith("merge")
    with pytest.raises(ValueError):
        ambiguous_pairs(SMALL, 3, joint=np.eye(2))
    with pytest.raises(ValueError):
        ambiguous_pairs(SMALL, 3, class_names=["a"])


def test_review_order_by_hand():
    quality = np.array([0.9, 1.0, 0.6, 0.95, 0.5])
    agreement = np.array([1.0, 0.5, 1.0, 2 / 3, np.nan])
    nl = np.array([3, 2, 1, 3, 0])
    # flagged: 1 (split), 2 (weak), 3 (split), 4 (weak); scores 0.75, 0.8, 0.808, 0.75 -> tie by quality
    assert review_order(quality, agreement, nl).tolist() == [4, 1, 2, 3]
    assert review_order(quality, agreement, nl, include_all=True).tolist() == [4, 1, 2, 3, 0]
    with pytest.raises(ValueError):
        review_order(quality, agreement[:2], nl)


def test_analyse_consensus_composes():
    rng = np.random.default_rng(4)
    y, labels = _simulate(300, 3, [0.6, 0.85, 0.9], rng)
    probs = np.full((len(y), 3), 0.2)
    probs[np.arange(len(y)), y] = 0.6
    for method in ("majority", "dawid_skene", "crowdlab"):
        res = analyse_consensus(labels, 3, probs, method=method)
        assert res.method == method and res.consensus.shape == (300,)
        assert res.joint.shape == (3, 3) and res.joint.sum() == pytest.approx(300)
        assert res.alpha == pytest.approx(krippendorff_alpha(labels))
        assert np.isfinite(res.fleiss_kappa)                  # every image has 3 labels
        assert set(res.review.tolist()) >= set(np.flatnonzero(res.agreement < 1).tolist())
    assert analyse_consensus(labels, 3).joint is None
    with pytest.raises(ValueError, match="crowdlab needs"):
        analyse_consensus(labels, 3, method="crowdlab")
    with pytest.raises(ValueError, match="unknown method"):
        analyse_consensus(labels, 3, method="vote")


def test_suggestions_follow_the_evidence():
    from imagesieve_server.analysis.consensus.ambiguity import suggest
    assert suggest("a", "b", 0.4, 0.35).startswith("merge")
    assert suggest("a", "b", 0.4, float("nan")).startswith("merge")
    assert "model separates" in suggest("a", "b", 0.3, 0.1)
    assert suggest("a", "b", 0.02, 0.3).startswith("annotators mostly agree")
    s = suggest("a", "b", 0.15, 0.12)
    assert s.startswith("clarify the guideline for 'a' vs 'b' with example images") and "15%" in s and "12%" in s
