"""Which items to show a person: the lowest-scoring fraction. (Copies of
one picture with different labels are the duplicates check's:
``checks.label_conflicts``.)"""
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
