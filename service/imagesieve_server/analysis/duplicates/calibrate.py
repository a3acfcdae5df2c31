"""Which threshold to use: recall of known duplicate pairs (altered copies of
the user's own images: recompressed, resized, cropped, ...) against the rate
of false pairs among distinct images, at each threshold.

``pos_sims``: (P,) cosines of known duplicate pairs. ``neg_sims``: (Q,)
cosines of distinct pairs. A pair is called a duplicate when its cosine is
>= the threshold. recall = share of ``pos_sims`` >= t; false_pair_rate =
share of ``neg_sims`` >= t.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ThresholdRow(NamedTuple):
    threshold: float
    recall: float
    false_pair_rate: float


def _sims(x, name):
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has non-finite values")
    if x.min() < -1.0 - 1e-5 or x.max() > 1.0 + 1e-5:
        raise ValueError(f"{name} must be cosines in [-1, 1]")
    return np.sort(x)


def _share_at_least(sorted_x, t):
    return (sorted_x.size - np.searchsorted(sorted_x, t, side="left")) / sorted_x.size


def threshold_table(pos_sims, neg_sims, thresholds) -> list[ThresholdRow]:
    """One row (threshold, recall, false_pair_rate) per threshold, in the
    order given."""
    pos = _sims(pos_sims, "pos_sims")
    neg = _sims(neg_sims, "neg_sims")
    ts = np.asarray(thresholds, dtype=np.float64).ravel()
    if ts.size == 0:
        raise ValueError("thresholds is empty")
    return [ThresholdRow(float(t), float(_share_at_least(pos, t)), float(_share_at_least(neg, t)))
            for t in ts]


def suggest_threshold(pos_sims, neg_sims, max_false_pair_rate: float = 0.01) -> ThresholdRow:
    """The lowest threshold whose false-pair rate is <= ``max_false_pair_rate``
    (hence the highest recall under that constraint), with its recall and
    false-pair rate. The threshold is just above the cosine of the
    (floor(rate * Q) + 1)-th most similar distinct pair."""
    if not 0.0 <= max_false_pair_rate < 1.0:
        raise ValueError(f"max_false_pair_rate must be in [0, 1); got {max_false_pair_rate}")
    pos = _sims(pos_sims, "pos_sims")
    neg = _sims(neg_sims, "neg_sims")
    allowed = int(np.floor(max_false_pair_rate * neg.size + 1e-9))
    if allowed >= neg.size:
        t = float(min(pos[0], neg[0]))
    else:
        t = float(np.nextafter(neg[neg.size - 1 - allowed], np.inf))
    t = min(t, 1.0)
    return ThresholdRow(t, float(_share_at_least(pos, t)), float(_share_at_least(neg, t)))
