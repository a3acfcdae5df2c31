"""Decoded image -> ORB keypoints, and how many of two images' keypoints one
geometric transform explains.

The layout signature (``engine.signature``) compares 48x48 thumbnails:
coarse enough that two nebulae (a bright blob on black) agree as well as a
photo and its local-contrast-boosted copy. Keypoints see finer detail: an
altered copy keeps many corners where the picture has them, in the same
geometry, while another picture of the same style does not. They say
nothing for flat art and thumbnails (few corners) and shared parts (two
icons on one folder base match on the base), which is why the verifier
weighs them against each image's look-alikes
(``analysis.duplicates.verify.verified_pairs``).

A block is ``KEYPOINT_BYTES`` = 2 + COUNT * (4 + 32) = 5,402 bytes: the
number of keypoints (uint16), their positions (float16 x, y in pixels of the
image resized to a shorter side of ``SIDE``) and their 32-byte ORB
descriptors, zero-padded to COUNT.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

SIDE = 256               # shorter side the keypoints are found at (smaller images are enlarged)
MIN_SIDE = 32            # ORB's patch and border: a thinner image has no keypoints (and breaks its pyramid)
COUNT = 150              # strongest keypoints kept (300 found 1-2 points more copies for twice the bytes)
DESCRIPTOR_BYTES = 32
KEYPOINT_BYTES = 2 + COUNT * (4 + DESCRIPTOR_BYTES)
RATIO = 0.8              # Lowe's ratio test on descriptor distances
REPROJECTION_PX = 4.0    # RANSAC inlier tolerance, pixels at SIDE
MIN_SCALE = 0.25         # a transform that shrinks or grows more than this is no copy's
_MAX_SIDE = 4 * SIDE     # a panorama's longer side is capped (float16 positions, bounded work)


def _orb():
    return cv2.ORB_create(nfeatures=COUNT)


def keypoint_block(img: Image.Image) -> np.ndarray:
    """RGB (or any mode) PIL image -> (KEYPOINT_BYTES,) uint8 block."""
    gray = img if img.mode == "L" else img.convert("L")      # a large image is not converted twice
    w, h = gray.size
    scale = min(SIDE / max(1, min(w, h)), _MAX_SIDE / max(1, max(w, h)))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = np.zeros(KEYPOINT_BYTES, np.uint8)
    if min(size) < MIN_SIDE:
        return out                                 # a 1 x 800 strip: no keypoints, not an error
    # reducing_gap: a 12 MP picture is first box-reduced by an integer factor (4x cheaper).
    gray = gray.resize(size, Image.BICUBIC, reducing_gap=3.0)
    try:
        points, descriptors = _orb().detectAndCompute(np.asarray(gray), None)
    except cv2.error:                             # no image may fail for its keypoints
        return out
    k = 0 if descriptors is None else min(len(points), COUNT)
    out[:2] = np.array([k], "<u2").view(np.uint8)
    if k:
        xy = np.array([p.pt for p in points[:k]], "<f2")
        out[2:2 + 4 * k] = xy.view(np.uint8).ravel()
        start = 2 + 4 * COUNT
        out[start:start + DESCRIPTOR_BYTES * k] = descriptors[:k].ravel()
    return out


def unpack_keypoints(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions (k, 2) float32, descriptors (k, 32) uint8) of a block."""
    b = np.asarray(block, np.uint8).ravel()
    if b.size != KEYPOINT_BYTES:
        raise ValueError(f"a keypoint block has {KEYPOINT_BYTES} bytes, got {b.size}")
    k = min(int(b[:2].view("<u2")[0]), COUNT)
    # A damaged block must not reach RANSAC as NaN or infinity.
    xy = np.nan_to_num(b[2:2 + 4 * k].view("<f2").reshape(k, 2).astype(np.float32), posinf=0.0, neginf=0.0)
    start = 2 + 4 * COUNT
    return xy, b[start:start + DESCRIPTOR_BYTES * k].reshape(k, DESCRIPTOR_BYTES)


def matched_points(block_a: np.ndarray, block_b: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The keypoints of two blocks that one similarity transform (shift,
    rotation, scale within [MIN_SCALE, 1 / MIN_SCALE]) maps onto each other:
    descriptor matches that are mutual best matches and pass the ratio test,
    then RANSAC. (inlier positions in the first block (m, 2), their matches
    in the second (m, 2), all positions of the first, of the second), with
    the blocks put in one order (the same answer whichever comes first);
    None when no such transform is found or either side has fewer than 4
    keypoints."""
    if block_b.tobytes() < block_a.tobytes():
        block_a, block_b = block_b, block_a
    pa, da = unpack_keypoints(block_a)
    pb, db = unpack_keypoints(block_b)
    if len(da) < 4 or len(db) < 4:
        return None
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    back = {m[0].queryIdx: m[0].trainIdx for m in matcher.knnMatch(db, da, k=1) if m}
    good = [m[0] for m in matcher.knnMatch(da, db, k=2)
            if len(m) == 2 and m[0].distance < RATIO * m[1].distance and back.get(m[0].trainIdx) == m[0].queryIdx]
    if len(good) < 4:
        return None
    src = pa[[m.queryIdx for m in good]]
    dst = pb[[m.trainIdx for m in good]]
    transform, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                                     ransacReprojThreshold=REPROJECTION_PX)
    if transform is None:
        return None
    scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
    # Many matches onto one spot fit a transform that shrinks everything to it.
    if not MIN_SCALE <= scale <= 1 / MIN_SCALE:
        return None
    keep = inliers.ravel().astype(bool)
    return src[keep], dst[keep], pa, pb


def matched_inliers(block_a: np.ndarray, block_b: np.ndarray) -> int:
    """How many keypoints of two blocks one similarity transform maps onto
    each other (:func:`matched_points`); 0 when none does."""
    matched = matched_points(block_a, block_b)
    return 0 if matched is None else len(matched[0])
