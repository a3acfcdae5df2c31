"""Which images are duplicates, over a whole set, composed from the modules
of this package: exact (same-bytes) pairs; near-duplicate pairs in two stages
(stage 1: each image's nearest neighbours by embedding, by coarse layout
and by shared keypoints, a recall-oriented candidate list, never an N x N
matrix; stage 2: ``verify`` aligns each
candidate pair's layout signatures and keeps the pairs that are the same
picture), or by raw cosine alone (``signatures=None``: every pair above a
threshold derived from the data's own nearest-neighbour cosines unless one is
given); groups that do not chain unrelated images; leakage across splits and
label conflicts."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Callable

import numpy as np
from imagesieve.plausible import implausible

from ...engine.signature import SIDE, thumbnails
from ...index import faiss_index as fi
from ..neighbors import knn_chunks
from . import region
from .groups import bounded_groups, connected_components, group_min_similarity, groups_from_labels
from .keypoint_candidates import MAX_IMAGES as KEYPOINT_MAX_IMAGES
from .keypoint_candidates import keypoint_candidate_pairs
from .leakage import cross_split_pairs, label_conflicts
from .pair_memo import PairMemo
from .pairs import knn_graph_pairs, pairs_above_threshold
from .verify import (FLAT_STD, MIN_INLIERS, PairEvidence, check_signatures, near_identical_matches,
                     one_dimensional, profile_pairs, uninformative_matches, verified_pairs, verify_pairs)

GROUPINGS = ("bounded", "centre", "components")
#: Stage 1 with verification: each image's CANDIDATE_K nearest neighbours
#: with cosine >= CANDIDATE_THRESHOLD are candidates. Low on purpose: on real
#: photos a 60% centre crop or a watermark fell to cosine 0.53-0.62.
CANDIDATE_THRESHOLD = 0.5
#: Candidates an image, over a whole set. 16, not 8: a verdict judges a pair
#: against the image's other candidates (its look-alikes), and a picture with
#: 8 copies has only copies among its 8 nearest, so its hard copies (crops,
#: captions) looked no closer than "look-alikes": with 8 copies of each of 32
#: photos, recall 0.50 at 8 candidates, 0.88 at 16. Costs twice the
#: alignments, and on glyph-like sets looser look-alike levels (Oxygen icons
#: 8 -> 17 false pairs, Fashion-MNIST 15 -> 33; bench/dup_quality.py).
CANDIDATE_K = 16
#: Stage 1 from the layouts too: each image's LAYOUT_K nearest by the
#: correlation of LAYOUT_SIDE x LAYOUT_SIDE thumbnails, at LAYOUT_MIN or more,
#: are candidates as well. The embedding is a texture detector: a wallpaper
#: blurred for a lock screen (a Gaussian of 1.5-3% of its width) or
#: pixelated in 16 px blocks fell to cosine 0.22-0.52 of its original,
#: outside the candidates, while its 8x8 layout still correlated at 0.88-1.00
#: (the nearest unrelated picture: median 0.82, at most 0.95; Wesnoth's
#: paintings, bench/stranger_audit.py --kinds wallpaper).
LAYOUT_SIDE = 8
LAYOUT_K = 4
LAYOUT_MIN = 0.9
#: And from shared keypoints: each image's KEYPOINT_K partners with the most
#: matching ORB descriptors (``keypoint_candidates``; up to its MAX_IMAGES).
KEYPOINT_K = 4
#: A streaming check aligns its new image with this many stored neighbours:
#: its latency is the alignments' (the stored images keep their own
#: look-alike levels from when they were added).
STREAM_CANDIDATE_K = 8
#: Near misses: candidate pairs stage 2 did not call the same picture, though some of
#: its evidence spoke for them (relative disagreement within NEAR_MISS_RELATIVE, as close
#: as typical look-alikes or closer, or MIN_INLIERS keypoints), closest first, at most
#: NEAR_MISSES_PER_IMAGE an image (NEAR_MISSES_MIN if that is more): where a person looks for a copy
#: that was not found (a stranger's redacted screenshot, 65 keypoints, was rejected against
#: a sibling screenshot and appeared in no output).
NEAR_MISS_RELATIVE = 1.0
NEAR_MISSES_PER_IMAGE = 0.1
NEAR_MISSES_MIN = 100
#: Raw cosine (no verification): the threshold is at least RAW_FLOOR and at
#: least the cosine that only RAW_NEIGHBOUR_SHARE of the images reach to
#: their RAW_RANK-th nearest neighbour (glyph-like data sits at far higher
#: cosines). Not the nearest: a copy is some image's nearest neighbour, and a
#: data set with many copies would push the threshold above them; an image
#: rarely has RAW_RANK copies, so that neighbour is a look-alike.
RAW_FLOOR = 0.75
RAW_NEIGHBOUR_SHARE = 0.02
RAW_RANK = 5


@dataclasses.dataclass
class NearMisses:
    """Candidate pairs stage 2 rejected though some evidence spoke for them
    (see NEAR_MISS_RELATIVE), closest first, less those whose two images
    ended in one duplicate group all the same: positions into the report's
    ``keys`` (a < b; one file of a byte-identical set), their cosine,
    relative disagreement and evidence, (M,) each."""
    a: np.ndarray
    b: np.ndarray
    cosine: np.ndarray
    relative: np.ndarray
    evidence: PairEvidence


@dataclasses.dataclass
class DuplicateReport:
    """Pairs as positions into ``keys`` (a < b), with per-pair flags, and
    groups as position arrays with their lowest internal cosine."""
    keys: Sequence[str]
    threshold: float
    a: np.ndarray
    b: np.ndarray
    cosine: np.ndarray
    exact: np.ndarray
    cross_split: np.ndarray
    labels_disagree: np.ndarray
    groups: list[np.ndarray]
    group_min_cosine: np.ndarray
    #: "verified" (two stages) or "raw cosine"; why this threshold.
    method: str = "raw cosine"
    threshold_reason: str = ""
    #: Stage 2's evidence for each reported pair (None for raw cosine), and
    #: its relative disagreement (verify.relative_disagreement: what it was judged by).
    evidence: PairEvidence | None = None
    relative: np.ndarray | None = None
    candidates: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)
    #: Two stages only: the candidates stage 2 rejected that came closest (None: raw cosine).
    near_misses: NearMisses | None = None

    @property
    def covered_share(self) -> float:
        """Share of the images in some duplicate group."""
        return sum(len(g) for g in self.groups) / max(len(self.keys), 1)


def _near_misses(a, b, sim, relative, evidence: PairEvidence, verified, n: int) -> NearMisses:
    """The rejected candidates (not ``verified``) some evidence spoke for,
    closest first (see NEAR_MISS_RELATIVE); (P,) arrays of all candidates in."""
    rel = np.nan_to_num(np.asarray(relative, np.float32), nan=np.inf)
    spoke = (rel <= NEAR_MISS_RELATIVE) | (evidence.keypoint_inliers >= MIN_INLIERS)
    idx = np.flatnonzero(~np.asarray(verified, bool) & spoke)
    idx = idx[np.lexsort((-evidence.keypoint_inliers[idx], rel[idx]))]
    idx = idx[:max(NEAR_MISSES_MIN, int(NEAR_MISSES_PER_IMAGE * n))]
    ev = evidence.take(idx)
    swapped = a[idx] > b[idx]
    back = swapped & ~ev.mirrored          # read the other way, turned the other way (as the pairs)
    ev.turned[back] = (-ev.turned[back]) % 360
    return NearMisses(np.where(swapped, b[idx], a[idx]).astype(np.int64),
                      np.where(swapped, a[idx], b[idx]).astype(np.int64), np.asarray(sim, np.float32)[idx],
                      np.asarray(relative, np.float32)[idx], ev)


def _outside_groups(m: NearMisses, group_of: np.ndarray) -> NearMisses:
    """``m`` less the pairs whose two images ended in one duplicate group
    (``group_of``: (N,) group labels; found the same picture through a third
    image: not missed)."""
    keep = group_of[m.a] != group_of[m.b]
    return NearMisses(m.a[keep], m.b[keep], m.cosine[keep], m.relative[keep], m.evidence.take(np.flatnonzero(keep)))


def raw_threshold(vectors: np.ndarray, report: Callable | None = None) -> tuple[float, str]:
    """(threshold, reason) for raw-cosine duplicates of ``vectors`` (N, D):
    the higher of RAW_FLOOR and the cosine that only RAW_NEIGHBOUR_SHARE of
    the images reach to their RAW_RANK-th nearest neighbour."""
    if len(vectors) <= RAW_RANK:
        return RAW_FLOOR, f"the default {RAW_FLOOR:.2f} (too few images to measure)"
    return raw_threshold_of(np.concatenate([s[:, -1] for _, s, _ in knn_chunks(vectors, RAW_RANK)]))


def raw_threshold_of(look_alike: np.ndarray) -> tuple[float, str]:
    """:func:`raw_threshold` from (M,) images' cosines to their RAW_RANK-th
    nearest neighbour (all images', or a sample's)."""
    look_alike = np.asarray(look_alike, np.float32).ravel()
    if look_alike.size == 0:
        return RAW_FLOOR, f"the default {RAW_FLOOR:.2f} (too few images to measure)"
    q = float(np.quantile(look_alike, 1 - RAW_NEIGHBOUR_SHARE))
    if q <= RAW_FLOOR:
        return RAW_FLOOR, (f"the default {RAW_FLOOR:.2f} ({RAW_NEIGHBOUR_SHARE:.0%} of the images have "
                           f"{RAW_RANK} neighbours at {q:.3f} or more)")
    t = min(float(np.nextafter(np.float32(q), np.float32(2))), 1.0)
    return t, (f"{t:.3f}, from the data: {RAW_NEIGHBOUR_SHARE:.0%} of the images have {RAW_RANK} look-alikes "
               f"at cosine {q:.3f} or more (the default {RAW_FLOOR:.2f} would pair them up)")


def exact_pairs(sha) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a < b) of positions with equal content hashes: every pair of a
    group of identical files (a star around its first member above 64, so a
    file copied 10,000 times costs 10,000 pairs, not 50 million)."""
    sha = np.asarray(sha)
    if sha.size < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(sha, kind="stable")
    s = sha[order]
    cuts = np.flatnonzero(s[1:] != s[:-1]) + 1
    a, b = [], []
    for g in np.split(order, cuts):
        if g.size < 2 or not sha[g[0]]:         # '' = no hash (a failed image)
            continue
        g = np.sort(g)
        if g.size > 64:
            a.append(np.full(g.size - 1, g[0])), b.append(g[1:])
        else:
            i, j = np.triu_indices(g.size, 1)
            a.append(g[i]), b.append(g[j])
    if not a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(a).astype(np.int64), np.concatenate(b).astype(np.int64)


def candidate_pairs(vectors: np.ndarray, threshold: float = CANDIDATE_THRESHOLD, k: int = CANDIDATE_K,
                    report: Callable | None = None, knn: tuple[np.ndarray, np.ndarray] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage 1: (a, b, cosine), a < b, sorted, each pair once: every image's
    ``k`` nearest neighbours with cosine >= ``threshold`` (exact below
    FLAT_MAX vectors, IVF above; see ``neighbors.knn_chunks``). ``knn``:
    (sims (N, >= k), ids (N, >= k)) already searched (the audit's one kNN
    pass), most similar first; its first ``k`` columns are used."""
    n = len(vectors)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    chunks = knn_chunks(vectors, k, report=report) if knn is None else [(0, knn[0][:, :k], knn[1][:, :k])]
    return _knn_pairs(chunks, n, threshold, report)


def _knn_pairs(chunks, n: int, threshold: float, report: Callable | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, similarity), a < b, sorted, each pair once, from
    ``knn_chunks``-style (start, sims, ids) chunks: the neighbours at
    ``threshold`` or more."""
    out_a, out_b, out_s = [], [], []
    for start, sims, ids in chunks:
        stop = start + len(ids)
        q = np.repeat(np.arange(start, stop, dtype=np.int64), ids.shape[1])
        ids, sims = ids.ravel(), sims.ravel()
        keep = (ids >= 0) & (sims >= threshold)
        out_a.append(np.minimum(q[keep], ids[keep]))
        out_b.append(np.maximum(q[keep], ids[keep]))
        out_s.append(sims[keep])
        if report is not None:
            report("candidates", stop, n)
    a, b, s = np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_s).astype(np.float32)
    _, first = np.unique(a * n + b, return_index=True)
    return a[first], b[first], s[first]


def coarse_layouts(signatures: np.ndarray) -> np.ndarray:
    """(N, LAYOUT_SIDE ** 2) float32: each signature's coarse layout, its
    thumbnail reduced to LAYOUT_SIDE x LAYOUT_SIDE by area averaging, zero
    mean and unit norm, so an inner product is a correlation; a zero row for
    a flat thumbnail (one tone: no layout, correlates with nothing).
    ``signatures``: (N, SIGNATURE_BYTES) uint8."""
    if len(signatures) == 0:                          # an empty collection's (0,) or (0, 0) array
        return np.zeros((0, LAYOUT_SIDE ** 2), np.float32)
    t = thumbnails(check_signatures(signatures))
    n = len(t)
    cell = SIDE // LAYOUT_SIDE                        # area averaging: SIDE is a multiple of LAYOUT_SIDE
    coarse = t.reshape(n, LAYOUT_SIDE, cell, LAYOUT_SIDE, cell).mean(axis=(2, 4), dtype=np.float32).reshape(n, -1)
    coarse -= coarse.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(coarse, axis=1)
    has_layout = norm > FLAT_STD * LAYOUT_SIDE         # rms above FLAT_STD gray levels
    coarse[has_layout] /= norm[has_layout, None]
    coarse[~has_layout] = 0.0
    return coarse


def layout_turns(coarse: np.ndarray) -> np.ndarray:
    """(5, N, LAYOUT_SIDE ** 2) float32: :func:`coarse_layouts` upright,
    turned by a quarter, a half and three quarters, and upside down. A copy
    on its side or upside down correlates with one of its original's: the
    embedding is not turn-invariant (Fashion-MNIST garments turned by a
    quarter ranked 16th-718th among their copy's neighbours)."""
    g = np.asarray(coarse, np.float32).reshape(-1, LAYOUT_SIDE, LAYOUT_SIDE)
    out = np.stack([g, np.rot90(g, 1, (1, 2)), np.rot90(g, 2, (1, 2)), np.rot90(g, 3, (1, 2)), g[:, ::-1]])
    return np.ascontiguousarray(out.reshape(len(out), len(g), -1))


def _turned_knn_chunks(coarse: np.ndarray, k: int, chunk_rows: int = 1024):
    """knn_chunks-style (start, sims, ids) of each layout's ``k`` nearest
    others, each by its best view (:func:`layout_turns`), exact."""
    import faiss
    n = len(coarse)
    k = min(k, n - 1)
    views = layout_turns(coarse)
    base = views.reshape(len(views) * n, -1)
    for s in range(0, n, chunk_rows):
        q = np.ascontiguousarray(coarse[s:s + chunk_rows])
        sims, ids = faiss.knn(q, base, min(len(views) * (k + 1), len(base)), metric=faiss.METRIC_INNER_PRODUCT)
        sims[ids < 0] = -np.inf                   # no hit (not expected of an exact search)
        ids = np.where(ids < 0, -1, ids % n)
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for r in range(len(q)):
            # most similar first: an id's first hit is its best view; the query's own views out
            _, first = np.unique(ids[r], return_index=True)
            first = np.sort(first)
            first = first[ids[r][first] != s + r][:k]
            out_s[r, :len(first)], out_i[r, :len(first)] = sims[r][first], ids[r][first]
        yield s, out_s, out_i


def layout_candidate_pairs(signatures: np.ndarray, k: int = LAYOUT_K, min_correlation: float = LAYOUT_MIN,
                           report: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), a < b, each pair once: every image's ``k`` nearest by the
    correlation of its :func:`coarse_layouts` at ``min_correlation`` or
    more, each other image by its best view of :func:`layout_turns` (up to
    FLAT_MAX images; upright only above). Flat thumbnails (one tone) have no
    layout and pair with none. ``signatures``: (N, SIGNATURE_BYTES) uint8.
    ``report(stage, done, total)`` as the layouts are searched (it may raise to stop)."""
    coarse = coarse_layouts(signatures)
    n = len(coarse)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    has_layout = coarse.any(axis=1)
    chunks = _turned_knn_chunks(coarse, k) if n <= fi.FLAT_MAX else knn_chunks(coarse, k, report=report)
    a, b, _ = _knn_pairs(chunks, n, min_correlation, lambda stage, done, total: report and report(
        "layout candidates", done, total))
    keep = has_layout[a] & has_layout[b]
    return a[keep], b[keep]


def _new_pairs(xa, xb, a, b, vectors: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (xa, xb) not among (a, b), with their cosine, kept at ``floor`` or more."""
    n = len(vectors)
    new = ~np.isin(xa * n + xb, a * n + b)
    xa, xb = xa[new], xb[new]
    sim = np.einsum("ij,ij->i", vectors[xa], vectors[xb]).astype(np.float32)
    keep = sim >= floor
    return xa[keep], xb[keep], sim[keep]


def _representatives(twins: np.ndarray) -> np.ndarray:
    """(N,) each image's representative: the first of its byte-identical
    set (``twins``: (N,) labels, equal for identical files)."""
    n = len(twins)
    first = np.full(n, n, np.int64)
    np.minimum.at(first, twins, np.arange(n))
    return first[twins]


def _on_representatives(a, b, source, rep: np.ndarray, vectors: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs (a, b) from ``source`` (0 embedding, 1 layout, 2
    keypoints) as pairs of representatives (``rep``: see
    :func:`_representatives`): (a, b, cosine, source), a < b, sorted, each
    pair once, by its first source. Identical files are one picture: 20
    copies of one file filled a re-encoded copy's 16 candidates, so it was
    judged against its own original as its look-alikes (3 of 20 pairs
    found), and each copy was aligned again."""
    ra, rb = rep[a], rep[b]
    ra, rb = np.minimum(ra, rb), np.maximum(ra, rb)
    keep = ra != rb
    ra, rb, source = ra[keep], rb[keep], np.asarray(source)[keep]
    order = np.lexsort((source, rb, ra))
    ra, rb, source = ra[order], rb[order], source[order]
    first = np.r_[True, (ra[1:] != ra[:-1]) | (rb[1:] != rb[:-1])] if len(ra) else np.zeros(0, bool)
    ra, rb, source = ra[first], rb[first], source[first]
    sim = np.einsum("ij,ij->i", vectors[ra], vectors[rb]).astype(np.float32)
    return ra.astype(np.int64), rb.astype(np.int64), sim, source


#: A verified pair of two identical sets lists every member with every
#: other up to this many pairs; beyond, each member with one member of the
#: other set for each (split, label) found there (a set of 10,000 copies in
#: one split costs 10,000 pairs, as exact_pairs, and every leak is still a pair).
MEMBER_PAIRS_MAX = 256


def _member_pairs(a, b, rep: np.ndarray, splits: Sequence[str], labels: Sequence[str]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (a, b) of representatives (see :func:`_representatives`) as
    pairs of their identical sets' members: (which (M,) positions into the
    pairs, a (M,), b (M,), swapped (M,) bool: the member pair runs the other
    way, b's set first), a < b. The star form of a large pair of sets keeps
    one pair for every (split, label) of one set met by each member of the
    other (``splits``, ``labels``: N each)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    size = np.bincount(rep, minlength=len(rep))
    alone = (size[a] == 1) & (size[b] == 1)
    if alone.all():
        return np.arange(len(a)), a, b, np.zeros(len(a), bool)
    order = np.argsort(rep, kind="stable")
    starts = np.searchsorted(rep[order], np.arange(len(rep) + 1))

    def one_of_each_kind(members: np.ndarray) -> np.ndarray:
        first: dict = {}
        for m in members.tolist():
            first.setdefault((splits[m], labels[m]), m)
        return np.fromiter(first.values(), np.int64, len(first))

    which, out_a, out_b = [np.flatnonzero(alone)], [a[alone]], [b[alone]]
    for k in np.flatnonzero(~alone).tolist():
        x, y = int(a[k]), int(b[k])
        mx, my = order[starts[x]:starts[x + 1]], order[starts[y]:starts[y + 1]]
        if mx.size * my.size > MEMBER_PAIRS_MAX:
            kx, ky = one_of_each_kind(mx), one_of_each_kind(my)
            px, py = np.r_[np.repeat(mx, ky.size), np.tile(kx, my.size)], np.r_[np.tile(ky, mx.size),
                                                                                np.repeat(my, kx.size)]
            _, first = np.unique(px * len(rep) + py, return_index=True)
            px, py = px[first], py[first]
        else:
            px, py = np.repeat(mx, my.size), np.tile(my, mx.size)
        which.append(np.full(px.size, k)), out_a.append(px), out_b.append(py)
    px, py = np.concatenate(out_a), np.concatenate(out_b)
    return np.concatenate(which), np.minimum(px, py), np.maximum(px, py), px > py


def _group_labels(n: int, a, b, sim, floor: float, grouping: str, rep: np.ndarray) -> np.ndarray:
    """(N,) group labels of pairs (a, b) with cosines ``sim``, byte-identical
    images (``rep``: :func:`_representatives`) standing as one member: they
    are every two a pair, though exact_pairs joins a large set by a star and
    the candidates are each image's nearest, so 5,000 copies of one file
    made a bounded group of 22. Each takes its first copy's group."""
    ra, rb = rep[a], rep[b]
    keep = ra != rb
    if grouping == "components":
        labels = connected_components(n, ra[keep], rb[keep])
    else:
        labels = bounded_groups(n, ra[keep], rb[keep], sim[keep], floor,
                                mode="complete" if grouping == "bounded" else "centre")
    return labels[rep]


def find_duplicates(vectors: np.ndarray, keys: Sequence[str], labels: Sequence[str], splits: Sequence[str],
                    sha256, threshold: float = 0.0, approximate: bool = False, knn_k: int = 0,
                    grouping: str = "bounded", report: Callable | None = None,
                    signatures: np.ndarray | None = None,
                    knn: tuple[np.ndarray, np.ndarray] | None = None, alignment_pool=None,
                    layout_k: int = LAYOUT_K, max_pairs: int | None = None,
                    keypoint_k: int = KEYPOINT_K, region_cosines: Callable | None = None,
                    pair_memo: PairMemo | None = None, processes: bool | None = None) -> DuplicateReport:
    """vectors (N, D) unit float32 and N-long metadata sequences (sha256: a
    list of str or an (N,) array) -> DuplicateReport.

    ``signatures``: (N, SIGNATURE_BYTES) uint8 layout signatures: two stages
    (candidates at cosine >= ``threshold`` or CANDIDATE_THRESHOLD, then
    verification; ``knn_k`` neighbours an image, default CANDIDATE_K; the
    layout candidates at any cosine unless ``threshold`` is given). None:
    raw cosine at ``threshold`` (0 = derived from the data, see
    :func:`raw_threshold`), by exact range search or, ``approximate``, a kNN
    graph of ``knn_k`` (default 16). Identical bytes are always exact
    duplicates. ``knn``: see :func:`candidate_pairs` (two stages only).
    ``layout_k``: candidates an image from its coarse layout too (see
    :func:`layout_candidate_pairs`; 0: the embedding's alone).
    ``keypoint_k``: and from shared keypoints (``keypoint_candidates``, up
    to its MAX_IMAGES images, judged by their keypoints alone; 0: none); a
    ``threshold`` given bounds their cosine too.
    ``alignment_pool``: a long-lived ``verify.AlignmentPool`` for stage 2
    (else worker processes of its own for large batches). ``max_pairs``:
    the exact raw-cosine search raises ``pairs.TooManyPairs`` beyond it.
    ``region_cosines``: where the images' pixels are at hand
    (``region.image_cosines``), a pair matched on part of a frame must also
    hold where it was found (``region.confirmed``; two stages only).
    ``pair_memo``: stage 2's evidence of pairs aligned before (``pair_memo``):
    those are read, the rest aligned and added to it. ``processes``: see
    ``verify.verify_pairs`` (without ``alignment_pool``; False: this thread)."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    n = len(keys)
    # An array stays as it is (the audit passes S64 bytes); a list becomes
    # an object array of the same str objects.
    sha = sha256 if isinstance(sha256, np.ndarray) else np.asarray(sha256, dtype=object)
    evidence = relative = near_misses = None
    candidates = 0
    if signatures is not None:
        method = "verified"
        # A threshold asked for bounds every pair's cosine, the layouts' too;
        # by default layout-only pairs have none (the embedding missed them).
        layout_floor = threshold or -1.0
        threshold = threshold or CANDIDATE_THRESHOLD
        keypoint_note = ("" if keypoint_k <= 0 else f", its {keypoint_k} with the most shared keypoints"
                         if n <= KEYPOINT_MAX_IMAGES else f" (none by shared keypoints above {KEYPOINT_MAX_IMAGES:,} "
                         "images)")
        reason = (f"candidates: each image's {knn_k or CANDIDATE_K} nearest neighbours at cosine >= "
                  f"{threshold:.2f}" + (f", its {layout_k} nearest by coarse layout" if layout_k > 0 else "")
                  + keypoint_note
                  + "; each pair kept only when its layouts align or its keypoints match (stage 2)")
        a, b, sim = candidate_pairs(vectors, threshold, knn_k or CANDIDATE_K, report=report, knn=knn)
        # Pairs only the layouts propose: judged by their layouts (see verified_pairs).
        la, lb = (layout_candidate_pairs(signatures, layout_k, report=report) if layout_k > 0
                  else (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        la, lb, layout_sim = _new_pairs(la, lb, a, b, vectors, layout_floor)
        # Pairs only shared keypoints propose (a part of a picture): judged by their keypoints.
        ea, eb = exact_pairs(sha)
        twins = connected_components(n, ea, eb)
        ka, kb, _ = (keypoint_candidate_pairs(signatures, keypoint_k, twins=twins, report=report)
                     if keypoint_k > 0 and n <= KEYPOINT_MAX_IMAGES
                     else (np.zeros(0, np.int64), np.zeros(0, np.int64), None))
        ka, kb, keypoint_sim = _new_pairs(ka, kb, np.r_[a, la], np.r_[b, lb], vectors, layout_floor)
        source = np.repeat([0, 1, 2], [len(a), len(la), len(ka)])      # embedding, layout, keypoints
        # Judged between one file of each identical set; the verdicts then hold for every file.
        rep = _representatives(twins)
        a, b, sim, source = _on_representatives(np.r_[a, la, ka], np.r_[b, lb, kb], source, rep, vectors)
        by_layout, by_keypoints = source == 1, source == 2
        candidates = len(a)
        profile = np.zeros(n, bool)
        paired = np.unique(np.r_[a, b])        # measured only where a pair needs it (~0.2 ms an image)
        profile[paired] = one_dimensional(signatures[paired], report=report)
        # No byte-identical pair is aligned (5,000 copies of one placeholder spent 140 s of
        # a 299 s audit aligning each other): they are exact pairs, below.
        ev = (verify_pairs if pair_memo is None else pair_memo.verify)(
            signatures, a, b, report=report, pool=alignment_pool, profiled=profile[a] | profile[b], processes=processes)
        # An image with fewer embedding candidates than it searched for has every
        # other neighbour below the threshold: its look-alikes' cosine is at most that.
        embedded = source == 0
        neighbours = np.bincount(a[embedded], minlength=n) + np.bincount(b[embedded], minlength=n)
        sparse = np.where(neighbours < (knn_k or CANDIDATE_K), np.float32(threshold), np.float32(np.nan))
        # The layouts' pairs the embedding would not have proposed at all: a simple blob's layout is no evidence.
        unproposed = by_layout & (sim < threshold)
        ok, rel = verified_pairs(n, a, b, ev.agreement, sim, layout_only=by_layout,
                                 profile=profile_pairs(n, a, b, profile, ev),
                                 uninformative=uninformative_matches(ev, unproposed),
                                 keypoint_inliers=ev.keypoint_inliers, twins=twins, warp_gain=ev.warp_gain,
                                 near_identical=near_identical_matches(ev, sim), keypoint_only=by_keypoints,
                                 sparse_cosine=sparse)
        if region_cosines is not None:
            ok = region.confirmed(signatures, a, b, ok, ev, region_cosines, report)
        near_misses = _near_misses(a, b, sim, rel, ev, ok, n)
        # Each verified pair for every file of its two identical sets; identical bytes are
        # duplicates whatever stage 2 says.
        which, a, b, swapped = _member_pairs(a[ok], b[ok], rep, splits, labels)
        which = np.flatnonzero(ok)[which]
        member_ev = ev.take(which)
        # A pair read the other way turned the other way (a mirror turns alike both ways).
        back = swapped & ~member_ev.mirrored
        member_ev.turned[back] = (-member_ev.turned[back]) % 360
        order = np.lexsort((np.r_[b, eb], np.r_[a, ea]))
        a, b = np.r_[a, ea][order], np.r_[b, eb][order]
        sim = np.r_[sim[which], np.ones(len(ea), np.float32)][order].astype(np.float32)
        relative = np.r_[rel[which], np.zeros(len(ea), np.float32)][order].astype(np.float32)
        evidence = member_ev.concat(PairEvidence.identical(len(ea))).take(order)
        group_floor = -1.0        # verified pairs are the edges, whatever their cosine
    else:
        method = "raw cosine"
        if threshold:
            reason = f"{threshold:.3f}, as asked"
        else:
            threshold, reason = raw_threshold(vectors, report)
        if approximate:
            a, b, sim = knn_graph_pairs(vectors, threshold, k=knn_k or 16, report=report)
        else:
            a, b, sim = pairs_above_threshold(vectors, threshold, report=report, max_pairs=max_pairs)
        group_floor = threshold
    if signatures is None:
        ea, eb = exact_pairs(sha)
        rep = _representatives(connected_components(n, ea, eb))
    # Verified pairs join groups strongest evidence first (the least relative
    # disagreement; byte-identical files first, keypoint-only pairs last): by
    # cosine, a look-alike sibling at 0.95 took an emoji's group before its copy
    # flattened on black (0.81, but a far clearer copy), which then stayed out of
    # every group though verified (docs/verified-duplicates.md, "Emoji").
    order_by = sim if method != "verified" else 1 - np.nan_to_num(np.clip(relative, 0, 2), nan=2.0)
    group_of = _group_labels(n, a, b, order_by, group_floor, grouping, rep)
    groups = groups_from_labels(group_of)
    if near_misses is not None:
        near_misses = _outside_groups(near_misses, group_of)
    result = DuplicateReport(
        keys=keys, threshold=threshold, a=a, b=b, cosine=sim,
        exact=sha[a] == sha[b] if len(a) else np.zeros(0, bool),
        cross_split=cross_split_pairs(a, b, np.asarray(splits, dtype=object), unknown=""),
        labels_disagree=label_conflicts(a, b, np.asarray(labels, dtype=object), unknown=""),
        groups=groups, group_min_cosine=group_min_similarity(vectors, groups), method=method,
        threshold_reason=reason, evidence=evidence, relative=relative, candidates=candidates,
        near_misses=near_misses)
    # Byte-identical files are a finding, not a sign of a loose threshold:
    # only images in some near (not exact) pair count towards implausible.
    # Pictures, not files: the copies of one file count once (its near pairs are listed for each).
    near = ~result.exact
    near_images = np.unique(rep[np.r_[result.a[near], result.b[near]]]).size
    pictures = np.unique(rep).size
    near_share = near_images / max(pictures, 1)
    if implausible(near_images, pictures):
        result.warnings.append(
            f"near-duplicate pairs involve {near_share:.0%} of the images, an implausible share unless "
            "this collection is known to hold many copies: "
            + ("check a sample of the groups" if method == "verified" else
               "this data's look-alikes reach the threshold; verification (the default) or a higher "
               "threshold separates copies from look-alikes"))
    if result.exact.any():
        exact_images = np.unique(np.r_[result.a[result.exact], result.b[result.exact]]).size
        # counted, not only a share: 2 of 621 images would read "0%" beside an exact pair
        result.warnings.append(f"{exact_images} of the {n} images ({exact_images / n:.1%}) are byte-identical "
                               "to another image (exact duplicates: keep one of each)")
    return result
