"""From sweep points to the answer: fits, selection, images needed for a
target accuracy with a bootstrap interval, and a plain-language sentence."""
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
    in images (inf when the target lies above the ceiling); answer: one
    sentence for people."""
    sizes: np.ndarray
    means: np.ndarray
    stds: np.ndarray
    fits: dict[str, CurveFit]
    holdout_errors: dict[str, float]
    chosen: str
    target: float
    images_needed: float
    images_needed_low: float
    images_needed_high: float
    level: float
    answer: str
    boot: BootstrapResult

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
            "bootstrap_replicates": int(self.boot.images_needed.size),
            "answer": self.answer,
        }


def analyse(sizes, accuracies, target: float, *, n_boot: int = 200, level: float = 0.95,
            seed: int = 0, families=FAMILIES,
            report: Callable[[str, int, int], None] | None = None) -> SampleSizeAnalysis:
    """sizes (K,) images, increasing; accuracies (K, R) per-repeat test
    accuracy; target accuracy in (0, 1). See ``select_fit`` and ``bootstrap``."""
    sizes, acc = check_points(sizes, accuracies)
    if not 0 < target < 1:
        raise ValueError(f"target accuracy must lie in (0, 1), got {target}")
    means, stds, _ = summarize(acc)
    sel = select_fit(sizes, acc, families)
    fit = sel.fit
    needed = fit.images_for(target)
    boot = bootstrap(sizes, acc, target=target, n_boot=n_boot, seed=seed, families=families,
                     report=report)
    low, high = percentile_interval(boot.images_needed, level)
    answer = _answer(fit, target, needed, low, high, level, float(sizes[-1]), boot)
    return SampleSizeAnalysis(sizes, means, stds, sel.fits, sel.holdout_errors, sel.chosen, target,
                              needed, low, high, level, answer, boot)


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
