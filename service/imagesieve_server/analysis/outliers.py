"""Which images are far from all others: the mean cosine to their k nearest
neighbours (FAISS, exact below ~50k vectors, IVF above; never N x N), and a
robust z-score to flag the unusual ones."""
from __future__ import annotations

import numpy as np

from ..index import faiss_index as fi


def knn_similarity(vectors: np.ndarray, k: int = 10) -> np.ndarray:
    """Mean cosine of each row of unit ``vectors`` (N, D) to its k nearest
    other rows: (N,) float32, in [-1, 1]; low = isolated."""
    x = fi.as_vectors(vectors)
    n = len(x)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < 2:
        return np.ones(n, dtype=np.float32)
    k = min(k, n - 1)
    kind = fi.choose_kind(n)
    index = fi.make_index(kind, x.shape[1], n_expected=n)
    if fi.needs_training(index):
        fi.train_index(index, x)
    fi.add(index, x, np.arange(n, dtype=np.int64))
    sims, ids = fi.search(index, x, k + 1)
    # Drop each row's own hit; where search did not return it (exact
    # duplicates tie with it), drop the last column instead.
    own = ids == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(own)
    keep[np.arange(n), drop] = False
    sims = np.where(np.isfinite(sims), sims, np.nan)[keep].reshape(n, k)
    return np.nanmean(sims, axis=1).astype(np.float32)


def outlier_scores(knn_sim: np.ndarray) -> np.ndarray:
    """Robust z-score of isolation: (median - x) / (1.4826 * MAD) of the kNN
    similarities (N,); higher = more isolated."""
    s = np.asarray(knn_sim, dtype=np.float64)
    med = np.nanmedian(s)
    mad = np.nanmedian(np.abs(s - med)) * 1.4826
    return ((med - s) / max(mad, 1e-9)).astype(np.float32)


def flag_outliers(scores: np.ndarray, z: float = 3.5, max_fraction: float = 0.01) -> np.ndarray:
    """Positions of images with robust z >= ``z``, most isolated first, at
    most ``max_fraction`` of the set."""
    s = np.asarray(scores)
    order = np.argsort(-s, kind="stable")
    cap = max(1, int(np.ceil(max_fraction * len(s)))) if len(s) else 0
    return np.asarray([i for i in order[:cap] if s[i] >= z], dtype=np.int64)
