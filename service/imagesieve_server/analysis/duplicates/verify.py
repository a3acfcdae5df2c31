"""Is a candidate pair the same picture? Stage 2 of the duplicate search.

Stage 1 (``pairs``, a collection's kNN search) proposes pairs whose
embeddings are close; pictures of one style (two dark abstract paintings, two
pairs of trousers photographed alike) are close too. Stage 2 aligns the two
images' layout signatures (``engine.signature``: trimmed SIDE x SIDE
grayscale thumbnails) and measures how well the best alignment agrees.

Alignment (:func:`pair_alignment`):

- the template is the centre ``INNER`` of one thumbnail, rescaled to the
  share of the other that it would cover (a crop keeps a share of each side;
  the trimmed aspect ratios fix the ratio of the two shares; a squash keeps
  the whole frame), optionally mirrored; either image may be the crop;
- OpenCV's ``matchTemplate`` (zero-mean normalized cross-correlation) slides
  it over the other thumbnail; the slack around the inner part absorbs small
  shifts, and small rotations, then the template made wider or narrower (a
  crop resized to another aspect), are tried when the upright search falls
  short;
- a larger tilt (10-180 degrees, on a grown canvas or in place) is tried at
  the angles where the two gradient-direction histograms, or the two polar
  views, line up best, each only when its coarse 16x16 fit is good;
- the best placement is measured again with the sharper view blurred to the
  other's sharpness (a blurred copy); the better of the two measures counts;
- ``agreement`` is the mean of the best alignment's layout (its correlation,
  averaged with the mean correlation of its best three quarters of 4x4
  cells, so a sticker or a caption over a corner spoils a few cells, not
  the picture) and the correlation of its fine detail (a difference of
  Gaussians): brightness, contrast, colour, recompression, resizing and
  watermarks leave it near 1, and another picture's details sit elsewhere
  even when its layout is alike.

Verdict (:func:`verified_pairs`): what separates a copy from a look-alike
depends on the data (two photos of one style agree at ~0.5 and cosine ~0.5,
two trousers of Fashion-MNIST at ~0.9 and ~0.92), so a pair is judged against
its images' own look-alikes (their other candidates, the "pack"): its
disagreement on each signal (1 - agreement, 1 - cosine) relative to the
pack's, multiplied (:func:`relative_disagreement`), must be at most
``MAX_RELATIVE``: a copy is far closer than look-alikes on layout, on
embedding, or on both. An image with too few other candidates is judged
against the data set's median pack, its cosine no higher than the
candidates' floor when its search found fewer than it asked for (its
other neighbours lie below it). A picture whose thumbnail is a
profile (:func:`one_dimensional`: a sky, a gradient) or blank has no
layout to vouch for it: there the embedding alone decides.

Pure functions of numpy arrays (OpenCV for the correlation kernel). An
alignment is ~80 short OpenCV calls glued by Python, so threads do not run
them in parallel (measured: 2 threads = 1 thread); large batches go to
worker processes, each sent only the signatures its chunk of pairs needs.
"""
from __future__ import annotations

import contextvars
import dataclasses
import functools
import logging
import math
import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import cv2
import numpy as np

from ...engine.fair_pool import FairPool
from ...engine.keypoints import matched_inliers
from ...engine.signature import (FRAME_TOLERANCE, SIDE, SIGNATURE_BYTES, edge_tone, keypoints, opacity, thumbnails,
                                 unpack, upgrade)
from .groups import connected_components

INNER = 0.8
CELLS = 4                # the aligned views are also compared cell by cell, CELLS x CELLS ...
CELL_KEEP = 0.75         # ... and the best three quarters of the cells count
# Shares of a side a crop may keep, from the whole view down to 49% (a quarter
# of the area), in steps of ~8%. A 45% floor (a 13 px template) matched part of
# other pictures: in the benchmark and probe runs 34 false pairs at that share
# and no copy; in Adwaita's icons 107 pairs of differently named glyphs at
# 20-25% of the frame and no pair of one icon (docs/verified-duplicates.md, "Deep crops").
SHARES = tuple(round(0.45 * (1 / 0.45) ** (i / 10), 3) for i in range(10, 0, -1))
# ...and so a crop keeps at least this share of the area, whatever the two
# aspect ratios: a 4:1 strip fits a 3:7 picture only as a full-width slice of
# 11% of it, and such slices (a sky band, a strip of water, a stroke of a
# sprite) matched unrelated pictures at 4-11% of their area (a probe on game
# art, docs/verified-duplicates.md "Thin slices": 49 of 56 unrelated pairs below 30%, 2 of 128
# copies).
MIN_AREA = SHARES[-1] ** 2
ROTATIONS = (-8.0, -4.0, 4.0, 8.0)   # degrees, tried around the best upright match
# Widths x s and heights / s tried around the best upright match, s = STRETCH^k or
# STRETCH^-k for k up to STRETCH_STEPS (the aspect changes by s^2: up to 1.52, a 224 x 224
# crop taken at 3:4 or 4:3). A bar on each step's gain (0.005) cost a copy of the
# augmentation benchmark and found nothing more (docs/verified-duplicates.md, "Random-resized crops").
STRETCH = 0.9
STRETCH_STEPS = 2
TILT_BINS = 72           # orientations (gradient directions, polar angles) in 5-degree bins
TILT_MIN = 10.0          # degrees: smaller tilts are the ROTATIONS search's
TILT_GUESSES = {True: 3, False: 2}  # tilts tried: grown canvas (edge directions) / in place (polar views)
POLAR_RADII = 12         # rings of the polar view that estimates an in-place tilt (the inner 2 skipped)
TILT_FIT = 0.7           # coarse fit a tilt needs before its full search (look-alikes: 99% below 0.67)
TILT_SHARES = {True: 3, False: 6}   # shares searched: canvas expanded (the whole view) / cut to the frame
TURN_SHARES = 5          # quarter-turned copies: only the largest shares (a turned copy is rarely a deep crop)
TURN_MARGIN = 0.05       # a quarter turn is searched when its coarse full-frame fit beats upright's by this
TURN_FIT = 0.7           # ...and reaches this (turned copies fit at ~1.0, look-alikes' best turn at 0.3-0.5)
COARSE = 16              # side of the thumbnails that choose a quarter turn
FLAT_STD = 2.0           # gray levels: a thumbnail flatter than this has no layout to align
BLANK_STD = 1.0          # ...unless it is dim: one flatter than this is blank (quantization's noise at most)
MIN_OPAQUE = 0.3         # share of a template that must be opaque for a search by its opaque pixels
MIN_AGREEMENT = 0.6      # below this no pair is the same picture, however its neighbours look
MAX_RELATIVE = 0.25      # see relative_disagreement: a copy is at most this far, relative to look-alikes
# A pair only the layouts proposed has one signal (its cosine counts as a look-alike's), so
# its layout alone must be this far. 0.25 lost 2%-blurred and 16 px pixelated copies whose
# layouts agree at 0.88-0.95 against look-alikes at 0.6-0.7 (0.26-0.38); 0.4 found them
# with no new unrelated pair in the stranger runs, +1 false pair on Fashion-MNIST and +2 on
# gradients; 0.5: +5 on Fashion-MNIST (README, "Blurred copies").
MAX_RELATIVE_LAYOUT = 0.4
ACCEPT = 0.97            # agreement at which a pair's search stops (nothing needs better)
DEFAULT_PACK = 0.55      # look-alikes' agreement and cosine when a data set has no packs to measure
MIN_PACK = 2             # other candidates an image needs for a pack of its own
PROCESS_MIN_PAIRS = 1024  # below this, the calling thread: a process pool costs ~1 s to start (bench/audit_rerun.py, 2 cores: 1,024 pairs 6.8 s in the thread, 4.0 s in processes; 512 about even)
PROCESS_CHUNK = 256       # pairs a task (~1 s of work: cancellation is checked between tasks)
cv2.setNumThreads(1)      # parallelism comes from verify_pairs' worker processes, one pair each
log = logging.getLogger(__name__)


@dataclasses.dataclass
class PairEvidence:
    """Per pair, (P,) arrays: ``agreement`` in [-1, 1] (what verdicts use),
    the best alignment's layout correlation and detail correlation, the share
    of the larger view it covers (0..1], whether it needed a mirror, the
    turn it needed (degrees counter-clockwise: a quarter turn, or a tilt of
    10 degrees or more; smaller rotations count as 0),
    whether one image is the other's negative (light and dark swapped, all
    of it, or in part: a solarized copy, see FOLD_GAIN), and
    how many of their keypoints one similarity transform maps onto each
    other (``engine.keypoints.matched_inliers``; 0 where a signature has
    none), and ``matched_simplicity``: the share of the aligned template's
    variance (the view of one image placed on the other, as compared) that
    its two strongest components hold (:func:`simplicity`; 1 for a bar, an
    edge or a box, 0 where nothing was aligned), and ``matched_blur_px``:
    the Gaussian blur (sigma, pixels of the 48-px thumbnail) by which the
    sharper view was softened to compare the two at one sharpness (0 where
    they were compared as they are; :func:`_blur_matched`), and
    ``matched_profile``: whether the alignment agrees by profiles alone
    (:func:`profile_match`; True where nothing was aligned): a pair is
    judged as a profile's only where this and either image's thumbnail say
    so (:func:`profile_pairs`), and ``warp_gain``: the agreement the best
    placement gained by a smooth warp (:func:`_warped`; 0 where it was not
    warped)."""
    agreement: np.ndarray
    layout: np.ndarray
    detail: np.ndarray
    matched_area: np.ndarray
    mirrored: np.ndarray
    turned: np.ndarray
    inverted: np.ndarray
    keypoint_inliers: np.ndarray
    matched_simplicity: np.ndarray
    matched_blur_px: np.ndarray
    matched_profile: np.ndarray
    warp_gain: np.ndarray

    @classmethod
    def empty(cls, p: int) -> "PairEvidence":
        return cls(np.zeros(p, np.float32), np.zeros(p, np.float32), np.zeros(p, np.float32),
                   np.zeros(p, np.float32), np.zeros(p, bool), np.zeros(p, np.int16), np.zeros(p, bool),
                   np.zeros(p, np.int16), np.zeros(p, np.float32), np.zeros(p, np.float32), np.ones(p, bool),
                   np.zeros(p, np.float32))

    @classmethod
    def identical(cls, p: int) -> "PairEvidence":
        """The evidence of ``p`` pairs of identical files: everything agrees
        (their keypoints are not matched: 0)."""
        one = np.ones(p, np.float32)
        return cls(one, one.copy(), one.copy(), one.copy(), np.zeros(p, bool), np.zeros(p, np.int16),
                   np.zeros(p, bool), np.zeros(p, np.int16), np.zeros(p, np.float32), np.zeros(p, np.float32),
                   np.ones(p, bool), np.zeros(p, np.float32))

    def take(self, idx) -> "PairEvidence":
        return PairEvidence(*(getattr(self, f.name)[idx] for f in dataclasses.fields(self)))

    def put(self, start: int, part: "PairEvidence") -> None:
        """Write ``part``'s pairs at positions ``start``.. of these arrays."""
        for f in dataclasses.fields(self):
            getattr(self, f.name)[start:start + len(part.agreement)] = getattr(part, f.name)

    def put_where(self, mask: np.ndarray, part: "PairEvidence") -> None:
        """Write ``part``'s pairs, in order, at the positions where ``mask`` (P,) is True."""
        for f in dataclasses.fields(self):
            getattr(self, f.name)[mask] = getattr(part, f.name)

    def concat(self, other: "PairEvidence") -> "PairEvidence":
        return PairEvidence(*(np.concatenate([getattr(self, f.name), getattr(other, f.name)])
                              for f in dataclasses.fields(self)))


class _Image:
    """One signature's pixels and what every pair it is in derives from them
    alike: its views, their templates at each share, sheared bands, coarse
    thumbnails, edge and polar spectra. An image is in every pair of a
    streaming check and in ~25 pairs of an audit; derived once for them all
    (in a chunk, see _align_all), pairs were aligned 1.02-1.16x faster
    (bench/verify_speed.py), with the same evidence. Memoized as asked for
    (``memo``), so an image aligned once costs what it did; nothing memoized
    is changed in place afterwards (placements keep references to templates)."""
    __slots__ = ("signature", "aspect", "thumb", "visible", "_memo")

    def __init__(self, signature: np.ndarray):
        self.signature = signature
        self.aspect, _, self.thumb = unpack(signature)
        self.visible = _visible(self.thumb)
        self._memo: dict = {}

    def memo(self, key, make):
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = make()
            return value

    def views(self, tag=None) -> tuple[np.ndarray, np.ndarray]:
        """(view, its mirror): ``tag`` None upright, ("turned", k) turned k
        quarters counter-clockwise, "folded" folded about mid-gray (FOLD_GAIN)."""
        def make():
            if tag is None:
                v = self.visible
            elif tag == "folded":
                v = _fold(self.thumb)
            else:
                v = np.ascontiguousarray(np.rot90(self.visible, tag[1]))
            return v, v[:, ::-1].copy()
        return self.memo(("views", tag), make)

    def templates(self, tag=None) -> dict:
        """The memo of :func:`_search`'s templates of ``views(tag)``."""
        return self.memo(("templates", tag), dict)


def _dog(x: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), 0.7) - cv2.GaussianBlur(x, (0, 0), 2.5)


def _zncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def _inner(t: np.ndarray) -> np.ndarray:
    m = int(round(SIDE * (1 - INNER) / 2))
    return t[m:SIDE - m, m:SIDE - m]


@functools.lru_cache(maxsize=4096)     # aspects are one of 256 stored values: pairs repeat them
def _shares(aspect_t: float, aspect_s: float) -> tuple[tuple[float, float], ...]:
    """(x share, y share) of the searched view that the template's view may
    cover: an aspect-preserving crop, or the same frame squashed."""
    ratio = aspect_t / aspect_s           # fx / fy for a crop of the searched view
    out = []
    for f in SHARES:
        fx, fy = f * math.sqrt(ratio), f / math.sqrt(ratio)
        top = max(fx, fy)
        if top > 1:
            fx, fy = fx / top, fy / top
        if fx * fy >= MIN_AREA:
            out.append((fx, fy))
        if abs(ratio - 1) > 0.05:
            out.append((f, f))
    return tuple(dict.fromkeys((round(x, 3), round(y, 3)) for x, y in out))


def _cell_agreement(t: np.ndarray, p: np.ndarray, sign: float) -> float | None:
    """The mean correlation of the best CELL_KEEP of the CELLS x CELLS cells
    of two aligned views (cells flat in either skipped): a sticker, a logo,
    a caption or a vignette spoils a few cells, not the picture. None when
    fewer than 4 cells have something to correlate."""
    ch, cw = t.shape[0] // CELLS, t.shape[1] // CELLS
    if ch < 2 or cw < 2:
        return None
    def cells(x):
        x = x[:ch * CELLS, :cw * CELLS].reshape(CELLS, ch, CELLS, cw).transpose(0, 2, 1, 3)
        x = x.reshape(CELLS * CELLS, ch * cw)
        return x - x.mean(axis=1, keepdims=True)
    a, b = cells(t), cells(p)
    na, nb = np.sqrt((a * a).mean(axis=1)), np.sqrt((b * b).mean(axis=1))
    ok = (na >= FLAT_STD) & (nb >= FLAT_STD)
    if ok.sum() < 4:
        return None
    r = np.sort(sign * (a[ok] * b[ok]).mean(axis=1) / (na[ok] * nb[ok]))[::-1]
    return float(r[:max(1, int(round(len(r) * CELL_KEEP)))].mean())


class _Match:
    """The best placement so far, chosen by layout correlation (its absolute
    value: a negative copy correlates at -1). Its detail correlation (two
    blurs and a correlation) and cell correlation are computed once, when
    asked: most placements are beaten before anyone needs them."""
    __slots__ = ("layout", "_detail", "_cells", "area", "mirrored", "templ", "patch", "turned", "sign", "mask",
                 "blur", "at", "shear")

    def __init__(self):
        self.layout, self._detail, self._cells, self.area, self.mirrored = -1.0, -1.0, -1.0, 0.0, False
        self.templ = self.patch = self.mask = None
        self.turned, self.sign, self.blur = 0, 1.0, 0.0
        self.at = (0, 0)            # where the template's top-left corner sits in the searched view
        self.shear = None           # the shear search's (template is the first view, axis, factor)

    @property
    def detail(self) -> float:
        if self._detail is None:
            self._detail = self.sign * _zncc(_dog(self.templ), _dog(self.patch))
        return self._detail

    @property
    def cells(self) -> float:
        if self._cells is None:
            c = _cell_agreement(self.templ, self.patch, self.sign)
            self._cells = self.layout if c is None else c
        return self._cells

    @property
    def agreement(self) -> float:
        # Layout = the whole view's correlation and its best cells' alike.
        return 0.5 * (0.5 * (self.layout + self.cells) + self.detail)

    def reaches(self, stop_at: float) -> bool:
        # detail, cells <= 1, so agreement >= stop_at needs layout >= 4 * stop_at - 3
        # first: the others are computed only for placements that could stop.
        return self.layout >= 4 * stop_at - 3 and self.agreement >= stop_at


def _visible(thumbnail: np.ndarray) -> np.ndarray:
    """A thumbnail as float32, a dim one (a gray-level spread from BLANK_STD
    to FLAT_STD: a night photo, a copy darkened) stretched to FLAT_STD x 8.
    Before, a dim picture had no layout: it aligned with nothing, and two dim
    copies of different scenes were "the same" as two blank images of one
    tone, at agreement 1 (a probe: low-light copies of two paintings)."""
    x = thumbnail.astype(np.float32)
    spread = float(x.std())
    if BLANK_STD <= spread < FLAT_STD:
        x = (x - x.mean()) * (8 * FLAT_STD / spread) + 128
    return x


def _flat(x: np.ndarray) -> bool:
    return float(cv2.meanStdDev(x)[1][0, 0]) < FLAT_STD


def _opaque_only(x: np.ndarray, opaque: np.ndarray) -> np.ndarray:
    """``x`` with its transparent pixels set to the mean of its opaque ones:
    they add nothing to a zero-mean correlation, a cell of them is flat."""
    x = x.copy()
    x[~opaque] = x[opaque].mean()
    return x


# A transparent thumbnail's pixels on the picture's edge blend the picture with what lies
# under it: white in the transparent image's thumbnail, whatever colour a copy that dropped
# the alpha shows there. On flat artwork that edge is most of what varies: emoji flattened
# on black aligned with their originals at 0.52-0.74 on all opaque pixels, 0.87-0.97 off
# the edge (docs/verified-duplicates.md, "Emoji"). So the opaque pixels off the edge are
# searched too, over most of the frame only (a copy that dropped the alpha is seldom also
# cropped): a smaller template of a picture's flat inside fits parts of other pictures
# (searched at every share, it paired four emoji with different ones at 24-62% of the
# frame; from half the area on, a ribbon with a kiss mark at 53%).
EDGE_FREE_AREA = 0.8


def _off_the_edge(mask: np.ndarray) -> np.ndarray | None:
    """``mask`` (float 0/1, the opaque pixels) less the picture's edge, or
    None when too few would be left (a thin picture)."""
    inside = cv2.erode(mask, np.ones((3, 3), np.uint8))     # the frame's own edge is kept
    return inside if _inner(inside).mean() >= MIN_OPAQUE else None


def _place(templ: np.ndarray, searched: np.ndarray, m: _Match, area: float, mirrored: bool,
           turned: int = 0, mask: np.ndarray | None = None) -> None:
    """Slide ``templ`` over ``searched``; keep the placement in ``m`` if it
    correlates better. ``mask``: the template's opaque pixels (float 0/1),
    the only ones compared (its transparent ones show the canvas)."""
    if mask is None:
        res = cv2.matchTemplate(searched, templ, cv2.TM_CCOEFF_NORMED)
    else:   # a flat patch under the mask has no correlation: NaN/inf there
        res = np.clip(np.nan_to_num(cv2.matchTemplate(searched, templ, cv2.TM_CCOEFF_NORMED, mask=mask),
                                    nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
    low, high, low_at, high_at = cv2.minMaxLoc(res)
    sign, score, (x, y) = (-1.0, -low, low_at) if -low > high else (1.0, high, high_at)
    if score > m.layout:
        th, tw = templ.shape
        patch = searched[y:y + th, x:x + tw]
        if mask is not None:
            opaque = mask > 0
            templ, patch = _opaque_only(templ, opaque), _opaque_only(patch, opaque)
        m.layout, m.area, m.mirrored, m.templ, m.turned, m.sign = float(score), area, mirrored, templ, turned, sign
        m.patch, m._detail, m._cells, m.mask, m.at = patch, None, None, mask, (x, y)


def _template(view: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    templ = cv2.resize(_inner(view), size, interpolation=cv2.INTER_AREA)
    return templ, _flat(templ)


def _search(views, searched: np.ndarray, shares, stop_at: float, turned: int = 0, masks=None,
            templates: dict | None = None) -> _Match:
    """``views``: (template view,) or (view, its mirror); ``masks``: their
    opacity (float 0/1, the same shape), or None (opaque); ``templates``:
    a memo of these views' templates by (view, size) (an _Image's), or None."""
    m = _Match()
    for fx, fy in shares:
        size = (max(4, round(fx * SIDE * INNER)), max(4, round(fy * SIDE * INNER)))
        for k, view in enumerate(views):
            mask = None
            if masks is not None:
                templ, flat = _template(view, size)
                mask = (cv2.resize(_inner(masks[k]), size, interpolation=cv2.INTER_AREA) >= 0.5).astype(np.float32)
                if mask.mean() < MIN_OPAQUE:
                    continue
            elif templates is None:
                templ, flat = _template(view, size)
            else:
                key = (k, size)
                if key not in templates:
                    templates[key] = _template(view, size)
                templ, flat = templates[key]
            if not flat:
                _place(templ, searched, m, fx * fy, k == 1, turned, mask)
            if m.reaches(stop_at):
                return m
    return m


def _likely_turn(a: "_Image", b: "_Image") -> int:
    """Quarter turns (1-3, counter-clockwise) that bring ``a`` onto ``b``
    better than upright on COARSE x COARSE full-frame thumbnails, or 0.
    Cheap (a dozen small correlations), so the full search runs for at most
    one turn, and only when the picture looks turned."""
    sa, sb = _coarse_of(a), _coarse_of(b)
    fit = [max(abs(_zncc(np.rot90(v, k), sb)) for v in (sa, sa[:, ::-1])) for k in range(4)]
    k = int(np.argmax(fit[1:])) + 1
    return k if fit[k] >= TURN_FIT and fit[k] > fit[0] + TURN_MARGIN else 0


def _rotate(templ: np.ndarray, degrees: float) -> np.ndarray:
    # Rotate then keep the centre, so no corner of the result is blank fill.
    h, w = templ.shape
    rot = cv2.warpAffine(templ, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    my, mx = max(1, h // 8), max(1, w // 8)
    return rot[my:h - my, mx:w - mx]


def _unsquashed(t: np.ndarray, aspect: float) -> np.ndarray:
    """A (SIDE, SIDE) view back at its aspect ratio (about SIDE*SIDE pixels):
    a rotation is a rotation of the picture, not of its squashed thumbnail."""
    r = math.sqrt(aspect)
    return cv2.resize(t, (max(8, round(SIDE * r)), max(8, round(SIDE / r))), interpolation=cv2.INTER_AREA)


def _orientations(x: np.ndarray) -> np.ndarray:
    """(TILT_BINS,) zero-mean, unit-norm histogram of gradient directions
    weighted by magnitude (the outermost 2 pixels left out), lightly smoothed."""
    gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3)
    mag, ang = cv2.cartToPolar(gx, gy, angleInDegrees=True)
    bins = (ang[2:-2, 2:-2].ravel() * (TILT_BINS / 360.0)).astype(np.int64) % TILT_BINS
    h = np.bincount(bins, weights=mag[2:-2, 2:-2].ravel(), minlength=TILT_BINS)
    h = np.convolve(np.r_[h[-2:], h, h[:2]], [1, 2, 3, 2, 1], "valid")
    h -= h.mean()
    n = float(np.linalg.norm(h))
    return h / n if n > 0 else h


def _best_shifts(fit: np.ndarray, count: int) -> list[float]:
    """The ``count`` best circular shifts of ``fit`` (TILT_BINS,), as degrees
    in (-180, 180], at least TILT_MIN from upright and 10 degrees apart."""
    out: list[float] = []
    for s in np.argsort(-fit).tolist():
        deg = s * 360.0 / TILT_BINS
        deg = deg - 360.0 if deg > 180 else deg
        if abs(deg) >= TILT_MIN and all(abs(deg - o) >= 10 for o in out):
            out.append(deg)
            if len(out) == count:
                break
    return out


def _circular_fit(spectrum_a: np.ndarray, spectrum_b: np.ndarray) -> np.ndarray:
    """fit[s] = sum_n b[n + s] . a[n] along axis 0 (a, b: (TILT_BINS, ...)),
    from their spectra along axis 0 (np.fft.fft(x, axis=0))."""
    f = np.real(np.fft.ifft(spectrum_b * np.conj(spectrum_a), axis=0))
    return f.reshape(TILT_BINS, -1).sum(axis=1)


def _polar(x: np.ndarray) -> np.ndarray:
    """(TILT_BINS, POLAR_RADII - 2) polar view of the disc inscribed in ``x``
    about its centre, each ring zero-mean and unit-norm."""
    h, w = x.shape
    p = cv2.warpPolar(x, (POLAR_RADII, TILT_BINS), (w / 2, h / 2), min(w, h) / 2 * 0.95,
                      cv2.WARP_POLAR_LINEAR)[:, 2:]
    p = p - p.mean(axis=0, keepdims=True)
    n = np.linalg.norm(p, axis=0, keepdims=True)
    return p / np.where(n > 0, n, 1.0)


def _likely_tilts(a: "_Image", b: "_Image") -> list[tuple[float, bool]]:
    """(degrees, canvas grown) tilts that may bring ``a`` onto ``b``
    (their unsquashed views), degrees as OpenCV turns (counter-clockwise). On a
    grown canvas (trimmed again, so centre and scale move), every edge turns
    with the picture: the best circular alignments of the two gradient
    direction histograms. In place (frame and centre kept): the best
    alignments of the two polar views. Directions and polar angles run
    clockwise on screen (y points down), hence the sign."""
    def edges(x):
        return x.memo("orientations", lambda: np.fft.fft(_orientations(_unsquashed_of(x)), axis=0))

    def polar(x):
        return x.memo("polar", lambda: np.fft.fft(_polar(_unsquashed_of(x)), axis=0))
    by_edges = _best_shifts(_circular_fit(edges(a), edges(b)), TILT_GUESSES[True])
    by_polar = _best_shifts(_circular_fit(polar(a), polar(b)), TILT_GUESSES[False])
    return [(-d, True) for d in by_edges] + [(-d, False) for d in by_polar]


def _tilted_view(x: np.ndarray, degrees: float, expand: bool, tone: float | None = None) -> np.ndarray | None:
    """``x`` (an unsquashed view) turned by ``degrees``, as a (SIDE, SIDE)
    view like a signature's: ``expand``, on a canvas of its edge tone grown
    to hold it, then that canvas trimmed away again (a picture rotated with
    its canvas expanded); else cut to its own frame (rotated in place).
    ``tone``: ``x``'s edge tone, if known."""
    h, w = x.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    if not expand:
        r = cv2.warpAffine(x, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    else:
        c, s = abs(m[0, 0]), abs(m[0, 1])
        nw, nh = int(h * s + w * c + 0.5), int(h * c + w * s + 0.5)
        m[0, 2] += (nw - w) / 2
        m[1, 2] += (nh - h) / 2
        tone = edge_tone(x)[0] if tone is None else tone   # the canvas it was cut from, as the signature saw it
        r = cv2.warpAffine(x, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=tone)
        inside = np.abs(r - tone) > FRAME_TOLERANCE
        ys, xs = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        if ys.size < 4 or xs.size < 4:
            return None
        r = r[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
    return cv2.resize(r, (SIDE, SIDE), interpolation=cv2.INTER_AREA)


BLUR_RATIO = 0.7          # one view's edges below this share of the other's steepness: it is the blurrier
BLUR_SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)   # pixels of the thumbnail: blurs tried on the sharper view
BLUR_MIN_SIDE = 24        # pixels: a smaller window of two smooth views correlates by chance


def _edge_sharpness(x: np.ndarray) -> float:
    """How steep a view's steepest edges are for its spread: the 98th
    percentile of the gradient's magnitude over the standard deviation. A
    blur softens every edge; a plain picture (a shirt without a print) has
    less texture than a patterned one but edges as steep, so two look-alikes
    of one style measure alike (Fashion-MNIST: a fine-detail measure took 11%
    of look-alike pairs for one blurrier than the other, this one 2%)."""
    sd = float(cv2.meanStdDev(x)[1][0, 0])
    if sd <= 0:
        return 0.0
    gx, gy = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3)
    return float(np.percentile(cv2.magnitude(gx, gy), 98)) / sd


def _blur_matched(m: _Match) -> _Match | None:
    """The same placement with the sharper view blurred until its edges are
    as soft as the other's, or None when the two are about as sharp. A copy
    blurred by a few percent of its width (a lock screen, a privacy blur, a
    careless resize) keeps its layout but loses the detail its original's
    thumbnail still has, and correlates at 0.8-0.9 instead of ~1: compared at
    one sharpness, it correlates as a copy does. The blur is chosen by the
    edges' measure, not by the correlation, so a look-alike gains only what
    the lost detail cost it. Only over most of the frame (BLUR_MIN_SIDE):
    a quarter of two blurred pictures, compared at one sharpness, correlated
    at 0.92 in a probe."""
    if m.templ is None or m.mask is not None or min(m.templ.shape) < BLUR_MIN_SIDE:
        return None
    ft, fp = _edge_sharpness(m.templ), _edge_sharpness(m.patch)
    if min(ft, fp) >= BLUR_RATIO * max(ft, fp):
        return None
    sharp_is_templ = ft > fp
    sharp, target = (m.templ, fp) if sharp_is_templ else (m.patch, ft)
    blurred, sigma = None, 0.0
    for sigma in BLUR_SIGMAS:
        blurred = cv2.GaussianBlur(sharp, (0, 0), sigma)
        if _edge_sharpness(blurred) <= target:
            break
    templ, patch = (blurred, m.patch) if sharp_is_templ else (m.templ, blurred)
    if _flat(templ) or _flat(patch):
        return None
    out = _Match()
    out.layout = m.sign * _zncc(templ, patch)
    out.area, out.mirrored, out.turned, out.sign = m.area, m.mirrored, m.turned, m.sign
    out.templ, out.patch, out._detail, out._cells, out.blur = templ, patch, None, None, sigma
    return out


# A copy warped locally (an elastic or grid distortion, a lens, ripples, a swirl) is no
# crop, turn or shear of its original: its layout wanders by a pixel or two across the
# thumbnail, and every rigid placement correlates at 0.5-0.85. So the best placement is
# also compared with its patch warped onto the template by a smooth dense flow (Farneback's,
# blurred, at most WARP_MAX long), and counts when it agrees better. A flow between two
# different pictures mostly fits noise: of 8,599 look-alike pairs of photos, illustrations
# and icons 4% gained anything (99th percentile 0.06), all 25 elastic and grid-warped copies
# did (median 0.07).
# Only where both thumbnails hold fine detail (WARP_DETAIL): a thumbnail enlarged from a
# picture smaller than itself (28 px garments) holds little, and there a flow of a pixel or
# two bends one garment's outline onto another's (Fashion-MNIST: 10 more copies found and
# 18 more false pairs, with the warp everywhere). And it counts only for a pair whose gain
# no other candidate of its images matches (verified_pairs, warp_beyond_rivals): pictures of
# one template bend onto each other alike. docs/verified-duplicates.md, "Local warps".
WARP_WINDOW = 15          # pixels: Farneback's averaging window (a smaller one lets look-alikes' flows fit noise)
WARP_SMOOTH = 3.0         # pixels: the flow blurred by this before it is used
WARP_MAX = 2.0            # pixels: no displacement longer than this
WARP_DETAIL = 0.02        # share of a thumbnail's variance above 0.6 of the highest frequency
                          # (Fashion-MNIST's: median 0.006, 90th percentile 0.014; other collections'
                          # 10th percentiles 0.024-0.066)


_FINE = np.hypot(*np.mgrid[-(SIDE // 2):SIDE - SIDE // 2, -(SIDE // 2):SIDE - SIDE // 2]) > 0.6 * SIDE / 2


def fine_detail(thumbnail: np.ndarray) -> float:
    """The share of a (SIDE, SIDE) thumbnail's variance at spatial
    frequencies above 0.6 of the highest it can hold (0 for a flat one)."""
    x = thumbnail.astype(np.float32)
    power = np.abs(np.fft.fftshift(np.fft.fft2(x - x.mean()))) ** 2
    total = float(power.sum())
    return float(power[_FINE].sum()) / total if total > 0 else 0.0


def _warped(m: _Match) -> _Match | None:
    """The same placement with the patch warped onto the template by a
    smooth dense flow of at most WARP_MAX pixels (see WARP_WINDOW), or None
    for a template compared on its opaque pixels or smaller than
    BLUR_MIN_SIDE (a flow over a few pixels fits anything)."""
    if m.templ is None or m.mask is not None or min(m.templ.shape) < BLUR_MIN_SIDE:
        return None
    t, p = m.templ, m.patch
    lo, hi = min(float(t.min()), float(p.min())), max(float(t.max()), float(p.max()))
    scale = 255.0 / max(hi - lo, 1e-3)
    t8 = np.clip((t - lo) * scale, 0, 255).astype(np.uint8)
    p8 = np.clip((p - lo) * scale, 0, 255).astype(np.uint8)
    if m.sign < 0:
        p8 = 255 - p8
    flow = cv2.calcOpticalFlowFarneback(t8, p8, None, 0.5, 2, WARP_WINDOW, 3, 5, 1.1, 0)
    flow = cv2.GaussianBlur(flow, (0, 0), WARP_SMOOTH)
    length = np.sqrt((flow * flow).sum(axis=-1, keepdims=True))
    flow *= np.minimum(1.0, WARP_MAX / np.maximum(length, 1e-6))
    h, w = t.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    patch = cv2.remap(p.astype(np.float32), x + flow[..., 0], y + flow[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE)
    if _flat(patch):
        return None
    out = _Match()
    out.layout = m.sign * _zncc(t, patch)
    out.area, out.mirrored, out.turned, out.sign, out.blur = m.area, m.mirrored, m.turned, m.sign, m.blur
    out.templ, out.patch, out._detail, out._cells, out.at = t, patch, None, None, m.at
    return out


def _stretched(best: _Match, searched: np.ndarray) -> _Match:
    """``best`` or a better placement of its template made wider and lower,
    or narrower and taller (area kept), a step of STRETCH at a time in each
    direction while each step fits better. A crop of one aspect
    resized to another (a random-resized crop: a training pipeline's 224 x
    224 of any part of any shape) is neither a crop (aspect kept) nor a
    squash (whole frame): its template fits only with its width and height
    rescaled apart."""
    base, (h, w) = best, best.templ.shape
    for step in (STRETCH, 1 / STRETCH):
        for k in range(1, STRETCH_STEPS + 1):
            s = step ** k
            size = (min(searched.shape[1], max(4, round(w * s))), min(searched.shape[0], max(4, round(h / s))))
            templ = cv2.resize(base.templ, size, interpolation=cv2.INTER_LINEAR)
            mask = None
            if base.mask is not None:
                mask = (cv2.resize(base.mask, size, interpolation=cv2.INTER_LINEAR) >= 0.5).astype(np.float32)
                if mask.mean() < MIN_OPAQUE:
                    break
            if _flat(templ):
                break
            trial = _Match()
            _place(templ, searched, trial, base.area, base.mirrored, base.turned, mask)
            # only a better layout is worth its detail and cells
            if not (trial.layout > best.layout and trial.agreement > best.agreement):
                break
            best = trial
    return best


def _coarse(x: np.ndarray) -> np.ndarray:
    return cv2.resize(x, (COARSE, COARSE), interpolation=cv2.INTER_AREA)


def _coarse_of(x: "_Image", inner: bool = False) -> np.ndarray:
    """The coarse thumbnail of an image's upright view (``inner``: of its inner part)."""
    return x.memo(("coarse", inner), lambda: _coarse(_inner(x.visible) if inner else x.visible))


def _unsquashed_of(x: "_Image") -> np.ndarray:
    return x.memo("unsquashed", lambda: _unsquashed(x.visible, x.aspect))


def _tilt_search(ia: "_Image", ib: "_Image", stop_at: float) -> _Match | None:
    """The best alignment of ``a`` turned by a tilt its edges or its polar
    view point to (rotated with its canvas grown, or in place) onto ``b``; None when
    no tilt fits ``b`` coarsely (TILT_FIT). Most look-alikes stop at the
    coarse fit, so the cost is a few small resizes a pair."""
    xa, b = _unsquashed_of(ia), ib.visible
    best = None
    for deg, expand in _likely_tilts(ia, ib):
        view = _tilted_view(xa, deg, expand, ia.memo("unsquashed tone", lambda: edge_tone(xa)[0]))
        if view is None or _flat(view):
            continue
        fit = _zncc(_coarse(view if expand else _inner(view)), _coarse_of(ib, inner=not expand))
        if fit < TILT_FIT:
            continue
        m = _search((view,), b, _shares(1.0, 1.0)[:TILT_SHARES[expand]], stop_at, int(round(deg)) % 360)
        if m.templ is not None and (best is None or m.agreement > best.agreement):
            best = m
        if best is not None and best.reaches(stop_at):
            return best
    return best


# A sheared copy (RandAugment's ShearX / ShearY, 15-25 degrees: each column or row slid
# along by its distance from the pivot, black wedges where nothing came in) is no crop,
# turn or stretch of its original: a probe's 20-degree ShearY copies of wide landscapes
# matched at best a third of the frame, at 0.56-0.79. Sheared about its centre by the
# same factor, the original's band that every column (row) keeps is a part of the copy,
# placed wherever the pivot put it. Factors are in the thumbnail's own (squashed)
# coordinates: a shear of tan(20 deg) = 0.36 on a 3:2 picture is 0.55 here. Each side's
# band is placed on the other: the copy sheared back shows the original's band too, but
# only near the exact factor (else its black wedges reach into the band).
# A band sheared into place fits look-alikes' layouts too: of 23,698 candidate pairs of
# 28 px garments (dup_quality's Fashion-MNIST) 2,148 gained 0.1 or more, all but one of
# them two different garments (median agreement 0.61 -> 0.78), and 3 of 300 copies were
# then lost to higher look-alike levels; cards of one deck (a test) paired 22 -> 33 times.
# A sheared copy shows its original's fine detail once sheared back, a look-alike does
# not: the placement counts when it gains SHEAR_GAIN and its detail correlates at
# SHEAR_DETAIL or more (the probe's sheared copies 0.937-0.994, those garments' median
# 0.86, 90th percentile 0.92). Then Fashion-MNIST's verdicts are those without a shear
# search, and the cards pair 23 times (33 at 0.9).
SHEARS = (0.2, 0.4, 0.6)  # searched both ways on both axes, then refined around the best
SHEAR_REFINE = (0.1, 0.05)
SHEAR_GAIN = 0.1
SHEAR_DETAIL = 0.93
MIN_BAND = SIDE // 4      # pixels: the kept band must be at least this wide (|factor| <= 0.75)


def _sheared_band(t: np.ndarray, factor: float, axis: int) -> np.ndarray | None:
    """``t`` ((SIDE, SIDE) float32) sheared about its centre by ``factor``
    (axis 0: each column moved down by factor x its offset from the centre,
    a ShearY; 1: each row moved right, a ShearX), cut to the band every
    column (row) keeps; None when that band is under MIN_BAND."""
    side = t.shape[0]
    m = np.float32([[1, 0, 0], [factor, 1, -factor * side / 2]] if axis == 0 else
                   [[1, factor, -factor * side / 2], [0, 1, 0]])
    cut = int(math.ceil(abs(factor) * side / 2))
    if side - 2 * cut < MIN_BAND:
        return None
    r = cv2.warpAffine(t, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(r[cut:side - cut, :] if axis == 0 else r[:, cut:side - cut])


def _shear_search(a: np.ndarray, b: np.ndarray, stop_at: float, images: tuple | None = None) -> _Match:
    """The best placement of either view's sheared band (see SHEARS) on the
    other: both ways, since a copy's band holds its black wedges unless its
    shear back is nearly exact, while the original's fits over a wider range.
    ``images``: the two views' _Image, whose memos keep the bands, or None."""
    best = _Match()
    for t, searched, image in ((a, b, images and images[0]), (b, a, images and images[1])):
        first = t is a
        bands = {} if image is None else image.memo("bands", dict)
        fits: dict[tuple[int, float], float] = {}      # (axis, factor): layout
        todo = [(axis, sign * f) for axis in (0, 1) for f in SHEARS for sign in (1, -1)]
        for step in (None,) + SHEAR_REFINE:
            if step is not None:           # around this way's best so far
                axis, factor = max(fits, key=fits.get)
                todo = [(axis, round(factor + step, 4)), (axis, round(factor - step, 4))]
            for axis, factor in todo:
                if (axis, factor) in fits:
                    band = None
                else:
                    if (axis, factor) not in bands:
                        cut = _sheared_band(t, factor, axis)
                        bands[axis, factor] = cut if cut is not None and not _flat(cut) else None
                    band = bands[axis, factor]
                if band is None:
                    fits.setdefault((axis, factor), -1.0)
                    continue
                m = _Match()
                _place(band, searched, m, band.size / t.size, False)
                fits[axis, factor] = m.layout
                if m.layout > best.layout:
                    m.shear = (first, axis, factor)
                    best = m
        if best.reaches(stop_at):
            break
    return best


# A solarized copy (RandAugment's Solarize: the tones above some level turned over, a
# negative in part) correlates with its original at 0.3-0.77, as look-alikes do: no
# monotonic tone map relates the two. Folded about mid-gray, min(x, 255 - x), a gray
# pixel and either of its solarized tones are one value, at any threshold. So the full
# frame is also compared folded, and that placement counts when it agrees FOLD_GAIN
# better than every other: a probe's six solarized photos 0.31-0.77 -> 0.74-0.98 (gains
# 0.08-0.43; the four that then pass gained 0.14 or more), while
# of 1,500 candidate pairs of illustrations none gained more than 0.01 by folding (the
# folded views of two pictures agree less than they do, as a rule). Folding flatters a
# copy under a bright or dark overlay too (a sticker over these photos: 3 of 20 gained
# 0.1-0.19), which is then called inverted as well. Tried: only where the upright
# placement's cells disagree (below 0.8): it kept 2 of the probe's 4 solarized copies
# (their cells agreed at 0.87 and 0.94).
FOLD_GAIN = 0.1


def _fold(t: np.ndarray) -> np.ndarray:
    return 127.5 - np.abs(t.astype(np.float32) - 127.5)


def _folded_match(ia: "_Image", ib: "_Image", stop_at: float) -> tuple[_Match | None, np.ndarray | None]:
    """The best full-frame placement (by layout) of two thumbnails' folded
    views (either way round, mirrored or not), and the view it was placed
    on; (None, None) when a folded view is flat or correlates only negatively."""
    best, searched = None, None
    for it, is_ in ((ia, ib), (ib, ia)):
        t, s = it.views("folded")[0], is_.views("folded")[0]
        if it.memo("folded flat", lambda: _flat(t)) or is_.memo("folded flat", lambda: _flat(s)):
            continue
        m = _search(it.views("folded"), s, _shares(it.aspect, is_.aspect)[:1], stop_at,
                    templates=it.templates("folded"))
        # by layout: the cells and detail are computed only for a placement that may count
        if m.templ is not None and m.sign > 0 and (best is None or m.layout > best.layout):
            best, searched = m, s
    return best, searched


def pair_alignment(sig_a: np.ndarray, sig_b: np.ndarray, stop_at: float = ACCEPT, judge_profile: bool = True
                   ) -> tuple[float, float, float, float, bool, int, bool, float, float, bool, float]:
    """(agreement, layout, detail, matched_area, mirrored, turned degrees,
    inverted, matched_simplicity, matched_blur_px, matched_profile, warp_gain) of two signatures ((SIGNATURE_BYTES,)
    uint8 each; see PairEvidence). The search stops once ``agreement``
    reaches ``stop_at``. ``judge_profile`` False: matched_profile is not
    measured (True), for pairs with no profile on either side."""
    return _aligned(_Image(sig_a), _Image(sig_b), stop_at, judge_profile)


def _aligned(ia: _Image, ib: _Image, stop_at: float, judge_profile: bool
             ) -> tuple[float, float, float, float, bool, int, bool, float, float, bool, float]:
    """:func:`pair_alignment` of two images (what they derive is memoized in them)."""
    (aspect_a, ta), (aspect_b, tb) = (ia.aspect, ia.thumb), (ib.aspect, ib.thumb)
    spread_a, spread_b = ia.memo("spread", lambda: float(ta.std())), ib.memo("spread", lambda: float(tb.std()))
    if min(spread_a, spread_b) < BLANK_STD and max(spread_a, spread_b) < FLAT_STD:
        # No layout to align: a blank picture, against a blank or dim one (a
        # near-black picture's recompressed copy crosses BLANK_STD either
        # way), is the same picture if it is of one tone with it.
        same = float(abs(float(ta.mean()) - float(tb.mean())) < 8)
        return same, same, same, 1.0, False, 0, False, 0.0, 0.0, True, 0.0
    a, b = ia.visible, ib.visible
    if (ia.memo("visible spread", lambda: a.std()) < FLAT_STD
            or ib.memo("visible spread", lambda: b.std()) < FLAT_STD):     # blank against a picture
        return 0.0, 0.0, 0.0, 1.0, False, 0, False, 0.0, 0.0, True, 0.0
    best, best_searched = _Match(), None
    # (template image, its views' tag, searched view, shares, turned degrees, opacity mask)
    searches = [(ia, None, b, None, 0, None), (ib, None, a, None, 0, None)]
    # A transparent image against an opaque one is also searched by its opaque
    # pixels alone: a copy saved without regard to the alpha shows another
    # colour around the picture. (Two transparent images share the white
    # canvas they are composited on.)
    opaque_a, opaque_b = opacity(ia.signature), opacity(ib.signature)
    if (opaque_a is None) != (opaque_b is None):
        it, s, opaque = (ia, b, opaque_a) if opaque_a is not None else (ib, a, opaque_b)
        mask = opaque.astype(np.float32)
        searches.append((it, None, s, None, 0, mask))
        inside = _off_the_edge(mask)
        whole = [(fx, fy) for fx, fy in _shares(it.aspect, (ib if it is ia else ia).aspect)
                 if fx * fy >= EDGE_FREE_AREA]
        if inside is not None and whole:
            searches.append((it, None, s, whole, 0, inside))
    while searches:
        it, tag, s, shares, turned, mask = searches.pop(0)
        masks = None if mask is None else (mask, mask[:, ::-1].copy())
        if shares is None:      # the upright view's (a turned view's are given)
            shares = _shares(it.aspect, (ib if it is ia else ia).aspect)
        m = _search(it.views(tag), s, shares, stop_at, turned, masks, it.templates(tag))
        if m.templ is not None and (best.templ is None or m.agreement > best.agreement):
            best, best_searched = m, s
        if best.templ is not None and best.reaches(stop_at):
            break
        if not searches and not turned:
            # A copy turned by a quarter (a photo on its side, a scan upside
            # down, a vertical flip = half a turn and a mirror): search the
            # turn the coarse thumbnails point to, from the larger shares.
            k = _likely_turn(ia, ib)
            if k:
                ra, rb = (aspect_a, aspect_b) if k == 2 else (1 / aspect_a, 1 / aspect_b)
                searches = [(ia, ("turned", k), b, _shares(ra, aspect_b)[:TURN_SHARES], 90 * k, None),
                            (ib, ("turned", -k % 4), a, _shares(rb, aspect_a)[:TURN_SHARES], 90 * k, None)]
    if best.templ is None:
        # Every template (a view's inner part) was flat: the picture lies in its
        # margin (a thin band along one edge). The whole frames are compared as they
        # are; such a match says no more than a profile's (one_dimensional counts
        # these pictures among them): the embedding decides.
        for k, view in enumerate((a, np.ascontiguousarray(a[:, ::-1]))):
            if not _flat(view):
                _place(view, b, best, 1.0, k == 1)
        if best.templ is None:      # nothing to align
            return -1.0, -1.0, -1.0, 0.0, False, 0, False, 0.0, 0.0, True, 0.0
        return (best.agreement, best.layout, best.detail, best.area, best.mirrored, 0, best.sign < 0,
                simplicity(best.templ), best.blur, True, 0.0)
    folded = False
    if not best.reaches(stop_at):
        # Solarized (see FOLD_GAIN): the placements below then turn and blur the folded views.
        m, searched = _folded_match(ia, ib, stop_at)
        if m is not None and m.layout > best.layout and m.agreement >= best.agreement + FOLD_GAIN:
            best, best_searched, folded = m, searched, True
    if not best.reaches(stop_at):
        # A small rotation (a scan, a phone photo of a print): turn the best
        # upright template a few degrees and look again.
        base, base_mask = best.templ, best.mask
        for deg in ROTATIONS:
            rot = _rotate(base, deg)
            # a template compared on its opaque pixels turns with its mask
            mask = None if base_mask is None else (_rotate(base_mask, deg) >= 0.5).astype(np.float32)
            if mask is not None and mask.mean() < MIN_OPAQUE:
                continue
            if min(rot.shape) >= 4 and not _flat(rot):
                trial = _Match()
                _place(rot, best_searched, trial, best.area, best.mirrored, best.turned, mask)
                if trial.agreement > best.agreement:
                    best = trial
    unstretched = stretched = best
    if not best.reaches(stop_at):
        best = stretched = _stretched(best, best_searched)
    if not best.reaches(stop_at):
        # A larger tilt (a picture rotated 10-180 degrees, on a grown canvas
        # or in place): the ones its edges' directions and polar view point to.
        tilted = _tilt_search(ia, ib, stop_at)
        if tilted is not None and tilted.agreement > best.agreement:
            best, folded = tilted, False
    if not best.reaches(stop_at):
        # A shear (see SHEARS).
        sheared = _shear_search(a, b, stop_at, (ia, ib))
        if (sheared.templ is not None and sheared.agreement >= best.agreement + SHEAR_GAIN
                and sheared.detail >= SHEAR_DETAIL):
            best, folded = sheared, False
    # As aligned: whether one is the other's negative, how simple the match is
    # (a stretched template is resampled twice, smoother than what it shows).
    found = unstretched if best is stretched else best
    if not best.reaches(stop_at):
        # Compared at one sharpness, from the stretched placement and from the one
        # before it: resampling the template changes its sharpness and size too.
        for m in dict.fromkeys((best, found)):
            matched = _blur_matched(m)
            if matched is not None and matched.agreement > best.agreement:
                best = matched
    warp_gain = 0.0
    if not best.reaches(stop_at) and min(ia.memo("fine detail", lambda: fine_detail(ta)),
                                         ib.memo("fine detail", lambda: fine_detail(tb))) >= WARP_DETAIL:
        warped = _warped(best)
        if warped is not None and warped.agreement > best.agreement:
            warp_gain, best = warped.agreement - best.agreement, warped
    return (best.agreement, best.layout, best.detail, best.area, best.mirrored, best.turned, found.sign < 0 or folded,
            simplicity(found.templ), best.blur,
            not judge_profile or profile_match(found.templ, found.patch, found.sign), warp_gain)


def _rank2_share(x: np.ndarray) -> float:
    x = x - x.mean()
    s = np.linalg.svd(x, compute_uv=False) ** 2
    total = float(s.sum())
    return float(s[:2].sum() / total) if total > 0 else 0.0


PLAIN_TOLERANCE = 8.0   # gray levels: a border pixel this close to the border's median is background
PLAIN_BORDER = 0.6      # share of the border that must be background for an object on a plain ground


def simplicity(region: np.ndarray) -> float:
    """The share of ``region``'s variance (a 2-D view, any size) that its two
    strongest singular components hold: 1 for a bar, an edge, a box or a
    corner, ~0.6-0.9 for a piece of a picture. 0 for a flat region.

    Singular components are axis-aligned: a bar at 45 degrees measured
    0.53-0.6. So an object on a plain ground (PLAIN_BORDER of the region's
    border within PLAIN_TOLERANCE of its median) is also measured turned to
    its silhouette's axis on a canvas grown to hold it and filled with the
    ground, and the higher share counts: a slanted pencil or
    hammer on white (a probe's unrelated pairs) measures as it would
    upright. Pieces (24-34 px of 48) of real pictures at or above 0.97,
    upright alone -> with the turn: 31 photos 1.76% -> 1.76%, 89 clip-art
    drawings 0.02% -> 0.02%, 63 icons 7.46% -> 7.65%."""
    x = np.asarray(region, np.float64)
    upright = _rank2_share(x)
    border = np.r_[x[0], x[-1], x[1:-1, 0], x[1:-1, -1]]
    ground = float(np.median(border))
    if np.mean(np.abs(border - ground) <= PLAIN_TOLERANCE) < PLAIN_BORDER:
        return upright
    # The object's axis from its silhouette's second moments (its texture's
    # gradients would pull the angle off).
    m = cv2.moments((np.abs(x - ground) > PLAIN_TOLERANCE).astype(np.uint8), binaryImage=True)
    if m["m00"] == 0:
        return upright
    h, w = x.shape
    side = int(np.ceil(np.hypot(h, w)))
    axis = 0.5 * np.arctan2(2 * m["mu11"], m["mu20"] - m["mu02"])      # radians, from +x towards +y
    turn = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(np.degrees(axis)), 1.0)
    turn[:, 2] += ((side - w) / 2, (side - h) / 2)
    turned = cv2.warpAffine(x.astype(np.float32), turn, (side, side), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=ground)
    return max(upright, _rank2_share(turned.astype(np.float64)))


# A match over less than PARTIAL_AREA of the larger view whose aligned region
# is at least SIMPLE_MATCH simple (see simplicity) says nothing: such a piece
# (a menu's edge, a grey box, a bar) fits part of any picture that has one.
# A probe on UI screenshots and textures: all 10 pairs of unrelated pictures
# that stage 2 accepted were such matches (area 0.24-0.38, simplicity
# 0.974-1.0); partial matches of real copies measured 0.78-0.90.
PARTIAL_AREA = 0.5
SIMPLE_MATCH = 0.97
# Over a larger share a simple region still fits any similar simple shape
# fairly well: two slanted tools on white (a hammer and a wrench, area 0.62,
# simplicity 0.98) agreed at 0.92, where a copy of a simple region agrees at
# 0.96 or more (a probe's 5 such copies: 0.966-1.0). Below SIMPLE_AGREEMENT
# such a match is no evidence either.
SIMPLE_AGREEMENT = 0.95
# The smaller the share matched, the less simple a region need be to fit a
# piece of an unrelated picture: two probes of unseen data (game art, UI
# screenshots, silhouettes) paired 14 unrelated pictures on a quarter of
# the frame (area 0.24-0.28) of simplicity 0.89-0.99 with at most 2
# keypoints matched, and an ingestion gate refused distinct ones so; such a
# match needs keypoints to count. The bar is not lower because copies tiled
# 2x2 from smooth paintings match a quarter of the frame at simplicity up to
# 0.925 with 0-8 keypoints (at 0.9, 2 of 19 were lost; docs/verified-duplicates.md, "Deep
# partial matches").
DEEP_PARTIAL_AREA = 0.3
DEEP_SIMPLE_MATCH = 0.93
# A negative is a copy of a whole picture (or, solarized, of its light
# part); the negative of a fairly simple region on under PARTIAL_AREA of the
# frame fits an edge or an arc of nearly anything: a game's pale course
# preview (one blob on white) matched a speed gauge's arc so, inverted, at
# agreement 0.948 on 33% of the frame, simplicity 0.946, no keypoints, and
# was verified at cosine 0.61 (docs/verified-duplicates.md, "Masks that are
# blank over white"). Such a match needs keypoints to count, as a deep one
# does. 12 captured candidate sets (the benchmark's four collections and
# eight probe sets): no verdict changed.
# INVERTED_SIMPLE: over a larger share too, when the region is simple
# (SIMPLE_MATCH): a stranger's audit paired a tree map in an image viewer's
# window with a flag, inverted, on 62% of the frame, simplicity 0.9996, no
# keypoints, agreement 0.979, cosine 0.51.


# A pair that only the layouts proposed, at a cosine below the embedding's candidate floor,
# has its layout as its only evidence (the embedding does not see the two as alike at
# all): a simple region's layout (one blob on a plain ground) fits any other blob of about
# its shape. A game's light ring button and a black scalloped flag field (both a round
# blob once trimmed) agreed at 0.952, simplicity 0.979, cosine 0.37 (docs/verified-
# duplicates.md, "Space-game icons"). Such a pair needs keypoints to count. Above the
# floor the embedding is some evidence: Fashion-MNIST's flipped and turned garments
# (simple silhouettes, cosine 0.61-0.82, no keypoints at 28 px) are found so.


def uninformative_matches(evidence: "PairEvidence", unproposed=None) -> np.ndarray:
    """(P,) bool: pairs whose alignment is a partial match of a simple region
    (PARTIAL_AREA, SIMPLE_MATCH), or a larger one that agrees below
    SIMPLE_AGREEMENT, or a match on under DEEP_PARTIAL_AREA of the frame
    (on under PARTIAL_AREA where one is the other's negative) of a fairly
    simple region (DEEP_SIMPLE_MATCH) with fewer than MIN_INLIERS keypoints
    matched, or the negative of a simple region on any share without them,
    or (``unproposed``: (P,) bool, the pairs only the layouts
    proposed whose cosine is below the embedding's candidate floor) any
    match of a simple region without them: their agreement counts at most
    as their look-alikes' (verified_pairs' ``uninformative``)."""
    simple = evidence.matched_simplicity >= SIMPLE_MATCH
    few_keypoints = evidence.keypoint_inliers < MIN_INLIERS
    fairly_simple = (evidence.matched_simplicity >= DEEP_SIMPLE_MATCH) & few_keypoints
    deep = fairly_simple & ((evidence.matched_area < DEEP_PARTIAL_AREA)
                            | (evidence.inverted & (evidence.matched_area < PARTIAL_AREA)))
    out = deep | (simple & ((evidence.matched_area < PARTIAL_AREA) | (evidence.agreement < SIMPLE_AGREEMENT)))
    # The negative of a simple region (a bar, an edge) over any share of the frame: an edge
    # inverted is an edge (see INVERTED_SIMPLE).
    out |= simple & evidence.inverted & few_keypoints
    if unproposed is not None:
        out |= np.asarray(unproposed, bool).ravel() & simple & few_keypoints
    return out


# Two files of one picture that differ only by encoding or size (a package's
# second copy of a photo, a re-saved JPEG) match a third image's keypoints
# equally, as byte-identical twins do: each must not be the other's rival in
# keypoint_confirmed. Such a pair aligns whole (NEAR_IDENTICAL_AREA of the
# frame), upright, at ACCEPT agreement and NEAR_IDENTICAL_COSINE.
NEAR_IDENTICAL_AREA = 0.95
NEAR_IDENTICAL_COSINE = 0.95


def near_identical_matches(evidence: "PairEvidence", cosine) -> np.ndarray:
    """(P,) bool: pairs aligned whole and upright (not mirrored, turned or
    inverted) at agreement >= ACCEPT and ``cosine`` (P,) >=
    NEAR_IDENTICAL_COSINE: candidates for verified_pairs' ``near_identical``."""
    c = np.asarray(cosine, np.float32).ravel()
    return ((evidence.agreement >= ACCEPT) & (evidence.matched_area >= NEAR_IDENTICAL_AREA)
            & ~evidence.mirrored & (evidence.turned == 0) & ~evidence.inverted & (c >= NEAR_IDENTICAL_COSINE))


# A thumbnail with at least this share of its variance in its row means or in
# its column means (a sky, a gradient, a strip of water) has a profile, not a
# layout: any crop of one fits part of any other of the same profile, at
# agreement 0.90-0.996 (a probe on game art: 51 of 56 unrelated pairs had
# such a picture on one side). A profile may run in any direction (a gradient
# from corner to corner): the thumbnail is also measured along the direction
# its gradients point to (the structure tensor's), its pixels binned by their
# position along it, PROFILE_BINS bins, as the rows or columns bin them.
ONE_DIMENSIONAL = 0.9
PROFILE_BINS = 48
# ...but a thumbnail's variance can be mostly a frame's around its picture (a
# dark title band over a light chart, a window's bars): it measures as a
# profile, while what aligned with the picture's own thumbnail is the picture,
# and that agreement is evidence (a chart probe lost a chart pasted on a slide
# so, at agreement 0.955: docs/verified-duplicates.md, "Profiles of frames").
# So a pair is judged as a profile's only when its alignment agrees by
# profiles alone (profile_match): either aligned view is a profile, or what
# lies beyond each view's two strongest singular components (a profile, a
# profile shaded by a vignette, a band over a mean tone) correlates below
# PROFILE_RESIDUAL. Light photos under a title band (tests/
# test_verified_duplicates.py): their copies at 0.83-0.97, distinct ones at
# 0.22 or less (one aligned partly by the band's edge at agreement 0.84).
# Beyond a 1-D profile instead, two vignetted skies kept their shading and
# correlated (a review: paired at agreement 0.977). The bar is MIN_AGREEMENT's:
# below it no pair is the same picture.
PROFILE_RESIDUAL = 0.6


def one_dimensional(signatures, chunk: int = 1024, report=None) -> np.ndarray:
    """(N,) bool: signatures whose thumbnail is a profile (ONE_DIMENSIONAL),
    blank (spread under BLANK_STD: a plain colour, whose layout says as
    little; its gray level hides its colour: a brown and a dusty pink square
    were the same picture at agreement 1, the embedding tells them apart),
    or flat but for its margin (what pair_alignment then compares whole: two
    plain squares with rounded transparent corners, or with one date stamp
    in a corner, agree there whatever their colours).
    A ``chunk`` of thumbnails at a time (~90 KB of arrays each while their
    gradients are binned: an audit's signatures are millions); ~0.2 ms a
    signature, so callers measure the images that are in pairs.
    ``report(stage, done, total)`` after each chunk (it may raise to stop)."""
    views = thumbnails(check_signatures(signatures))
    out = np.zeros(len(views), bool)
    m = int(round(SIDE * (1 - INNER) / 2))          # _inner's margin
    for s in range(0, len(views), chunk):
        part = views[s:s + chunk].astype(np.float32)
        spread = part.reshape(len(part), -1).std(axis=1)
        # The inner part's spread as _visible stretches a dim thumbnail: what _search's templates show.
        stretch = np.where((spread >= BLANK_STD) & (spread < FLAT_STD), 8 * FLAT_STD / np.maximum(spread, 1e-6), 1)
        inner = part[:, m:SIDE - m, m:SIDE - m].reshape(len(part), -1).std(axis=1) * stretch
        out[s:s + chunk] = _profiles(part) | (spread < BLANK_STD) | (inner < FLAT_STD)
        if report is not None:
            report("profiles", min(s + chunk, len(views)), len(views))
    return out


def profile_match(templ: np.ndarray | None, patch: np.ndarray | None, sign: float = 1.0) -> bool:
    """Whether an alignment (``templ`` placed on ``patch``, 2-D views of one
    shape; ``sign`` -1 for a negative) agrees by profiles alone: either view
    is a profile (ONE_DIMENSIONAL), or what lies beyond each view's two
    strongest singular components (:func:`_beyond_rank2`) correlates below
    PROFILE_RESIDUAL: a profile, and smooth shading that many pictures share
    (a vignette, a glow), are no evidence. True where nothing was aligned
    (the thumbnails decide)."""
    if templ is None or patch is None:
        return True
    t = np.stack([templ, patch]).astype(np.float32)
    t -= t.mean(axis=(1, 2), keepdims=True)
    fits = np.stack(_profile_fits(t))                             # (3 fits, 2 views, h, w)
    explained = (fits * fits).sum(axis=(2, 3))                    # (3, 2)
    if (explained.max(axis=0) >= ONE_DIMENSIONAL * (t * t).sum(axis=(1, 2))).any():
        return True
    return sign * _zncc(_beyond_rank2(t[0]), _beyond_rank2(t[1])) < PROFILE_RESIDUAL


def _beyond_rank2(x: np.ndarray) -> np.ndarray:
    """A zero-mean 2-D view less its two strongest singular components (what
    simplicity measures): a profile, a profile shaded by a vignette or a
    glow, a band over a picture's mean tone."""
    u, sv, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    return x - (u[:, :2] * sv[:2]) @ vt[:2]


def _profiles(views: np.ndarray) -> np.ndarray:
    """(n,) bool for (n, h, w) views: ONE_DIMENSIONAL of the variance in the
    row means, the column means or the bands across the dominant gradient."""
    t = views.astype(np.float32)
    t -= t.mean(axis=(1, 2), keepdims=True)
    total = (t * t).sum(axis=(1, 2))
    explained = np.max([(f * f).sum(axis=(1, 2)) for f in _profile_fits(t)], axis=0)
    return (total > 0) & (explained >= ONE_DIMENSIONAL * total)


def _profile_fits(t: np.ndarray) -> list[np.ndarray]:
    """Three (n, h, w) fits of (n, h, w) zero-mean views ``t``: each pixel
    as its row's mean, its column's mean, and its band's mean, bands across
    the dominant gradient direction (PROFILE_BINS in a thumbnail, as many as
    the longer side in a smaller view; that direction from the structure
    tensor, its gradients' outer products summed, 0 for a view with none)."""
    n, h, w = t.shape
    nbins = min(PROFILE_BINS, max(h, w))
    gy, gx = np.gradient(t, axis=(1, 2))
    jxx, jyy, jxy = (gx * gx).sum(axis=(1, 2)), (gy * gy).sum(axis=(1, 2)), (gx * gy).sum(axis=(1, 2))
    angle = 0.5 * np.arctan2(2 * jxy, jxx - jyy)                 # (n,) radians: where intensity changes
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    pos = np.cos(angle)[:, None, None] * x + np.sin(angle)[:, None, None] * y
    lo, hi = pos.min(axis=(1, 2), keepdims=True), pos.max(axis=(1, 2), keepdims=True)
    bins = np.minimum((pos - lo) / np.maximum(hi - lo, 1e-6) * nbins, nbins - 1).astype(np.int64)
    bins += np.arange(n)[:, None, None] * nbins                    # one set of bins a view
    sums = np.bincount(bins.ravel(), weights=t.ravel().astype(np.float64), minlength=n * nbins)
    counts = np.bincount(bins.ravel(), minlength=n * nbins)
    bands = (sums / np.maximum(counts, 1)).astype(np.float32)[bins]
    rows = np.broadcast_to(t.mean(axis=2, keepdims=True), t.shape)
    cols = np.broadcast_to(t.mean(axis=1, keepdims=True), t.shape)
    return [rows, cols, bands]


def profile_pairs(n: int, a, b, profiled: np.ndarray, evidence: "PairEvidence") -> np.ndarray:
    """(P,) bool: pairs (a, b) of N images judged as a profile's
    (verified_pairs' ``profile``): either image's thumbnail is one
    (``profiled``: (N,) bool, :func:`one_dimensional`), and the alignment
    agrees by profiles alone (``evidence.matched_profile``)."""
    profiled = np.asarray(profiled, bool).ravel()
    if profiled.shape != (n,):
        raise ValueError(f"profiled must have one entry an image ({n}); got {profiled.shape}")
    a, b = np.asarray(a, np.int64).ravel(), np.asarray(b, np.int64).ravel()
    return (profiled[a] | profiled[b]) & np.asarray(evidence.matched_profile, bool)


def check_signatures(signatures, name: str = "signatures") -> np.ndarray:
    """``signatures`` as (N, SIGNATURE_BYTES) uint8 (legacy ones upgraded:
    engine.signature.upgrade); ValueError for anything else."""
    s = np.asarray(signatures)
    if s.dtype == np.uint8 and s.ndim == 2:
        s = upgrade(s)
    if s.dtype != np.uint8 or s.ndim != 2 or s.shape[1] != SIGNATURE_BYTES:
        raise ValueError(f"{name} must be uint8 (N, {SIGNATURE_BYTES}); got {s.dtype} {s.shape}")
    return s


def _align_all(sig: np.ndarray, a: np.ndarray, b: np.ndarray, stop_at: float,
               profiled: np.ndarray | None = None) -> PairEvidence:
    """PairEvidence of pairs (a[i], b[i]) of ``sig``, one after another (a
    worker process's task); ``profiled``: see verify_pairs."""
    out = PairEvidence.empty(len(a))
    # What an image derives is derived once a chunk and let go after its last pair
    # there (up to ~0.7 MB an image; ~60 at a time in an audit's chunk of 256 pairs).
    last = {int(r): i for i, pair in enumerate(zip(a, b)) for r in pair}
    images: dict[int, _Image] = {}
    for i in range(len(a)):
        ra, rb = int(a[i]), int(b[i])
        for r in (ra, rb):
            if r not in images:
                images[r] = _Image(sig[r])
        (out.agreement[i], out.layout[i], out.detail[i], out.matched_area[i], out.mirrored[i],
         out.turned[i], out.inverted[i], out.matched_simplicity[i], out.matched_blur_px[i],
         out.matched_profile[i], out.warp_gain[i]) = _aligned(
             images[ra], images[rb], stop_at, profiled is None or bool(profiled[i]))
        out.keypoint_inliers[i] = min(matched_inliers(keypoints(sig[ra]), keypoints(sig[rb])), 32767)
        for r in (ra, rb):
            if last[r] == i:
                images.pop(r, None)
    return out


def _ready() -> bool:
    return True


PARENT_POLL_S = 1.0       # how often a worker looks whether its parent still lives


def _exit_with_parent(parent: int) -> None:
    """A worker's initializer: exit once the process that started it is gone.
    A server killed with -9 cannot stop its workers, and they would otherwise
    wait for work forever (two orphans of 140 MB each per kill, seen in the
    soak benchmark)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)
    threading.Thread(target=watch, name="imagesieve-parent-watch", daemon=True).start()


# A server's pool is shared by its streaming checks (a few dozen pairs a
# call, someone waiting) and its FindDuplicates jobs (thousands). First come
# first served, a job's queued chunks made every check on the server wait
# behind them (a probe: a one-image check 0.1 s -> 3.5-10 s during a
# read-only FindDuplicates). So in a shared pool a large call keeps at most
# one task a worker in flight, SHARED_CHUNK pairs each (~0.1-0.6 s), and
# while a call of at most URGENT_PAIRS (a check's) is being aligned, at most
# half as many: a check waits for one chunk at most, and a job under a
# constant stream of checks still has half the workers. (Waiting up to a
# second for no check to be in progress before each chunk, tried first, held
# such a job to one chunk a second: 360 -> 32 pairs/s, a review.)
URGENT_PAIRS = 64
SHARED_CHUNK = 32

#: Whose alignments these are (a server sets its caller's (client, connection),
#: engine.owners; a string is a connection of client ''): a shared pool hands its
#: workers to the client that has used them least, to its connection that has.
alignment_owner: contextvars.ContextVar[tuple[str, str] | str] = contextvars.ContextVar(
    "imagesieve_alignment_owner", default="")


def aligned_as(owner: tuple[str, str] | str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with its alignments counted as ``owner``'s (see alignment_owner)."""
    token = alignment_owner.set(owner)
    try:
        return fn(*args, **kwargs)
    finally:
        alignment_owner.reset(token)


class AlignmentPool:
    """Worker processes that align pairs: kept by a server for its checks
    and jobs (``shared``: small calls first, see URGENT_PAIRS), or started by
    :func:`verify_pairs` for one large batch. In a server's streaming check,
    one new image's ~8 candidates would otherwise be aligned one after
    another in the request's thread, holding the GIL (~3 ms each) while
    every other call waits. A few pairs are split into one part a worker;
    the answer is the same as in the calling thread. Workers start on
    :meth:`warm` or the first use; a broken pool (a worker killed) is
    replaced, and that call is aligned in the calling thread.

    A shared pool's workers take one task each at a time, the next from the
    owner (``alignment_owner``) that has used them least, its client first
    (FairPool): first come first served, one client's four concurrent
    checks on a large collection queued their tasks ahead of another's
    one-image check, whose p50 went 50 -> 275 ms (a twenty-fourth probe)."""

    def __init__(self, workers: int, shared: bool = False):
        if workers < 2:
            raise ValueError(f"an alignment pool needs at least 2 workers; got {workers}")
        self.workers = workers
        self.shared = shared
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._urgent = 0                        # small calls in progress (shared pools)
        # Shared pools: one thread a worker hands it its next task, by owner (see the class).
        self._turns = FairPool(workers, name="imagesieve-align-turns") if shared else None

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("the alignment pool is closed")
            if self._pool is None:
                # spawn: no fork of a threaded server
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_exit_with_parent, initargs=(os.getpid(),))
            return self._pool

    def warm(self) -> None:
        """Start every worker now (each imports OpenCV and numpy: ~1 s)."""
        ex = self._executor()
        for f in [ex.submit(_ready) for _ in range(self.workers)]:
            f.result()

    def _job_tasks(self) -> int:
        # A large call's tasks in flight: half the workers while a check is aligned.
        return max(1, self.workers // 2) if self._urgent else self.workers

    def align(self, sig: np.ndarray, a: np.ndarray, b: np.ndarray, stop_at: float, report=None,
              profiled: np.ndarray | None = None) -> PairEvidence:
        out = PairEvidence.empty(len(a))
        urgent = self.shared and len(a) <= URGENT_PAIRS
        if urgent:
            with self._lock:
                self._urgent += 1
        try:
            if not self.shared:
                _align_in_processes(self._executor().submit, self.workers, sig, a, b, stop_at, report, out,
                                    profiled=profiled)
            else:
                _align_in_processes(self._in_turn, self.workers, sig, a, b, stop_at, report, out,
                                    chunk=SHARED_CHUNK, in_flight=(lambda: self.workers) if urgent else self._job_tasks,
                                    profiled=profiled)
            return out
        except BrokenProcessPool:
            log.warning("an alignment worker died; starting new ones")
            with self._lock:
                broken, self._pool = self._pool, None
            if broken is not None:
                broken.shutdown(wait=False, cancel_futures=True)
        finally:
            if urgent:
                with self._lock:
                    self._urgent -= 1
        return _align_all(sig, a, b, stop_at, profiled)

    def _in_turn(self, fn, *args) -> Future:
        """``fn(*args)`` on a worker process in its owner's turn (shared pools)."""
        return self._turns.submit(alignment_owner.get(), lambda: self._executor().submit(fn, *args).result())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if self._turns is not None:
            self._turns.shutdown(wait=False, cancel_futures=True)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _align_in_processes(submit, workers: int, sig, a, b, stop_at, report, out: PairEvidence,
                        chunk: int = PROCESS_CHUNK, in_flight=None, profiled=None) -> None:
    """Align pairs (a, b) of ``sig`` with ``submit`` (a pool's of ``workers``
    processes: (fn, *args) -> Future) into ``out``: a few pairs go one part a worker; many, ``chunk`` a task
    with at most ``in_flight()`` tasks in flight (default two a worker;
    asked before each submission: see AlignmentPool), so their pickled
    signatures are all that is copied at any time; ``report`` after each."""
    p = len(a)
    chunk = chunk if p > workers * chunk else max(1, -(-p // workers))
    in_flight = in_flight or (lambda: 2 * workers)
    starts = list(range(0, p, chunk))
    done = submitted = 0
    pending: dict = {}
    try:
        while submitted < len(starts) or pending:
            while submitted < len(starts) and (not pending or len(pending) < in_flight()):
                start = starts[submitted]
                stop = min(start + chunk, p)
                rows, local = np.unique(np.r_[a[start:stop], b[start:stop]], return_inverse=True)
                f = submit(_align_all, sig[rows], local[:stop - start], local[stop - start:], stop_at,
                           None if profiled is None else profiled[start:stop])
                pending[f] = (start, stop)
                submitted += 1
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                start, stop = pending.pop(f)
                out.put(start, f.result())
                done += stop - start
                if report is not None:
                    report("verify", done, p)        # may raise (a cancelled job)
    except BaseException:
        for f in pending:
            f.cancel()
        raise


def verify_pairs(signatures, a, b, stop_at: float = ACCEPT, workers: int = 0,
                 report=None, processes: bool | None = None, pool: AlignmentPool | None = None,
                 profiled=None) -> PairEvidence:
    """Align every pair (a[i], b[i]) of ``signatures`` (N, SIGNATURE_BYTES)
    uint8; ``a``, ``b``: (P,) positions. ``processes``: in ``workers`` worker
    processes (0 = one per core), PROCESS_CHUNK pairs a task (None: when
    there are at least PROCESS_MIN_PAIRS pairs and more than one worker);
    else in the calling thread (what a streaming check with a few candidates
    wants: threads would not run the alignments in parallel). ``pool``: a
    long-lived :class:`AlignmentPool` to use instead, for any number of
    pairs (a server's checks and FindDuplicates jobs). ``report(stage, done,
    total)`` is called with stage ``"verify"`` after each chunk. Returns
    PairEvidence of (P,) arrays. ``profiled``: (P,) bool, the pairs with a
    profile on either side (:func:`one_dimensional`): ``matched_profile``
    matters only for them (:func:`profile_pairs`), so it is measured only
    for them (~0.3 ms a pair) and is True for the others; None: for every pair.

    Worker processes are started with ``spawn`` (no fork of a threaded
    server), which imports the calling script again in each worker: call
    it under ``if __name__ == "__main__":`` (as with any multiprocessing
    code), or pass ``processes=False``."""
    sig = check_signatures(signatures)
    a = np.asarray(a, np.int64).ravel()
    b = np.asarray(b, np.int64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length; got {a.size} and {b.size}")
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= len(sig)):
        raise ValueError(f"pair positions must lie in [0, {len(sig)})")
    p = a.size
    if profiled is not None:
        profiled = np.asarray(profiled, bool).ravel()
        if profiled.shape != a.shape:
            raise ValueError(f"profiled must have one entry a pair ({p}); got {profiled.shape}")
    out = PairEvidence.empty(p)
    workers = workers or (os.cpu_count() or 1)
    if pool is not None and p > 1 and processes is not False:
        return pool.align(sig, a, b, stop_at, report, profiled)
    if processes is None:
        processes = p >= PROCESS_MIN_PAIRS
    if p and processes and workers > 1:
        own = AlignmentPool(workers)            # started for this call (~1 s), stopped after it
        try:
            return own.align(sig, a, b, stop_at, report, profiled)
        finally:
            own.close()

    for start in range(0, p, PROCESS_CHUNK):
        stop = min(start + PROCESS_CHUNK, p)
        out.put(start, _align_all(sig, a[start:stop], b[start:stop], stop_at,
                                  None if profiled is None else profiled[start:stop]))
        if report is not None:
            report("verify", stop, p)
    return out


def neighbourhood_typical(n: int, a, b, values, min_pack: int = MIN_PACK) -> np.ndarray:
    """Each image's typical value over its candidate pairs, leaving its best
    one out (that is the pair being judged, or a copy): (N,) float32, the
    median of the rest, NaN for images in fewer than ``min_pack`` + 1 pairs.
    ``a``, ``b``: (P,) positions; ``values``: (P,) (agreement or cosine)."""
    a = np.asarray(a, np.int64).ravel()
    b = np.asarray(b, np.int64).ravel()
    g = np.asarray(values, np.float32).ravel()
    out = np.full(n, np.nan, np.float32)
    if g.size == 0:
        return out
    node = np.concatenate([a, b])
    val = np.concatenate([g, g])
    order = np.lexsort((val, node))
    node, val = node[order], val[order]
    starts = np.flatnonzero(np.r_[True, node[1:] != node[:-1]])
    counts = np.diff(np.r_[starts, node.size])
    for s, c in zip(starts.tolist(), counts.tolist()):
        if c - 1 >= min_pack:
            out[node[s]] = float(np.median(val[s:s + c - 1]))
    return out


def warp_beyond_rivals(n: int, a, b, warp_gain, twins=None) -> np.ndarray:
    """(P,) bool: pairs whose warp gain (PairEvidence.warp_gain) is above 0
    and at least every other candidate pair's of either image (``twins``:
    see :func:`_runner_up`). Drawn from one template (smileys, cards of one
    deck), an image's siblings all come closer warped, their features a
    pixel or two apart: their gains are alike and none stands out; a warped
    copy gains alone (4% of look-alike pairs gain anything)."""
    a = np.asarray(a, np.int64).ravel()
    b = np.asarray(b, np.int64).ravel()
    gain = np.asarray(warp_gain, np.float32).ravel()
    kin = np.arange(n) if twins is None else np.asarray(twins, np.int64).ravel()
    gained = gain > 0
    rivals = _runner_up(n, a, b, gain, np.ones(a.shape, bool), kin, gained)
    return gained & (gain >= rivals)


def counted_agreement(n: int, a, b, agreement, warp_gain, twins=None) -> np.ndarray:
    """(P,) float32: ``agreement`` with each pair's warp gain taken off
    where it does not count (:func:`warp_beyond_rivals`): what verdicts and
    look-alike levels use."""
    g = np.asarray(agreement, np.float32).ravel()
    gain = np.asarray(warp_gain, np.float32).ravel()
    if gain.shape != g.shape:
        raise ValueError("warp_gain must have one entry a pair")
    return np.where(warp_beyond_rivals(n, a, b, gain, twins), g, g - gain).astype(np.float32)


def _filled(pack, default: float) -> np.ndarray:
    pack = np.asarray(pack, np.float32)
    known = pack[np.isfinite(pack)]
    fill = float(np.median(known)) if known.size else default
    return np.clip(np.where(np.isfinite(pack), pack, fill), -1.0, 1.0).astype(np.float32)


def relative_disagreement(agreement, cosine, look_alike_agreement, look_alike_cosine) -> np.ndarray:
    """(P,) how much closer a pair is than its images' look-alikes, on both
    signals: (1 - agreement) / (1 - look-alike agreement) times
    (1 - cosine) / (1 - look-alike cosine). 0 = identical; ~1 = as close as
    any look-alike; a copy is far below 1 on at least one and near 1 on
    neither."""
    g, c = np.asarray(agreement, np.float32), np.asarray(cosine, np.float32)
    la, lc = np.asarray(look_alike_agreement, np.float32), np.asarray(look_alike_cosine, np.float32)
    eps = np.float32(1e-3)
    return (np.maximum(1 - g, 0) / np.maximum(1 - la, eps)) * (np.maximum(1 - c, 0) / np.maximum(1 - lc, eps))


PACK_PASSES = 3          # verdicts re-judged with packs that leave out the pairs already found same
# Crowded data (look-alikes at cosine CROWDED_COSINE or more: thumbnails of garments,
# digits): the median look-alike says too little, since among 16-33 candidates the best
# of the rest often agrees as well as a copy (84 px Fashion-MNIST: a bag matched inside
# a dress at 0.95, its next candidates at 0.95 and 0.94). There a verified pair must also
# pass a ratio test, as Lowe's for keypoints: its relative disagreement at most
# RUNNER_RATIO of its images' closest other candidate's. Chosen on a set of our own (600
# Fashion-MNIST images at 84 px with planted copies: every copy at 0.58 or less, 9 of 16
# false pairs above 0.6); on the benchmarks Fashion-MNIST's false pairs went 34 -> 22
# (one copy lost), the probe's 45 -> 25, nothing else moved. Applied everywhere it cost
# recall on art and wallpapers (0.888 -> 0.793 on blurred and tiled wallpapers) for no
# fewer unrelated pairs there (docs/verified-duplicates.md, "Runner-up test").
CROWDED_COSINE = 0.8
RUNNER_RATIO = 0.6
# Pictures of one template (playing cards of one deck, forms, avatars of one style) differ
# in a pip, a glyph or a face: two of them align at 0.85-0.95 and their embeddings are
# closer than a copy's (cosine 0.94 against 0.81: both say "a card"), so against the
# median look-alike (other decks' cards, other styles) they passed as copies: a probe's
# 342 playing cards and board-game tiles gave 122 unrelated pairs and 104 of one rank in
# two suits. A copy's layout also stands out from its images' near look-alikes, not only
# from the typical one: a pair's layout disagreement must be at most SIBLING_RATIO of that
# with either image's look-alike of rank SIBLING_RANK (0 = the closest; the two closest
# may be other copies of the picture, not yet found). Replaying the candidates of the
# cards and of dup_quality's collections (both kinds of copies, and 8 copies an original):
# cards 122 -> 77 unrelated and 104 -> 87 same-rank pairs with every copy kept; nothing
# else moved but 4 of 256 photos' copies when each photo has 8 (0.855 -> 0.840) and one
# garment of 300. The second-closest (rank 1) took cards to 64, but lost 6 of those 256.
SIBLING_RATIO = 0.9
SIBLING_RANK = 2
# Keypoints (engine.keypoints) confirm a pair the layouts could not: a copy under a
# local-contrast filter, a desktop's icons and task bar, a print scanned in perspective.
# Two pictures of one style rarely share MIN_INLIERS corners in one geometry, but parts
# do (icons on one folder base, garments of one cut at 28 px), so a pair's inliers must
# also be INLIER_RATIO times (plus one) the most that either image has with any other
# candidate not found the same, as the runner-up test does for layouts. Measured on the
# four benchmark collections, both kinds of copies and two samples of astrophotos and
# painted skies (docs/verified-duplicates.md, "Keypoints"): 0 false pairs added in 7 sets; a plain ">= 8
# inliers" added 22 on icons and 81 on Fashion-MNIST.
MIN_INLIERS = 8
INLIER_RATIO = 3.0


def _runner_up(n: int, a, b, values, among, twins, judged, rank: int = 0) -> np.ndarray:
    """(P,) for each ``judged`` pair (a, b), the largest (``rank`` k: the
    (k+1)-th largest) ``values`` among the other pairs in ``among`` that share
    one of its images, leaving out those whose other image is a
    byte-identical twin (``twins``: (N,) labels) of the pair's other side: a
    copy matches a file and its twin equally, and each must not count as the
    other's look-alike. 0 when none; not judged: 0."""
    idx = np.flatnonzero(among)
    img, other = np.r_[a[idx], b[idx]], np.r_[b[idx], a[idx]]
    pair, val = np.r_[idx, idx], np.r_[values[idx], values[idx]].astype(np.float32)
    order = np.lexsort((-val, img))
    img, other, pair, val = img[order], other[order], pair[order], val[order]
    starts = np.searchsorted(img, np.arange(n + 1))
    out = np.zeros(a.size, np.float32)

    def best(i: int, own: int, avoid: int) -> float:
        skip = rank
        for j in range(starts[i], starts[i + 1]):       # by value, highest first
            if pair[j] != own and twins[other[j]] != avoid:
                if not skip:
                    return float(val[j])
                skip -= 1
        return 0.0

    for k in np.flatnonzero(judged).tolist():
        out[k] = max(best(int(a[k]), k, twins[b[k]]), best(int(b[k]), k, twins[a[k]]))
    return out


def keypoint_confirmed(n: int, a, b, inliers, same, twins=None, keypoint_only=None) -> np.ndarray:
    """(P,) bool: pairs (a, b) of N images, not already ``same``, whose
    keypoint ``inliers`` reach MIN_INLIERS and INLIER_RATIO x (1 + the most
    any other pair of either image has, leaving out pairs found the same
    and pairs with a byte-identical twin of the other side: see
    _runner_up). ``twins``: (N,) labels, equal for identical files (None:
    none are). Judged again (up to PACK_PASSES times) without the pairs just
    confirmed: an image's other copies are not its look-alikes. Leaving out
    every known copy of the other side, not only its twins, was measured:
    it found a few more of several copies of one picture, and paired icons
    that share a base (docs/verified-duplicates.md, "Keypoints"). ``keypoint_only``: (P,) bool,
    pairs only shared keypoints proposed (a crop confirmed by 30 inliers lost to the same picture's
    half collage at 20, a review found, and then neither was found): they
    face every pair as rivals but are no rival of the others."""
    a = np.asarray(a, np.int64).ravel()
    b = np.asarray(b, np.int64).ravel()
    k = np.asarray(inliers, np.float32).ravel()
    same = np.asarray(same, bool).ravel()
    only = np.zeros(a.shape, bool) if keypoint_only is None else np.asarray(keypoint_only, bool).ravel()
    twins = np.arange(n) if twins is None else np.asarray(twins, np.int64).ravel()
    if twins.shape != (n,):
        raise ValueError(f"twins must have one label an image ({n}); got {twins.shape}")
    out = np.zeros(a.shape, bool)
    for _ in range(PACK_PASSES):
        found = same | out
        judged = ~found & (k >= MIN_INLIERS)
        runner = np.maximum(_runner_up(n, a, b, k, ~found, twins, judged & only),
                            _runner_up(n, a, b, k, ~found & ~only, twins, judged & ~only))
        now = judged & (k >= INLIER_RATIO * (runner + 1))
        if not now.any():
            break
        out |= now
    return out


def verified_pairs(n: int, a, b, agreement, cosine, pack_agreement=None, pack_cosine=None,
                   min_agreement: float = MIN_AGREEMENT, max_relative: float = MAX_RELATIVE,
                   layout_only=None, max_relative_layout: float = MAX_RELATIVE_LAYOUT, profile=None,
                   keypoint_inliers=None, twins=None, uninformative=None,
                   near_identical=None, keypoint_only=None, sparse_cosine=None,
                   warp_gain=None) -> tuple[np.ndarray, np.ndarray]:
    """(verified (P,) bool, relative disagreement (P,) float32) for candidate
    pairs (a, b) of N images with stage-2 ``agreement`` and stage-1
    ``cosine`` (P,) each.

    ``pack_agreement``, ``pack_cosine``: (N,) each image's typical agreement
    and cosine with its look-alikes (e.g. stored when it was added); None
    or NaN entries are :func:`neighbourhood_typical` of these pairs, and
    where that is NaN too, the median of the others (or ``DEFAULT_PACK``),
    the cosine at most ``sparse_cosine`` ((N,), NaN: no bound), the floor
    under which such an image's uncounted neighbours lie: in a folder of
    photos and smooth abstract pictures, the abstract ones' packs (cosine
    ~0.9) set the median, and 1-2 of 40 photo copies were held to it.
    Profile pairs keep the median (their embedding is their only evidence).
    A pair's look-alike level is the higher of its two images'. It is the
    same picture when its :func:`relative_disagreement` is at most
    ``max_relative`` and its agreement at least ``min_agreement``.

    Packs taken from these pairs are judged again (up to PACK_PASSES times)
    without the pairs already found to be the same picture: an image's
    copies are not its look-alikes. A picture with 8 copies has only copies
    among its 8 candidates, and measured against its easy copies (agreement
    ~1) its crops and captioned copies looked no closer than "look-alikes":
    with 8 copies of each of 32 photos, recall was 0.50 (1.00 with one copy
    each).

    Where the look-alikes' cosine level is CROWDED_COSINE or more, a pair
    must also stand out from its images' closest other candidate: its
    relative disagreement at most RUNNER_RATIO of that one's. Everywhere,
    its layout must stand out from its images' near look-alikes (cards of
    one deck): see SIBLING_RATIO.

    ``layout_only``: (P,) bool, pairs that only the layouts proposed (not
    the embedding's neighbours): they are no image's look-alikes, and a
    cosine below the look-alikes' does not count against them (the
    embedding missed them, a blur or a pixelation hides texture): their
    layout alone must be ``max_relative_layout`` as far as its look-alikes'.

    ``profile``: (P,) bool, pairs with a one-dimensional picture on either
    side (:func:`one_dimensional`): their agreement says nothing (it counts
    as their look-alikes'), so the embedding alone must set them apart, and
    they are no image's look-alikes. ``uninformative``: (P,) bool, pairs
    aligned only by a simple piece (:func:`uninformative_matches`): their
    agreement counts at most as their look-alikes', like a profile's (as
    runners-up too: a junk match must not veto a real copy), but they stay
    look-alikes (their images are not one-dimensional).

    ``keypoint_inliers``: (P,) PairEvidence.keypoint_inliers; a pair they
    confirm (:func:`keypoint_confirmed`, with ``twins``: (N,) labels equal
    for byte-identical files) is the same picture too. ``near_identical``:
    (P,) bool (:func:`near_identical_matches`); those of them found the same
    picture make their images twins for that test as well (a polaroid copy
    matched its photo and the package's re-encoded second copy with 21
    inliers each, and each copy vetoed the other).

    ``keypoint_only``: (P,) bool, pairs that only shared keypoints proposed
    (``keypoint_candidates``: a half collage, a picture pasted into another):
    only the keypoint test can find them the same; they are no image's
    look-alikes and no runner-up of the layout verdicts (their relative
    disagreement is NaN: not measured), and in the keypoint test no rival
    of the other pairs (see :func:`keypoint_confirmed`).

    ``warp_gain``: (P,) PairEvidence.warp_gain; ``agreement`` counts it only
    for pairs it sets apart from their images' other candidates
    (:func:`counted_agreement`), elsewhere the agreement without the warp."""
    for name, v in (("max_relative", max_relative), ("max_relative_layout", max_relative_layout)):
        if not 0 < v <= 1:
            raise ValueError(f"{name} must be in (0, 1]; got {v}")
    a = np.asarray(a, np.int64).ravel()
    b = np.asarray(b, np.int64).ravel()
    g = np.asarray(agreement, np.float32).ravel()
    c = np.asarray(cosine, np.float32).ravel()
    if not (a.shape == b.shape == g.shape == c.shape):
        raise ValueError("a, b, agreement and cosine must have one entry a pair")
    by_layout = np.zeros(a.shape, bool) if layout_only is None else np.asarray(layout_only, bool).ravel()
    if by_layout.shape != a.shape:
        raise ValueError("layout_only must have one entry a pair")
    flat = np.zeros(a.shape, bool) if profile is None else np.asarray(profile, bool).ravel()
    if flat.shape != a.shape:
        raise ValueError("profile must have one entry a pair")
    capped = flat if uninformative is None else flat | np.asarray(uninformative, bool).ravel()
    if capped.shape != a.shape:
        raise ValueError("uninformative must have one entry a pair")
    by_keypoints = np.zeros(a.shape, bool) if keypoint_only is None else np.asarray(keypoint_only, bool).ravel()
    if by_keypoints.shape != a.shape:
        raise ValueError("keypoint_only must have one entry a pair")
    given = [np.full(n, np.nan, np.float32) if p is None else np.asarray(p, np.float32)
             for p in (pack_agreement, pack_cosine)]
    if warp_gain is not None:
        g = counted_agreement(n, a, b, g, warp_gain, twins)
    computed = np.isnan(given[0]).any() or np.isnan(given[1]).any()
    same = np.zeros(a.shape, bool)
    best = np.full(a.shape, np.inf, np.float32)         # each pair's lowest relative disagreement
    for _ in range(PACK_PASSES if computed else 1):
        look = ~same & ~by_layout & ~flat & ~by_keypoints     # look-alikes: the pairs not (yet) found the same
        pa, pc = (np.where(np.isnan(p), neighbourhood_typical(n, a[look], b[look], v[look]), p)
                  for p, v in zip(given, (g, c)))
        unmeasured = np.isnan(pc)
        pa, pc = _filled(pa, DEFAULT_PACK), _filled(pc, DEFAULT_PACK)
        level_c, level_g = np.maximum(pc[a], pc[b]), np.maximum(pa[a], pa[b])
        if sparse_cosine is not None:
            # Not for a profile's pairs: the embedding is their only evidence, and two
            # plain or two-tone pictures of different colours sit at cosine 0.87-0.95
            # wherever they are (planet landscapes of one layout paired at 0.91).
            low = np.where(unmeasured, np.minimum(pc, np.where(np.isnan(sparse_cosine), pc, sparse_cosine)), pc)
            level_c = np.where(flat, level_c, np.maximum(low[a], low[b]))
        # A layout-only pair's cosine counts at most as a look-alike's; a profile's agreement as one.
        cos = np.where(by_layout, np.maximum(c, level_c), c)
        best = np.minimum(best, np.where(by_keypoints, np.inf, relative_disagreement(
            np.where(capped, np.minimum(g, level_g), g), cos, level_g, level_c)))
        now = (g >= min_agreement) & (best <= np.where(by_layout, max_relative_layout, max_relative))
        if not (now & ~same).any():
            break
        same |= now
    # The runner-up test in crowded data (see RUNNER_RATIO): the closest candidate not found the same.
    runner = np.full(n, np.inf, np.float32)
    np.minimum.at(runner, a[~same], best[~same])
    np.minimum.at(runner, b[~same], best[~same])
    crowded = level_c >= CROWDED_COSINE
    same &= ~crowded | (best <= RUNNER_RATIO * np.minimum(runner[a], runner[b]))
    if same.any() and SIBLING_RATIO is not None:
        # Template siblings (see SIBLING_RATIO): the layout must stand out from the
        # images' near look-alikes too (the third-closest).
        # Look-alikes aligned only by a simple piece count at most at their level (a junk
        # match must not veto a real copy, a review found), as in the tests above.
        kin = np.arange(n) if twins is None else np.asarray(twins, np.int64).ravel()
        look = ~same & ~by_layout & ~flat & ~by_keypoints
        near = _runner_up(n, a, b, np.where(capped, np.minimum(g, level_g), g), look, kin, same, rank=SIBLING_RANK)
        same &= (1 - g) <= SIBLING_RATIO * np.maximum(1 - near, np.float32(1e-3))
    if keypoint_inliers is not None:
        inliers = np.asarray(keypoint_inliers, np.float32).ravel()
        if inliers.shape != a.shape:
            raise ValueError("keypoint_inliers must have one entry a pair")
        if near_identical is not None:
            identical = np.asarray(near_identical, bool).ravel()
            if identical.shape != a.shape:
                raise ValueError("near_identical must have one entry a pair")
            identical = identical & same
            if identical.any():
                # Twins already known and near-identical pairs found the same, as one labelling.
                base = np.arange(n) if twins is None else np.asarray(twins, np.int64).ravel()
                if base.shape != (n,):
                    raise ValueError(f"twins must have one label an image ({n}); got {base.shape}")
                first = np.full(n, n, np.int64)
                np.minimum.at(first, base, np.arange(n))
                twins = connected_components(n, np.r_[a[identical], np.arange(n)], np.r_[b[identical], first[base]])
        same |= keypoint_confirmed(n, a, b, inliers, same, twins, by_keypoints)
    return same, np.where(by_keypoints, np.float32(np.nan), best)
