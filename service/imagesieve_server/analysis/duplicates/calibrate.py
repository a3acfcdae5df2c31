"""Which threshold to use: recall of known duplicate pairs (altered copies of
the user's own images: recompressed, resized, cropped, ...) against the rate
of false pairs among distinct images, at each threshold.

``pos_sims``: (P,) cosines of known duplicate pairs. ``neg_sims``: (Q,)
cosines of distinct pairs. A pair is called a duplicate when its cosine is
>= the threshold. recall = share of ``pos_sims`` >= t; false_pair_rate =
share of ``neg_sims`` >= t.

A per-pair rate hides how many false pairs a user will see: N images hold
N(N-1)/2 pairs, so 1% of pairs among 1,860 images is ~17,000 false pairs.
Bounds are therefore stated per image: ``false_pairs_per_1k`` = expected
false pairs per 1,000 images in a collection of ``n_images`` = rate x
(n_images - 1) / 2 x 1000.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ThresholdRow(NamedTuple):
    threshold: float
    recall: float
    false_pair_rate: float
    false_pairs_per_1k: float = float("nan")   # in a collection of n_images (see the module)


def false_pairs_per_1k(false_pair_rate: float, n_images: int) -> float:
    """Expected false pairs per 1,000 images among ``n_images`` at a per-pair rate."""
    return float(false_pair_rate) * max(int(n_images) - 1, 0) / 2 * 1000


def rate_for_per_1k(per_1k: float, n_images: int) -> float:
    """The per-pair rate that gives ``per_1k`` false pairs per 1,000 images."""
    if per_1k < 0:
        raise ValueError(f"max_false_pairs_per_1k must be >= 0; got {per_1k}")
    if n_images < 2:
        raise ValueError(f"n_images must be >= 2; got {n_images}")
    return per_1k / 1000 * 2 / (n_images - 1)


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


def threshold_table(pos_sims, neg_sims, thresholds, n_images: int | None = None) -> list[ThresholdRow]:
    """One row (threshold, recall, false_pair_rate, false_pairs_per_1k) per
    threshold, in the order given; per 1k images among ``n_images`` (None:
    NaN)."""
    pos = _sims(pos_sims, "pos_sims")
    neg = _sims(neg_sims, "neg_sims")
    ts = np.asarray(thresholds, dtype=np.float64).ravel()
    if ts.size == 0:
        raise ValueError("thresholds is empty")
    rows = []
    for t in ts:
        rate = float(_share_at_least(neg, t))
        rows.append(ThresholdRow(float(t), float(_share_at_least(pos, t)), rate,
                                 false_pairs_per_1k(rate, n_images) if n_images else float("nan")))
    return rows


def suggest_threshold(pos_sims, neg_sims, max_false_pair_rate: float = 0.01,
                      n_images: int | None = None) -> ThresholdRow:
    """The lowest threshold whose false-pair rate is <= ``max_false_pair_rate``
    (hence the highest recall under that constraint), with its recall,
    false-pair rate and (given ``n_images``) false pairs per 1k images. The
    threshold is just above the cosine of the (floor(rate * Q) + 1)-th most
    similar distinct pair. (``rate_for_per_1k`` turns a per-image bound into
    the rate.)"""
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
    rate = float(_share_at_least(neg, t))
    return ThresholdRow(t, float(_share_at_least(pos, t)), rate,
                        false_pairs_per_1k(rate, n_images) if n_images else float("nan"))
