"""Benchmark photos made from real package-shipped photos (foolbox's
ImageNet photos, scikit-image's natural photos), at chosen sizes; altered
copies come from imagesieve.alterations."""
from __future__ import annotations

from PIL import Image

from imagesieve.alterations import ALTERATIONS, SEED_KINDS, encode, jpeg  # noqa: F401 (re-exported)
from imagesieve.samples import imagenet_photos, natural_photos

SIZES_MP = {"0.3MP": (640, 480), "1MP": (1152, 864), "12MP": (4000, 3000)}


def real_photos() -> list[Image.Image]:
    """The 20 foolbox ImageNet photos plus the colour scikit-image photos (RGB)."""
    out = [Image.open(p).convert("RGB") for p, _ in imagenet_photos()]
    for p in natural_photos():
        img = Image.open(p)
        if img.mode in ("RGB", "RGBA") and min(img.size) >= 256:
            out.append(img.convert("RGB"))
    return out


def photos_at(size: tuple[int, int], n: int) -> list[bytes]:
    """n JPEGs (q90) of the real photos resized to ``size`` (w, h)."""
    base = real_photos()
    return [jpeg(base[i % len(base)].resize(size, Image.BICUBIC)) for i in range(n)]
