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
# A mask's soft edge may carry any colour: a game's gauge mask, white where
# opaque, stores its edge pixels' alpha as their grey (premultiplied), and a
# resampled copy of it mixes the edge with whatever lay under the
# transparent pixels. Its colour is not flat, so it was composited over
# white, a blank page, and verified as "the same picture" as a blank
# terrain map. So the colour is also judged on the opaque pixels alone,
# where they hold OPAQUE_SHARE of the picture's alpha or more.
OPAQUE_SHARE = 0.5
# A light picture that is nearly transparent (a glass highlight's pale
# greys of alpha 8-80) has no opaque pixels to judge; over white its
# composite varies less than BLANK_OVER_WHITE_STD (luminance std; of 10,544
# transparent icons and game images, one did, at 2.0, the next at 4.6, a
# faint snow texture): it is alpha-only too.
BLANK_OVER_WHITE_STD = 3.0
# Either way, its composite over black must vary this many times as much as
# over white: a UI frame (opaque white corners, a grey border, a clear middle)
# shows its border over white (2.2x) and stays there.
BETTER_OVER_BLACK = 4.0
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
    in the alpha channel, the colour flat (all of it, or where opaque:
    OPAQUE_SHARE; or light and blank over white: BLANK_OVER_WHITE_STD);
    light ones must go over black to be seen.

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
    if _flat(colour, alpha):
        luminance = _luminance((alpha @ colour) / weight)
        return ("light alpha-only" if luminance >= 128 else "dark alpha-only"), alpha_image
    # Not flat: alpha-only still when light where opaque or blank over white,
    # and far better seen over black (only light ones are composited otherwise).
    opaque = alpha >= OPAQUE
    light_where_opaque = (alpha[opaque].sum() >= OPAQUE_SHARE * weight and _flat(colour[opaque], alpha[opaque])
                          and _luminance(colour[opaque].mean(axis=0)) >= 128)
    over_white, over_black = _over(colour, alpha, 255).std(), _over(colour, alpha, 0).std()
    if (light_where_opaque or over_white < BLANK_OVER_WHITE_STD) and over_black > BETTER_OVER_BLACK * over_white:
        return "light alpha-only", alpha_image
    return kind, alpha_image


def _flat(colour: np.ndarray, alpha: np.ndarray) -> bool:
    """Whether (N, 3) ``colour`` varies less than FLAT_COLOUR_STD, weighted by (N,) ``alpha``."""
    mean = (alpha @ colour) / alpha.sum()
    return bool(np.sqrt((alpha @ np.square(colour - mean)) / alpha.sum()).max() < FLAT_COLOUR_STD)


def _luminance(colour: np.ndarray) -> np.ndarray:
    return colour @ np.array([0.299, 0.587, 0.114], np.float32)


def _over(colour: np.ndarray, alpha: np.ndarray, ground: int) -> np.ndarray:
    """(N,) luminance of (N, 3) ``colour`` with (N,) ``alpha`` composited over a ``ground`` grey."""
    return (alpha * _luminance(colour) + (255 - alpha) * ground) / 255


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
