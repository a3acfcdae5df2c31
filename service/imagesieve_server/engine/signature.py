"""Decoded image -> a compact layout signature for duplicate verification.

The embedding says "these look alike"; it cannot tell an altered copy of a
picture from another picture in the same style. What a copy keeps is the
picture's layout: where the light and dark parts are, up to a crop, a scale,
a small shift or rotation, a mirror and a change of colour. The signature
keeps exactly that, small enough to store with every image of a collection:

1. a uniform frame (letterbox bars, a plain border, the blank canvas around
   an icon) is trimmed, so a bordered copy and its original share one frame;
   a picture turned by some degrees on a uniform canvas (a rotated scan, a
   photo rotated with its canvas expanded) is turned back upright first;
2. the rest is reduced to a ``SIDE`` x ``SIDE`` grayscale thumbnail (area
   averaging: JPEG noise, rescaling and mild blur fall below its resolution;
   a side shorter than ``SIDE`` is interpolated, see ``_reduced``);
3. for a transparent image, which pixels of that thumbnail are opaque (one
   bit each): the thumbnail shows the picture over white, and a copy saved
   without regard to its alpha shows whatever colour lay under the
   transparent pixels (black, or leftovers of editing), so the verifier
   compares the opaque part only.

4. the image's strongest ORB keypoints (``engine.keypoints``): finer detail
   than the thumbnail, for the pairs its coarse layout cannot tell apart.

``SIGNATURE_BYTES`` = 2 + SIDE * SIDE + SIDE * SIDE / 8 + KEYPOINT_BYTES =
7,996 bytes an image (a 1024-d float32 embedding is 4,096): the trimmed
content's aspect ratio and area share, the thumbnail (see ``unpack``), the
opacity bits (see ``opacity``), the keypoints (see ``keypoints``). Older
signatures are upgraded when read (``upgrade``): those of ``LAYOUT_BYTES``
(2,594: before the keypoints) get none, those of ``LEGACY_BYTES`` (2,306:
before the opacity bits) are also fully opaque. The verifier
(``analysis.duplicates.verify``) aligns two signatures.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from .keypoints import KEYPOINT_BYTES, keypoint_block

SIDE = 48
HEADER = 2
LEGACY_BYTES = HEADER + SIDE * SIDE          # signatures stored before the opacity bits
MASK_BYTES = SIDE * SIDE // 8
LAYOUT_BYTES = LEGACY_BYTES + MASK_BYTES     # signatures stored before the keypoints
SIGNATURE_BYTES = LAYOUT_BYTES + KEYPOINT_BYTES
STORED_SIZES = (SIGNATURE_BYTES, LAYOUT_BYTES, LEGACY_BYTES)   # what upgrade() reads
OPAQUE_LEVEL = 128       # alpha (of 255) from which a thumbnail pixel counts as opaque
_WORK = 192              # trimming runs on a copy whose longer side is this
FRAME_TOLERANCE = 12    # gray levels a frame pixel may differ from the frame colour
_MIN_CONTENT = 0.2       # a trim never keeps less than this share of a side
_FLAT_INSIDE = 4.0       # gray levels: what a trim leaves must spread more than this (JPEG noise on a flat field: ~1-3)
_SIDE_UNIFORM = 0.97     # share of one side's outermost pixels in one tone for that side alone to be frame
ALL_ROUND = 0.9          # share of the outermost pixels in one tone for a frame all round
NESTED_FRAMES = 2        # frames trimmed inside a frame trimmed from all four sides
_MIN_TILT = 1.5          # degrees: a rectangle turned less than this is taken as upright
_RECT_FILL = 0.95        # share of its bounding rotated rectangle a tilted picture fills
_TILT_SPAN = 0.9         # ...and of the canvas's width and height its corners span (a rotation
                         # that expands the canvas touches all four sides)


def edge_tone(gray: np.ndarray) -> tuple[float, float]:
    """(the median tone of the outermost rows and columns of ``gray``, the
    share of them within FRAME_TOLERANCE of it)."""
    edge = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]).astype(np.float32)
    bg = float(np.median(edge))
    return bg, float(np.mean(np.abs(edge - bg) <= FRAME_TOLERANCE))


def _frame_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of what lies inside a uniform frame, in
    ``gray`` (H, W) uint8. A side is frame when (almost) all of its outermost
    row or column is within ``FRAME_TOLERANCE`` of one colour; rows and
    columns inside it that are (almost) all that colour are frame too. The
    sides are trimmed independently: a crop of a drawing on a blank canvas
    keeps canvas on the sides it did not cut, and loses it as the whole
    drawing does, so its view stays a part of the drawing's view."""
    h, w = gray.shape
    sides = {"top": gray[0], "bottom": gray[-1], "left": gray[:, 0], "right": gray[:, -1]}
    bg, share = edge_tone(gray)
    if share >= ALL_ROUND:
        framed = set(sides)                     # a frame all round (letterbox bars, a border, a canvas)
    else:
        tones = {k: float(np.median(v)) for k, v in sides.items()
                 if np.mean(np.abs(v.astype(np.float32) - np.median(v)) <= FRAME_TOLERANCE) >= _SIDE_UNIFORM}
        if not tones:
            return 0, h, 0, w
        bg = float(np.median(list(tones.values())))
        framed = {k for k, t in tones.items() if abs(t - bg) <= FRAME_TOLERANCE}
    off = np.abs(gray.astype(np.int16) - int(round(bg))) > FRAME_TOLERANCE
    rows = np.flatnonzero(off.mean(axis=1) > 0.01)
    cols = np.flatnonzero(off.mean(axis=0) > 0.01)
    if rows.size == 0 or cols.size == 0:
        return 0, h, 0, w                       # a blank image: keep it whole
    top = int(rows[0]) if "top" in framed else 0
    bottom = int(rows[-1]) + 1 if "bottom" in framed else h
    left = int(cols[0]) if "left" in framed else 0
    right = int(cols[-1]) + 1 if "right" in framed else w
    if bottom - top < _MIN_CONTENT * h or right - left < _MIN_CONTENT * w:
        return 0, h, 0, w                       # a small mark on a canvas: keep the canvas
    if float(gray[top:bottom, left:right].std()) < _FLAT_INSIDE:
        # All the picture was in the "frame": a flag whose outer stripes
        # share a gray tone (France, Latvia) lost them and kept its flat
        # middle stripe, which aligned with nothing, its letterboxed copy
        # included. A frame around a blank is the picture.
        return 0, h, 0, w
    return top, bottom, left, right


def _tilted_rectangle(gray: np.ndarray) -> tuple | None:
    """((cx, cy), (w, h), degrees) of a picture turned by some degrees on a
    uniform canvas in ``gray`` (H, W) uint8, or None: the canvas colour holds
    most of the outer edge, and the content's convex hull fills at least
    _RECT_FILL of the smallest rotated rectangle around it, spanning
    _TILT_SPAN of the canvas. Shapes that are not rectangles (an icon's
    globe) or that sit inside a margin (a tilted page icon) are never turned."""
    h, w = gray.shape
    bg, share = edge_tone(gray)
    if share < 0.75:
        return None
    off = (np.abs(gray.astype(np.int16) - int(round(bg))) > FRAME_TOLERANCE).astype(np.uint8)
    off = cv2.morphologyEx(off, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))    # specks of noise
    points = cv2.findNonZero(off)
    if points is None:
        return None
    # The hull of all content: parts of the picture in the canvas colour
    # (a white sky on a white canvas) leave holes and bays, not a new shape.
    hull = cv2.convexHull(points)
    area = cv2.contourArea(hull)
    (cx, cy), (rw, rh), raw_deg = cv2.minAreaRect(hull)
    if area < _MIN_CONTENT * h * w or rw * rh <= 0 or area / (rw * rh) < _RECT_FILL:
        return None
    _, _, bw, bh = cv2.boundingRect(hull)
    if bw < _TILT_SPAN * w or bh < _TILT_SPAN * h:
        return None         # a shape drawn on a larger canvas (an icon), not a turned picture
    # minAreaRect's angle convention differs between OpenCV versions: take
    # the turn of least magnitude, swapping the sides with a quarter.
    deg = ((raw_deg + 45.0) % 90.0) - 45.0
    if round((raw_deg - deg) / 90.0) % 2:
        rw, rh = rh, rw
    if abs(deg) < _MIN_TILT:
        return None
    return (cx, cy), (rw, rh), deg


def _upright(gray: np.ndarray, rect) -> np.ndarray:
    """The tilted rectangle ``rect`` of ``gray`` turned upright, its edge
    pixels (canvas blended in) shaved off."""
    (cx, cy), (rw, rh), deg = rect
    m = cv2.getRotationMatrix2D((cx, cy), deg, 1.0)
    m[:, 2] += (rw / 2 - cx, rh / 2 - cy)
    out = cv2.warpAffine(gray, m, (max(1, int(rw)), max(1, int(rh))), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    my, mx = max(1, out.shape[0] // 50), max(1, out.shape[1] // 50)
    return out[my:out.shape[0] - my, mx:out.shape[1] - mx]


def _reduced(img: Image.Image, box) -> Image.Image:
    """The ``box`` (left, top, right, bottom; pixels, may be fractional) of
    ``img`` as a SIDE x SIDE thumbnail: area averaging where the box is at
    least SIDE px, bilinear interpolation along a side that is shorter.
    Area averaging enlarges by repeating pixels in blocks of uneven width
    (1 or 2 px for a 28-px picture, 3 or 4 for 14 px), so a picture and its
    half-size copy showed two different block patterns (Fashion-MNIST:
    agreement 0.55-0.85 where a copy aligns at 0.9 and more)."""
    left, top, right, bottom = box
    across, down = (Image.BILINEAR if side < SIDE else Image.BOX for side in (right - left, bottom - top))
    if across == down:
        return img.resize((SIDE, SIDE), across, box=box)
    # One side grows, the other shrinks: a pass each (Pillow's passes are separable).
    wide = img.resize((SIDE, img.height), across, box=(left, 0, right, img.height))
    return wide.resize((SIDE, SIDE), down, box=(0, top, SIDE, bottom))


def _whole(img: Image.Image) -> Image.Image:
    return _reduced(img, (0, 0, img.width, img.height))


_GRID_FACTORS = (2, 3, 5, 7)    # primes tried, repeatedly: a 4x, 6x or 8x upscale is found step by step
MIN_NATIVE = 16                 # px: a native grid smaller than this (a flag's stripes, 8-px digits) is kept


def _blocky(x: np.ndarray, k: int) -> bool:
    """Whether ``x`` (H, W) is k x k blocks of one value each (H, W multiples of k)."""
    h, w = x.shape
    if h % k or w % k or min(h, w) < 2 * k:
        return False
    for i in range(1, k):                       # rows, then columns: most pictures fail at once
        if not np.array_equal(x[i::k], x[0::k]):
            return False
    first = x[0::k]
    return all(np.array_equal(first[:, i::k], first[:, 0::k]) for i in range(1, k))


def native_grid(gray: Image.Image, alpha: Image.Image | None = None) -> tuple[Image.Image, Image.Image | None]:
    """``gray`` ("L") and its ``alpha`` at their native pixel grid: a picture
    enlarged by an integer factor with nearest-neighbour sampling (pixel art
    shown at 4x, a sprite sheet exported at 3x) is blocks of identical
    pixels, and is reduced to one pixel a block; anything else is returned
    as it is. Without it the 16-px original is interpolated up to the
    thumbnail and its 64-px copy box-averaged down, and two copies of one
    tile aligned at 0.91-0.94, as tiles of one set do (a probe of game
    sprites, bench/probes/sprites.py). Exact blocks only: a photograph's
    neighbouring pixels are never all equal. Not below MIN_NATIVE pixels a
    side: a picture of a few flat fields (a flag, a blank) stays as it is,
    and so do enlarged 8-px digits (smoothed up to the thumbnail, different
    digits agreed more, 0.87 -> 0.93 at most, and their copies less: a review).
    ``alpha`` is reduced with it, and must be blocky too, when of one size."""
    x = np.asarray(gray)
    a = None if alpha is None or alpha.size != gray.size else np.asarray(alpha)
    while (k := next((k for k in _GRID_FACTORS if _blocky(x, k) and (a is None or _blocky(a, k))), None)):
        x, a = x[::k, ::k], None if a is None else a[::k, ::k]
    if x.shape == (gray.height, gray.width) or min(x.shape) < MIN_NATIVE:
        # A flag of three stripes 100 px wide is blocks too, of a 3x2 "picture": reduced to
        # that, it was interpolated into a blur its letterboxed copy did not share.
        return gray, alpha
    # An alpha of another size covers the same frame (see layout_signature): kept as it is.
    return (Image.fromarray(np.ascontiguousarray(x), "L"),
            alpha if a is None else Image.fromarray(np.ascontiguousarray(a), "L"))


def _content(gray: Image.Image) -> tuple[np.ndarray, tuple | None, tuple | None]:
    """(``gray`` at the working size as a uint8 array, the tilted rectangle
    of a picture turned on a canvas there or None, else the box (left, top,
    right, bottom; pixels of ``gray``) inside its uniform frame, or None)."""
    w, h = gray.size
    scale = min(1.0, _WORK / max(w, h))
    small = gray.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX) if scale < 1 else gray
    small_arr = np.asarray(small)
    sw, sh = small.size
    tilted = _tilted_rectangle(small_arr)
    if tilted is not None:
        return small_arr, tilted, None
    top, bottom, left, right = _frame_box(small_arr)
    outer = (0, sh, 0, sw)
    for _ in range(NESTED_FRAMES):
        # Inside a frame trimmed from all four sides (a border padded around a
        # picture on a plain ground, a mat inside a frame), what is left is
        # trimmed as the picture alone would be. Only there: a crop's or a
        # blurred band's sides (trimmed again, two copies of a probe's
        # screenshots were lost), or a dark sky trimmed above and below only
        # (trimmed again to its one lit patch), stay as the first pass left them.
        if not (top > outer[0] and bottom < outer[1] and left > outer[2] and right < outer[3]):
            break
        t, b, l, r = _frame_box(small_arr[top:bottom, left:right])
        outer = (top, bottom, left, right)
        top, bottom, left, right = top + t, top + b, left + l, left + r
    return small_arr, None, (left / sw * w, top / sh * h, right / sw * w, bottom / sh * h)


def content_box(img: Image.Image) -> tuple[float, float, float, float] | None:
    """The box (left, top, right, bottom; pixels of ``img``, fractional)
    whose content :func:`layout_signature`'s thumbnail shows: the picture
    inside its uniform frame. None for a picture turned on a canvas (its
    thumbnail shows it turned back upright: no box of ``img``)."""
    gray, _ = native_grid(img.convert("L"), img.info.get("opacity"))
    _, tilted, box = _content(gray)
    if tilted is not None:
        return None
    k = img.width / gray.width            # the native grid's factor (1 for most pictures)
    return tuple(v * k for v in box)


def layout_signature(img: Image.Image) -> np.ndarray:
    """RGB (or any mode) PIL image -> (SIGNATURE_BYTES,) uint8 signature.

    Bytes 0-1: the trimmed content's aspect ratio as round(32 * log2(w / h))
    clipped to int8, and its area share of the image (0..255); then the
    SIDE x SIDE grayscale thumbnail of the trimmed content, row-major; then
    its opacity, one bit a thumbnail pixel (``np.packbits``, 1 = opaque),
    from ``img.info["opacity"]`` (an "L" alpha image of any size covering
    the same frame; ``engine.decode`` sets it for transparent images), all
    ones without it; then the whole image's keypoint block
    (``engine.keypoints.keypoint_block``)."""
    # The layout at the native grid; the keypoints from the image as it is
    # (ORB on an enlarged 37-px QR code's native grid found 2-8 of the 21-36
    # points its copies share: a review).
    full = img.convert("L")
    gray, alpha = native_grid(full, img.info.get("opacity"))
    w, h = gray.size
    small_arr, tilted, box = _content(gray)
    sh, sw = small_arr.shape
    if tilted is not None:
        # Turned back at the working size: SIDE x SIDE comes from ~_WORK pixels anyway.
        content = _upright(small_arr, tilted)
        thumb = _whole(Image.fromarray(content))
        cw, ch = content.shape[1] * w / sw, content.shape[0] * h / sh
        box = (0.0, 0.0, cw, ch)
        opacity = (None if alpha is None else
                   _whole(Image.fromarray(_upright(np.asarray(alpha.resize((sw, sh), Image.BOX)), tilted))))
    else:
        thumb = _reduced(gray, box)
        opacity = (None if alpha is None else
                   _reduced(alpha, (box[0] * alpha.width / w, box[1] * alpha.height / h,
                                    box[2] * alpha.width / w, box[3] * alpha.height / h)))
    out = np.empty(SIGNATURE_BYTES, np.uint8)
    aspect = np.clip(round(32 * np.log2(max(box[2] - box[0], 1e-6) / max(box[3] - box[1], 1e-6))), -127, 127)
    out[0] = np.uint8(np.int8(aspect).view(np.uint8))
    out[1] = np.uint8(min(255, round(255 * (box[2] - box[0]) * (box[3] - box[1]) / (w * h))))
    out[HEADER:LEGACY_BYTES] = np.asarray(thumb, np.uint8).ravel()
    out[LEGACY_BYTES:LAYOUT_BYTES] = (255 if opacity is None else
                                      np.packbits(np.asarray(opacity, np.uint8).ravel() >= OPAQUE_LEVEL))
    out[LAYOUT_BYTES:] = keypoint_block(full)
    return out


def unpack(signature: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(aspect w/h of the trimmed content, its area share in [0, 1],
    thumbnail (SIDE, SIDE) uint8) of one signature (any of STORED_SIZES)."""
    s = np.asarray(signature, np.uint8).ravel()
    if s.size not in STORED_SIZES:
        raise ValueError(f"a signature has {SIGNATURE_BYTES} bytes, got {s.size}")
    return (float(2.0 ** (int(s[:1].view(np.int8)[0]) / 32.0)), float(s[1]) / 255.0,
            s[HEADER:LEGACY_BYTES].reshape(SIDE, SIDE))


def opacity(signature: np.ndarray) -> np.ndarray | None:
    """(SIDE, SIDE) bool, True where the thumbnail is opaque, of one
    signature; None when all of it is (an opaque image, or a legacy
    signature)."""
    s = np.asarray(signature, np.uint8).ravel()
    if s.size < LAYOUT_BYTES or (s[LEGACY_BYTES:LAYOUT_BYTES] == 255).all():
        return None
    return np.unpackbits(s[LEGACY_BYTES:LAYOUT_BYTES])[:SIDE * SIDE].reshape(SIDE, SIDE).astype(bool)


def keypoints(signature: np.ndarray) -> np.ndarray:
    """The (KEYPOINT_BYTES,) keypoint block of one SIGNATURE_BYTES signature
    (no keypoints in an upgraded one)."""
    s = np.asarray(signature, np.uint8).ravel()
    if s.size != SIGNATURE_BYTES:
        raise ValueError(f"a signature has {SIGNATURE_BYTES} bytes, got {s.size}")
    return s[LAYOUT_BYTES:]


def upgrade(signatures) -> np.ndarray:
    """Older signatures -> SIGNATURE_BYTES: those of LAYOUT_BYTES (stored
    before the keypoints) with no keypoints, those of LEGACY_BYTES (before
    the opacity bits) also fully opaque; current ones are returned as they
    are. ``signatures``: (N, bytes) or one (bytes,) uint8 array, or bytes."""
    s = np.frombuffer(signatures, np.uint8) if isinstance(signatures, (bytes, bytearray, memoryview)) \
        else np.asarray(signatures, np.uint8)
    if s.shape[-1] == LEGACY_BYTES:
        s = np.concatenate([s, np.full((*s.shape[:-1], MASK_BYTES), 255, np.uint8)], axis=-1)
    if s.shape[-1] == LAYOUT_BYTES:       # a block of zeros holds no keypoints
        s = np.concatenate([s, np.zeros((*s.shape[:-1], KEYPOINT_BYTES), np.uint8)], axis=-1)
    return s


def thumbnails(signatures: np.ndarray) -> np.ndarray:
    """(N, any of STORED_SIZES) uint8 signatures -> (N, SIDE, SIDE) uint8
    views of their thumbnails (no copy): the pixels a label scorer's CNN can
    train on wherever the signatures are kept (a collection, the audit's
    shards)."""
    s = np.asarray(signatures, np.uint8)
    if s.ndim != 2 or s.shape[1] not in STORED_SIZES:
        raise ValueError(f"signatures must be (N, {SIGNATURE_BYTES}) uint8, got {s.shape}")
    return s[:, HEADER:LEGACY_BYTES].reshape(len(s), SIDE, SIDE)
