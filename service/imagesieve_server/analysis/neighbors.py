"""Which vectors are close to each vector: the k nearest others and every
other above a cosine, for a whole set, without a second copy of the vectors.

Up to ``faiss_index.FLAT_MAX`` vectors both are exact and index-free: FAISS'
blocked brute-force kernels (``faiss.knn``, ``range_search_inner_product``:
BLAS on tiles) read the caller's array in place, so memory is the tiles and
the answers, never an N x N matrix nor a copy of the vectors. Above it,
:func:`knn_chunks` searches an approximate index (IVF), which holds its own
copy of the vectors; when that copy would fill more than half of the index
memory (``faiss_index.index_memory_bytes``: ``IMAGESIEVE_INDEX_MEMORY_MB``,
the audit's ``--memory-gb``), product-quantized codes (IVF-PQ, 1/64 of the
floats at 1024-d) whose candidates are re-ranked by their exact cosine, read
from the caller's rows (which may be a memory-mapped file).

Inputs are ``(N, D)`` float32 L2-normalized rows (inner product = cosine).
"""
from __future__ import annotations

from typing import Iterator

from ..index import faiss_index as fi  # first: sets FAISS' OpenMP defaults

import faiss  # noqa: E402
import numpy as np  # noqa: E402

CHUNK_ROWS = 1024


def _drop_self(start: int, sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From k+1 answers per query, drop the query's own id; where it is not
    among them (exact duplicates tie with it), drop the last column."""
    b = len(ids)
    own = ids == np.arange(start, start + b)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(own)
    keep[np.arange(b), drop] = False
    return sims[keep].reshape(b, k), ids[keep].reshape(b, k)


ADD_ROWS = 65_536          # vectors added to an index at a time (a memory-mapped array stays paged out)


def knn_chunks(vectors: np.ndarray, k: int, chunk_rows: int = CHUNK_ROWS,
               exact: bool | None = None, memory_bytes: int | None = None, report=None
               ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The ``k`` nearest other rows of each row, ``chunk_rows`` queries at a time.

    Yields ``(start, sims (b, k) float32, ids (b, k) int64)`` for rows
    ``start .. start + b``, most similar first, each row's own hit removed;
    k is capped at N - 1. ``exact``: brute force on the array in place
    (default when N <= FLAT_MAX); else an IVF index is built, which may find
    fewer than k for a row: those slots have id -1. The index holds a float
    copy unless that would fill more than half of ``memory_bytes`` (default
    ``faiss_index.index_memory_bytes()``): then IVF-PQ codes, and ``sims``
    are still exact cosines (candidates re-ranked from ``vectors``).
    ``report(stage, done, total)``: called as the index is built, between
    its k-means iterations ("training") and its adds ("indexing"); it may
    raise to stop there (100,000 vectors take ~15 s before the first chunk,
    ~11 s of it the k-means, ~1 s an iteration).
    """
    x = fi.as_vectors(vectors)
    n = len(x)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < 2:
        raise ValueError("need at least 2 vectors for neighbours")
    k = min(int(k), n - 1)
    exact = n <= fi.FLAT_MAX if exact is None else exact
    index = None
    if not exact:
        memory = fi.index_memory_bytes() if memory_bytes is None else int(memory_bytes)
        compressed = fi.floats_overflow(n, x.shape[1], memory)
        index = fi.make_index("ivf_pq" if compressed else "ivf_flat", x.shape[1], n_expected=n)
        if report is not None:
            report("indexing", 0, n)
        if fi.needs_training(index):
            # Compressed: a seeded sample of at most 1 GiB (FAISS would draw 256 a list from the array).
            fi.train_index(index, x, max_points=fi.training_points(index) if compressed else None,
                           report=report)
        for s in range(0, n, ADD_ROWS):
            if report is not None and s:
                report("indexing", s, n)
            fi.add(index, x[s:s + ADD_ROWS], np.arange(s, min(s + ADD_ROWS, n), dtype=np.int64))
    for s in range(0, n, chunk_rows):
        q = x[s:s + chunk_rows]
        if index is None:
            sims, ids = faiss.knn(q, x, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
        elif fi.is_lossy(index):
            sims, ids = fi.search_reranked(index, q, k + 1, lambda rows: x[rows])
        else:
            sims, ids = fi.search(index, q, k + 1)
        sims, ids = _drop_self(s, sims, ids.astype(np.int64), k)
        yield s, sims, ids


def mean_found_similarity(sims: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(b,) mean of each row of kNN ``sims`` (b, k) over the neighbours found:
    an id of -1 (an approximate index found fewer than k) is not counted."""
    valid = np.asarray(ids) >= 0
    return (np.where(valid, sims, 0.0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)).astype(np.float32)


def knn(vectors: np.ndarray, k: int, exact: bool | None = None, report=None) -> tuple[np.ndarray, np.ndarray]:
    """All of :func:`knn_chunks` at once: (sims (N, k) float32, ids (N, k)
    int64); ``report(stage, done, total)`` after each chunk."""
    parts = []
    for start, sims, ids in knn_chunks(vectors, k, exact=exact):
        parts.append((start, sims, ids))
        if report is not None:
            report("nearest neighbours", start + len(ids), len(vectors))
    return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def range_search_upper(x: np.ndarray, start: int, stop: int, threshold: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i, j) with start <= i < stop, i < j < N and x[i].x[j] >=
    ``threshold``, by FAISS' exact brute-force range search of rows
    [start, stop) against rows [start, N) of ``x`` in place (contiguous
    slices: no copy). Returns (i (P,) int64, j (P,) int64, sims (P,) float32)."""
    n, d = x.shape
    queries, base = x[start:stop], x[start:]
    res = faiss.RangeSearchResult(len(queries))
    faiss.range_search_inner_product(faiss.swig_ptr(queries), faiss.swig_ptr(base), d, len(queries),
                                     len(base), fi._strict_radius(threshold), res)
    lims = faiss.rev_swig_ptr(res.lims, len(queries) + 1).astype(np.int64)
    total = int(lims[-1])
    sims = faiss.rev_swig_ptr(res.distances, total).copy()
    ids = faiss.rev_swig_ptr(res.labels, total).astype(np.int64) + start
    i = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(lims))
    keep = ids > i
    return i[keep], ids[keep], sims[keep]
