"""Candidates from shared keypoints (``analysis.duplicates.keypoint_candidates``):
a copy holding only part of a picture (half of a collage) is neither the
embedding's nor the coarse layout's neighbour of it; shared ORB descriptors
propose the pair, and stage 2 decides by the keypoints alone."""
import hashlib

import numpy as np
from PIL import Image

from imagesieve.samples import natural_photos
from imagesieve_server.analysis.duplicates import keypoint_candidates as kc
from imagesieve_server.analysis.duplicates.find import find_duplicates
from imagesieve_server.analysis.duplicates.verify import PairEvidence, verified_pairs

from conftest import encode, photo_image


def _half_collages(photos, count: int):
    """The 20 photos, then ``count`` collages: photo i's left half pasted over
    the left quarter of a scikit-image photo (a different one each, not in
    the set)."""
    originals = [photo_image(d) for d, _, _ in photos]
    fillers = [Image.open(p).convert("RGB") for p in natural_photos()]
    fillers = [f for f in fillers if min(f.size) >= 256][:count]
    assert len(fillers) == count
    blobs = [encode(im, "JPEG", quality=92) for im in originals]
    for i, filler in enumerate(fillers):
        canvas = filler.resize((640, 320))
        canvas.paste(originals[i].resize((320, 320)).crop((0, 0, 160, 320)), (0, 0))
        blobs.append(encode(canvas, "JPEG", quality=90))
    return blobs, list(range(len(originals))) + list(range(count))


def test_half_collages_are_found_through_their_shared_keypoints(embedder, photos, monkeypatch):
    blobs, source = _half_collages(photos, 8)
    out = embedder.embed_all(blobs, with_signatures=True)
    v, s = np.stack([o.vector for o in out]), np.stack([o.signature for o in out])
    n, n0 = len(blobs), len(photos)
    truth = {(source[c], c) for c in range(n0, n)}

    a, b, votes = kc.keypoint_candidate_pairs(s)
    pairs = dict(zip(zip(a.tolist(), b.tolist()), votes.tolist()))
    assert sum(p in pairs for p in truth) >= 5, pairs
    assert all(votes >= kc.MIN_VOTES) and all(a < b)
    # Distinct photos share some descriptors too (11 pairs here, 8-17
    # votes, against 8-136 for the collages): proposals, which stage 2 turns
    # down (below).
    # A source's byte-identical second file, or a re-encoded one, does not
    # cancel its votes (a strict "closer than any third image" test did).
    seconds = embedder.embed_all([blobs[0], encode(photo_image(blobs[1]), "JPEG", quality=75)], with_signatures=True)
    s2 = np.concatenate([s, np.stack([o.signature for o in seconds])])
    twins = np.r_[np.arange(n), 0, n + 1]                       # image n: the same bytes as image 0
    got = set(zip(*(x.tolist() for x in kc.keypoint_candidate_pairs(s2, twins=twins)[:2])))
    assert {(0, n0), (n0, n), (1, n0 + 1)} <= got, got
    # The inverted-file index (used above FLAT_MAX_DESCRIPTORS) proposes the same copies.
    monkeypatch.setattr(kc, "FLAT_MAX_DESCRIPTORS", 100)
    ivf = set(zip(*(x.tolist() for x in kc.keypoint_candidate_pairs(s)[:2])))
    assert sum(p in ivf for p in truth) >= 5, ivf

    def found(**kw):
        rep = find_duplicates(v, [str(i) for i in range(n)], [""] * n, [""] * n,
                              [hashlib.sha256(x).hexdigest() for x in blobs], signatures=s, **kw)
        got = set(zip(rep.a.tolist(), rep.b.tolist()))
        assert all(source[x] == source[y] for x, y in got), "distinct photos paired"
        inliers = rep.evidence.keypoint_inliers[[k for k, p in enumerate(zip(rep.a, rep.b)) if p in truth]]
        return sum(p in got for p in truth), inliers

    with_keypoints, inliers = found()
    without, _ = found(keypoint_k=0)
    assert with_keypoints >= 4 and with_keypoints >= without + 3, (with_keypoints, without)   # 4 and 0 here
    assert (inliers >= 8).all(), inliers          # the evidence a person sees: keypoint inliers


def test_a_pair_only_keypoints_proposed_needs_its_keypoints():
    """Judged by its keypoints alone: a keypoint-only pair whose layouts
    agree well is not the same picture for that (a half collage's halves
    agree with anything of the same look), it is found the same with enough
    inliers, and it is never an image's look-alike (its low cosine would
    lower the bar for the image's other pairs)."""
    rng = np.random.default_rng(3)
    rows = [(0, 1, 0.98, 0.40, 0), (0, 2, 0.95, 0.90, 0)]        # (a, b, agreement, cosine, inliers)
    rows += [(i, j, 0.5 + 0.05 * rng.random(), 0.6 + 0.05 * rng.random(), 0)
             for i in range(6) for j in range(i + 1, 6) if (i, j) not in ((0, 1), (0, 2))]
    a, b, g, c, k = (np.array(x) for x in zip(*rows))
    only = np.zeros(len(a), bool)
    only[0] = True
    ev = PairEvidence.empty(len(a))
    ev.agreement[:] = g
    same, rel = verified_pairs(6, a, b, ev.agreement, c.astype(np.float32), keypoint_only=only,
                               keypoint_inliers=k)
    assert not same[0] and np.isnan(rel[0])          # not judged by layout: no relative disagreement
    assert same[1]              # a copy proposed by the embedding, judged as before
    k[0] = 40
    same, _ = verified_pairs(6, a, b, ev.agreement, c.astype(np.float32), keypoint_only=only, keypoint_inliers=k)
    assert same[0] and same[1]
    # A copy that only keypoints confirm (30 inliers) beside the same
    # picture's half collage that only keypoints proposed (20): the collage
    # is no rival of the copy; found, the copy is no rival of the collage.
    a, b = np.array([0, 0, 1, 2, 3]), np.array([1, 2, 3, 4, 4])
    g, c = np.array([0.5, 0.6, 0.5, 0.5, 0.5], np.float32), np.array([0.6, 0.4, 0.6, 0.6, 0.6], np.float32)
    k = np.array([30, 20, 0, 0, 0], np.float32)
    only = np.array([False, True, False, False, False])
    assert verified_pairs(5, a, b, g, c, keypoint_inliers=k, keypoint_only=only)[0][:2].tolist() == [True, True]


def test_pairs_only_keypoints_proposed_leave_the_other_verdicts_alone():
    """Adding keypoint-only pairs changes no other pair's verdict or
    relative disagreement: they are no look-alikes, no layout runner-ups,
    and no keypoint rivals of the others (a review: a crop confirmed by 30
    inliers lost to its picture's half collage at 20, and neither was found)."""
    rng = np.random.default_rng(7)
    n = 40
    pairs = {tuple(sorted(rng.choice(n, 2, replace=False))) for _ in range(150)}
    a, b = (np.array(x) for x in zip(*sorted(pairs)))
    m = len(a)
    extra = rng.random(m) < 0.1                                  # these only keypoints proposed
    g = np.where(rng.random(m) < 0.1, rng.uniform(0.9, 1.0, m), rng.uniform(0.3, 0.8, m)).astype(np.float32)
    c = np.where(g > 0.9, rng.uniform(0.7, 0.95, m), rng.uniform(0.5, 0.85, m)).astype(np.float32)
    strong = rng.random(m) < np.where(extra, 0.5, 0.05)           # pairs whose keypoints match well
    k = np.where(strong, rng.integers(20, 80, m), rng.integers(0, 4, m)).astype(np.float32)
    alone = verified_pairs(n, a[~extra], b[~extra], g[~extra], c[~extra], keypoint_inliers=k[~extra])
    mixed = verified_pairs(n, a, b, g, c, keypoint_inliers=k, keypoint_only=extra)
    assert alone[0].any() and mixed[0][extra].any()              # both kinds are found somewhere
    np.testing.assert_array_equal(mixed[0][~extra], alone[0])
    np.testing.assert_array_equal(mixed[1][~extra], alone[1])
    assert np.isnan(mixed[1][extra]).all()
