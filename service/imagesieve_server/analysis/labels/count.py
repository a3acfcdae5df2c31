"""How many labels are wrong, per class pair: the confident joint
(Northcutt et al., "Confident Learning", 2021; cleanlab's ``count``).

Inputs: ``labels`` (N,) int in [0, C); ``pred_probs`` (N, C) out-of-fold.
"""
from __future__ import annotations

import numpy as np

from .rank import _check


def per_class_thresholds(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """(C,): t_j = mean p[i, j] over items given label j (0 for an absent class)."""
    labels, p = _check(labels, pred_probs)
    c = p.shape[1]
    counts = np.bincount(labels, minlength=c)
    sums = np.zeros(c)
    np.add.at(sums, labels, p[np.arange(len(labels)), labels])
    return np.divide(sums, counts, out=np.zeros(c), where=counts > 0)


def confident_joint(labels: np.ndarray, pred_probs: np.ndarray, calibrate: bool = False) -> np.ndarray:
    """(C, C) counts C[given, true]. Item i counts in (labels[i], j*) where
    j* = argmax p[i, j] over the classes j with p[i, j] >= t_j; items above
    no threshold are not counted. With ``calibrate`` the rows are rescaled
    to the given-label counts (float; sums to N), as cleanlab does."""
    labels, p = _check(labels, pred_probs)
    c = p.shape[1]
    t = per_class_thresholds(labels, p)
    above = p >= t[None, :] - 1e-12
    masked = np.where(above, p, -np.inf)
    counted = above.any(axis=1)
    true = masked.argmax(axis=1)
    cj = np.zeros((c, c))
    np.add.at(cj, (labels[counted], true[counted]), 1.0)
    if not calibrate:
        return cj.astype(np.int64)
    label_counts = np.bincount(labels, minlength=c).astype(float)
    row = cj.sum(axis=1)
    cj = cj * np.divide(label_counts, row, out=np.zeros(c), where=row > 0)[:, None]
    total = cj.sum()
    return cj / total * label_counts.sum() if total > 0 else cj


def estimated_noise_rate(joint: np.ndarray) -> float:
    """Off-diagonal mass of a (C, C) joint: the estimated fraction of wrong labels."""
    joint = np.asarray(joint, dtype=np.float64)
    if joint.ndim != 2 or joint.shape[0] != joint.shape[1]:
        raise ValueError(f"joint must be square (C, C), got {joint.shape}")
    total = joint.sum()
    return float((total - np.trace(joint)) / total) if total > 0 else 0.0


def noise_pairs(joint: np.ndarray, min_count: float = 1.0) -> list[tuple[int, int, float]]:
    """Off-diagonal (given, true, count) with count >= min_count, largest first."""
    joint = np.asarray(joint)
    out = [(i, j, float(joint[i, j])) for i in range(joint.shape[0]) for j in range(joint.shape[1])
           if i != j and joint[i, j] >= min_count]
    return sorted(out, key=lambda t: (-t[2], t[0], t[1]))
