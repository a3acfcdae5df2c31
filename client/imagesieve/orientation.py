"""A picture turned as its EXIF orientation says it is displayed, as
``ImageOps.exif_transpose`` turns it but without re-serialising the EXIF
block: that unpacks every tag into Python objects (a 64x64 WebP with 24 MB of
EXIF rationals took ~20 s and ~0.5 GB; docs/server-probes.md, the sixteenth
probe). Shared by the server's decoder and the light client's contact sheets."""
from __future__ import annotations

from PIL import Image

#: EXIF orientation -> the transpose that displays it.
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
             6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}


def orientation(img: Image.Image) -> int | None:
    """The EXIF orientation tag of ``img`` (1 when absent or unreadable)."""
    try:
        return img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not fail the image
        return 1


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned as displayed; itself when upright or without EXIF."""
    method = TRANSPOSE.get(orientation(img))
    return img.transpose(method) if method is not None else img
