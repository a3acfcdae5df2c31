"""Groups that do not chain unrelated images; leakage; calibration."""
from __future__ import annotations

import numpy as np
import pytest

from imagesieve_server.analysis.duplicates import (bounded_groups, connected_components,
                                                   cross_split_pairs, false_pairs_per_1k,
                                                   group_min_similarity, rate_for_per_1k,
                                                   groups_from_labels, label_conflicts,
                                                   leaked_items, pairs_above_threshold,
                                                   suggest_threshold, threshold_table)


def unit(angles_deg):
    """Unit vectors in a plane at the given angles (cosine = cos of the gap)."""
    r = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    v = np.zeros((r.size, 4), dtype=np.float32)
    v[:, 0], v[:, 1] = np.cos(r), np.sin(r)
    return v


def test_chain_is_one_component_but_split_by_bounded_groups():
    # A chain at 0, 20, 40, 60, 80 degrees: neighbours have cosine 0.940, two
    # steps apart 0.766 (unrelated at t=0.9). F, G unrelated to all, 10 deg apart.
    x = unit([0, 20, 40, 60, 80, 150, 160])
    x[5:, 2] = 0.0
    n, t = x.shape[0], 0.9
    a, b, s = pairs_above_threshold(x, t)
    assert set(zip(a.tolist(), b.tolist())) == {(0, 1), (1, 2), (2, 3), (3, 4), (5, 6)}
    cc = connected_components(n, a, b)
    assert np.unique(cc[:5]).size == 1 and cc[5] == cc[6] and cc[0] != cc[5]
    assert group_min_similarity(x, groups_from_labels(cc))[0] < t  # the chain breaks the bound
    for mode in ("complete", "centre"):
        lab = bounded_groups(n, a, b, s, t, mode=mode)
        assert np.unique(lab[:5]).size >= 2, mode  # the chain is split
        assert lab[5] == lab[6]
        for g in groups_from_labels(lab):
            sims = x[g] @ x[g].T
            if mode == "complete":  # every member to every other
                assert sims[np.triu_indices(g.size, 1)].min() >= t
            else:  # every member to one centre
                assert np.any(np.all(sims >= t - 1e-6, axis=1))
    # A on its own: A~B~C is a single star around B, but not a clique.
    a3, b3, s3 = pairs_above_threshold(x[:3], t)
    assert np.unique(bounded_groups(3, a3, b3, s3, t, mode="centre")).size == 1
    assert np.unique(bounded_groups(3, a3, b3, s3, t, mode="complete")).size == 2


def test_bounded_groups_respect_bound_on_random_data():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((40, 16))
    x = np.repeat(base, 6, axis=0) + rng.standard_normal((240, 16)) * 0.35
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    t = 0.9
    a, b, s = pairs_above_threshold(x, t)
    lab = bounded_groups(x.shape[0], a, b, s, t)
    groups = groups_from_labels(lab)
    assert groups, "the data has duplicate groups"
    assert np.all(group_min_similarity(x, groups) >= t)
    # centre mode: every member is >= t to its centre (some member).
    for g in groups_from_labels(bounded_groups(x.shape[0], a, b, s, t, mode="centre")):
        sims = x[g] @ x[g].T
        assert np.any(np.all(sims >= t - 1e-6, axis=1))
    # Connected components are a coarsening of bounded groups.
    cc = connected_components(x.shape[0], a, b)
    for g in groups:
        assert np.unique(cc[g]).size == 1
    # A pair list at a lower threshold regroups at a higher one.
    a2, b2, s2 = pairs_above_threshold(x, 0.8)
    np.testing.assert_array_equal(bounded_groups(x.shape[0], a2, b2, s2, t), lab)


def test_group_min_similarity_hand_made():
    x = unit([0, 30, 60, 90, 100])
    got = group_min_similarity(x, [np.array([0, 1, 2]), np.array([3, 4]), np.array([4])])
    np.testing.assert_allclose(got[:2], [np.cos(np.deg2rad(60)), np.cos(np.deg2rad(10))], atol=1e-6)
    assert np.isnan(got[2])


def test_labels_and_groups_validation():
    assert connected_components(3, [], []).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="positions"):
        connected_components(3, [0], [3])
    with pytest.raises(ValueError, match="same length"):
        bounded_groups(3, [0, 1], [1], [0.9], 0.9)
    with pytest.raises(ValueError, match="mode"):
        bounded_groups(3, [0], [1], [0.95], 0.9, mode="single")
    with pytest.raises(ValueError, match="one value a pair"):
        bounded_groups(3, [0], [1], [0.95, 0.9], 0.9)


def test_leakage_and_label_conflicts():
    a = np.array([0, 1, 2, 3, 4])
    b = np.array([1, 2, 5, 4, 5])
    splits = np.array(["train", "train", "test", "val", "", "test"])
    labels = np.array([3, 3, 4, -1, 7, 4])
    np.testing.assert_array_equal(cross_split_pairs(a, b, splits),
                                  [False, True, False, True, True])
    np.testing.assert_array_equal(cross_split_pairs(a, b, splits, unknown=""),
                                  [False, True, False, False, False])
    np.testing.assert_array_equal(leaked_items(a, b, splits, "test"), [2, 5])
    np.testing.assert_array_equal(label_conflicts(a, b, labels),
                                  [False, True, False, True, True])
    np.testing.assert_array_equal(label_conflicts(a, b, labels, unknown=-1),
                                  [False, True, False, False, True])
    with pytest.raises(ValueError, match="positions"):
        label_conflicts(a, b + 10, labels)
    with pytest.raises(ValueError, match="1-D"):
        cross_split_pairs(a, b, splits.reshape(2, 3))


def test_calibration_known_answers():
    # Duplicates uniform on [0.85, 1.0]; distinct pairs uniform on [0.0, 0.92].
    rng = np.random.default_rng(0)
    pos = rng.uniform(0.85, 1.0, 200_000)
    neg = rng.uniform(0.0, 0.92, 200_000)
    rows = threshold_table(pos, neg, [0.8, 0.9, 0.95])
    exp = [(0.8, 1.0, 0.12 / 0.92), (0.9, 0.1 / 0.15, 0.02 / 0.92), (0.95, 0.05 / 0.15, 0.0)]
    for row, (t, r, f) in zip(rows, exp):
        assert row.threshold == t
        assert row.recall == pytest.approx(r, abs=0.005)
        assert row.false_pair_rate == pytest.approx(f, abs=0.003)
    # FPR <= 1% needs t >= 0.92 - 0.0092 = 0.9108; recall there = (1 - 0.9108) / 0.15.
    sug = suggest_threshold(pos, neg, max_false_pair_rate=0.01)
    assert sug.threshold == pytest.approx(0.9108, abs=0.002)
    assert sug.false_pair_rate <= 0.01
    assert sug.recall == pytest.approx((1 - 0.9108) / 0.15, abs=0.01)
    # It is the lowest such threshold: just below it the rate exceeds 1%.
    below = threshold_table(pos, neg, [np.nextafter(sug.threshold, -1)])[0]
    assert below.false_pair_rate > 0.01
    # Exact on a tiny hand-made case: one false pair of 4 allowed at 25%.
    s = suggest_threshold([0.95, 0.97], [0.1, 0.5, 0.93, 0.96], max_false_pair_rate=0.25)
    assert 0.93 < s.threshold <= 0.93 + 1e-9 and s.recall == 1.0 and s.false_pair_rate == 0.25
    with pytest.raises(ValueError, match="empty"):
        threshold_table([], neg, [0.9])
    with pytest.raises(ValueError, match="cosines"):
        suggest_threshold(pos, [2.0])
    with pytest.raises(ValueError, match="max_false_pair_rate"):
        suggest_threshold(pos, neg, 1.5)


def test_calibration_bounds_per_image():
    """0.5 false pairs per 1,000 images among 1,001 images is a per-pair rate
    of 1e-6; the table states each threshold's rate per 1k images."""
    assert rate_for_per_1k(0.5, 1001) == pytest.approx(1e-6)
    assert false_pairs_per_1k(1e-6, 1001) == pytest.approx(0.5)
    # 1,860 images at a 1% per-pair rate: ~17,000 false pairs, 9,295 per 1k.
    assert false_pairs_per_1k(0.01, 1860) == pytest.approx(9295)
    rng = np.random.default_rng(1)
    pos, neg = rng.uniform(0.85, 1.0, 10_000), rng.uniform(0.0, 0.92, 100_000)
    (row,) = threshold_table(pos, neg, [0.9], n_images=101)
    assert row.false_pairs_per_1k == pytest.approx(row.false_pair_rate * 50 * 1000)
    small = suggest_threshold(pos, neg, rate_for_per_1k(50, 1_000), n_images=1_000)
    large = suggest_threshold(pos, neg, rate_for_per_1k(50, 100_000), n_images=100_000)
    assert small.false_pairs_per_1k <= 50 and large.false_pairs_per_1k <= 50
    assert large.threshold > small.threshold          # more images, stricter threshold, same per-image bound
    with pytest.raises(ValueError, match="n_images"):
        rate_for_per_1k(0.5, 1)


def test_exact_copies_do_not_raise_the_implausible_coverage_warning():
    """A folder where most files are shipped twice (icon themes are) has
    many exact pairs: that is said as such; only near pairs covering an
    implausible share of the images get the warning."""
    from imagesieve_server.analysis.duplicates.find import find_duplicates
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    twins = np.r_[x, x[:60]]                                  # 60 files shipped twice: identical vectors and bytes
    sha = [f"h{i}" for i in range(100)] + [f"h{i}" for i in range(60)]
    keys = [str(i) for i in range(160)]
    r = find_duplicates(twins, keys, [""] * 160, [""] * 160, sha)
    assert r.exact.all() and len(r.a) == 60
    assert not any("implausible" in w for w in r.warnings)
    assert any(w.startswith("120 of the 160 images (75.0%) are byte-identical") for w in r.warnings), r.warnings
    # the same near copies, not byte-identical: now the warning stands
    near = twins + 0.01 * rng.standard_normal(twins.shape).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    r = find_duplicates(near, keys, [""] * 160, [""] * 160, [f"n{i}" for i in range(160)], threshold=0.9)
    assert len(r.a) == 60 and not r.exact.any()
    assert any("implausible" in w for w in r.warnings)
