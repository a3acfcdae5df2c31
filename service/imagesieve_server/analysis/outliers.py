"""Which images are far from all others: the mean cosine to their k nearest
neighbours (``neighbors.knn_chunks``: exact and index-free below ~50k
vectors, IVF above; never N x N), and a
robust z-score to flag the unusual ones."""
from __future__ import annotations

import numpy as np

from ..index import faiss_index as fi
from .neighbors import knn_chunks, mean_found_similarity


def knn_similarity(vectors: np.ndarray, k: int = 10, report=None) -> np.ndarray:
    """Mean cosine of each row of unit ``vectors`` (N, D) to its k nearest
    other rows: (N,) float32, in [-1, 1]; low = isolated.
    ``report(stage, done, total)``, if given, is called after each chunk."""
    x = fi.as_vectors(vectors)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(x) < 2:
        return np.ones(len(x), dtype=np.float32)
    out = np.empty(len(x), dtype=np.float32)
    for s, sims, ids in knn_chunks(x, k):
        out[s:s + len(sims)] = mean_found_similarity(sims, ids)
        if report is not None:
            report("nearest neighbours", s + len(sims), len(x))
    return out


def outlier_scores(knn_sim: np.ndarray) -> np.ndarray:
    """Robust z-score of isolation: (median - x) / (1.4826 * MAD) of the kNN
    similarities (N,); higher = more isolated."""
    s = np.asarray(knn_sim, dtype=np.float64)
    med = np.nanmedian(s)
    mad = np.nanmedian(np.abs(s - med)) * 1.4826
    return ((med - s) / max(mad, 1e-9)).astype(np.float32)


def flag_outliers(scores: np.ndarray, z: float = 3.5, max_fraction: float = 0.01) -> np.ndarray:
    """Positions of images with robust z >= ``z``, most isolated first, at
    most ``max_fraction`` of the set (and at least one: a set of 50 may
    hold one outlier). Rounded down: rounded up, "at most 1%" flagged 6 of
    522 images."""
    s = np.asarray(scores)
    order = np.argsort(-s, kind="stable")
    cap = max(1, int(np.floor(max_fraction * len(s) + 1e-9))) if len(s) else 0
    return np.asarray([i for i in order[:cap] if s[i] >= z], dtype=np.int64)
