"""Which pairs of images are near duplicates: every unordered pair with cosine
similarity >= a threshold, without ever holding an N x N matrix.

- :func:`pairs_above_threshold`: exact. FAISS' brute-force range search on
  the array in place (``neighbors.range_search_upper``, no index copy) in
  query batches; each batch is compared only with itself and the rows after
  it (half the arithmetic of the full matrix, and each pair found once).
  Memory: one batch's FAISS range-search buffers and the pairs.
- :func:`knn_graph_pairs`: approximate, for very large N. Each vector's ``k``
  nearest neighbours in an approximate index (IVF or HNSW, optionally on a
  PCA-reduced copy), then the candidates are re-scored exactly in full
  dimension and thresholded. So every reported similarity is exact (no false
  pairs); a true pair can be missed (recall < 1) when the index misses it or
  when both images have more than ``k`` closer neighbours.

Inputs are ``(N, D)`` float32 L2-normalized vectors; similarities are
cosines in [-1, 1]. Results are three arrays ``(a, b, sim)`` of equal length:
int64 positions (or the caller's ``ids``) with ``a < b`` by position, and
float32 cosines, sorted by (a, b).
"""
from __future__ import annotations

from typing import Callable

from ...index import faiss_index as fi  # first: sets FAISS' OpenMP defaults
from ..neighbors import range_search_upper

import faiss  # noqa: E402
import numpy as np  # noqa: E402

Report = Callable[[str, int, int], None]
APPROX_KINDS = ("ivf_flat", "hnsw", "flat")


def check_unit_vectors(vectors, name: str = "vectors", tol: float = 1e-3) -> np.ndarray:
    """``vectors`` as float32 (N, D), checked to be L2-normalized within ``tol``."""
    x = fi.as_vectors(vectors, name=name)
    if x.shape[0]:
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        bad = np.abs(norms - 1.0) > tol
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{name} must be L2-normalized (cosine = inner product); "
                             f"row {i} has norm {norms[i]:.4f}")
    return x


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not -1.0 < t <= 1.0:
        raise ValueError(f"threshold is a cosine in (-1, 1]; got {threshold}")
    return t


def _finish(a, b, s, ids, n):
    a = np.concatenate(a).astype(np.int64) if a else np.zeros(0, np.int64)
    b = np.concatenate(b).astype(np.int64) if b else np.zeros(0, np.int64)
    s = np.concatenate(s).astype(np.float32) if s else np.zeros(0, np.float32)
    order = np.lexsort((b, a))
    a, b, s = a[order], b[order], s[order]
    if ids is not None:
        ids = fi.as_ids(ids, n)
        a, b = ids[a], ids[b]
    return a, b, s


class TooManyPairs(ValueError):
    """An exact search found more pairs than its caller can hold."""


def pairs_above_threshold(vectors, threshold: float, ids=None, batch_size: int = 1024,
                          report: Report | None = None, max_pairs: int | None = None):
    """All unordered pairs with cosine >= ``threshold``, exactly.

    ``vectors``: (N, D) float32, unit norm. ``ids``: optional (N,) int64
    returned in place of positions. ``batch_size``: queries per FAISS range
    search (memory ~ batch_size * 4 KiB of FAISS buffers plus the results).
    ``report(stage, done, total)`` is called after each batch with stage
    ``"range_search"`` and rows done out of N. ``max_pairs``: raise
    :class:`TooManyPairs` as soon as more are found (N near-identical images
    make N^2/2 pairs: 4.5 million from 3,000 blank images).

    Returns ``(a, b, sim)``: (P,) int64, (P,) int64, (P,) float32 cosines,
    position of a < position of b, sorted by (a, b).
    """
    x = check_unit_vectors(vectors)
    t = _check_threshold(threshold)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    n = len(x)
    out_a, out_b, out_s = [], [], []
    found = 0
    for s in range(0, n, batch_size):
        e = min(s + batch_size, n)
        a, b, sims = range_search_upper(x, s, e, t)
        found += len(a)
        if max_pairs is not None and found > max_pairs:
            raise TooManyPairs(f"more than {max_pairs:,} pairs of images at cosine >= {t:.3f} (after "
                               f"{e:,} of {n:,} images)")
        out_a.append(a)
        out_b.append(b)
        out_s.append(sims)
        if report is not None:
            report("range_search", e, n)
    return _finish(out_a, out_b, out_s, ids, n)


def pca_reduce(vectors: np.ndarray, dim: int, sample: int = 8192, seed: int = 0) -> np.ndarray:
    """Project unit ``vectors`` (N, D) onto their top ``dim`` principal
    directions (fitted on a seeded sample of at most ``sample`` rows) and
    re-normalize: (N, dim) float32. Used only to generate candidates."""
    n, d = vectors.shape
    if not 1 <= dim <= d:
        raise ValueError(f"reduce_dim must be in [1, {d}]; got {dim}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(n, sample), replace=False))
    xs = vectors[rows]
    mean = xs.mean(axis=0)
    xs = xs - mean
    cov = xs.T @ xs
    # Top ``dim`` eigenvectors by randomized subspace iteration (GEMMs and a
    # small QR only: a full LAPACK eigh of D x D was slow and erratic next to
    # FAISS' OpenMP threads on a loaded machine).
    p = min(d, dim + 32)
    q = np.linalg.qr(cov @ rng.standard_normal((d, p)).astype(np.float32))[0]
    for _ in range(4):
        q = np.linalg.qr(cov @ q)[0]
    w, v = np.linalg.eigh((q.T @ cov @ q).astype(np.float64))
    basis = np.ascontiguousarray((q @ v[:, ::-1][:, :dim]).astype(np.float32))
    z = vectors @ basis
    z -= mean.astype(np.float32) @ basis
    faiss.normalize_L2(z)
    return z


def _pair_dots(x: np.ndarray, a: np.ndarray, b: np.ndarray, step: int = 4096) -> np.ndarray:
    """Exact x[a[i]] . x[b[i]] for each pair, float32 (P,). Gathers into two
    reused buffers of ``step`` rows: fresh large temporaries cost more in page
    faults than the arithmetic (measured 10x slower at 400k pairs, D=1024)."""
    p, d = a.shape[0], x.shape[1]
    out = np.empty(p, dtype=np.float32)
    if p == 0:
        return out
    buf_a = np.empty((min(step, p), d), dtype=np.float32)
    buf_b = np.empty_like(buf_a)
    for s in range(0, p, step):
        e = min(s + step, p)
        m = e - s
        np.take(x, a[s:e], axis=0, out=buf_a[:m])
        np.take(x, b[s:e], axis=0, out=buf_b[:m])
        out[s:e] = np.einsum("ij,ij->i", buf_a[:m], buf_b[:m])
    return out


def knn_graph_pairs(vectors, threshold: float, k: int = 16, kind: str = "ivf_flat", ids=None,
                    reduce_dim: int | str | None = "auto", nlist: int | None = None,
                    nprobe: int | None = None, ef_search: int | None = None,
                    candidate_margin: float = 0.3, batch_size: int = 8192, seed: int = 0,
                    report: Report | None = None):
    """Approximate pairs with cosine >= ``threshold`` from a k-nearest-neighbour
    graph, for collections too large for :func:`pairs_above_threshold`.

    ``kind``: ``"ivf_flat"`` (default; trained on a sample of 64 points a
    list), ``"hnsw"``, or ``"flat"`` (exact kNN, for testing). ``k``:
    neighbours per vector (a vector with more than ``k`` duplicates closer
    than the threshold keeps only its ``k`` best, so use k >= the largest
    expected group). ``reduce_dim``: search a PCA projection of this many
    dimensions (much faster at D=1024) and keep candidates whose reduced
    cosine is >= threshold - ``candidate_margin``; every kept candidate is
    re-scored exactly in full dimension. ``nprobe`` / ``ef_search`` default
    to 8 lists / 64. ``report(stage, done, total)`` is called with stages
    ``"training"`` (k-means iterations of an IVF), ``"index"`` (vectors
    added) and ``"search"`` (queries done).

    Returns ``(a, b, sim)`` like :func:`pairs_above_threshold`; ``sim`` is
    the exact cosine (float32), so there are no false pairs, only misses.
    """
    x = check_unit_vectors(vectors)
    t = _check_threshold(threshold)
    if kind not in APPROX_KINDS:
        raise ValueError(f"kind must be one of {', '.join(APPROX_KINDS)}; got {kind!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if candidate_margin < 0:
        raise ValueError(f"candidate_margin must be >= 0; got {candidate_margin}")
    n, d = x.shape
    if n < 2:
        return _finish([], [], [], ids, n)
    if reduce_dim == "auto":
        reduce_dim = 64 if d > 128 else None
    elif reduce_dim is not None and not isinstance(reduce_dim, (int, np.integer)):
        raise ValueError(f"reduce_dim must be an int, 'auto' or None; got {reduce_dim!r}")
    z = x if reduce_dim is None or reduce_dim >= d else pca_reduce(x, int(reduce_dim), seed=seed)
    zd = z.shape[1]
    if kind == "ivf_flat":
        nl = nlist or max(1, min(fi.default_nlist(n) // 4, n // 64))
        index = fi.make_index("ivf_flat", zd, n, nlist=nl, nprobe=nprobe or 8)
        fi.train_index(index, z, max_points=64 * nl, seed=seed, report=report)
    elif kind == "hnsw":
        index = fi.make_index("hnsw", zd, n, hnsw_m=16, ef_construction=40, ef_search=ef_search or 64)
    else:
        index = fi.make_index("flat", zd, n)
    for s in range(0, n, batch_size):
        e = min(s + batch_size, n)
        fi.add(index, z[s:e], np.arange(s, e, dtype=np.int64))
        if report is not None:
            report("index", e, n)
    exact_scores = z is x
    cut = t if exact_scores else t - candidate_margin
    kk = min(k + 1, n)
    out_a, out_b = [], []
    for s in range(0, n, batch_size):
        e = min(s + batch_size, n)
        sims, nbr = fi.search(index, z[s:e], kk)
        q = np.repeat(np.arange(s, e, dtype=np.int64), kk)
        nbr = nbr.ravel()
        sims = sims.ravel()
        keep = (nbr >= 0) & (nbr != q) & (sims >= cut)
        a = np.minimum(q[keep], nbr[keep])
        b = np.maximum(q[keep], nbr[keep])
        out_a.append(a)
        out_b.append(b)
        if report is not None:
            report("search", e, n)
    a = np.concatenate(out_a)
    b = np.concatenate(out_b)
    # Each pair may be found from both ends: keep one.
    key = np.unique(a * n + b)
    a, b = key // n, key % n
    # Exact re-scoring in full dimension (one code path for every kind; the
    # cost is P * D multiply-adds for P candidates, small next to the search).
    sim = _pair_dots(x, a, b)
    keep = sim >= t
    return _finish([a[keep]], [b[keep]], [sim[keep]], ids, n)
