"""Learning-curve families: accuracy as a function of training-set size.

Every curve maps ``x`` (number of training images, float array of any shape)
to accuracy (fraction in [0, 1], same shape). Parameters are in image units:

- ``power_law``          ``a * x**b``             (Keras / Balki et al.; no ceiling)
- ``inverse_power_law``  ``a - b * x**(-c)``      (ceiling ``a``)
- ``exp_approach``       ``a - b * exp(-c * x)``  (ceiling ``a``)

Fitting uses ``scipy.optimize.curve_fit`` on a rescaled axis ``u = x / x_scale``
(``x_scale`` = the largest observed size) with bounds and several starting
points, then converts the parameters back to image units.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

FAMILIES = ("power_law", "inverse_power_law", "exp_approach")


def power_law(x, a, b):
    return a * np.power(x, b)


def inverse_power_law(x, a, b, c):
    return a - b * np.power(x, -c)


def exp_approach(x, a, b, c):
    return a - b * np.exp(-c * x)


_FUNCS = {"power_law": power_law, "inverse_power_law": inverse_power_law, "exp_approach": exp_approach}


@dataclasses.dataclass(frozen=True)
class CurveFit:
    """A fitted curve. ``params`` in image units (see module doc);
    ``ceiling`` is the asymptote (``inf`` for the power law);
    ``rmse`` is the root mean square residual on the fitted points (accuracy units)."""
    family: str
    params: tuple[float, ...]
    ceiling: float
    rmse: float

    def predict(self, x) -> np.ndarray:
        """Accuracy at ``x`` images (array-like) -> float array, same shape."""
        return evaluate(self.family, self.params, np.asarray(x, dtype=float))

    def images_for(self, target: float) -> float:
        """Images needed to reach ``target`` accuracy; ``inf`` when the target
        is at or above the ceiling; 0 when already reached at any size."""
        return images_for_target(self.family, self.params, target)


def evaluate(family: str, params, x) -> np.ndarray:
    """Curve ``family`` with ``params`` (image units) at ``x`` images."""
    return _FUNCS[_check_family(family)](np.asarray(x, dtype=float), *params)


def ceiling(family: str, params) -> float:
    """The asymptote as x -> inf; ``inf`` for the (unbounded) power law."""
    _check_family(family)
    if family == "power_law":
        a, b = params
        return math.inf if b > 0 else (0.0 if b < 0 else float(a))
    return float(params[0])


def _power(base: float, exponent: float) -> float:
    """base ** exponent, ``inf`` where it overflows (a nearly flat curve needs
    astronomically many images: unreachable in practice)."""
    try:
        return float(base ** exponent)
    except OverflowError:
        return math.inf


def images_for_target(family: str, params, target: float) -> float:
    """Invert the curve: the x (images) with curve(x) == target.

    Returns ``inf`` when the target is not reachable (at or above the ceiling),
    0.0 when the curve is at or above the target for every x > 0."""
    _check_family(family)
    if not np.isfinite(target):
        raise ValueError(f"target must be finite, got {target}")
    if family == "power_law":
        a, b = params
        if a <= 0 or b <= 0:
            return math.inf
        return _power(target / a, 1.0 / b) if target > 0 else 0.0
    a, b, c = params
    if target >= a:
        return math.inf
    if b <= 0 or c <= 0:
        return 0.0
    if family == "inverse_power_law":
        return _power(b / (a - target), 1.0 / c)
    # exp_approach: a - b e^{-cx} = t  ->  x = ln(b / (a - t)) / c
    return max(0.0, float(math.log(b / (a - target)) / c))


def fit_curve(family: str, x, y, sigma=None, y_max: float = 1.0) -> CurveFit:
    """Fit ``family`` to points ``(x, y)``.

    x : (K,) training-set sizes in images, all > 0, at least 2 distinct
        (3 for the three-parameter families).
    y : (K,) accuracies (fractions).
    sigma : optional (K,) standard errors of ``y`` (weights 1/sigma^2).
    y_max : upper bound of the asymptote for the bounded families (1.0 for accuracy).

    Raises ValueError for bad input, RuntimeError when no start converges.
    """
    _check_family(family)
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"x and y must be non-empty and the same length, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or np.any(x <= 0):
        raise ValueError("x must be finite and > 0 and y finite")
    need = 2 if family == "power_law" else 3
    if np.unique(x).size < need:
        raise ValueError(f"{family} needs at least {need} distinct sizes, got {np.unique(x).size}")
    if sigma is not None:
        sigma = np.asarray(sigma, dtype=float).ravel()
        if sigma.shape != x.shape or np.any(~np.isfinite(sigma)) or np.any(sigma <= 0):
            raise ValueError("sigma must be finite, > 0 and the same length as x")

    s = float(x.max())
    u = x / s
    func = _FUNCS[family]
    ymax_obs, ymin_obs = float(y.max()), float(y.min())
    span = max(ymax_obs - ymin_obs, 1e-3)
    w = 1.0 / sigma if sigma is not None else np.ones_like(y)
    if family == "power_law":
        bounds = ([1e-9, 0.0], [np.inf, 2.0])
        starts = [[max(ymax_obs, 1e-3), b] for b in (0.02, 0.2)]
    else:
        hi = max(y_max, ymax_obs + 1e-6)
        if family == "inverse_power_law":
            bounds = ([0.0, 0.0, 1e-3], [hi, np.inf, 5.0])
            grid = np.geomspace(1e-3, 5.0, 60)
        else:
            bounds = ([0.0, 0.0, 1e-3], [hi, np.inf, 1e3])
            grid = np.geomspace(1e-3, 1e3, 80)
        starts = [_grid_start(family, u, y, w, hi, grid),
                  [min(hi, ymax_obs + 0.01), 3 * span, 1.0]]
    best = None
    for p0 in starts:
        if best is not None and family != "power_law":
            break  # the grid start converged; the fallback start is for when it does not
        p0 = np.clip(p0, np.asarray(bounds[0]) + 1e-12, np.asarray(bounds[1]) - 1e-12)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                p, _ = curve_fit(func, u, y, p0=p0, sigma=sigma, absolute_sigma=False,
                                 bounds=bounds, maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        r = func(u, *p) - y
        w = r / sigma if sigma is not None else r
        cost = float(np.sum(w * w))
        if np.isfinite(cost) and (best is None or cost < best[0]):
            best = (cost, p)
    if best is None:
        raise RuntimeError(f"{family}: no starting point converged")
    p = best[1]
    # back to image units
    if family == "power_law":
        params = (float(p[0] * s ** (-p[1])), float(p[1]))
    elif family == "inverse_power_law":
        params = (float(p[0]), float(p[1] * s ** p[2]), float(p[2]))
    else:
        params = (float(p[0]), float(p[1]), float(p[2] / s))
    rmse = float(np.sqrt(np.mean((evaluate(family, params, x) - y) ** 2)))
    return CurveFit(family, params, ceiling(family, params), rmse)


def _grid_start(family: str, u, y, w, hi: float, grid) -> list[float]:
    """A starting point for the bounded families: for each fixed rate ``c`` on
    a grid the curve ``a - b*f(u)`` is linear in (a, b); solve the weighted
    least squares (with 0 <= a <= hi, b >= 0) for every c at once and keep
    the best c."""
    F = np.power(u[None, :], -grid[:, None]) if family == "inverse_power_law" \
        else np.exp(-grid[:, None] * u[None, :])                      # (G, K)
    W = w * w
    s0, sy = W.sum(), (W * y).sum()
    sf, sff, sfy = F @ W, (F * F) @ W, F @ (W * y)
    det = s0 * sff - sf * sf
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(det > 0, (sy * sff - sf * sfy) / det, float(y.max()))
        a = np.clip(np.nan_to_num(a, nan=float(y.max())), 0.0, hi)
        b = np.maximum((a * sf - sfy) / np.maximum(sff, 1e-300), 0.0)  # best b for the (clipped) a
    r = (a[:, None] - b[:, None] * F - y[None, :]) * w[None, :]
    cost = np.einsum("gk,gk->g", r, r)
    g = int(np.nanargmin(np.where(np.isfinite(cost), cost, np.inf)))
    return [float(a[g]), float(b[g]), float(grid[g])]


def _check_family(family: str) -> str:
    if family not in _FUNCS:
        raise ValueError(f"unknown curve family {family!r}; choose from {FAMILIES}")
    return family
