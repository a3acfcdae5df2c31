"""A picture turned as its EXIF orientation says it is displayed, as
``ImageOps.exif_transpose`` turns it but without re-serialising the EXIF
block: that unpacks every tag into Python objects (a 64x64 WebP with 24 MB of
EXIF rationals took ~20 s and ~0.5 GB; docs/server-probes.md, the sixteenth
probe). Shared by the server's decoder and the light client's contact sheets."""
from __future__ import annotations

import re

from PIL import Image

#: EXIF orientation -> the transpose that displays it.
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
             6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}


#: IFD0 entries read for the orientation (real files: a few dozen).
MAX_IFD_ENTRIES = 1024
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([0-9])')


def ifd0(tiff: bytes) -> tuple[str, int, int] | None:
    """(byte order, where its entries start, how many it says it has) of an
    EXIF block's first directory (``tiff``: from its TIFF header), or None
    when the header or the count cannot be read."""
    order = {b"II": "little", b"MM": "big"}.get(bytes(tiff[:2]))
    if order is None or len(tiff) < 8:
        return None
    at = int.from_bytes(tiff[4:8], order)
    if at + 2 > len(tiff):
        return None
    return order, at + 2, int.from_bytes(tiff[at:at + 2], order)


def ifd0_orientation(tiff: bytes) -> tuple[int | None, bool]:
    """(the orientation of an EXIF block's first directory, or None;
    whether that directory was unreadable). ``tiff``: the block from its
    TIFF header (after any ``Exif\\0\\0``). Only a SHORT or LONG value
    counts, as a display orientation is one: reading the entry alone costs
    nothing, where Pillow's ``getexif`` unpacks every tag first (an
    Orientation of 3.9 million fractions took 9.4 s and 724 MB a file)."""
    directory = ifd0(tiff)
    if directory is None:
        return None, True
    order, at, count = directory
    for i in range(min(count, MAX_IFD_ENTRIES)):
        e = at + 12 * i
        if e + 12 > len(tiff):
            return None, True
        if int.from_bytes(tiff[e:e + 2], order) == 0x0112:
            kind, values = int.from_bytes(tiff[e + 2:e + 4], order), int.from_bytes(tiff[e + 4:e + 8], order)
            if values != 1 or kind not in (3, 4, 8):      # SHORT, LONG, SSHORT
                return None, False
            return int.from_bytes(tiff[e + 8:e + (12 if kind == 4 else 10)], order), False
    return None, False


def orientation(img: Image.Image) -> int | None:
    """The EXIF orientation tag of ``img`` (1 when absent or unreadable):
    from the raw EXIF block where the file has one (JPEG, WebP, PNG, HEIF;
    see :func:`ifd0_orientation`), or a TIFF's own tag, else XMP's
    ``tiff:Orientation`` (as Pillow), else what Pillow finds."""
    raw = img.info.get("exif")
    if isinstance(raw, (bytes, bytearray)):
        value, _ = ifd0_orientation(raw[6:] if raw[:6] == b"Exif\x00\x00" else raw)
        if value is not None:
            return value
    tags = getattr(img, "tag_v2", None)          # a TIFF: its own Orientation tag first
    if tags is not None:
        value = tags.get(0x0112)
        if isinstance(value, int):
            return value
    for key in ("xmp", "XML:com.adobe.xmp"):        # where Pillow looks when EXIF has none
        xmp = img.info.get(key)
        if isinstance(xmp, str):
            xmp = xmp.encode("utf-8", "ignore")
        if isinstance(xmp, (bytes, bytearray)):
            found = _XMP_ORIENTATION.search(xmp)
            if found:
                return int(found.group(1))
    if isinstance(raw, (bytes, bytearray)):
        return 1
    try:
        return img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not fail the image
        return 1


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned as displayed; itself when upright or without EXIF."""
    method = TRANSPOSE.get(orientation(img))
    return img.transpose(method) if method is not None else img
