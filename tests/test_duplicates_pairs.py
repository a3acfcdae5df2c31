"""Pairs above a threshold: exact range search equals a brute-force X @ X.T
reference on the same vectors; the approximate kNN graph finds >= 99% of them
on clustered data with planted near duplicates."""
from __future__ import annotations

import numpy as np
import pytest

from imagesieve_server.analysis.duplicates import knn_graph_pairs, pairs_above_threshold

D = 128


def clustered(n, seed=0, dup_frac=0.15, d=D):
    """Clustered, non-uniform unit vectors (Zipf cluster sizes, a shared mean
    direction, low-rank within-cluster variation) plus planted near duplicates
    at cosine 0.9-0.99 of random originals (some originals get several)."""
    rng = np.random.default_rng(seed)
    n_base = n - int(n * dup_frac)
    n_clusters = max(5, n // 40)
    w = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    c = rng.choice(n_clusters, size=n_base, p=w / w.sum())
    mu = np.abs(rng.standard_normal(d))
    mu /= np.linalg.norm(mu)
    centers = rng.standard_normal((n_clusters, d)) / np.sqrt(d)
    rank = 16
    u = np.linalg.qr(rng.standard_normal((d, rank)))[0]
    x = 0.9 * mu + 0.9 * centers[c] + 0.6 * (rng.standard_normal((n_base, rank)) / np.sqrt(rank)) @ u.T
    x += rng.standard_normal((n_base, d)) * (0.5 / np.sqrt(d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n_dup = n - n_base
    src = rng.integers(0, n_base, n_dup)
    t = rng.uniform(0.9, 0.99, n_dup)
    noise = rng.standard_normal((n_dup, d))
    xs = x[src]
    noise -= (noise * xs).sum(1, keepdims=True) * xs
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    y = t[:, None] * xs + np.sqrt(1 - t ** 2)[:, None] * noise
    v = np.vstack([x, y])[rng.permutation(n)]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v, dtype=np.float32)


def brute_force(x, t):
    s = x @ x.T
    a, b = np.nonzero(np.triu(s >= t, 1))
    return a, b, s[a, b]


@pytest.fixture(scope="module")
def vectors():
    return clustered(2000)


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9, 0.95])
def test_range_pairs_equal_brute_force(vectors, threshold):
    a, b, s = pairs_above_threshold(vectors, threshold, batch_size=300)
    ra, rb, rs = brute_force(vectors, threshold)
    assert len(ra) > 0
    assert np.all(a < b)
    got = set(zip(a.tolist(), b.tolist()))
    ref = set(zip(ra.tolist(), rb.tolist()))
    assert len(got) == len(a)  # no pair twice
    # Equal sets, up to float32 rounding (two BLAS sum orders) on pairs whose
    # cosine lies within 1e-5 of the threshold.
    full = vectors @ vectors.T
    for i, j in got ^ ref:
        assert abs(full[i, j] - threshold) < 1e-5, (i, j, full[i, j])
    assert len(got ^ ref) <= 2
    sims_ref = full[a, b]
    np.testing.assert_allclose(s, sims_ref, atol=1e-5)
    assert np.all(s >= threshold)


def test_range_pairs_ids_order_and_progress(vectors):
    calls = []
    ids = np.arange(vectors.shape[0], dtype=np.int64) * 10 + 7
    a, b, s = pairs_above_threshold(vectors, 0.9, ids=ids, batch_size=512,
                                    report=lambda *c: calls.append(c))
    pa, pb, ps = pairs_above_threshold(vectors, 0.9, batch_size=2000)
    np.testing.assert_array_equal(a, ids[pa])
    np.testing.assert_array_equal(b, ids[pb])
    np.testing.assert_allclose(s, ps, atol=1e-6)  # batch size: only float rounding
    assert calls[-1] == ("range_search", 2000, 2000)
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)


@pytest.mark.parametrize("kind,reduce_dim", [("ivf_flat", None), ("hnsw", None), ("ivf_flat", 32)])
def test_knn_graph_recall(kind, reduce_dim):
    x = clustered(6000, seed=1)
    ra, rb, _ = pairs_above_threshold(x, 0.9)
    ref = set(zip(ra.tolist(), rb.tolist()))
    assert len(ref) >= 500
    stages = set()
    a, b, s = knn_graph_pairs(x, 0.9, k=16, kind=kind, reduce_dim=reduce_dim,
                              report=lambda st, d, t: stages.add(st))
    got = set(zip(a.tolist(), b.tolist()))
    assert len(got & ref) / len(ref) >= 0.99
    assert stages == ({"training", "index", "search"} if kind.startswith("ivf") else {"index", "search"})
    # Re-scored exactly: no false pairs, exact cosines.
    full_s = np.einsum("ij,ij->i", x[a], x[b])
    np.testing.assert_allclose(s, full_s, atol=1e-5)
    assert np.all(s >= 0.9) and np.all(a < b)
    assert len(got - ref) <= 2  # only float-rounding disagreements at the threshold


def test_knn_exact_kind_matches_when_k_large(vectors):
    a, b, _ = knn_graph_pairs(vectors, 0.9, k=64, kind="flat")
    ra, rb, _ = pairs_above_threshold(vectors, 0.9)
    assert set(zip(a.tolist(), b.tolist())) == set(zip(ra.tolist(), rb.tolist()))


def test_validation(vectors):
    with pytest.raises(ValueError, match="L2-normalized"):
        pairs_above_threshold(vectors * 2, 0.9)
    with pytest.raises(ValueError, match="threshold"):
        pairs_above_threshold(vectors, 1.5)
    with pytest.raises(ValueError, match="2-D"):
        pairs_above_threshold(vectors[0], 0.9)
    with pytest.raises(ValueError, match="kind"):
        knn_graph_pairs(vectors, 0.9, kind="lsh")
    with pytest.raises(ValueError, match="reduce_dim"):
        knn_graph_pairs(vectors, 0.9, reduce_dim="half")
    with pytest.raises(ValueError, match="reduce_dim"):
        knn_graph_pairs(vectors, 0.9, reduce_dim=0)
    with pytest.raises(ValueError, match="k must"):
        knn_graph_pairs(vectors, 0.9, k=0)
    with pytest.raises(ValueError, match="ids"):
        pairs_above_threshold(vectors, 0.9, ids=np.arange(3))
    a, b, s = pairs_above_threshold(vectors[:1], 0.9)
    assert a.size == b.size == s.size == 0
