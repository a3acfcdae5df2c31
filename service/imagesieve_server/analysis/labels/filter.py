"""Which items to show a person: the lowest-scoring fraction, and near
duplicates that carry different labels."""
from __future__ import annotations

import math

import numpy as np


def top_count(n: int, fraction: float) -> int:
    """Items flagged for the top ``fraction`` (0, 1] of n: round(fraction * n), at least 1."""
    if not (0.0 < fraction <= 1.0) or math.isnan(fraction):
        raise ValueError(f"top fraction must be in (0, 1], got {fraction}")
    return max(1, min(n, int(round(fraction * n))))


def top_fraction(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the lowest-scoring round(fraction * N) items, worst first
    (ties broken by index, stable). scores: (N,), lower = more suspect."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be (N,), got {scores.shape}")
    order = np.argsort(scores, kind="stable")
    return order[:top_count(len(scores), fraction)]


def duplicate_pairs(neighbor_idx: np.ndarray, neighbor_sims: np.ndarray, threshold: float = 0.97) -> np.ndarray:
    """(M, 2) unique pairs i < j that are neighbours with cosine >= threshold."""
    i = np.repeat(np.arange(len(neighbor_idx)), neighbor_idx.shape[1])
    j = np.asarray(neighbor_idx).ravel()
    keep = np.asarray(neighbor_sims).ravel() >= threshold
    pairs = np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)[keep]
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), dtype=np.int64)


def conflicting_duplicates(pairs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The rows of ``pairs`` (M, 2) whose two items carry different labels."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    labels = np.asarray(labels)
    return pairs[labels[pairs[:, 0]] != labels[pairs[:, 1]]]
