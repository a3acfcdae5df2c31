"""Image properties measured on the decoded pixels, next to the layout
signature (the same decode, ~1 ms for a 512 px image): what the image-property check
(``checks.image_properties``) judges blurry, dark, bright, near-uniform or
grayscale.

Every property is taken at one working size (the longer side scaled to
``WORK`` pixels, never up), so images of different sizes are comparable.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

WORK = 256
#: Sharpness leaves out uniform areas: pixels whose 5x5 neighbourhood varies by at most
#: UNIFORM_STD (about one gray level), unless fewer than MIN_BUSY pixels would be left (a
#: count, not a share: at 5% a small picture on a wide white page jumped 2.96 -> 13.8 between
#: 4.8% and 5.1% of its pixels busy).
UNIFORM_STD = 1.0 / 255
MIN_BUSY = 256
#: Order of the values in a properties vector; the proto's ``image_properties`` and
#: the audit's ``properties-*.npy`` shards hold them in this order.
NAMES = ("brightness", "contrast", "entropy", "sharpness", "colourfulness")
COUNT = len(NAMES)
_BINS = 64


def image_properties(img: Image.Image) -> np.ndarray:
    """PIL image (any mode; decode's RGB) -> (COUNT,) float32, in NAMES order:

    brightness     mean luminance, 0 (black) .. 1 (white)
    contrast       standard deviation of luminance, 0 .. 0.5
    entropy        Shannon entropy of the 64-bin luminance histogram, bits (0 .. 6):
                   near 0 for a blank or one-tone image
    sharpness      high-frequency share: variance of the Laplacian over (variance of
                   the luminance + 1e-4), at WORK px, over the pixels that are not in
                   a uniform area (UNIFORM_STD); a blurred copy of a picture has less
                   than the picture, whatever its brightness or contrast. Over all
                   pixels a flat area counted as blur: a black bar over a sharp
                   screenshot added luminance variance and no detail, and flagged it
                   (a stranger's screenshots: redacted copies, slides on a flat
                   background, dialogs on white: 14 sharp images of 318 "blurry"). Not
                   seen: a sharp-edged bar or frame over a blurred picture adds
                   detail of its own
    colourfulness  Hasler and Suesstrunk's colourfulness of the RGB pixels, 0 (gray)
                   .. ~1 (vivid), on the same 0..1 scale as brightness
    """
    rgb = img.convert("RGB")
    w, h = rgb.size
    scale = min(1.0, WORK / max(w, h))
    if scale < 1:
        rgb = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX)
    luma = np.asarray(rgb.convert("L"))                       # ITU-R 601 luma, uint8, in C
    gray = luma.astype(np.float32) / 255.0
    hist = np.bincount((luma >> 2).ravel(), minlength=_BINS)     # 64 bins
    p = hist[hist > 0] / luma.size
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=3) if min(gray.shape) >= 3 else np.zeros_like(gray)
    mean, square = cv2.blur(gray, (5, 5)), cv2.blur(gray * gray, (5, 5))
    busy = (square - mean * mean) > UNIFORM_STD ** 2
    if np.count_nonzero(busy) < MIN_BUSY:
        busy = np.ones_like(busy)
    # Colour statistics need no detail: a 64 px view.
    c = rgb if max(rgb.size) <= 64 else rgb.resize((max(1, round(rgb.width * 64 / max(rgb.size))),
                                                     max(1, round(rgb.height * 64 / max(rgb.size)))), Image.BOX)
    x = np.asarray(c, np.float32) / 255.0
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    colourful = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    return np.array([gray.mean(), gray.std(), max(0.0, float(-(p * np.log2(p)).sum())),
                     float(lap[busy].var() / (gray[busy].var() + 1e-4)), colourful], np.float32)
