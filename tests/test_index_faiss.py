"""Every index kind: add with ids, search, remove by id, serialize round trip,
range search (native or emulated) against a brute-force reference."""
from __future__ import annotations

import numpy as np
import pytest

from imagesieve_server import index as fx

D = 64


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    base = rng.standard_normal((2500, D)).astype(np.float32)
    base[:, :8] += 2.0  # a shared direction, as real embeddings have
    # Near copies of 600 rows (so range searches have real matches).
    src = rng.choice(base.shape[0], 600, replace=False)
    base[src[:300]] = base[src[300:]] + rng.standard_normal((300, D)).astype(np.float32) * 0.4
    x = base / np.linalg.norm(base, axis=1, keepdims=True)
    ids = rng.choice(10**12, size=x.shape[0], replace=False).astype(np.int64)
    return x.astype(np.float32), ids


def build(kind, x, ids):
    params = {"nlist": 32, "nprobe": 32} if kind.startswith("ivf") else {}
    if kind == "ivf_pq":
        params.update(pq_m=16, pq_nbits=5)
    idx = fx.make_index(kind, D, x.shape[0], **params)
    fx.train_index(idx, x)
    fx.add(idx, x, ids)
    return idx


@pytest.mark.parametrize("kind", fx.KINDS)
def test_add_search_remove_roundtrip(kind, data):
    x, ids = data
    idx = build(kind, x, ids)
    assert fx.index_kind(idx) == kind and idx.ntotal == x.shape[0]
    sims, got = fx.search(idx, x[:100], 5)
    assert sims.dtype == np.float32 and got.dtype == np.int64 and sims.shape == (100, 5)
    assert np.mean(got[:, 0] == ids[:100]) >= (0.9 if kind == "ivf_pq" else 1.0)
    assert np.all(np.diff(sims, axis=1) <= 1e-6)
    if kind != "ivf_pq":
        np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    # Serialize / deserialize: identical results.
    blob = fx.serialize(idx)
    back = fx.deserialize(blob)
    s2, i2 = fx.search(back, x[:200], 10)
    s1, i1 = fx.search(idx, x[:200], 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    assert fx.bytes_per_vector(idx) == len(blob) / x.shape[0]
    # Remove by id: gone from results, others unaffected, ids still map right.
    gone = ids[:50]
    idx = fx.remove_ids(idx, gone)
    assert idx.ntotal == x.shape[0] - 50
    assert not np.isin(gone, fx.ids_of(idx)).any()
    _, got = fx.search(idx, x[:100], 5)
    assert not np.isin(got, gone).any()
    assert np.mean(got[50:, 0] == ids[50:100]) >= (0.9 if kind == "ivf_pq" else 1.0)
    if kind != "ivf_pq":
        np.testing.assert_allclose(fx.reconstruct(idx, ids[60:63]), x[60:63], atol=1e-6)
    # Removing absent ids is a no-op.
    assert fx.remove_ids(idx, gone).ntotal == x.shape[0] - 50


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "hnsw"])
@pytest.mark.parametrize("threshold", [0.6, 0.8])
def test_range_search_matches_brute_force(kind, threshold, data):
    x, ids = data
    idx = build(kind, x, ids)
    if kind == "hnsw":
        fx.set_search_params(idx, ef_search=256)
    q = x[:300]
    lims, sims, got = fx.range_search(idx, q, threshold, k0=4)
    assert lims.shape == (301,) and sims.dtype == np.float32 and got.dtype == np.int64
    full = q @ x.T
    found = total = 0
    for i in range(q.shape[0]):
        ref = set(ids[np.flatnonzero(full[i] >= threshold)].tolist())
        mine = set(got[lims[i]:lims[i + 1]].tolist())
        assert np.all(sims[lims[i]:lims[i + 1]] >= threshold)
        if kind == "flat":
            assert mine == ref
        assert mine <= ref
        found += len(mine)
        total += len(ref)
    assert total > 300 and found / total >= 0.99


def test_choose_kind_and_validation(data):
    x, ids = data
    assert fx.choose_kind(1000) == "flat"
    assert fx.choose_kind(fx.FLAT_MAX) in ("hnsw", "ivf_flat", "ivf_pq")
    assert fx.default_nlist(1_000_000) == 4096
    with pytest.raises(ValueError, match="unknown index kind"):
        fx.make_index("lsh", D)
    with pytest.raises(ValueError, match="divide"):
        fx.make_index("ivf_pq", D, pq_m=7)
    idx = fx.make_index("ivf_flat", D, nlist=16)
    with pytest.raises(ValueError, match="not trained"):
        fx.add(idx, x[:10], ids[:10])
    with pytest.raises(ValueError, match="at least nlist"):
        fx.train_index(idx, x[:5])
    flat = fx.make_index("flat", D)
    with pytest.raises(ValueError, match="dimension"):
        fx.add(flat, x[:, :10], ids[:10])
    with pytest.raises(ValueError, match="ids"):
        fx.add(flat, x[:10], ids[:9])
    with pytest.raises(ValueError, match="threshold"):
        fx.range_search(flat, x[:2], 2.0)
    assert fx.to_gpu(flat) is flat or fx.gpu_available()
    assert not fx.uses_gpu(flat)
