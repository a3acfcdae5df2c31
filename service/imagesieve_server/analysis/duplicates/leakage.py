"""Which duplicate pairs leak or contradict: pairs across dataset splits
(train vs test: the test score is inflated by images the model saw) and
pairs whose labels disagree (one of the two labels is likely wrong).

Pairs are position arrays ``a``, ``b`` ((P,) int) from :mod:`.pairs`;
``splits`` / ``labels`` are (N,) arrays of any comparable dtype (str or int).
"""
from __future__ import annotations

import numpy as np


def _take(values, a, b, name):
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (N,); got shape {values.shape}")
    a = np.asarray(a, dtype=np.int64).ravel()
    b = np.asarray(b, dtype=np.int64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length; got {a.shape[0]} and {b.shape[0]}")
    n = values.shape[0]
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n):
        raise ValueError(f"pair positions must lie in [0, {n}) ({name} has {n} entries)")
    return values[a], values[b]


def _known(va, vb, unknown):
    if unknown is None:
        return np.ones(va.shape[0], dtype=bool)
    return (va != unknown) & (vb != unknown)


def cross_split_pairs(a, b, splits, unknown=None) -> np.ndarray:
    """(P,) bool: the pair's two images lie in different splits. Pairs where
    either split equals ``unknown`` (e.g. ``""`` or ``None``) are False."""
    sa, sb = _take(splits, a, b, "splits")
    return (sa != sb) & _known(sa, sb, unknown)


def leaked_items(a, b, splits, held_out) -> np.ndarray:
    """Sorted positions of the images of split ``held_out`` (e.g. "test")
    that have a duplicate in another split: (K,) int64."""
    sa, sb = _take(splits, a, b, "splits")
    a = np.asarray(a, dtype=np.int64).ravel()
    b = np.asarray(b, dtype=np.int64).ravel()
    cross = sa != sb
    hits = np.concatenate([a[cross & (sa == held_out)], b[cross & (sb == held_out)]])
    return np.unique(hits).astype(np.int64)


def label_conflicts(a, b, labels, unknown=None) -> np.ndarray:
    """(P,) bool: the pair's two images carry different labels. Pairs where
    either label equals ``unknown`` (e.g. -1 for unlabelled) are False."""
    la, lb = _take(labels, a, b, "labels")
    return (la != lb) & _known(la, lb, unknown)
