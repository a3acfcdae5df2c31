"""From sweep points to the answer: fits, selection, images needed for a
target accuracy and the accuracy expected at given sizes, each with a
bootstrap interval, and plain-language sentences."""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from .bootstrap import BootstrapResult, bootstrap, percentile_interval
from .curves import FAMILIES, CurveFit
from .select import check_points, select_fit, summarize


@dataclasses.dataclass
class SampleSizeAnalysis:
    """sizes (K,) images; means/stds (K,) accuracy; fits: family -> CurveFit
    (fitted on all sizes); holdout_errors: family -> |error| at the largest
    size when fitted without it; images_needed and its interval (low, high)
    in images (inf when the target lies above the ceiling; NaN without a
    target); at_sizes (E,) images asked about, at_accuracy (E,) the chosen
    curve's accuracy there and at_low/at_high (E,) its interval (fractions
    in [0, 1]); answer: sentences for people."""
    sizes: np.ndarray
    means: np.ndarray
    stds: np.ndarray
    fits: dict[str, CurveFit]
    holdout_errors: dict[str, float]
    chosen: str
    target: float | None
    images_needed: float
    images_needed_low: float
    images_needed_high: float
    level: float
    answer: str
    boot: BootstrapResult
    at_sizes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    at_accuracy: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    at_low: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    at_high: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    @property
    def fit(self) -> CurveFit:
        return self.fits[self.chosen]

    def to_dict(self) -> dict:
        f = lambda v: None if not math.isfinite(v) else float(v)  # noqa: E731 - JSON has no inf
        return {
            "points": [{"num_images": int(n), "mean_accuracy": float(m), "std_accuracy": float(s)}
                       for n, m, s in zip(self.sizes, self.means, self.stds)],
            "fits": [{"name": c.family, "params": list(c.params), "ceiling": f(c.ceiling),
                      "holdout_error": f(self.holdout_errors.get(c.family, math.inf)),
                      "rmse": c.rmse} for c in self.fits.values()],
            "chosen_fit": self.chosen,
            "target_accuracy": self.target,
            "images_needed": f(self.images_needed),
            "images_needed_low": f(self.images_needed_low),
            "images_needed_high": f(self.images_needed_high),
            "interval_level": self.level,
            "accuracy_at": [{"num_images": int(n), "accuracy": f(v), "low": f(lo), "high": f(hi)}
                            for n, v, lo, hi in zip(self.at_sizes, self.at_accuracy, self.at_low, self.at_high)],
            "bootstrap_replicates": int(self.boot.images_needed.size),
            "answer": self.answer,
        }


def check_at_sizes(at) -> np.ndarray:
    """Training-set sizes asked about -> (E,) float array; ValueError unless
    each is a whole number of images >= 1."""
    at = np.asarray(list(at) if not isinstance(at, np.ndarray) else at, dtype=float).ravel()
    if np.any(~np.isfinite(at)) or np.any(at < 1) or np.any(at != np.round(at)):
        raise ValueError(f"sizes to predict must be whole numbers of images >= 1; got {at.tolist()}")
    return at


def analyse(sizes, accuracies, target: float | None = None, *, at=(), n_boot: int = 200,
            level: float = 0.95, seed: int = 0, families=FAMILIES, test_correct=None,
            report: Callable[[str, int, int], None] | None = None) -> SampleSizeAnalysis:
    """sizes (K,) images, increasing; accuracies (K, R) per-repeat test
    accuracy; target accuracy in (0, 1) (None: no target); at (E,) training
    sizes (images) whose accuracy to predict; test_correct (K, R, M) bool
    per-image outcomes, so the bootstrap resamples the test split too (see
    ``bootstrap``). At least a target or one size."""
    sizes, acc = check_points(sizes, accuracies)
    if target is not None and not 0 < target < 1:
        raise ValueError(f"target accuracy must lie in (0, 1), got {target}")
    at = check_at_sizes(at)
    if target is None and at.size == 0:
        raise ValueError("give a target accuracy, sizes to predict, or both")
    means, stds, _ = summarize(acc)
    sel = select_fit(sizes, acc, families)
    fit = sel.fit
    needed = fit.images_for(target) if target is not None else math.nan
    boot = bootstrap(sizes, acc, target=target, x_eval=at, n_boot=n_boot, seed=seed, families=families,
                     test_correct=test_correct, report=report)
    low, high = percentile_interval(boot.images_needed, level)
    at_acc = np.clip(fit.predict(at), 0.0, 1.0) if at.size else np.zeros(0)
    bounds = np.array([percentile_interval(boot.predictions[:, e], level) for e in range(at.size)]).reshape(-1, 2)
    parts = []
    if target is not None:
        parts.append(_answer(fit, target, needed, low, high, level, float(sizes[-1]), boot))
    if at.size:
        parts.append(_answer_at(fit, at, at_acc, bounds, level, float(sizes[0]), float(sizes[-1])))
    return SampleSizeAnalysis(sizes, means, stds, sel.fits, sel.holdout_errors, sel.chosen, target,
                              needed, low, high, level, " ".join(parts), boot,
                              at, at_acc, bounds[:, 0], bounds[:, 1])


def _answer_at(fit: CurveFit, at: np.ndarray, acc: np.ndarray, bounds: np.ndarray, level: float,
               smallest: float, largest: float) -> str:
    name = fit.family.replace("_", " ")
    each = []
    for n, a, (lo, hi) in zip(at, acc, bounds):
        where = ("measured range" if smallest <= n <= largest else
                 f"{n / largest:.1f}x extrapolation" if n > largest else "below the sizes measured")
        band = f"{level:.0%} interval {lo:.1%} to {hi:.1%}" if math.isfinite(lo) else "no interval"
        each.append(f"{n:,.0f} images: {a:.1%} ({band}; {where})")
    return f"Expected test accuracy ({name} fit) with " + "; ".join(each) + "."


def _answer(fit: CurveFit, target: float, needed: float, low: float, high: float, level: float,
            largest: float, boot: BootstrapResult) -> str:
    name = fit.family.replace("_", " ")
    if not math.isfinite(needed):
        return (f"The target {target:.1%} lies above the ceiling of the fitted curve "
                f"({name}: accuracy levels off at {fit.ceiling:.1%}). More images of this kind, with "
                f"this embedding and classifier, are not expected to reach it; a better model, "
                f"cleaner labels or different data would be needed.")
    share_above = float(np.mean(np.isinf(boot.images_needed[~np.isnan(boot.images_needed)]))) \
        if np.any(~np.isnan(boot.images_needed)) else 0.0
    if needed <= largest:
        head = (f"The target {target:.1%} is reached with about {needed:,.0f} training images "
                f"({name} fit), within the sizes measured (up to {largest:,.0f})")
    else:
        head = (f"About {needed:,.0f} training images are needed for {target:.1%} accuracy "
                f"({name} fit; the sweep measured up to {largest:,.0f}, so this is an extrapolation "
                f"of {needed / largest:.1f}x)")
    if math.isinf(high):
        tail = (f"; the {level:.0%} interval starts at {low:,.0f} and has no upper bound: in "
                f"{share_above:.0%} of bootstrap refits the target lay above the curve's ceiling.")
    elif math.isnan(low):
        tail = "; no bootstrap interval could be computed."
    else:
        tail = f"; {level:.0%} interval {low:,.0f} to {high:,.0f}."
    return head + tail
