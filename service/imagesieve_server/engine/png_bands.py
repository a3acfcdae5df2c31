"""Large PNGs decoded a band of rows at a time, box-reduced as the bands come.

Decoded whole, a 10000x10000 PNG is a 200 MB (16-bit gray) to 400 MB (RGBA)
raster, though the model needs a few hundred pixels a side. PNG rows are
filtered against the row above (Up, Average, Paeth), so a band cannot be
decoded alone; here each band goes through Pillow's own PNG unfiltering (its
``zip`` decoder) behind one extra row: the previous band's last row, already
reconstructed, stored unfiltered (filter type 0), so the band's first row
finds the neighbour it was filtered against. The compressed stream is
inflated with ``zlib`` a band at a time (``max_length``, so a decompression
bomb costs one band) from slices of the compressed data (so a single large
chunk is not copied for each band), and each band is re-wrapped in zlib's
stored blocks (level 0: a copy, no compression). The pixels are Pillow's,
byte for byte; image data that ends short of the last row is an error here,
where Pillow fills the missing rows black.

Covered: non-interlaced 8-bit L, LA, RGB, RGBA, 16-bit gray (I;16) and 16-bit
RGB and RGBA (which Pillow makes 8-bit; their two bytes a sample come back in
two passes, see ``_CARRIERS``). Not covered, decoded whole as before:
palettes and bit depths under 8 (a byte a pixel already), 16-bit gray with
alpha, interlaced files, colour keys (tRNS on L/RGB: averaging would blend
the keyed colour away before it is made transparent), animated PNGs (APNG).
"""
from __future__ import annotations

import struct
import zlib
from typing import Iterator

import numpy as np
from imagesieve.orientation import ifd0_orientation
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
# Unfiltered bytes a band of ``reduced`` (whole rows, at least as many as the
# reduction factor; 16-bit gray takes decode._high_depth_to_l's strips of ~1 MP).
BAND_BYTES = 2 << 20
# Working memory of a band beyond the reduced output, bytes: its inflated
# rows, the stored-block stream, the decoded band (padded to 4 bytes a pixel,
# or two for 16-bit colour), its bytes, the band in the file's mode, its
# reduction; plus the compressed input read a slice at a time (INPUT_SLICE).
WORKING_BYTES = 10 * BAND_BYTES
INPUT_SLICE = 1 << 16
# EXIF read for the orientation: its first 64 KiB (IFD0 comes first; JPEG
# caps a whole EXIF block at that), not a chunk of any size copied and parsed.
MAX_EXIF_BYTES = 1 << 16
# Chunks Pillow reads image data from, one after another (fdAT only in APNGs, not banded).
_DATA_CHUNKS = (b"IDAT", b"DDAT")


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
            and img.get_format_mimetype() == "image/png")      # APNGs ("image/apng") decode whole


def _chunks(data: bytes, pos: int = 8) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each chunk from ``pos``, as far
    as Pillow reads: up to IEND, a type that is not four ASCII letters, or
    the end of the data (a length past it is cut there). CRCs unchecked, as
    Pillow leaves them for image data."""
    n = len(data)
    while pos + 8 <= n:
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if not kind.isalpha() or not kind.isascii():
            return
        yield kind, pos + 8, min(n, pos + 8 + length)
        if kind == b"IEND":
            return
        pos += 12 + length


def _data_payloads(data: bytes, offset: int) -> Iterator[memoryview]:
    """The payloads of the image data chunks in order: from the one whose
    payload starts at ``offset`` (Pillow's tile), then each IDAT (or DDAT)
    that follows it directly, as Pillow's reader continues."""
    view = memoryview(data)
    for kind, start, end in _chunks(data, offset - 8):
        if kind not in _DATA_CHUNKS:
            return
        yield view[start:end]


def orientation(data: bytes) -> object:
    """The EXIF orientation value of a PNG, as decoding it whole finds it
    (``img.getexif()`` would decode the pixels first): the last eXIf chunk
    Pillow reads, before or after the image data; its first MAX_EXIF_BYTES.
    1 when there is none or it cannot be parsed (read as the other formats'
    is: ``imagesieve.orientation.ifd0_orientation``)."""
    exif = None
    for kind, start, end in _chunks(data):
        if kind == b"eXIf":
            exif = data[start:min(end, start + MAX_EXIF_BYTES)]
    if not exif:
        return 1
    value, _ = ifd0_orientation(exif[6:] if exif[:6] == b"Exif\x00\x00" else exif)
    return 1 if value is None else value


class PngRows:
    """A PNG's rows in order, a band at a time: ``band(n)`` is the next
    ``n`` rows as an image of the file's mode, ``array(y0, y1)`` as an array.
    A band holds a few times its unfiltered bytes (``WORKING_BYTES`` for one
    of ``BAND_BYTES``). Image data that ends before the last row is an error
    (a whole decode would fill the rest black)."""

    def __init__(self, data: bytes, img: Image.Image):
        if not applies(img):
            raise ValueError("not a PNG that decodes in bands (see png_bands.applies)")
        self.mode = img.mode
        self.width, self.height = img.size
        t = img.tile[0]
        self.rawmode = t[3]
        self.pixel_bytes = RAWMODE_BYTES[self.rawmode]
        self.row_bytes = self.width * self.pixel_bytes
        self._payloads = _data_payloads(data, t[2])
        self._payload, self._at = memoryview(b""), 0
        self._inflate = zlib.decompressobj()
        self._previous = bytes(self.row_bytes)    # PNG's row above the first: zeros
        self.y = 0

    def band_rows(self, multiple: int = 1) -> int:
        """Rows a band of about BAND_BYTES, a multiple of ``multiple``."""
        rows = max(1, BAND_BYTES // self.row_bytes)
        return max(multiple, rows - rows % multiple)

    def _stream(self, rows: int) -> bytes:
        """The next ``rows`` rows, still filtered, behind the previous band's
        last row stored unfiltered (filter type 0), as one zlib stream of
        stored blocks. The compressed input is inflated a slice at a time:
        no copy of a large chunk's unread rest for each band."""
        rows_bytes = bytearray(b"\x00")
        rows_bytes += self._previous
        need = rows * (1 + self.row_bytes)
        while need > 0:
            if self._at >= len(self._payload):
                following = next(self._payloads, None)
                if following is None or self._inflate.eof:
                    got = self._inflate.decompress(b"", need)     # what it still holds
                    if not got:
                        done = self.y + (len(rows_bytes) - 1 - self.row_bytes) // (1 + self.row_bytes)
                        raise PngError(f"image data ends at row {done} of {self.height} (truncated file)")
                    rows_bytes += got
                    need -= len(got)
                    continue
                self._payload, self._at = following, 0
                continue
            piece = self._payload[self._at:self._at + INPUT_SLICE]
            try:
                got = self._inflate.decompress(piece, need)
            except zlib.error as e:
                raise PngError(f"damaged image data: {e}") from None
            self._at += len(piece) - len(self._inflate.unconsumed_tail)
            rows_bytes += got
            need -= len(got)
            if self._inflate.eof:
                self._at = len(self._payload)     # what follows the stream is not image data
        return zlib.compress(rows_bytes, 0)

    def _decoded(self, rows: int, mode: str, rawmode: str, stream: bytes) -> Image.Image:
        try:
            return Image.frombytes(mode, (self.width, rows + 1), stream, "zip", rawmode)
        except (ValueError, OSError) as e:    # a filter type byte outside 0-4, say
            raise PngError(f"damaged image data near row {self.y}: {e}") from None

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

    def band(self, rows: int) -> Image.Image:
        """The next ``rows`` rows (fewer at the end) as an image of the file's mode."""
        rows = min(rows, self.height - self.y)
        if rows <= 0:
            raise ValueError("no rows left")
        (mode, rawmode, _), *more = _CARRIERS[self.pixel_bytes]
        if more or (mode, rawmode) != (self.mode, self.rawmode):
            return Image.frombytes(self.mode, (self.width, rows), self._raw(rows).tobytes(), "raw", self.rawmode)
        # 8-bit L, LA, RGB, RGBA: the decoded band is already the file's mode.
        decoded = self._decoded(rows, mode, rawmode, self._stream(rows))
        self._previous = decoded.crop((0, rows, self.width, rows + 1)).tobytes("raw", rawmode)
        self.y += rows
        return decoded.crop((0, 1, self.width, rows + 1))

    def array(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0``..``y1`` as an array (16-bit gray: big-endian uint16, as
        stored); calls must follow each other (y0 == the last y1)."""
        if y0 != self.y or not y0 < y1 <= self.height:
            raise ValueError(f"rows are read in order: asked for {y0}..{y1}, at {self.y} of {self.height}")
        if self.rawmode == "I;16B":
            return self._raw(y1 - y0).view(">u2")[..., 0]
        return np.asarray(self.band(y1 - y0))


def reduced(png: PngRows, factor: int) -> Image.Image:
    """The whole image in an 8-bit mode (L, LA, RGB, RGBA; 16-bit colour is
    made 8-bit as Pillow does), box-reduced by ``factor`` as ``Image.reduce``
    would reduce it decoded whole (bands of whole blocks, so the same
    pixels); at most one band and the output in memory."""
    if png.mode not in ("L", "LA", "RGB", "RGBA"):
        raise ValueError(f"mode {png.mode}: 8-bit modes only (16-bit gray: decode._high_depth_to_l)")
    out = Image.new(png.mode, (-(-png.width // factor), -(-png.height // factor)))
    step = png.band_rows(factor)
    while png.y < png.height:
        y = png.y
        band = png.band(step)
        out.paste(band.reduce(factor) if factor > 1 else band, (0, y // factor))
    return out
