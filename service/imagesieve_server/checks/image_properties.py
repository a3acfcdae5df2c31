"""Which images are blurry, too dark, too bright, nearly uniform, grayscale
in a colour set, unusually small or unusually elongated?

Judged from the properties measured at decoding (``engine.properties``,
stored with each image's embedding: nothing is decoded again) and the
decoded size. Each threshold comes from the data set itself and a fixed
bound, whichever is stricter: an image is flagged only when it is far out
of its own data set's range (median -/+ ``spread`` robust standard
deviations, 1.4826 x the median absolute deviation) *and* bad in absolute
terms (a set of night photos does not flag every photo as dark; a set of
well-lit ones does not flag a merely dim one). With fewer than
``min_images`` measured images the fixed bounds decide alone.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..engine import properties as props
from .base import CheckInputs, CheckResult, FlaggedImages

NAME = "image_properties"
TITLE = "Image properties"
_COL = {n: i for i, n in enumerate(props.NAMES)}


@dataclasses.dataclass(frozen=True)
class Params:
    """``spread``: robust standard deviations from the data set's median
    beyond which an image is out of range (> 0). ``min_images``: measured
    images needed for data-derived thresholds (>= 3). The fixed bounds:
    ``dark`` / ``bright`` (mean luminance, 0..1), ``low_entropy`` (bits of
    the 64-bin luminance histogram), ``blur_ratio`` (sharpness below this
    share of the median), ``gray`` (colourfulness) and ``gray_share`` (the
    share of colour images a set needs before a gray one stands out),
    ``small_ratio`` (pixel count below this share of the median),
    ``aspect_ratio`` (how many times more elongated than the median).
    ``one_tone`` (bits): an image of less entropy is nearly uniform whatever
    the data set's spread (a blank picture has nothing to see, and a set of
    maps and photos once spread so widely that four blank ones went
    unflagged)."""
    spread: float = 4.0
    min_images: int = 20
    dark: float = 0.2
    bright: float = 0.85
    low_entropy: float = 1.0
    blur_ratio: float = 0.1
    gray: float = 0.01
    gray_share: float = 0.9
    small_ratio: float = 0.25
    aspect_ratio: float = 2.0
    one_tone: float = 0.1

    def __post_init__(self):
        if not self.spread > 0:
            raise ValueError(f"spread must be > 0; got {self.spread}")
        if self.min_images < 3:
            raise ValueError(f"min_images must be >= 3; got {self.min_images}")
        for name in ("dark", "bright", "gray_share"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1); got {getattr(self, name)}")
        for name in ("blur_ratio", "small_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1]; got {getattr(self, name)}")
        if self.aspect_ratio <= 1:
            raise ValueError(f"aspect_ratio must be > 1; got {self.aspect_ratio}")
        if self.low_entropy < 0 or self.gray < 0:
            raise ValueError("low_entropy and gray must be >= 0")
        if not 0 <= self.one_tone <= self.low_entropy:
            raise ValueError(f"one_tone must be in [0, low_entropy]; got {self.one_tone}")


def _robust(x: np.ndarray) -> tuple[float, float]:
    med = float(np.median(x))
    return med, 1.4826 * float(np.median(np.abs(x - med)))


def _flag(kind, description, unit, values, idx, bound, reason, low: bool) -> FlaggedImages:
    """Images of ``idx`` whose ``values`` lie below (``low``) or above ``bound``, worst first."""
    hit = values < bound if low else values > bound
    order = np.argsort(values[hit] if low else -values[hit], kind="stable")
    return FlaggedImages(kind, description, unit, idx[hit][order].astype(np.int64),
                         values[hit][order].astype(np.float32), float(bound), reason)


def _within(bound: float, why: str, lo: float, hi: float) -> str:
    """``why``, told when ``bound`` lies beyond what the measure can reach
    (``lo``..``hi``): "below -0.327" read as a mistake, when it means this
    set spreads too widely for any image to stand out."""
    if lo <= bound <= hi:
        return why
    return (why + f"; beyond the measure's range ({lo:g}..{hi:g}): this data set's images spread too widely "
            "for one to stand out, so none is flagged")


def _stricter(fixed: float, derived: float | None, low: bool, fmt: str, what: str, p: Params) -> tuple[float, str]:
    if derived is None:
        return fixed, f"{what} {'below' if low else 'above'} {fmt.format(fixed)} (the fixed bound; too few images " \
                      f"for one of the data set's own)"
    bound = min(fixed, derived) if low else max(fixed, derived)
    side = "-" if low else "+"
    return bound, (f"{what} {'below' if low else 'above'} {fmt.format(bound)}: the stricter of the fixed bound "
                   f"{fmt.format(fixed)} and the data set's median {side} {p.spread:g} robust SDs "
                   f"({fmt.format(derived)})")


def run(properties: np.ndarray, sizes: np.ndarray, params: Params | None = None) -> CheckResult:
    """``properties``: (N, engine.properties.COUNT) float32, NaN rows where
    not measured (failed images, embeddings stored by an older version);
    ``sizes``: (N, 2) width, height in pixels (0 where unknown). Positions in
    the result index these N rows."""
    p = params or Params()
    properties = np.asarray(properties, np.float32)
    sizes = np.asarray(sizes, np.float64)
    if properties.ndim != 2 or properties.shape[1] != props.COUNT:
        raise ValueError(f"properties must be (N, {props.COUNT}); got {properties.shape}")
    if sizes.shape != (len(properties), 2):
        raise ValueError(f"sizes must be ({len(properties)}, 2); got {sizes.shape}")
    idx = np.flatnonzero(np.isfinite(properties).all(axis=1))
    x = properties[idx]
    enough = len(idx) >= p.min_images
    issues: dict[str, FlaggedImages] = {}
    notes: list[str] = []

    def derived(values: np.ndarray, low: bool) -> float | None:
        if not enough:
            return None
        med, sd = _robust(values)
        return med - p.spread * sd if low else med + p.spread * sd

    b = x[:, _COL["brightness"]]
    bound, why = _stricter(p.dark, derived(b, True), True, "{:.3f}", "mean luminance", p)
    issues["dark"] = _flag("dark", "too dark", "mean luminance (0..1)", b, idx, bound, _within(bound, why, 0, 1),
                           low=True)
    bound, why = _stricter(p.bright, derived(b, False), False, "{:.3f}", "mean luminance", p)
    issues["bright"] = _flag("bright", "too bright (washed out)", "mean luminance (0..1)", b, idx, bound,
                             _within(bound, why, 0, 1), low=False)

    e = x[:, _COL["entropy"]]
    bound, why = _stricter(p.low_entropy, derived(e, True), True, "{:.2f}", "entropy (bits)", p)
    why = _within(bound, why, 0, 6)
    if bound < p.one_tone:
        bound, why = p.one_tone, why.replace(", so none is flagged", "") + (
            f"; below {p.one_tone:g} bits at any rate (one tone: nothing to see, whatever the data set)")
    issues["low_information"] = _flag("low_information", "nearly uniform: little to see",
                                      "luminance entropy (bits, 0..6)", e, idx, bound, why, low=True)

    # Sharpness spans orders of magnitude between pictures: judged on its log.
    s = x[:, _COL["sharpness"]]
    if len(s):
        med = float(np.median(s))
        fixed = p.blur_ratio * med
        d = derived(np.log(np.maximum(s, 1e-6)), True)
        bound, why = _stricter(fixed, None if d is None else float(np.exp(d)), True, "{:.3g}",
                               f"sharpness (median {med:.3g})", p)
        issues["blurry"] = _flag("blurry", "blurry: little fine detail", "sharpness (Laplacian / luminance "
                                 "variance)", s, idx, bound, why, low=True)

    c = x[:, _COL["colourfulness"]]
    colour_share = float(np.mean(c >= p.gray)) if len(c) else 0.0
    if len(c) and colour_share >= p.gray_share:
        issues["grayscale"] = _flag("grayscale", "grayscale in a colour data set", "colourfulness", c, idx, p.gray,
                                    f"colourfulness below {p.gray:g} while {colour_share:.0%} of the images are "
                                    "in colour", low=True)
    elif len(c):
        notes.append(f"grayscale not judged: only {colour_share:.0%} of the images are in colour "
                     f"(it needs {p.gray_share:.0%})")

    known = np.flatnonzero((sizes > 0).all(axis=1))
    if len(known):
        pixels = sizes[known, 0] * sizes[known, 1]
        med_pixels = float(np.median(pixels))
        d = derived(np.log(pixels), True)
        bound, why = _stricter(p.small_ratio * med_pixels, None if d is None else float(np.exp(d)), True,
                               "{:,.0f}", f"pixel count (median {med_pixels:,.0f})", p)
        issues["small"] = _flag("small", "unusually small", "pixels", pixels, known, bound, why, low=True)
        # Elongation: how many times farther from square than the set's median aspect ratio.
        aspect = np.log(sizes[known, 0] / sizes[known, 1])
        off = np.abs(aspect - float(np.median(aspect)))
        d = None if not enough else float(np.exp(np.median(off) + p.spread * _robust(off)[1]))
        bound, why = _stricter(p.aspect_ratio, d, False, "{:.2f}x", "elongation against the median aspect ratio", p)
        issues["odd_aspect"] = _flag("odd_aspect", "unusually elongated", "times more elongated than the median",
                                     np.exp(off), known, bound, why, low=False)
    if not enough:
        notes.append(f"{len(idx)} images measured: fewer than {p.min_images}, so the fixed bounds decide alone")
    if len(idx) < len(properties):
        unmeasured = len(properties) - len(idx)
        notes.append(f"{unmeasured} image{'s' if unmeasured != 1 else ''} without measured properties (failed, or "
                     f"embedded by an older version) {'are' if unmeasured != 1 else 'is'} not judged")
    return CheckResult(NAME, TITLE, int(len(idx)), issues, notes)


def from_inputs(inputs: CheckInputs, params: Params | None = None) -> CheckResult:
    """:func:`run` on what the audit holds; embeddings stored without
    properties (an older version) leave every image unmeasured."""
    n = len(inputs.ok)
    measured = (np.full((n, props.COUNT), np.nan, np.float32) if inputs.properties is None
                else np.where(np.asarray(inputs.ok)[:, None], inputs.properties, np.nan))
    return run(measured, np.where(np.asarray(inputs.ok)[:, None], inputs.sizes, 0), params)
