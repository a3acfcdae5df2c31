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

This module is pure: it chooses which accepted pairs to test
(:func:`tested_pairs`), where the smaller picture sits in the larger
(:func:`placement`) and what the embeddings say (:func:`region_holds`).
Embedding a region needs the larger image's pixels: the caller supplies
them through a ``region_vectors`` callable (see :func:`confirmed`); where
they are not at hand (a collection stores no pixels), pairs keep the
verdict stage 2 gave them.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Callable, Sequence

import cv2
import numpy as np

from ...engine.signature import SIDE, unpack
from . import verify as V

REGION_GAIN = 0.2          # share of the way to cosine 1 the region must come closer than the whole
AREA_TOLERANCE = 0.03      # relative: the crop shares searched again are those stage 2 matched at
NEAR_ONE = 0.99            # whole pictures this close already: no room to come closer
log = logging.getLogger(__name__)

# One part of one image to embed: (image position, box as fractions (x0, y0,
# x1, y1) of its content box or None for all of it, mirrored).
Part = tuple[int, tuple[float, float, float, float] | None, bool]


def tested_pairs(accepted: np.ndarray, evidence: "V.PairEvidence") -> np.ndarray:
    """(P,) bool: the accepted pairs a region test applies to: matched on
    less than V.PARTIAL_AREA of the larger view, upright (no turn, not a
    negative), and not confirmed by V.MIN_INLIERS keypoints or more (a
    similarity transform of many keypoints is stronger evidence than a
    texture network's view of a region)."""
    return (np.asarray(accepted, bool) & (evidence.matched_area < V.PARTIAL_AREA) & (evidence.turned == 0)
            & ~evidence.inverted & (evidence.keypoint_inliers < V.MIN_INLIERS))


def placement(sig_a: np.ndarray, sig_b: np.ndarray, area: float
              ) -> tuple[int, tuple[float, float, float, float], bool] | None:
    """Where the smaller picture of a pair sits in the larger: (0 when ``a``
    is the larger (searched) one, else 1; the box the smaller one's whole
    view covers, as fractions (x0, y0, x1, y1) of the larger one's
    thumbnail, which shows its content box; mirrored). Found as stage 2
    found it (``verify._shares``: the template's inner part slid over the
    other view, both ways, mirrors too), at the crop shares that cover
    ``area`` (stage 2's matched area) of the larger view. None when no
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
            for mirrored, view in ((False, t), (True, t[:, ::-1].copy())):
                templ = cv2.resize(V._inner(view), size, interpolation=cv2.INTER_AREA)
                if V._flat(templ):
                    continue
                _, high, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(s, templ, cv2.TM_CCOEFF_NORMED))
                if high > best:
                    # The template is the view's inner part: its whole view is 1/INNER as large.
                    x0, y0 = x - fx * m, y - fy * m
                    box = (max(0.0, x0 / SIDE), max(0.0, y0 / SIDE), min(1.0, x0 / SIDE + fx),
                           min(1.0, y0 / SIDE + fy))
                    best, where = high, (searched, box, mirrored)
    return where


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


def confirmed(signatures: np.ndarray, a: np.ndarray, b: np.ndarray, accepted: np.ndarray,
              evidence: "V.PairEvidence", region_vectors: Callable[[Sequence[Part]], np.ndarray]
              ) -> np.ndarray:
    """(P,) bool: ``accepted`` with the tested pairs (:func:`tested_pairs`)
    whose region does not hold (:func:`region_holds`) taken out.
    ``region_vectors(parts)``: unit embeddings (len(parts), D) float32 of
    image parts (see ``Part``), a NaN row where one could not be made (the
    file changed or vanished): such a pair keeps its verdict."""
    out = np.asarray(accepted, bool).copy()
    idx = np.flatnonzero(tested_pairs(out, evidence))
    parts: list[Part] = []
    tested = []
    for i in idx.tolist():
        where = placement(signatures[a[i]], signatures[b[i]], float(evidence.matched_area[i]))
        if where is None:
            continue
        searched, box, mirrored = where
        larger, smaller = (a[i], b[i]) if searched == 0 else (b[i], a[i])
        parts += [(int(smaller), None, False), (int(larger), None, False), (int(larger), box, mirrored)]
        tested.append(i)
    if not tested:
        return out
    v = np.asarray(region_vectors(parts), np.float32).reshape(len(tested), 3, -1)
    whole = np.einsum("pd,pd->p", v[:, 0], v[:, 1])
    region = np.einsum("pd,pd->p", v[:, 0], v[:, 2])
    out[np.asarray(tested)] = region_holds(whole, region)
    return out


def part_vectors(embedder, read: Callable[[int], bytes]) -> Callable[[Sequence[Part]], np.ndarray]:
    """A ``region_vectors`` callable for :func:`confirmed`: ``read(i)`` gives
    image i's bytes (a file read, an in-memory blob) and ``embedder()``
    (called once, on the first parts asked for: most sets have none) an
    ``engine.pipeline.Embedder`` that embeds its parts, each image decoded
    once. An image that cannot be read or decoded again, or no embedder,
    gives NaN rows (logged): those pairs keep stage 2's verdict."""
    made: list = []

    def vectors(parts: Sequence[Part]) -> np.ndarray:
        if not made:
            try:
                made.append(embedder())
            except Exception as e:  # noqa: BLE001 - without a model the pairs keep stage 2's verdicts
                log.warning("no model to embed regions of partial matches (%s): they keep stage 2's verdict", e)
                made.append(None)
        model = made[0]
        out = np.full((len(parts), 1 if model is None else model.dim), np.nan, np.float32)
        if model is None:
            return out
        by_image: dict[int, list[int]] = defaultdict(list)
        for k, (i, _, _) in enumerate(parts):
            by_image[i].append(k)
        for i, ks in by_image.items():
            try:
                out[ks] = model.embed_parts(read(i), [(parts[k][1], parts[k][2]) for k in ks])
            except Exception as e:  # noqa: BLE001 - one image's failure leaves its pairs as stage 2 judged them
                log.warning("image %d: its parts could not be embedded (%s); its partial matches keep "
                            "stage 2's verdict", i, e)
        return out
    return vectors
