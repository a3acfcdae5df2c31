"""Does a partial match hold where it was found?

Stage 2 accepts a copy that covers only part of its original (a crop) when
the smaller picture's layout fits a region of the larger one. Another
picture whose coarse layout resembles some region by chance fits as well:
a horizon strip inside a landscape, a dark dialog inside a dark screen, an
icon's base inside a sibling icon (probes of unseen data: most of their
false pairs matched on less than half of a frame, with few keypoints, and
keypoints cannot tell them from corner crops of photos, which keep few
too). The embedding can: cut the larger picture to the region where the
smaller one fits, and a crop comes much closer to it (the region *is* the
crop), while another picture does not (a different scene stays one).

The same holds for the shear search's matches (a band of one picture,
sheared, placed on the other: :func:`shear_placement`, :func:`sheared_band`):
the band cut from the pixels must come closer to where it was placed.

Apart from :func:`image_cosines` (which reads and embeds), this module is
pure: it chooses which accepted pairs to test (:func:`tested_pairs`), where
the smaller picture sits in the larger (:func:`placement`) and what the
embeddings say (:func:`region_holds`).
Embedding a region needs the images' pixels: the caller supplies them
through a ``region_cosines`` callable (:func:`image_cosines`); where
they are not at hand (a collection stores no pixels), pairs keep the
verdict stage 2 gave them.
"""
from __future__ import annotations

import collections
import itertools
import logging
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image

from ...engine.signature import SIDE, unpack
from . import verify as V

REGION_GAIN = 0.1          # share of the way to cosine 1 the region must come closer than the whole
GRAY_SPREAD = 4            # gray levels: a picture whose channels differ less than this is grayscale
AREA_TOLERANCE = 0.03      # relative: the crop shares searched again are those stage 2 matched at
NEAR_ONE = 0.99            # whole pictures this close already: no room to come closer
KEYPOINT_EXEMPT = V.MIN_INLIERS   # inliers from which a pair's keypoints speak for it: not tested
log = logging.getLogger(__name__)


def tested_pairs(accepted: np.ndarray, evidence: "V.PairEvidence") -> np.ndarray:
    """(P,) bool: the accepted pairs a region test applies to: matched on
    less than V.PARTIAL_AREA of the larger view, upright (no turn, not a
    negative), and not confirmed by KEYPOINT_EXEMPT keypoints or more (a
    similarity transform of many keypoints is stronger evidence than a
    texture network's view of a region)."""
    return (np.asarray(accepted, bool) & (evidence.matched_area < V.PARTIAL_AREA) & (evidence.turned == 0)
            & ~evidence.inverted & (evidence.keypoint_inliers < KEYPOINT_EXEMPT))


def placement(sig_a: np.ndarray, sig_b: np.ndarray, area: float, mirrored: bool | None = None
              ) -> tuple[int, tuple[float, float, float, float], bool, float] | None:
    """Where the smaller picture of a pair sits in the larger: (0 when ``a``
    is the larger (searched) one, else 1; the box the smaller one's whole
    view covers, as fractions (x0, y0, x1, y1) of the larger one's
    thumbnail, which shows its content box; mirrored; the layout
    correlation there). Found as stage 2 found it (``verify._shares``: the
    template's inner part slid over the other view, both ways), at the crop
    shares that cover ``area`` (stage 2's matched area) of the larger view,
    mirrored as stage 2 found it (``mirrored``; None: both). None when no
    share does (stage 2 then matched the pair another way: a stretch, a
    shear)."""
    views = []
    for sig in (sig_a, sig_b):
        aspect, _, thumb = unpack(sig)
        views.append((aspect, V._visible(thumb)))
    best, where = -2.0, None
    m = int(round(SIDE * (1 - V.INNER) / 2))
    for searched in (0, 1):
        (at, t), (as_, s) = views[1 - searched], views[searched]
        for fx, fy in V._shares(at, as_):
            if abs(fx * fy - area) > AREA_TOLERANCE * area:
                continue
            size = (max(4, round(fx * SIDE * V.INNER)), max(4, round(fy * SIDE * V.INNER)))
            for flip in (False, True):
                if mirrored is not None and flip != mirrored:
                    continue
                view = t[:, ::-1].copy() if flip else t
                templ = cv2.resize(V._inner(view), size, interpolation=cv2.INTER_AREA)
                if V._flat(templ):
                    continue
                _, high, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(s, templ, cv2.TM_CCOEFF_NORMED))
                if high > best:
                    # The template is the view's inner part: its whole view is 1/INNER as large.
                    x0, y0 = x - fx * m, y - fy * m
                    box = (max(0.0, x0 / SIDE), max(0.0, y0 / SIDE), min(1.0, x0 / SIDE + fx),
                           min(1.0, y0 / SIDE + fy))
                    best, where = high, (searched, box, flip, float(high))
    return where


def shear_placement(sig_a: np.ndarray, sig_b: np.ndarray, area: float
                    ) -> tuple[int, tuple[float, float, float, float], tuple[int, float], float] | None:
    """Where a sheared band of one picture sits in the other, as stage 2's
    shear search (``verify._shear_search``) finds it: (0 when ``a`` is the
    searched one, else 1; the box the band covers, fractions (x0, y0, x1,
    y1) of the searched one's thumbnail; (axis, factor) of the shear; the
    layout correlation there). None when the best band covers another
    ``area`` than stage 2 matched."""
    a, b = (V._visible(unpack(sig)[2]) for sig in (sig_a, sig_b))
    m = V._shear_search(a, b, V.ACCEPT)
    if m.templ is None or m.shear is None or abs(m.area - area) > AREA_TOLERANCE * area:
        return None
    first, axis, factor = m.shear
    (x, y), (h, w) = m.at, m.templ.shape
    return (1 if first else 0), (x / SIDE, y / SIDE, (x + w) / SIDE, (y + h) / SIDE), (axis, factor), m.layout


def sheared_band(img: Image.Image, axis: int, factor: float) -> Image.Image:
    """``img`` (a picture's content) sheared about its centre as
    ``verify._sheared_band`` shears its thumbnail (axis 0: each column moved
    down by ``factor`` x its offset from the centre, in shares of the side),
    cut to the band every column (row) keeps."""
    w, h = img.size
    k = factor * (h / w if axis == 0 else w / h)
    # PIL maps each output pixel back to its source pixel.
    data = (1, 0, 0, -k, 1, k * w / 2) if axis == 0 else (1, -k, k * h / 2, 0, 1, 0)
    out = img.transform((w, h), Image.Transform.AFFINE, data, Image.BILINEAR)
    cut = np.ceil(abs(factor) * SIDE / 2) / SIDE
    return (out.crop((0, round(cut * h), w, round((1 - cut) * h))) if axis == 0 else
            out.crop((round(cut * w), 0, round((1 - cut) * w), h)))


def region_holds(whole_cosine, region_cosine) -> np.ndarray:
    """(P,) bool: the region of the larger picture is at least REGION_GAIN
    of the way from the whole's cosine to 1 closer to the smaller picture
    (cosines of their embeddings, the smaller's content against the larger's
    whole content and against its region). NaN (not measured): holds."""
    w = np.asarray(whole_cosine, np.float64)
    r = np.asarray(region_cosine, np.float64)
    with np.errstate(invalid="ignore"):
        holds = np.where(w >= NEAR_ONE, r >= w - (1 - NEAR_ONE), r >= w + REGION_GAIN * (1 - w))
    return holds | np.isnan(w) | np.isnan(r)


# One pair to test: (the smaller image's position, the larger's, the box the
# smaller covers as fractions (x0, y0, x1, y1) of the larger's content box,
# mirrored, and None or the (axis, factor) by which the smaller is sheared and
# cut to a band before it is compared with that box).
Request = tuple[int, int, tuple[float, float, float, float], bool, tuple[int, float] | None]


def confirmed(signatures: np.ndarray, a: np.ndarray, b: np.ndarray, accepted: np.ndarray,
              evidence: "V.PairEvidence", region_cosines: Callable[[Sequence[Request]], np.ndarray],
              report: Callable | None = None) -> np.ndarray:
    """(P,) bool: ``accepted`` with the tested pairs (:func:`tested_pairs`)
    whose region does not hold (:func:`region_holds`) taken out.
    ``region_cosines(requests, report)``: (len(requests), 2) float, each pair's
    (whole, region) cosine (see :func:`image_cosines`); NaN where a pair
    could not be measured (a file changed or gone): it keeps its verdict.
    ``report(stage, done, total)``: progress, stage ``"regions"``."""
    out = np.asarray(accepted, bool).copy()
    idx = np.flatnonzero(tested_pairs(out, evidence))
    requests: list[Request] = []
    tested = []
    for i in idx.tolist():
        area = float(evidence.matched_area[i])
        # A crop at the share stage 2 matched, or a sheared band of that area
        # (a band of 1/3 is near a crop share too): whichever fits better.
        crop = placement(signatures[a[i]], signatures[b[i]], area, bool(evidence.mirrored[i]))
        band = shear_placement(signatures[a[i]], signatures[b[i]], area)
        if crop is None and band is None:
            continue
        if band is not None and (crop is None or band[3] > crop[3]):
            searched, box, mirrored, shear = band[0], band[1], False, band[2]
        else:
            searched, box, mirrored, shear = crop[0], crop[1], crop[2], None
        larger, smaller = (a[i], b[i]) if searched == 0 else (b[i], a[i])
        requests.append((int(smaller), int(larger), box, mirrored, shear))
        tested.append(i)
    if not tested:
        return out
    cos = np.asarray(region_cosines(requests, report), np.float64).reshape(len(tested), 2)
    out[np.asarray(tested)] = region_holds(cos[:, 0], cos[:, 1])
    return out


def _reduced(im: Image.Image, f: float) -> Image.Image:
    return im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.BOX)


def _grayscale(im: Image.Image) -> bool:
    """Whether ``im``'s channels agree everywhere (within GRAY_SPREAD, at 64 x 64)."""
    a = np.asarray(im.convert("RGB").resize((64, 64), Image.BOX), np.int16)
    return int((a.max(axis=2) - a.min(axis=2)).max()) < GRAY_SPREAD


SMALLER_CACHE_PIXELS = 48_000_000   # decoded smaller pictures kept between pairs (~144 MB as RGB)
PARTS_PER_DECODE = 16               # regions cut from one decode at most (500 boxes of 30% of a sheet: 5 GB)


def image_cosines(embedder, read: Callable[[int], bytes]) -> Callable[[Sequence[Request]], np.ndarray]:
    """A ``region_cosines`` callable for :func:`confirmed`: ``read(i)`` gives
    image i's bytes (a file read, an in-memory blob) and ``embedder()``
    (called once, on the first pair asked for: most sets have none) an
    ``engine.pipeline.Embedder``. The smaller picture and the region are
    compared at one resolution, the lower of the two (a 72-px region of a
    scaled-down copy against its 145-px original: the sharper one looked
    less alike for its sharpness alone), and in gray when the smaller is
    gray. A pair whose images cannot be read or decoded again,
    or no embedder, gives NaN (logged): it keeps stage 2's verdict.

    Each larger picture is decoded once for up to PARTS_PER_DECODE of its
    pairs, and the smaller ones kept while they fit SMALLER_CACHE_PIXELS: a
    sheet of 500 icons partly matched by each (a 12 MP PNG decodes in ~0.3
    s) was decoded 500 times."""
    made: list = []

    def cosines(requests: Sequence[Request], report: Callable | None = None) -> np.ndarray:
        if not made:
            try:
                made.append(embedder())
            except Exception as e:  # noqa: BLE001 - without a model the pairs keep stage 2's verdicts
                log.warning("no model to embed regions of partial matches (%s): they keep stage 2's verdict", e)
                made.append(None)
        model = made[0]
        out = np.full((len(requests), 2), np.nan)
        if model is None:
            return out
        smaller_content = _Kept(lambda i: model.content_parts(read(i), [(None, False)])[0], SMALLER_CACHE_PIXELS)
        done = 0
        by_larger = sorted(range(len(requests)), key=lambda k: requests[k][1])
        for larger, pairs in itertools.groupby(by_larger, key=lambda k: requests[k][1]):
            pairs = list(pairs)
            for start in range(0, len(pairs), PARTS_PER_DECODE):
                done = _one_decode(model, read, requests, larger, pairs[start:start + PARTS_PER_DECODE],
                                   smaller_content, out, done, report)
        return out
    return cosines


def _one_decode(model, read, requests: Sequence[Request], larger: int, group: list[int], smaller_content,
                out: np.ndarray, done: int, report: Callable | None) -> int:
    """The pairs ``group`` (positions in ``requests``) of one larger image,
    from one decode of it: their cosines into ``out``; returns ``done``
    counted on (for ``report``)."""
    try:
        larger_parts = model.content_parts(read(larger), [(None, False)]
                                           + [(requests[k][2], requests[k][3]) for k in group])
    except Exception as e:  # noqa: BLE001 - its pairs keep stage 2's verdict
        log.warning("image %d: its regions could not be compared (%s); its %d pair(s) keep stage 2's "
                    "verdict", larger, e, len(group))
        larger_parts = None
    for j, k in enumerate(group):
        smaller, _, _, _, shear = requests[k]
        try:
            if larger_parts is not None:
                out[k] = _compared(model, smaller_content(smaller), larger_parts[0],
                                   larger_parts[1 + j], shear)
        except Exception as e:  # noqa: BLE001 - one pair's failure leaves it as stage 2 judged it
            log.warning("images %d and %d: their region could not be compared (%s); the pair keeps "
                        "stage 2's verdict", smaller, larger, e)
        done += 1
        if report is not None:
            report("regions", done, len(requests))
    return done


def _compared(model, small: Image.Image, whole: Image.Image, part: Image.Image,
              shear: tuple[int, float] | None) -> tuple[float, float]:
    """(whole, region) cosine of one pair: the smaller picture's content
    (cut to its sheared band for a ``shear``) against the larger's whole
    content and its region ``part``."""
    band = small if shear is None else sheared_band(small, *shear)
    # At one resolution: whichever of the smaller picture and the region has
    # more pixels is reduced to the other's (a blurred or shrunk copy against a
    # sharp region, a sharp original against a small copy's region).
    f = (part.width * part.height / (band.width * band.height)) ** 0.5
    if f < 1:
        small, band = (_reduced(im, f) for im in (small, band))
    elif f > 1:
        whole, part = (_reduced(im, 1 / f) for im in (whole, part))
    if _grayscale(small):          # in one colourfulness: a grayscale copy's colour region
        whole, part = (im.convert("L").convert("RGB") for im in (whole, part))
    if shear is None:
        v = model.embed_images([small, whole, part])
        return float(v[0] @ v[1]), float(v[0] @ v[2])
    v = model.embed_images([small, whole, band, part])
    return float(v[0] @ v[1]), float(v[2] @ v[3])


class _Kept:
    """``get(i)`` through a cache of the latest results while their pixels
    fit ``pixels`` (least recently used out first); a failure is not kept."""

    def __init__(self, get: Callable[[int], Image.Image], pixels: int):
        self.get, self.pixels, self.kept = get, pixels, collections.OrderedDict()

    def __call__(self, i: int) -> Image.Image:
        if i in self.kept:
            self.kept.move_to_end(i)
            return self.kept[i]
        im = self.get(i)
        self.kept[i] = im
        while sum(x.width * x.height for x in self.kept.values()) > self.pixels and len(self.kept) > 1:
            self.kept.popitem(last=False)
        return im
