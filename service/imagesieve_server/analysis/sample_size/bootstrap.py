"""Bootstrap intervals for the learning-curve answer.

One replicate resamples, for each size independently, its R repeats with
replacement and, when the per-image outcomes are given, the test images
too (one draw shared by every fit, as they share one test split: an easy or
hard split moves every point together); recomputes the per-size means,
refits (re-running the family selection by default, so the interval also
carries the uncertainty of which curve is right) and records the images
needed for the target and the predicted accuracy at chosen sizes (a
fraction, so within [0, 1] whatever the curve does beyond 100%).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from .curves import FAMILIES, fit_curve
from .select import check_points, select_fit, summarize

TEST_CHUNK = 1 << 16     # resampled test images gathered at a time


@dataclasses.dataclass(frozen=True)
class BootstrapResult:
    """images_needed (B,) (inf where the target lay above that replicate's
    ceiling; NaN where no target was given or the refit failed);
    predictions (B, E) accuracy at each ``x_eval`` size; chosen: the family of
    each replicate."""
    images_needed: np.ndarray
    predictions: np.ndarray
    chosen: tuple[str, ...]


def bootstrap(sizes, accuracies, *, target: float | None = None, x_eval=(), n_boot: int = 200,
              seed: int = 0, family: str | None = None, families=FAMILIES, test_correct=None,
              report: Callable[[str, int, int], None] | None = None) -> BootstrapResult:
    """Resample repeats per size (and test images) ``n_boot`` times and refit.

    sizes : (K,) images, increasing. accuracies : (K, R) fractions.
    test_correct : optional (K, R, M) bool, each fit's outcome on each of the
        M test images (``SweepResult.test_correct``); when given, every
        replicate also resamples the test split, and accuracies are
        recomputed from it.
    target : accuracy whose image count is recorded per replicate.
    x_eval : (E,) sizes in images where the refitted curve is evaluated.
    family : refit only this family; None (default) re-runs the selection.
    report : optional ``report(stage, done, total)`` after each replicate.
    """
    sizes, acc = check_points(sizes, accuracies)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if target is not None and not 0 < target < 1:
        raise ValueError(f"target accuracy must lie in (0, 1), got {target}")
    x_eval = np.asarray(x_eval, dtype=float).ravel()
    rng = np.random.default_rng(seed)
    k, r = acc.shape
    outcomes = None
    if test_correct is not None:
        outcomes = np.asarray(test_correct)
        if outcomes.ndim != 3 or outcomes.shape[:2] != (k, r) or outcomes.shape[2] < 1:
            raise ValueError(f"test_correct must be ({k}, {r}, M) with M >= 1; got {outcomes.shape}")
        m = outcomes.shape[2]
        outcomes = outcomes.reshape(k * r, m).astype(bool, copy=False)   # a view: no float copy of K*R*M
    needed = np.full(n_boot, np.nan)
    preds = np.full((n_boot, x_eval.size), np.nan)
    chosen: list[str] = []
    for i in range(n_boot):
        idx = rng.integers(0, r, size=(k, r))
        if outcomes is None:
            sample = np.take_along_axis(acc, idx, axis=1)
        else:
            # Every fit on the same resampled test split: the outcomes of M draws
            # with replacement, gathered in chunks (memory K*R*TEST_CHUNK, not K*R*M).
            draw = rng.integers(0, m, size=m)
            hits = np.zeros(k * r, np.int64)
            for lo in range(0, m, TEST_CHUNK):
                hits += outcomes[:, draw[lo:lo + TEST_CHUNK]].sum(axis=1)
            resampled = (hits / m).reshape(k, r)
            sample = np.take_along_axis(resampled, idx, axis=1)
        try:
            if family is None:
                fit = select_fit(sizes, sample, families, fit_all=False).fit
            else:
                means, _, sigma = summarize(sample)
                fit = fit_curve(family, sizes, means, sigma)
        except (ValueError, RuntimeError):
            chosen.append("")
        else:
            chosen.append(fit.family)
            if target is not None:
                needed[i] = fit.images_for(target)
            if x_eval.size:
                preds[i] = np.clip(fit.predict(x_eval), 0.0, 1.0)
        if report is not None:
            report("bootstrap", i + 1, n_boot)
    return BootstrapResult(needed, preds, tuple(chosen))


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of ``values`` (1-D); NaNs are dropped,
    infinities kept (an upper bound may be inf). (nan, nan) when empty."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    v = np.asarray(values, dtype=float).ravel()
    v = np.sort(v[~np.isnan(v)])
    if v.size == 0:
        return math.nan, math.nan
    alpha = (1 - level) / 2
    # order statistics by index so inf stays inf (np.percentile interpolates inf to nan)
    lo = v[int(math.floor(alpha * (v.size - 1)))]
    hi = v[int(math.ceil((1 - alpha) * (v.size - 1)))]
    return float(lo), float(hi)
