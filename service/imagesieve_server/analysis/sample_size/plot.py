"""The learning-curve plot: measured points with error bars, every fitted
curve (the chosen one solid), the extrapolation, the target line and the
answer with its interval, the accuracy predicted at the sizes asked about
with theirs. Matplotlib with the Agg backend (no display)."""
from __future__ import annotations

import io
import math

import numpy as np

from .analyse import SampleSizeAnalysis

_LABELS = {"power_law": "power law a·x^b (Keras)", "inverse_power_law": "inverse power law a − b·x^(−c)",
           "exp_approach": "exponential approach a − b·e^(−cx)"}


def x_range(result: SampleSizeAnalysis) -> tuple[float, float]:
    """(low, high) of the plot's x axis in images: the sweep, 4x beyond it,
    the images needed and its interval (up to 1000x the sweep), and every
    size asked about, whatever its distance."""
    sizes = result.sizes
    x_hi = sizes[-1] * 4
    if math.isfinite(result.images_needed):
        x_hi = max(x_hi, result.images_needed * 1.5)
    if math.isfinite(result.images_needed_high):
        x_hi = max(x_hi, result.images_needed_high * 1.2)
    x_hi = min(x_hi, sizes[-1] * 1e3)
    x_lo = sizes[0] * 0.5
    if result.at_sizes.size:
        x_hi = max(x_hi, float(result.at_sizes.max()) * 1.5)
        x_lo = min(x_lo, float(result.at_sizes.min()) * 0.7)
    return float(x_lo), float(x_hi)


def plot_learning_curve(result: SampleSizeAnalysis, title: str = "How many images are enough?",
                        checks: list[tuple[float, float]] | None = None) -> tuple[bytes, str]:
    """Render ``result`` -> (PNG bytes, SVG text). x axis: training images
    (log scale); y axis: test accuracy (%). ``checks``: optional
    (images, accuracy) pairs measured beyond the sweep, drawn as stars."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, thread-safe; Agg renders

    sizes, means, stds = result.sizes, result.means, result.stds
    x_lo, x_hi = x_range(result)
    xs_in = np.geomspace(x_lo, sizes[-1], 200)
    xs_out = np.geomspace(sizes[-1], x_hi, 200)

    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.errorbar(sizes, 100 * means, yerr=100 * stds, fmt="o", color="black", capsize=4, zorder=5,
                label="measured (mean ± std over repeats)")
    colors = {"power_law": "tab:red", "inverse_power_law": "tab:blue", "exp_approach": "tab:green"}
    for name, fit in result.fits.items():
        chosen = name == result.chosen
        err = result.holdout_errors.get(name, math.inf)
        label = f"{_LABELS.get(name, name)}; hold-out error {100 * err:.2f} pt" + (" (chosen)" if chosen else "")
        c = colors.get(name, "gray")
        ax.plot(xs_in, 100 * fit.predict(xs_in), color=c, lw=2.2 if chosen else 1.0,
                ls="-" if chosen else "--", label=label)
        ax.plot(xs_out, 100 * fit.predict(xs_out), color=c, lw=2.2 if chosen else 1.0, ls=":",
                alpha=0.9)
    for x, acc in checks or []:
        ax.plot([x], [100 * acc], marker="*", ms=13, color="gold", mec="black", ls="none", zorder=6,
                label=f"measured check: {100 * acc:.2f}% at {x:,.0f}")
    if result.at_sizes.size:
        acc, lo, hi = result.at_accuracy, result.at_low, result.at_high
        err = np.vstack([np.nan_to_num(acc - lo), np.nan_to_num(hi - acc)]).clip(0)
        ax.errorbar(result.at_sizes, 100 * acc, yerr=100 * err, fmt="D", color="tab:orange", mec="black",
                    capsize=5, zorder=6, label=f"predicted at the sizes asked ({result.level:.0%} interval)")
    target = [] if result.target is None else [result.target]
    data_hi = 100 * max(float(np.max(means + stds)), *target, *[a for _, a in checks or []],
                        *np.nan_to_num(result.at_high, nan=0.0))
    data_lo = 100 * min(float(np.min(means - stds)), *np.nan_to_num(result.at_low, nan=1.0))
    pad = max(1.0, 0.15 * (data_hi - data_lo))
    ax.set_ylim(max(0.0, data_lo - pad), min(101.0, data_hi + pad))  # the power law may run past 100%
    ax.axvline(sizes[-1], color="gray", lw=0.8, alpha=0.6)
    ax.text(sizes[-1], 0.98, " extrapolation →", color="gray", va="top", fontsize=8,
            transform=ax.get_xaxis_transform())
    if result.target is not None:
        ax.axhline(100 * result.target, color="tab:purple", lw=1, ls="-.",
                   label=f"target {100 * result.target:.1f}%")
    if math.isfinite(result.images_needed):
        lo, hi = result.images_needed_low, result.images_needed_high
        if math.isfinite(lo):
            ax.axvspan(max(lo, x_lo), min(hi, x_hi) if math.isfinite(hi) else x_hi, color="tab:purple",
                       alpha=0.12, label=f"{result.level:.0%} interval of images needed")
        ax.axvline(result.images_needed, color="tab:purple", lw=1.2,
                   label=f"≈ {result.images_needed:,.0f} images needed")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlim(x_lo, x_hi)
    ax.set_xlabel("training images")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    svg = io.StringIO()
    fig.savefig(svg, format="svg")
    return png.getvalue(), svg.getvalue()
