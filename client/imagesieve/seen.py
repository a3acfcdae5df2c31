"""A picture as it is seen, and as the server compares it: transparency
composited (its alpha over white, or over black for a light "alpha-only"
picture: flat colour channels, the picture in the alpha channel alone, as
some artwork packages ship; over white it would be a blank page), and 16- or
32-bit levels mapped to 8 bits by the range their maximum says. The
server's decoder does this before anything is embedded or compared
(``imagesieve_server.engine.decode.to_rgb``, in strips); pictures shown to
people (the audit report's thumbnails, contact sheets) use :func:`as_seen`,
so they show what was compared: not the colour a file keeps under its
transparent pixels (often black or garbage: emoji showed purple and teal
squares), nor a 16-bit scan clipped to white. Shared by the server's
decoder and the light client."""
from __future__ import annotations

import numpy as np
from PIL import Image

#: Alpha at or above this counts as opaque (of 255).
OPAQUE = 250
FLAT_COLOUR_STD = 2.0    # colour channels flatter than this (alpha-weighted std)...
ALPHA_PICTURE_STD = 6.0  # ...while alpha varies more than this: the picture is in alpha
PROBE_SIDE = 256         # judged on a copy scaled to at most this many pixels a side

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def has_transparency(img: Image.Image) -> bool:
    """Whether ``img`` carries transparency: an alpha channel, a palette's
    alpha, or a PNG's colour key (tRNS) on L or RGB."""
    return img.mode in _ALPHA_MODES or (img.mode in ("P", "L", "RGB") and "transparency" in img.info)


def to_rgba(img: Image.Image) -> Image.Image:
    # Pillow has no La -> RGBA conversion; La -> LA un-premultiplies first.
    return (img.convert("LA") if img.mode == "La" else img).convert("RGBA")


def alpha_kind(img: Image.Image) -> tuple[str, Image.Image]:
    """("opaque" | "transparent" | "light alpha-only" | "dark alpha-only",
    alpha as an "L" image of at most PROBE_SIDE a side) of ``img`` (any
    mode with alpha, or P, L or RGB with transparency). Alpha-only: the picture is only
    in the alpha channel, the colour flat; light ones must go over black to
    be seen.

    Judged on a nearest-neighbour sample of at most PROBE_SIDE a side (a
    grid of the file's own pixels: cheap, and its std estimates the whole
    image's), with colour statistics weighted by alpha, so the colour of fully
    transparent pixels (often garbage or black) does not count and nearly
    transparent ones barely do. float32 on the small sample only."""
    w, h = img.size
    if max(w, h) > PROBE_SIDE:
        s = PROBE_SIDE / max(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.NEAREST)
    rgba = to_rgba(img)   # after sampling: the same pixels, converted
    alpha_image = rgba.getchannel("A")
    arr = np.asarray(rgba, dtype=np.float32).reshape(-1, 4)
    alpha = arr[:, 3]
    kind = "opaque" if alpha.min() >= OPAQUE else "transparent"
    weight = alpha.sum()
    if alpha.std() < ALPHA_PICTURE_STD or weight <= 0:
        return kind, alpha_image
    colour = arr[:, :3]
    mean = (alpha @ colour) / weight
    std = np.sqrt((alpha @ np.square(colour - mean)) / weight)
    if std.max() >= FLAT_COLOUR_STD:
        return kind, alpha_image
    luminance = 0.299 * mean[0] + 0.587 * mean[1] + 0.114 * mean[2]
    return ("light alpha-only" if luminance >= 128 else "dark alpha-only"), alpha_image


#: Modes of more than 8 bits a level.
HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def full_scale(mode: str, top: float) -> float:
    """The level that maps to 255 for a ``mode`` of HIGH_DEPTH whose largest
    (finite) value is ``top``: I;16 by 65535; I and F by 255 when their
    maximum is at most 255, by 65535 when at most 65535, and beyond that by
    the maximum itself (a 32-bit TIFF of values up to 65,535,000 came out
    white when clipped at 65535); F whose maximum is at most 1 by 1 (the
    usual float convention: such a TIFF came out black)."""
    if mode.startswith("I;16"):
        return 65535
    is_float = mode == "F"
    return (1.0 if is_float and top <= 1 else 255 if top <= 255 else 65535 if top <= 65535
            else (float(top) if is_float else int(top)))


def to_8bit(v: np.ndarray, hi: float, is_float: bool) -> np.ndarray:
    """Levels ``v`` of a range whose full scale is ``hi`` (:func:`full_scale`)
    as 0..255 (negatives clip to 0): integer arithmetic unless ``is_float``
    (I;16 by v // 257, identical to float64 ``v * 255 / 65535`` truncated)."""
    if is_float:
        return np.clip(v.astype(np.float64) * (255.0 / hi), 0, 255)
    if hi == 255:
        return np.clip(v, 0, 255)
    return np.clip(v, 0, 65535) // 257 if hi == 65535 else np.clip(v, 0, hi).astype(np.int64) * 255 // hi


def background(kind: str) -> tuple[int, int, int, int]:
    """The RGBA colour a picture of :func:`alpha_kind` ``kind`` is composited over."""
    return (0, 0, 0, 255) if kind == "light alpha-only" else (255, 255, 255, 255)


def as_seen(img: Image.Image) -> Image.Image:
    """``img`` as RGB, as the server decodes it before embedding: alpha over
    white (a light alpha-only picture over black), 16/32-bit levels by
    :func:`full_scale`; any other mode only converted. Whole-image: for
    thumbnails (the server's decoder works on large rasters in strips)."""
    if img.mode in HIGH_DEPTH:
        is_float = img.mode == "F"
        a = np.asarray(img)
        hi = full_scale(img.mode, float(a[np.isfinite(a)].max(initial=0)))
        if is_float:
            a = np.nan_to_num(a, nan=0.0, posinf=np.inf, neginf=-np.inf)     # NaN counts as 0
        return Image.fromarray(to_8bit(a, hi, is_float).astype(np.uint8), "L").convert("RGB")
    if not has_transparency(img):
        return img.convert("RGB")
    kind, _ = alpha_kind(img)
    rgba = to_rgba(img)
    return Image.alpha_composite(Image.new("RGBA", rgba.size, background(kind)), rgba).convert("RGB")
