"""Index-free exact neighbours (faiss.knn / range_search_inner_product on the
caller's array) against brute force, including exact duplicates, which tie
with an item's own hit."""
from __future__ import annotations

import numpy as np
import pytest

from imagesieve_server.analysis import neighbors
from imagesieve_server.analysis.duplicates.pairs import pairs_above_threshold
from imagesieve_server.analysis.labels import rank
from imagesieve_server.analysis.neighbors import mean_found_similarity
from imagesieve_server.analysis.outliers import knn_similarity


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 32))
    x = centres[rng.integers(0, 20, 900)] + 0.6 * rng.standard_normal((900, 32))
    x[10] = x[11]                 # an exact duplicate pair
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return x, sims


def test_knn_chunks_match_brute_force_and_exclude_self(vectors):
    x, sims = vectors
    got_s, got_i = [], []
    for start, s, i in neighbors.knn_chunks(x, 5, chunk_rows=128):
        assert start == sum(len(a) for a in got_s)
        got_s.append(s)
        got_i.append(i)
    s, i = np.concatenate(got_s), np.concatenate(got_i)
    assert s.shape == i.shape == (900, 5)
    np.testing.assert_allclose(s, -np.sort(-sims, axis=1)[:, :5], atol=1e-5)
    assert not (i == np.arange(900)[:, None]).any()
    assert i[10, 0] == 11 and i[11, 0] == 10 and s[10, 0] == pytest.approx(1.0, abs=1e-6)


def test_knn_approximate_path_finds_most_true_neighbours(vectors):
    x, sims = vectors
    s, i = neighbors.knn(x, 5, exact=False)
    truth = np.argsort(-sims, axis=1)[:, :5]
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(i.tolist(), truth.tolist())])
    assert recall > 0.9, recall


def test_knn_within_a_memory_budget_searches_codes_and_answers_exact_cosines(monkeypatch, tmp_path):
    """Vectors that would fill more than half the budget as a float copy:
    IVF-PQ codes, candidates re-ranked from the caller's rows, here a
    memory-mapped file as the audit's store holds them."""
    from imagesieve_server.index import faiss_index as fi
    rng = np.random.default_rng(1)
    n, d = 12_000, 256
    centres = rng.standard_normal((400, d))
    x = centres[rng.integers(0, 400, n)] + 0.8 * rng.standard_normal((n, d))
    x[100] = x[200] + 0.05 * rng.standard_normal(d)          # a near copy
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    mapped = np.lib.format.open_memmap(tmp_path / "vectors.npy", "w+", np.float32, x.shape)
    mapped[:] = x
    mapped.flush()
    mapped = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    reranked = []
    search_reranked = fi.search_reranked
    monkeypatch.setattr(fi, "search_reranked", lambda *a, **kw: reranked.append(1) or search_reranked(*a, **kw))
    got = list(neighbors.knn_chunks(mapped, 5, exact=False, memory_bytes=x.nbytes))   # floats: 2x half of it
    assert reranked                                            # the compressed path ran
    s = np.concatenate([c[1] for c in got])
    i = np.concatenate([c[2] for c in got])
    exact_s, exact_i = neighbors.knn(x, 5, exact=True)
    found = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(i, exact_i)])
    assert found >= 0.95
    assert i[100, 0] == 200 and i[200, 0] == 100
    ok = i >= 0
    np.testing.assert_allclose(s[ok], np.einsum("nd,nkd->nk", x, x[np.where(ok, i, 0)])[ok], atol=1e-5)
    assert not (i == np.arange(n)[:, None]).any()
    reranked.clear()
    list(neighbors.knn_chunks(x[:2000], 5, exact=False, memory_bytes=1 << 40))   # room for floats: IVF-Flat
    assert not reranked


def test_range_search_upper_finds_every_pair_once(vectors):
    x, sims = vectors
    a, b, s = neighbors.range_search_upper(x, 100, 400, 0.5)
    ref_a, ref_b = np.nonzero(np.triu(sims >= 0.5, 1)[100:400])
    assert set(zip(a.tolist(), b.tolist())) == set(zip((ref_a + 100).tolist(), ref_b.tolist()))
    assert len(a) == len(ref_a) and (a < b).all()
    np.testing.assert_allclose(s, sims[a, b], atol=1e-5)
    # the batched whole-set search is the same as brute force
    pa, pb, _ = pairs_above_threshold(x, 0.5, batch_size=97)
    full_a, full_b = np.nonzero(np.triu(sims >= 0.5, 1))
    assert set(zip(pa.tolist(), pb.tolist())) == set(zip(full_a.tolist(), full_b.tolist()))


def test_neighbor_evidence_equals_the_whole_knn_lists(vectors):
    x, sims = vectors
    labels = np.arange(900) % 4
    ev = rank.neighbor_evidence(x, labels, 7, 4)
    idx, s = rank.nearest_neighbors(x, 7)
    np.testing.assert_allclose(ev.label_distribution, rank.neighbor_label_distribution(idx, labels, 4))
    np.testing.assert_allclose(ev.agreement, rank.neighbor_agreement(idx, labels))
    np.testing.assert_allclose(ev.mean_similarity, s.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(knn_similarity(x, 7), s.mean(axis=1), atol=1e-6)


def test_nearest_neighbors_scale_free_and_validates():
    x = np.eye(3, dtype=np.float32) + 0.1
    i1, _ = rank.nearest_neighbors(x, 1)
    i2, _ = rank.nearest_neighbors(x * 9, 1)
    np.testing.assert_array_equal(i1, i2)
    with pytest.raises(ValueError):
        neighbors.knn(x[:1], 1)
    with pytest.raises(ValueError):
        neighbors.knn(x, 0)


def test_missing_approximate_neighbours_are_not_counted():
    """An IVF search can return fewer than k (id -1, score -FLT_MAX): the
    evidence and the outlier similarity average over what was found."""
    sims = np.array([[0.9, -3.4e38], [0.5, 0.4], [0.8, 0.7], [0.6, -3.4e38]], np.float32)
    ids = np.array([[1, -1], [0, 2], [3, 1], [2, -1]])
    ev = rank.evidence_from_knn([(0, sims[:2], ids[:2]), (2, sims[2:], ids[2:])], np.array([0, 0, 1, 1]), 2)
    np.testing.assert_allclose(ev.mean_similarity, [0.9, 0.45, 0.75, 0.6], atol=1e-6)
    np.testing.assert_allclose(ev.label_distribution, [[1, 0], [0.5, 0.5], [0.5, 0.5], [0, 1]])
    np.testing.assert_allclose(ev.agreement, [1.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(mean_found_similarity(sims, ids), [0.9, 0.45, 0.75, 0.6], atol=1e-6)


def test_an_approximate_search_reports_while_its_index_is_built_and_stops_when_told(vectors, monkeypatch):
    """Building the IVF index for 100,000 vectors took ~15 s before the
    first chunk was answered, and a cancelled FindDuplicates ran on through
    it: the build now reports between the k-means iterations and the index's
    adds, and a report that raises stops it before any search."""
    x, _ = vectors
    monkeypatch.setattr(neighbors, "ADD_ROWS", 256)
    stages = []

    def report(stage, done, total):
        stages.append((stage, done, total))
        if done >= 512:
            raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        next(neighbors.knn_chunks(x, 5, exact=False, report=report))
    training = [("training", i, 10) for i in range(10)]
    assert stages == [("indexing", 0, 900), *training, ("indexing", 256, 900), ("indexing", 512, 900)]
    # and stops inside the k-means (its iterations report too)
    stages.clear()

    def stop_training(stage, done, total):
        stages.append((stage, done, total))
        if stage == "training" and done == 1:
            raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        next(neighbors.knn_chunks(x, 5, exact=False, report=stop_training))
    assert stages == [("indexing", 0, 900), *training[:2]]
    # without a report: answers as before
    assert next(neighbors.knn_chunks(x, 5, exact=False))[1].shape == (900, 5)     # one chunk of 900 rows
