"""Checks at the edge for the consensus functions (ValueError with the reason)."""
from __future__ import annotations

import numpy as np


def check_labels(labels, num_classes: int | None = None) -> tuple[np.ndarray, int]:
    """labels: (N, M) int, -1 = missing, else in [0, K). Returns (int64 array, K).
    K defaults to max label + 1."""
    a = np.asarray(labels)
    if a.ndim != 2:
        raise ValueError(f"labels must be 2-D (N images, M annotators), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"labels must have at least one image and one annotator, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices (-1 = missing), got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False)      # no copy of an (N, M) int64 matrix per check
    if a.min() < -1:
        raise ValueError("labels must be >= 0, or -1 for missing")
    present = a[a >= 0]
    if present.size == 0:
        raise ValueError("labels has no label at all (all -1)")
    k = int(present.max()) + 1 if num_classes is None else int(num_classes)
    if k < 1:
        raise ValueError(f"num_classes must be >= 1, got {k}")
    if present.max() >= k:
        raise ValueError(f"label {present.max()} out of range for {k} classes")
    return a, k


def check_probs(pred_probs, n: int, k: int) -> np.ndarray:
    """pred_probs: (N, K) non-negative rows summing to 1 (renormalized here)."""
    p = np.asarray(pred_probs, dtype=np.float64)
    if p.shape != (n, k):
        raise ValueError(f"pred_probs must have shape ({n}, {k}), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("pred_probs must be finite and non-negative")
    s = p.sum(axis=1, keepdims=True)
    if (s <= 0).any():
        raise ValueError("every pred_probs row needs a positive sum")
    return p / s
