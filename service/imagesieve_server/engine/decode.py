"""Bytes -> RGB PIL image, fast and defensive.

JPEGs are decoded at reduced scale (libjpeg's DCT scaling via Pillow's
``draft``) when the model needs far fewer pixels than the file has: a 12 MP
photo decodes at 1/8 scale in a fraction of the full-decode time. Every other
format decodes normally. The pixel count is checked from the header before
any pixel is decoded, so decompression bombs cost nothing.

Transparency is composited on white, as a browser shows it, except for
"alpha-only" images: flat colour channels (e.g. all white) whose picture
lives only in the alpha channel, as some artwork packages ship. Over white
every such image would be blank and they would all embed as duplicates of
each other, so their flat colour is composited over a contrasting background
instead (black under a light colour: alpha becomes luminance). See ``to_rgb``.
"""
from __future__ import annotations

import dataclasses
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own bomb guard would raise after we already refused; our limit
# (DecodeLimits.max_pixels) is the one that applies.
Image.MAX_IMAGE_PIXELS = None


class DecodeError(ValueError):
    """The bytes are not an image we can read. ``code`` is a google.rpc.Code
    name: INVALID_ARGUMENT for unreadable data, RESOURCE_EXHAUSTED for limits."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT"):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = 64 << 20          # 64 MiB of encoded data
    max_pixels: int = 100_000_000      # 100 MP, from the header


def decode_image(data: bytes, min_size: int, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Decode ``data`` to an RGB image whose shorter side is at least
    ``min_size`` pixels where the original allows (JPEG draft scaling never
    goes below it). EXIF orientation is applied; palette, alpha, CMYK,
    16-bit and grayscale images come out as 8-bit RGB (alpha over white, or
    over black for light alpha-only images; see ``to_rgb``).
    Animated images give their first frame.

    Returns the image and sets ``image.info["original_size"]`` = (w, h) of
    the file before scaling. Raises DecodeError.
    """
    if not data:
        raise DecodeError("empty image data (0 bytes)")
    if len(data) > limits.max_bytes:
        raise DecodeError(f"image is {len(data)} bytes, above the limit of {limits.max_bytes}",
                          "RESOURCE_EXHAUSTED")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("not a recognised image format") from None
    except Exception as e:  # noqa: BLE001 - any parser failure is bad input
        raise DecodeError(f"cannot read image header: {e}") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise DecodeError(f"image header has an invalid size {w}x{h}")
    if w * h > limits.max_pixels:
        raise DecodeError(f"image is {w}x{h} = {w * h} pixels, above the limit of "
                          f"{limits.max_pixels}", "RESOURCE_EXHAUSTED")
    try:
        if img.format == "JPEG" and min(w, h) > 2 * min_size:
            # Scale so the shorter side stays >= min_size (draft picks the
            # smallest 1/1, 1/2, 1/4, 1/8 scale whose size is >= requested).
            req = (max(1, w * min_size // min(w, h)), max(1, h * min_size // min(w, h)))
            img.draft("RGB", req)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
        img = ImageOps.exif_transpose(img) if _has_orientation(img) else img
        rgb = to_rgb(img)
    except DecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated/corrupt data of any kind
        raise DecodeError(f"cannot decode image: {e}") from None
    rgb.info["original_size"] = (w, h)
    return rgb


def _has_orientation(img: Image.Image) -> bool:
    try:
        return img.getexif().get(0x0112, 1) not in (1, None)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not fail the image
        return False


# Alpha-only detection (see to_rgb). Levels are of 255.
_FLAT_COLOUR_STD = 2.0    # colour channels flatter than this (alpha-weighted std)...
_ALPHA_PICTURE_STD = 6.0  # ...while alpha varies more than this: the picture is in alpha
_PROBE_SIDE = 256         # judged on a copy scaled to at most this many pixels a side


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB.

    Transparency is composited on white, so a transparent logo looks like it
    does in a browser, not black. The exception is an alpha-only image (RGBA,
    LA, PA, RGBa, La, or P with transparency): colour channels flat (alpha-
    weighted std < 2 levels, so the colour under fully transparent pixels,
    often garbage or black, does not count) while the alpha channel varies.
    Over white a light flat colour would be a blank page, and distinct such
    images would all embed as duplicates; so a light colour is composited
    over black instead (alpha-as-luminance). A dark flat colour keeps white,
    which already contrasts, and ordinary transparent images are unchanged.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Pillow has no La -> RGBA conversion; La -> LA un-premultiplies first.
        rgba = (img.convert("LA") if mode == "La" else img).convert("RGBA")
        fill = (0, 0, 0, 255) if _light_alpha_only(rgba) else (255, 255, 255, 255)
        background = Image.new("RGBA", rgba.size, fill)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _light_alpha_only(rgba: Image.Image) -> bool:
    """True when ``rgba``'s picture is only in its alpha channel and its flat
    colour is light (so it must go over black to be seen).

    Judged on a nearest-neighbour sample of at most _PROBE_SIDE a side (a
    grid of the file's own pixels: cheap, and its std estimates the whole
    image's), with colour statistics weighted by alpha, so the colour of fully
    transparent pixels (often garbage or black) does not count and nearly
    transparent ones barely do. float32 on the small sample only."""
    w, h = rgba.size
    if max(w, h) > _PROBE_SIDE:
        s = _PROBE_SIDE / max(w, h)
        rgba = rgba.resize((max(1, round(w * s)), max(1, round(h * s))), Image.NEAREST)
    arr = np.asarray(rgba, dtype=np.float32).reshape(-1, 4)
    alpha = arr[:, 3]
    if alpha.std() < _ALPHA_PICTURE_STD:
        return False
    weight = alpha.sum()
    if weight <= 0:
        return False
    colour = arr[:, :3]
    mean = (alpha @ colour) / weight
    std = np.sqrt((alpha @ np.square(colour - mean)) / weight)
    if std.max() >= _FLAT_COLOUR_STD:
        return False
    luminance = 0.299 * mean[0] + 0.587 * mean[1] + 0.114 * mean[2]
    return bool(luminance >= 128)
