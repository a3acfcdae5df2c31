"""Candidate pairs from shared keypoints: a third source for stage 1.

The embedding and the coarse layouts both describe a whole picture, so a
copy that holds only part of another picture (half of a collage, a crop
pasted into a larger canvas, a photo inside a frame) is neither's neighbour:
a probe's half collages sat at cosine 0.38-0.42 (the 157th to 435th
neighbour) while sharing 102-242 matching ORB descriptors with their
original. Each image's descriptors (the signature's keypoint block) are
matched against every other image's in a FAISS binary index (Hamming
distance, ``IndexBinaryFlat``; ``IndexBinaryIVF`` above
FLAT_MAX_DESCRIPTORS), a descriptor votes for the image of its nearest
match when that match is close (MAX_HAMMING) and clearly closer than the
nearest of any third image (RATIO, Lowe's test), and image pairs with
MIN_VOTES votes or more are candidates, each image's K best. Stage 2
then decides on them by their keypoints alone (``verify.verified_pairs``'
``keypoint_only``): their layouts and cosines say little for a part of a
picture.
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
RATIO = 0.8                  # nearest match vs the nearest of a third image
NEIGHBOURS = 8               # matches looked at a descriptor (own image's included)
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


def keypoint_candidate_pairs(signatures, k: int = K, min_votes: int = MIN_VOTES,
                             report: Callable | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, votes), a < b, each pair once: every image's ``k`` partners
    with the most descriptor votes, at ``min_votes`` or more (see the
    module's docstring). ``signatures``: (N, SIGNATURE_BYTES) uint8; images
    without keypoints (upgraded signatures, blank pictures) vote for none.
    Empty above MAX_IMAGES images. ``report(stage, done, total)``."""
    if k < 1 or min_votes < 1:
        raise ValueError(f"k and min_votes must be >= 1, got {k}, {min_votes}")
    sig = check_signatures(signatures)
    n = len(sig)
    if n < 2 or n > MAX_IMAGES:
        return _empty()
    blocks = [unpack_keypoints(keypoints(s))[1] for s in sig]
    owner = np.repeat(np.arange(n, dtype=np.int64), [len(d) for d in blocks])
    if len(owner) < 2:
        return _empty()
    descriptors = np.ascontiguousarray(np.concatenate(blocks))
    index = _index(descriptors)
    voters, voted = [], []
    for s in range(0, len(descriptors), CHUNK):
        dist, nb = index.search(descriptors[s:s + CHUNK], NEIGHBOURS)
        rows = np.arange(len(nb))
        own = owner[s:s + len(nb)]
        other = np.where(nb >= 0, owner[np.maximum(nb, 0)], -1)
        valid = (nb >= 0) & (other != own[:, None])
        first = valid.argmax(axis=1)
        image = other[rows, first]
        d1 = dist[rows, first]
        third = valid & (other != image[:, None])
        second = third.argmax(axis=1)
        d2 = np.where(third[rows, second], dist[rows, second], 8 * DESCRIPTOR_BYTES)
        ok = valid[rows, first] & (d1 <= MAX_HAMMING) & (d1 < RATIO * d2)
        voters.append(own[ok])
        voted.append(image[ok])
        if report is not None:
            report("keypoint candidates", min(s + CHUNK, len(descriptors)), len(descriptors))
    x, y = np.concatenate(voters), np.concatenate(voted)
    key, votes = np.unique(np.minimum(x, y) * n + np.maximum(x, y), return_counts=True)
    keep = votes >= min_votes
    a, b, votes = key[keep] // n, key[keep] % n, votes[keep].astype(np.int32)
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
