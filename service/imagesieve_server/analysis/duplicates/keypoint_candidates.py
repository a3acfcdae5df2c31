"""Candidate pairs from shared keypoints: a third source for stage 1.

The embedding and the coarse layouts both describe a whole picture, so a
copy that holds only part of another picture (half of a collage, a crop
pasted into a larger canvas, a photo inside a frame) is neither's neighbour:
a probe's half collages sat at cosine 0.38-0.42 (the 157th to 435th
neighbour) while sharing 102-242 matching ORB descriptors with their
original. Each image's descriptors (the signature's keypoint block) are
matched against every other image's in a FAISS binary index (Hamming
distance, ``IndexBinaryFlat``; ``IndexBinaryIVF`` above
FLAT_MAX_DESCRIPTORS). A descriptor votes for the image of its nearest
match when that match is close (MAX_HAMMING), and for each other image
nearly as close (within 1 / RATIO of it) as well, unless more than
MAX_SHARED images are or no neighbour found lies beyond that band (a
texture or a glyph every picture has, or random descriptors, all at about
one distance): Lowe's ratio test, except that a source's second file or
re-encoded copy does not cancel its votes, as a strict "closer than any
third image" did. Byte-identical files vote as one image (``twins``).
Image pairs with MIN_VOTES votes or more are candidates, each image's K
best. Stage 2 then decides on them by their keypoints alone
(``verify.verified_pairs``' ``keypoint_only``): their layouts and cosines
say little for a part of a picture.
"""
from __future__ import annotations

import math
from typing import Callable

import faiss
import numpy as np

from ...engine.keypoints import DESCRIPTOR_BYTES, unpack_keypoints
from ...engine.signature import keypoints
from .verify import check_signatures

K = 4                        # candidates an image from its keypoints
MIN_VOTES = 8                # descriptor matches a pair needs (MIN_INLIERS for RANSAC later)
MAX_HAMMING = 64             # bits of 256: an ORB match further than this is noise
RATIO = 0.8                  # a match counts when within 1 / RATIO of the nearest one
MAX_SHARED = 3               # ... and at most this many images have such a match
NEIGHBOURS = 16              # matches looked at a descriptor (own image's included)
FLAT_MAX_DESCRIPTORS = 20_000    # exact search up to here (~130 images); an inverted file above
MAX_IMAGES = 20_000          # no keypoint candidates above: ~3M descriptors, minutes of search
IVF_PROBES = 16
IVF_TRAIN_ITERATIONS = 10
CHUNK = 16_384               # descriptors searched at a time (bounded memory)


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)


def _index(descriptors: np.ndarray):
    bits = 8 * DESCRIPTOR_BYTES
    m = len(descriptors)
    if m <= FLAT_MAX_DESCRIPTORS:
        index = faiss.IndexBinaryFlat(bits)
    else:
        # Few lists, trained briefly: k-means over 66,000 descriptors into
        # 1,032 lists took 13 s, longer than the exact search it replaced.
        nlist = int(min(8_192, 2 * math.sqrt(m)))
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, nlist)
        index.cp.niter = IVF_TRAIN_ITERATIONS
        sample = np.random.default_rng(0).choice(m, min(m, 40 * nlist), replace=False)
        index.train(descriptors[np.sort(sample)])
        index.nprobe = IVF_PROBES
    index.add(descriptors)
    return index


def keypoint_candidate_pairs(signatures, k: int = K, min_votes: int = MIN_VOTES, twins=None,
                             report: Callable | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, votes), a < b, each pair once: every image's ``k`` partners
    with the most descriptor votes, at ``min_votes`` or more (see the
    module's docstring). ``signatures``: (N, SIGNATURE_BYTES) uint8; images
    without keypoints (upgraded signatures, blank pictures) vote for none.
    ``twins``: (N,) labels, equal for byte-identical files: they vote as
    one, and each of them gets the group's pairs (never with each other).
    Empty above MAX_IMAGES images. ``report(stage, done, total)``."""
    if k < 1 or min_votes < 1:
        raise ValueError(f"k and min_votes must be >= 1, got {k}, {min_votes}")
    sig = check_signatures(signatures)
    n = len(sig)
    if n < 2 or n > MAX_IMAGES:
        return _empty()
    labels = np.arange(n) if twins is None else np.asarray(twins).ravel()
    if labels.shape != (n,):
        raise ValueError(f"twins must have one label an image ({n}); got {labels.shape}")
    _, first, group = np.unique(labels, return_index=True, return_inverse=True)
    leaders = np.sort(first)                                     # one file a group votes
    blocks = [unpack_keypoints(keypoints(sig[i]))[1] for i in leaders]
    owner = np.repeat(leaders, [len(d) for d in blocks])
    if len(owner) < 2:
        return _empty()
    descriptors = np.ascontiguousarray(np.concatenate(blocks))
    index = _index(descriptors)
    voters, voted = [], []
    for s in range(0, len(descriptors), CHUNK):
        dist, nb = index.search(descriptors[s:s + CHUNK], NEIGHBOURS)
        own = owner[s:s + len(nb)]
        other = np.where(nb >= 0, owner[np.maximum(nb, 0)], -1)
        others = (nb >= 0) & (other != own[:, None])
        valid = others & (dist <= MAX_HAMMING)
        nearest = np.where(valid, dist, np.iinfo(dist.dtype).max).min(axis=1)
        near = dist * RATIO <= nearest[:, None]
        valid &= near
        # The search must see past the band: a neighbour of another image
        # farther than it (random descriptors lie at one distance, all in it).
        valid &= (others & ~near).any(axis=1)[:, None]
        # Each image once a descriptor (several of its descriptors may be among the neighbours).
        repeated = np.zeros_like(valid)
        for j in range(1, NEIGHBOURS):
            repeated[:, j] = (valid[:, :j] & (other[:, :j] == other[:, j:j + 1])).any(axis=1)
        valid &= ~repeated
        valid &= (valid.sum(axis=1) <= MAX_SHARED)[:, None]
        rows, cols = np.nonzero(valid)
        voters.append(own[rows])
        voted.append(other[rows, cols])
        if report is not None:
            report("keypoint candidates", min(s + CHUNK, len(descriptors)), len(descriptors))
    x, y = np.concatenate(voters), np.concatenate(voted)
    key, votes = np.unique(np.minimum(x, y) * n + np.maximum(x, y), return_counts=True)
    keep = votes >= min_votes
    a, b, votes = key[keep] // n, key[keep] % n, votes[keep].astype(np.int32)
    if twins is not None:
        a, b, votes = _to_every_twin(a, b, votes, group)
    # Each image's k best partners: a pair stays when it is among either side's.
    order = np.argsort(-votes, kind="stable")
    taken = np.zeros(n, np.int64)
    chosen = np.zeros(len(order), bool)
    for p in order.tolist():
        if taken[a[p]] < k or taken[b[p]] < k:
            chosen[p] = True
            taken[a[p]] += 1
            taken[b[p]] += 1
    sel = np.sort(np.flatnonzero(chosen))
    return a[sel], b[sel], votes[sel]


def _to_every_twin(a, b, votes, group) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of group leaders -> the same pairs for every member of the two groups."""
    by_group = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[by_group], np.arange(group.max() + 2))

    def members(i: int) -> np.ndarray:
        return by_group[starts[group[i]]:starts[group[i] + 1]]
    out = [(x, y, v) for i, j, v in zip(a.tolist(), b.tolist(), votes.tolist())
           for x in members(i) for y in members(j)]
    if not out:
        return _empty()
    x, y, v = (np.array(t) for t in zip(*out))
    lo, hi = np.minimum(x, y), np.maximum(x, y)
    order = np.lexsort((hi, lo))
    return lo[order].astype(np.int64), hi[order].astype(np.int64), v[order].astype(np.int32)
