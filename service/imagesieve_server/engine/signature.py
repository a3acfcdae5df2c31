"""Decoded image -> a compact layout signature for duplicate verification.

The embedding says "these look alike"; it cannot tell an altered copy of a
picture from another picture in the same style. What a copy keeps is the
picture's layout: where the light and dark parts are, up to a crop, a scale,
a small shift or rotation, a mirror and a change of colour. The signature
keeps exactly that, small enough to store with every image of a collection:

1. a uniform frame (letterbox bars, a plain border, the blank canvas around
   an icon) is trimmed, so a bordered copy and its original share one frame;
2. the rest is reduced to a ``SIDE`` x ``SIDE`` grayscale thumbnail (area
   averaging: JPEG noise, rescaling and mild blur fall below its resolution).

``SIGNATURE_BYTES`` = 2 + SIDE * SIDE = 2,306 bytes an image (a 1024-d
float32 embedding is 4,096): the trimmed content's aspect ratio and area
share, then the thumbnail (see ``unpack``). The verifier
(``analysis.duplicates.verify``) aligns two signatures.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

SIDE = 48
HEADER = 2
SIGNATURE_BYTES = HEADER + SIDE * SIDE
_WORK = 192              # trimming runs on a copy whose longer side is this
_FRAME_TOLERANCE = 12    # gray levels a frame pixel may differ from the frame colour
_MIN_CONTENT = 0.2       # a trim never keeps less than this share of a side


def _frame_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of what lies inside a uniform frame, in
    ``gray`` (H, W) uint8. The frame colour is the median of the outermost
    rows and columns; rows and columns where (almost) every pixel is within
    ``_FRAME_TOLERANCE`` of it are frame."""
    h, w = gray.shape
    edge = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    bg = float(np.median(edge))
    # Most of the edge must be that colour, or there is no frame to trim.
    if np.mean(np.abs(edge.astype(np.float32) - bg) <= _FRAME_TOLERANCE) < 0.9:
        return 0, h, 0, w
    off = np.abs(gray.astype(np.int16) - int(round(bg))) > _FRAME_TOLERANCE
    rows = np.flatnonzero(off.mean(axis=1) > 0.01)
    cols = np.flatnonzero(off.mean(axis=0) > 0.01)
    if rows.size == 0 or cols.size == 0:
        return 0, h, 0, w                       # a blank image: keep it whole
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if bottom - top < _MIN_CONTENT * h or right - left < _MIN_CONTENT * w:
        return 0, h, 0, w                       # a small mark on a canvas: keep the canvas
    return top, bottom, left, right


def layout_signature(img: Image.Image) -> np.ndarray:
    """RGB (or any mode) PIL image -> (SIGNATURE_BYTES,) uint8 signature.

    Bytes 0-1: the trimmed content's aspect ratio as round(32 * log2(w / h))
    clipped to int8, and its area share of the image (0..255); the rest: the
    SIDE x SIDE grayscale thumbnail of the trimmed content, row-major."""
    gray = img.convert("L")
    w, h = gray.size
    scale = min(1.0, _WORK / max(w, h))
    small = gray.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX) if scale < 1 else gray
    top, bottom, left, right = _frame_box(np.asarray(small))
    sw, sh = small.size
    box = (left / sw * w, top / sh * h, right / sw * w, bottom / sh * h)
    thumb = gray.resize((SIDE, SIDE), Image.BOX, box=box)
    out = np.empty(SIGNATURE_BYTES, np.uint8)
    aspect = np.clip(round(32 * np.log2(max(box[2] - box[0], 1e-6) / max(box[3] - box[1], 1e-6))), -127, 127)
    out[0] = np.uint8(np.int8(aspect).view(np.uint8))
    out[1] = np.uint8(round(255 * (box[2] - box[0]) * (box[3] - box[1]) / (w * h)))
    out[HEADER:] = np.asarray(thumb, np.uint8).ravel()
    return out


def unpack(signature: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(aspect w/h of the trimmed content, its area share in [0, 1],
    thumbnail (SIDE, SIDE) uint8) of one signature."""
    s = np.asarray(signature, np.uint8).ravel()
    if s.size != SIGNATURE_BYTES:
        raise ValueError(f"a signature has {SIGNATURE_BYTES} bytes, got {s.size}")
    return (float(2.0 ** (int(s[:1].view(np.int8)[0]) / 32.0)), float(s[1]) / 255.0,
            s[HEADER:].reshape(SIDE, SIDE))
