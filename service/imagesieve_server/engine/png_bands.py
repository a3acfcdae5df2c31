"""Large PNGs decoded a band of rows at a time, box-reduced as the bands come.

Decoded whole, a 10000x10000 PNG is a 200 MB (16-bit gray) to 400 MB (RGBA)
raster, though the model needs a few hundred pixels a side. PNG rows are
filtered against the row above (Up, Average, Paeth), so a band cannot be
decoded alone; here each band goes through Pillow's own PNG unfiltering (its
``zip`` decoder) behind one extra row: the previous band's last row, already
reconstructed, stored unfiltered (filter type 0), so the band's first row
finds the neighbour it was filtered against. The compressed stream is
inflated with ``zlib`` a band at a time (``max_length``, so a decompression
bomb costs one band), and each band is re-wrapped in zlib's stored blocks
(level 0: a copy, no compression). The pixels are Pillow's, byte for byte.

Covered: non-interlaced 8-bit L, LA, RGB, RGBA, 16-bit gray (I;16) and 16-bit
RGB and RGBA (which Pillow makes 8-bit; their two bytes a sample come back in
two passes, see ``_CARRIERS``). Not covered, decoded whole as before:
palettes and bit depths under 8 (a byte a pixel already), 16-bit gray with
alpha, interlaced files, colour keys (tRNS on L/RGB: averaging would blend
the keyed colour away before it is made transparent), animated PNGs.
"""
from __future__ import annotations

import struct
import zlib
from typing import Iterator

import numpy as np
from PIL import Image

# Raw modes as Pillow's PNG reader names them -> bytes a pixel the filters use.
RAWMODE_BYTES = {"L": 1, "LA": 2, "I;16B": 2, "RGB": 3, "RGBA": 4, "RGB;16B": 6, "RGBA;16B": 8}
# How a band's unfiltered bytes come back from Pillow's decoder: (mode, raw
# mode, which of a pixel's bytes it keeps) for each pass. PNG's filters work
# on each byte from the same byte a pixel to the left and above, so any raw
# mode of the right width unfilters every byte; its unpacker then keeps
# some. Up to 4 bytes a pixel one pass keeps all (LA and RGB are padded to 4
# in memory); 16-bit colour (6 or 8 bytes) takes two: the bytes a
# big-endian and a little-endian reading keep as "high".
_CARRIERS = {
    1: [("L", "L", slice(0, 1))], 2: [("LA", "LA", slice(0, 2))],
    3: [("RGB", "RGB", slice(0, 3))], 4: [("RGBA", "RGBA", slice(0, 4))],
    6: [("RGB", "RGB;16B", slice(0, 6, 2)), ("RGB", "RGB;16L", slice(1, 6, 2))],
    8: [("RGBA", "RGBA;16B", slice(0, 8, 2)), ("RGBA", "RGBA;16L", slice(1, 8, 2))],
}
# Decoded in bands only when the whole raster would take at least this much
# (Pillow's bytes a pixel: 8 MP RGBA, 16 MP 16-bit gray): below it memory
# is not the problem, and ordinary PNGs keep the decoding they always had.
MIN_RASTER_BYTES = 32 << 20
BAND_BYTES = 2 << 20          # unfiltered bytes a band (its rows, at least one)
# Working memory of a band beyond its reduced output, bytes: inflated rows,
# the stored-block stream, the carrier image (padded to 4 bytes a pixel), its
# array and bytes, the band image in the file's mode, and its reduction.
WORKING_BYTES = 10 * BAND_BYTES


class PngError(ValueError):
    """The PNG's data ends early or is damaged."""


def applies(img: Image.Image) -> bool:
    """Whether ``img`` (a PNG opened, not loaded) can be decoded in bands."""
    tile = getattr(img, "tile", None) or ()
    if img.format != "PNG" or len(tile) != 1:
        return False
    t = tile[0]
    return (t[0] == "zip" and tuple(t[1]) == (0, 0) + img.size and t[3] in RAWMODE_BYTES
            and not img.info.get("interlace") and "transparency" not in img.info
            and getattr(img, "n_frames", 1) == 1)


def _idat_payloads(data: bytes, offset: int) -> Iterator[memoryview]:
    """The image data chunks' payloads in order, from the first (whose data
    starts at ``offset``, as Pillow's tile says) to the last consecutive one."""
    view = memoryview(data)
    pos = offset - 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind != b"IDAT":
            return
        end = pos + 8 + length
        if end > len(data):
            yield view[pos + 8:]
            return
        yield view[pos + 8:end]
        pos = end + 4          # the CRC


def orientation(data: bytes, img: Image.Image) -> int:
    """The EXIF orientation of a PNG (opened, not loaded): its eXIf chunk,
    before the image data (Pillow has read it) or after (found by walking
    the chunk headers; ``img.getexif()`` would decode the whole image first)."""
    exif = img.info.get("exif")
    if exif is None:
        pos = 8
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            if kind == b"eXIf":
                exif = data[pos + 8:pos + 8 + length]
                break
            if kind == b"IEND":
                break
            pos += 12 + length
    if not exif:
        return 1
    try:
        parsed = Image.Exif()
        parsed.load(exif if exif[:6] == b"Exif\x00\x00" else b"Exif\x00\x00" + exif)
        return int(parsed.get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not fail the image
        return 1


class PngRows:
    """A PNG's rows in order, a band at a time: ``take(n)`` is the next ``n``
    rows as an image of the file's mode (``n`` x ``row_bytes`` unfiltered
    bytes of working memory)."""

    def __init__(self, data: bytes, img: Image.Image):
        if not applies(img):
            raise ValueError("not a PNG that decodes in bands (see png_bands.applies)")
        self.mode = img.mode
        self.width, self.height = img.size
        t = img.tile[0]
        self.rawmode = t[3]
        self.pixel_bytes = RAWMODE_BYTES[self.rawmode]
        self.row_bytes = self.width * self.pixel_bytes
        self._chunks = _idat_payloads(data, t[2])
        self._inflate = zlib.decompressobj()
        self._input: bytes | memoryview = b""
        self._previous = bytes(self.row_bytes)    # PNG's row above the first: zeros
        self.y = 0

    def band_rows(self, multiple: int = 1) -> int:
        """Rows a band of about BAND_BYTES, a multiple of ``multiple``."""
        rows = max(1, BAND_BYTES // self.row_bytes)
        return max(multiple, rows - rows % multiple)

    def _filtered(self, rows: int) -> bytes:
        need = rows * (1 + self.row_bytes)
        parts = []
        while need > 0:
            if not self._input:
                self._input = next(self._chunks, b"")
            try:
                got = self._inflate.decompress(self._input, need)
            except zlib.error as e:
                raise PngError(f"damaged image data: {e}") from None
            self._input = self._inflate.unconsumed_tail
            if not got and not self._input:
                raise PngError(f"image data ends at row {self.y + sum(map(len, parts)) // (1 + self.row_bytes)} "
                               f"of {self.height} (truncated file)")
            parts.append(got)
            need -= len(got)
        return b"".join(parts)

    def _decoded(self, rows: int, mode: str, rawmode: str, stream: bytes) -> Image.Image:
        try:
            return Image.frombytes(mode, (self.width, rows + 1), stream, "zip", rawmode)
        except (ValueError, OSError) as e:    # a filter type byte outside 0-4, say
            raise PngError(f"damaged image data near row {self.y}: {e}") from None

    def _stream(self, rows: int) -> bytes:
        # The previous band's last row, unfiltered, then this band's rows.
        return zlib.compress(b"\x00" + self._previous + self._filtered(rows), 0)

    def _raw(self, rows: int) -> np.ndarray:
        """The next ``rows`` rows' unfiltered bytes: (rows, pixels, bytes a pixel) uint8."""
        stream = self._stream(rows)
        raw = np.empty((rows + 1, self.width, self.pixel_bytes), np.uint8)
        for mode, rawmode, kept in _CARRIERS[self.pixel_bytes]:
            raw[..., kept] = np.asarray(self._decoded(rows, mode, rawmode, stream)).reshape(rows + 1, self.width, -1)
        raw = raw[1:]
        self._previous = raw[-1].tobytes()
        self.y += rows
        return raw

    def take(self, rows: int) -> Image.Image:
        """The next ``rows`` rows (fewer at the end) as an image of the file's mode."""
        rows = min(rows, self.height - self.y)
        if rows <= 0:
            raise ValueError("no rows left")
        (mode, rawmode, _), *more = _CARRIERS[self.pixel_bytes]
        if more or (mode, rawmode) != (self.mode, self.rawmode):
            return Image.frombytes(self.mode, (self.width, rows), self._raw(rows).tobytes(), "raw", self.rawmode)
        # 8-bit L, LA, RGB, RGBA: the decoded band is already the file's mode.
        band = self._decoded(rows, mode, rawmode, self._stream(rows))
        self._previous = band.crop((0, rows, self.width, rows + 1)).tobytes("raw", rawmode)
        self.y += rows
        return band.crop((0, 1, self.width, rows + 1))

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0``..``y1`` as an array (16-bit: big-endian uint16, as
        stored); calls must follow each other (y0 == the last y1)."""
        if y0 != self.y or not y0 < y1 <= self.height:
            raise ValueError(f"rows are read in order: asked for {y0}..{y1}, at {self.y} of {self.height}")
        if self.rawmode == "I;16B":
            return self._raw(y1 - y0).view(">u2")[..., 0]
        return np.asarray(self.take(y1 - y0))


def reduced(rows: PngRows, factor: int) -> Image.Image:
    """The whole 8-bit image (L, LA, RGB, RGBA), box-reduced by ``factor`` as
    ``Image.reduce`` would reduce it decoded whole (bands of whole blocks,
    so the same pixels); at most one band and the output in memory."""
    if rows.mode not in ("L", "LA", "RGB", "RGBA"):
        raise ValueError(f"mode {rows.mode}: 8-bit modes only (16-bit gray: decode._high_depth_to_l)")
    out = Image.new(rows.mode, (-(-rows.width // factor), -(-rows.height // factor)))
    step = rows.band_rows(factor)
    while rows.y < rows.height:
        y = rows.y
        band = rows.take(step)
        out.paste(band.reduce(factor) if factor > 1 else band, (0, y // factor))
    return out
