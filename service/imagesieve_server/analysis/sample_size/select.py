"""Choosing a curve family by how well it extrapolates.

Each family is fitted on every size but the largest and judged by its
absolute error at the largest size (the held-back point); the family with
the smallest error is refitted on all sizes. This asks the question the user
asks (what happens beyond the data?) rather than which curve bends best
through the points it has seen.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .curves import FAMILIES, CurveFit, fit_curve

#: Added in quadrature to each size's standard error, so sizes whose repeats
#: happen to agree (or a single repeat) do not get unbounded weight.
SIGMA_FLOOR = 1e-3


@dataclasses.dataclass(frozen=True)
class Selection:
    """``chosen``: the family picked; ``fits``: every family fitted on all
    sizes (a family that could not be fitted is absent); ``holdout_errors``:
    |prediction - observed| at the largest size, fitted without it (inf when
    the family could not be fitted on the smaller sizes)."""
    chosen: str
    fits: dict[str, CurveFit]
    holdout_errors: dict[str, float]

    @property
    def fit(self) -> CurveFit:
        return self.fits[self.chosen]


def summarize(accuracies) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """accuracies (K, R), one row per size, R repeats ->
    (means (K,), stds (K,) with ddof=1 (0 for R == 1), sigma (K,) = the
    standard error of the mean combined with ``SIGMA_FLOOR``)."""
    acc = np.asarray(accuracies, dtype=float)
    if acc.ndim != 2 or acc.shape[1] < 1:
        raise ValueError(f"accuracies must be (sizes, repeats), got shape {acc.shape}")
    r = acc.shape[1]
    means = acc.mean(axis=1)
    stds = acc.std(axis=1, ddof=1) if r > 1 else np.zeros(acc.shape[0])
    sigma = np.sqrt(stds ** 2 / r + SIGMA_FLOOR ** 2)
    return means, stds, sigma


def check_points(sizes, accuracies) -> tuple[np.ndarray, np.ndarray]:
    """Validate sizes (K,) > 0 strictly increasing and accuracies (K, R) in [0, 1]."""
    sizes = np.asarray(sizes, dtype=float).ravel()
    acc = np.asarray(accuracies, dtype=float)
    if acc.ndim == 1:
        acc = acc[:, None]
    if acc.ndim != 2 or acc.shape[0] != sizes.size:
        raise ValueError(f"accuracies must be (K={sizes.size}, repeats), got shape {acc.shape}")
    if sizes.size < 2 or np.any(sizes <= 0) or np.any(np.diff(sizes) <= 0):
        raise ValueError("sizes must be at least 2 values, > 0, strictly increasing")
    if not np.all(np.isfinite(acc)) or np.any(acc < 0) or np.any(acc > 1):
        raise ValueError("accuracies must be finite fractions in [0, 1]")
    return sizes, acc


def select_fit(sizes, accuracies, families=FAMILIES, fit_all: bool = True) -> Selection:
    """Fit each family and pick by hold-out error at the largest size.

    sizes : (K,) training-set sizes in images, strictly increasing, K >= 3
        (a three-parameter family needs 3 sizes to fit and a fourth to judge;
        with K == 3 only the power law can be judged).
    accuracies : (K, R) test accuracy of each repeat (or (K,) means).
    fit_all : False fits on all sizes only the families that can win (the
        smallest hold-out error; ties broken by rmse as usual): the bootstrap
        needs the winner only, and this saves a third of its curve fits.
    Raises ValueError when no family can be fitted.
    """
    sizes, acc = check_points(sizes, accuracies)
    means, _, sigma = summarize(acc)
    errors: dict[str, float] = {}
    fits: dict[str, CurveFit] = {}
    for fam in families:
        try:
            held = fit_curve(fam, sizes[:-1], means[:-1], sigma[:-1])
            errors[fam] = float(abs(held.predict(sizes[-1]) - means[-1]))
        except (ValueError, RuntimeError):
            errors[fam] = math.inf
    # Fit on all sizes in order of hold-out error; unless fit_all, stop once a
    # family fits and the next one's error is worse (it cannot be chosen).
    for fam in sorted(families, key=lambda f: errors[f]):
        if not fit_all and fits and errors[fam] > min(errors[f] for f in fits):
            break
        try:
            fits[fam] = fit_curve(fam, sizes, means, sigma)
        except (ValueError, RuntimeError):
            errors[fam] = math.inf
    candidates = [f for f in families if f in fits]
    if not candidates:
        raise ValueError("no curve family could be fitted to these points")
    chosen = min(candidates, key=lambda f: (errors[f], fits[f].rmse))
    return Selection(chosen, fits, errors)
