"""Altered copies of an image, the kinds of near duplicates real datasets hold:
recompressed, resized, cropped, brightened, mirrored, grayscale, rotated,
bordered, letterboxed, watermarked, screenshotted, with transparency.
Used to calibrate the near-duplicate threshold on a user's own images and by
the benchmarks. Pillow only. Each function takes and returns a PIL image.
"""
from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageEnhance, ImageOps


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode(img: Image.Image) -> bytes:
    """JPEG q95, or PNG for images with transparency (as they would be shared)."""
    if img.mode == "RGBA":
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()
    return jpeg(img, 95)


def _reencode(img, q):
    return Image.open(io.BytesIO(jpeg(img, q))).convert("RGB")


def _watermark(img):
    img = img.copy()
    d = ImageDraw.Draw(img)
    w, h = img.size
    for y in range(0, h, max(1, h // 6)):
        d.text((w // 10, y), "(c) imagesieve sample " * 2, fill=(255, 255, 255))
    return img


def _screenshot(img):
    """The photo shown at 70% in a light UI window with a title bar and a side panel."""
    w, h = img.size
    canvas = Image.new("RGB", (w, h), (236, 236, 236))
    d = ImageDraw.Draw(canvas)
    d.rectangle((0, 0, w, h // 14), fill=(52, 58, 70))
    d.text((8, 4), "Photos - imagesieve.png", fill=(255, 255, 255))
    d.rectangle((0, h // 14, w // 6, h), fill=(250, 250, 250))
    inner = img.resize((w * 7 // 10, h * 7 // 10))
    canvas.paste(inner, (w // 6 + (w * 5 // 6 - inner.width) // 2, h // 14 + (h * 13 // 14 - inner.height) // 2))
    return canvas


def _transparent_corners(img):
    """RGBA with transparent rounded corners, flattened as a browser shows it (on white)."""
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, img.width - 1, img.height - 1), radius=min(img.size) // 5, fill=255)
    rgba = img.convert("RGBA")
    rgba.putalpha(mask)
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    return Image.open(io.BytesIO(buf.getvalue()))


ALTERATIONS = {
    "jpeg_q20": lambda im: _reencode(im, 20),
    "down_up_4x": lambda im: im.resize((im.width // 4, im.height // 4)).resize(im.size),
    "crop_80": lambda im: im.crop((im.width // 10, im.height // 10, im.width * 9 // 10, im.height * 9 // 10)),
    "brightness_130": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
    "flip": ImageOps.mirror,
    "grayscale": lambda im: im.convert("L").convert("RGB"),
    "rotate_5": lambda im: im.rotate(5, resample=Image.BILINEAR, expand=False),
    "border_10": lambda im: ImageOps.expand(im, border=max(im.size) // 10, fill=(0, 0, 0)),
    "letterbox_16x9": lambda im: ImageOps.pad(im, (im.height * 16 // 9, im.height), color=(0, 0, 0)),
    "watermark": _watermark,
    "screenshot": _screenshot,
    "transparent_png": _transparent_corners,
}

# The six kinds of the seed article's evaluation.
SEED_KINDS = ("jpeg_q20", "down_up_4x", "crop_80", "brightness_130", "flip", "grayscale")
