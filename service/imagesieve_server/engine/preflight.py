"""What a file's container says, read before Pillow opens it.

Pillow does real work inside ``Image.open`` for some formats, before
``decode.decode_image`` can check a pixel count or charge the memory budget,
and some of its decoders are Python loops whose cost follows the bytes sent,
not the raster produced. A few KB of such a file held a decode thread for
seconds to minutes (two adversarial probes; docs/server-probes.md, "A fourth and a fifth probe"):

- an ICO's largest entry is decoded while opening: a 16x16 directory entry
  holding a 16000x16000 RLE bitmap cost ~1.5 GB before the pixel limit, and
  RLE bitmaps are decoded in Python, one loop a code, a row ended early
  padded one byte at a time (a 5 KB 100000x1000 bitmap: ~30 s; images of
  other formats that Pillow decodes in Python are bounded after opening, in
  ``decode.decode_image``);
- a TIFF lists its strips or tiles in the header, and Pillow makes a Python
  object a strip while opening (an 8 MB file of 2 million strips: seconds);
  a tile is decoded whole, so an 8x8 image may declare a 40000x40000 tile;
- a PNG's chunks are walked one by one, every compressed one (iCCP,
  zTXt, iTXt) is inflated and every other metadata chunk (eXIf...) read
  whole, before its pixels while opening, after them when loading ends;
- a JPEG's bytes between segments (junk or 0xFF fill) are read one at a time;
- a Photoshop file's image resources are read one by one while opening;
- a GIF's extension blocks before its first frame are read one by one while
  opening (840,000 one-byte comments, 4 MB: 0.6 s), stray bytes one at a time;
- a JPEG 2000 file's boxes before its codestream are read one by one while
  opening (2 million empty ones, 15 MB: 1.7 s);
- a WebP or GIF canvas costs its pixels whatever its bytes: libwebp makes
  canvas-sized buffers for every WebP (Pillow opens stills through its
  animation decoder too) and codes a flat picture in almost no bits, and a
  GIF's first frame may cover a corner of its screen. A 142-byte animated
  WebP of 10000x10000 cost 1.8 s and 1.5 GB (a seventh probe, F6), a 34-byte
  lossless still the same, a 37-byte GIF screen 0.2 s and 380 MB. Beyond
  ``FREE_CANVAS_PIXELS`` the canvas is bounded by the bytes of the picture
  that is decoded (``WEBP_PIXELS_PER_BYTE``, ``GIF_PIXELS_PER_BYTE``);
- an AVIF picture costs its pixels too, and AV1 codes a flat one in almost
  nothing: 2,181 bytes of 10000x10000 took 0.74 s and ~900 MB to decode, and
  64 of them in one call stalled another client's embeds for 1.5-2 s (a
  ninth probe). Its canvas is bounded by its coded bytes (``mdat`` and
  ``idat``) the same way (``AVIF_PIXELS_PER_BYTE``): the largest of the
  sizes its boxes declare and of the sequence headers its AV1 data starts
  with (the decoder allocates by the latter, whatever ``ispe`` says).

Each check reads headers only, at most ``MAX_HEADER_SEGMENTS`` segments,
and returns why the file is refused (a RESOURCE_EXHAUSTED item error), or
None. Files an encoder writes stay far inside every bound.
"""
from __future__ import annotations

import re

from imagesieve.orientation import ifd0

from .avif_bounds import AvifRefused, AvifUnreadable, avif_canvas

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JP2_MAGIC = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
MAX_HEADER_SEGMENTS = 1024      # segments, chunks or directory entries a walk reads (real files: dozens)
# Images whose decoder is written in Python (Pillow's PyDecoders: RLE
# bitmaps, QOI, DDS with colour masks, PGM/PPM of other depths than 8 and
# 16 bits, SGI 16-bit...) cost ~1-2.5 us of a decode thread a code or a pixel,
# measured here, and an RLE row ended early is padded a byte at a time: their
# bytes and pixels are bounded (decode.decode_image, after opening; an ICO's
# bitmap entries here, since Pillow decodes them while opening).
MAX_PYTHON_DECODE_BYTES = 1 << 19
MAX_PYTHON_DECODE_PIXELS = 1_000_000
MAX_PNG_CHUNKS = 200_000        # chunks of any kind a PNG may have (64 MB in 1 KB pixel chunks: 64,000)
MAX_TIFF_PARTS = 65_536         # strips or tiles (a 100 MP image in 256x256 tiles has ~1,500)
# Numbers one TIFF tag may hold besides offsets and byte counts, each a Python object once
# opened: fractions (resolutions, white points, reference black/white: 1-6 of them), and
# other numbers (a 16-bit palette's colour map or a transfer function: 3 x 65,536). Bytes,
# text and undefined data (XMP, ICC profiles, Photoshop's resources) load as one object.
MAX_TIFF_FRACTIONS = 64
MAX_TIFF_TAG_VALUES = 1 << 18
# The tags Pillow reads (and so unpacks) while opening a TIFF, besides offsets and byte
# counts (PIL.TiffImagePlugin._setup): sizes, sample layout, resolution, orientation,
# palette, tiles, subsampling.
TIFF_TAGS_READ_ON_OPEN = frozenset({256, 257, 258, 259, 262, 266, 274, 277, 278, 282, 283, 284, 296, 320, 322,
                                    323, 338, 339, 530})
MAX_TILE_PIXELS = 1 << 22       # a tile beyond 4 x its image's pixels may have this many (2048x2048)
MAX_COMPRESSED_CHUNKS = 64      # iCCP, zTXt, iTXt in a PNG (real files: a few)
MAX_PNG_METADATA_BYTES = 16 << 20   # a PNG's chunks besides its pixels (profiles, XMP: at most a few MB)
MAX_JPEG_PADDING = 1 << 16      # bytes between a JPEG's segments before its first scan (real files: 0)
MAX_NETPBM_HEADER = 4096           # bytes of a netpbm header before its pixels (real files: dozens)
MAX_GIF_EXTENSION_BYTES = 16 << 20   # bytes of a GIF's extensions before its first frame (XMP: a few MB)
MAX_GIF_STRAY = 1 << 16         # stray bytes before a GIF's first frame (Pillow skips them; real files: 0)
# Canvas pixels a file may have whatever its bytes: an 8K UHD frame (33.2 MP).
# A sticker sheet or an asset on a large transparent canvas is a few KB of
# lossless WebP (4096x4096 with one logo: 1.7 KB, decoded in 0.28 s, +160 MB,
# less than a 4096x4096 photo's 0.62 s); a 10000x10000 canvas in 142 bytes
# (1.8 s, 1.5 GB) is what this bounds.
FREE_CANVAS_PIXELS = 1 << 25
# Beyond that, canvas pixels a byte of the picture decoded (a still's
# bitstream, an animation's first frame; never metadata or later frames).
# Lossless WebP of a 4K page of text: 1,220 a byte, measured; photos 2-40.
WEBP_PIXELS_PER_BYTE = 2048
# LZW reaches ~2,730 pixels a byte at best (12-bit codes of at most ~4,090
# pixels): a GIF whose first frame covers its screen is never refused.
GIF_PIXELS_PER_BYTE = 4096
# AV1 stills measured here at 36 MP: a smooth photo 177 pixels a byte at
# quality 30, a page of text 41; a flat 100 MP picture ~46,000.
AVIF_PIXELS_PER_BYTE = 2048
_AVIF_BRANDS = (b"avif", b"avis", b"mif1", b"msf1")      # the major brands Pillow's AVIF plugin opens
_GIF_MARK = re.compile(rb"[!,;]")   # what ends a run of stray bytes: an extension, a frame, the end
_BMP_RLE = {1: "RLE8", 2: "RLE4"}


_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis")
#: Bytes of a WebP file read for :func:`lossy`: its chunks before the image's (an ICC
#: profile, EXIF) are a few KB as a rule.
LOSSY_HEAD = 16 << 10


def lossy(head: bytes) -> bool:
    """Whether a file whose first bytes are ``head`` (LOSSY_HEAD of a WebP,
    a few dozen of anything else) holds a lossy format: JPEG, lossy WebP
    (a VP8 bitstream, or an ALPH chunk with one, not VP8L), AVIF or HEIC,
    or GIF (at most 256 colours). PNG, BMP, TIFF and anything unknown count
    as lossless: only a lossy format is known to have lost something."""
    if head[:3] == b"\xff\xd8\xff" or head[:6] in (b"GIF87a", b"GIF89a"):
        return True
    if head[4:8] == b"ftyp":
        return head[8:12] in _AVIF_BRANDS + _HEIF_BRANDS
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return False
    for chunk in _webp_chunks(head):
        if chunk is None or chunk[0] == b"VP8L":
            return False
        if chunk[0] in (b"VP8 ", b"ALPH"):     # a lossy image keeps its transparency in ALPH, before VP8
            return True
    return False


def problem(data: bytes, max_pixels: int) -> str | None:
    """Why ``data`` is refused before Pillow opens it, or None."""
    head = data[:8]
    # Before the others: an AVIF whose ftyp box is 256 bytes long starts like
    # an ICO, and Pillow tries its AVIF reader when its ICO reader fails.
    if data[4:8] == b"ftyp" and data[8:12] in _AVIF_BRANDS and (why := _avif(data)):
        return why
    if head[:4] == b"\x00\x00\x01\x00":
        return _icon(data, max_pixels)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff(data, max_pixels)
    if head == PNG_MAGIC:
        return _png(data)
    if head[:2] == b"\xff\xd8":
        return _jpeg(data)
    if data[:12] == JP2_MAGIC:
        return _jp2(data)
    if head[:4] == b"8BPS":
        return _psd(data)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(data, max_pixels)
    if head[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"123456f" and (head[2:3].isspace() or head[2:3] == b"#"):
        return _netpbm(data)
    return None


def _netpbm(data: bytes) -> str | None:
    """A PBM/PGM/PPM/PFM header (magic, sides, maxval or scale, comments)
    longer than MAX_NETPBM_HEADER: Pillow reads one a byte at a time (an
    eighth probe: 30 MB of whitespace in a PPM's header held a thread 6.7 s,
    one 30 MB comment 5.4 s)."""
    tokens = 2 if data[1:2] in (b"1", b"4") else 3          # bitmaps have no maxval
    end = min(len(data), MAX_NETPBM_HEADER)
    at, found = 2, 0
    while at < end and found < tokens:
        c = data[at:at + 1]
        if c.isspace():
            at += 1
        elif c == b"#":                                     # a comment runs to the end of its line
            nl = data.find(b"\n", at, end)
            at = end if nl < 0 else nl + 1
        else:
            while at < end and not data[at:at + 1].isspace() and data[at:at + 1] != b"#":
                at += 1
            found += 1
    if found < tokens and len(data) > end:
        return (f"its PBM/PGM/PPM header runs past {MAX_NETPBM_HEADER} bytes (whitespace or comments; "
                "real headers take a few dozen)")
    return None


def _u(data: bytes, at: int, size: int, order: str = "little") -> int:
    return int.from_bytes(data[at:at + size], order)


def _bitmap(data: bytes, at: int, max_pixels: int, what: str, codes: int, icon: bool = False) -> str | None:
    """The bitmap (DIB) header at ``at``, e.g. an ICO entry's (``icon``: its
    height counts its colour and mask rows twice); ``codes``: its bytes."""
    size = _u(data, at, 4)
    if size < 40 or len(data) < at + 20:
        return None                     # OS/2 core header or truncated: no compression, Pillow refuses
    w = abs(int.from_bytes(data[at + 4:at + 8], "little", signed=True))
    h = abs(int.from_bytes(data[at + 8:at + 12], "little", signed=True))
    if icon:
        h //= 2
    if w * h > max_pixels:
        return f"{what} is a {w}x{h} = {w * h} pixel bitmap, above the limit of {max_pixels}"
    rle = _BMP_RLE.get(_u(data, at + 16, 4))
    if rle and (w * h > MAX_PYTHON_DECODE_PIXELS or codes > MAX_PYTHON_DECODE_BYTES):
        return (f"{what} is a {rle} bitmap of {w}x{h} in {codes} bytes, above the limits of "
                f"{MAX_PYTHON_DECODE_PIXELS} pixels and {MAX_PYTHON_DECODE_BYTES} bytes for RLE (its decoder "
                "runs in Python); convert it to PNG")
    return None


def _icon(data: bytes, max_pixels: int) -> str | None:
    """Pillow decodes an ICO's largest picture while opening it, before any
    size check: a 16x16 directory entry may hold a 40000x40000 PNG (1.5 MB
    of file, 1.6 GB decoded) or bitmap. Read each entry's own header first."""
    count = _u(data, 4, 2)
    for i in range(count):                  # Pillow reads every entry and opens the largest
        entry = data[6 + 16 * i: 22 + 16 * i]
        if len(entry) < 16:
            break
        length, offset = _u(entry, 8, 4), _u(entry, 12, 4)
        head = data[offset:offset + 24]
        if head[:8] == PNG_MAGIC and len(head) == 24:
            w, h = _u(head, 16, 4, "big"), _u(head, 20, 4, "big")
            if w * h > max_pixels:
                return (f"icon entry {i} is a {w}x{h} = {w * h} pixel PNG, above the limit of "
                        f"{max_pixels}")
        else:
            why = _bitmap(data, offset, max_pixels, f"icon entry {i}", length, icon=True)
            if why:
                return why
    return None


def _tiff(data: bytes, max_pixels: int) -> str | None:
    """Strips or tiles of a TIFF's first directory (the one Pillow opens)."""
    order = "little" if data[:2] == b"II" else "big"
    big = _u(data, 2, 2, order) == 43
    at = _u(data, 8, 8, order) if big else _u(data, 4, 4, order)
    count = _u(data, at, 8 if big else 2, order)
    at += 8 if big else 2
    step = 20 if big else 12
    tile = {}
    if at + count * step > len(data):
        return None                     # a directory past the end: damaged, which Pillow says
    if count > MAX_HEADER_SEGMENTS:
        return f"TIFF whose first directory has {count} entries, above the limit of {MAX_HEADER_SEGMENTS}"
    for i in range(count):
        e = at + i * step
        if e + step > len(data):
            break
        tag, kind = _u(data, e, 2, order), _u(data, e + 2, 2, order)
        values = _u(data, e + 4, 8 if big else 4, order)
        # Pillow unpacks the tags it reads when it opens the file, before any memory
        # is charged: an 8x8 TIFF whose XResolution held 3.9 million fractions (31 MB)
        # took 14 s and 664 MB. Offsets and byte counts are bounded below; the tags it
        # does not read stay bytes (a GeoTIFF's 300,000 tie point numbers are data).
        limit = MAX_TIFF_FRACTIONS if kind in (5, 10) else MAX_TIFF_TAG_VALUES if kind not in (1, 2, 7) else None
        if tag in TIFF_TAGS_READ_ON_OPEN and limit is not None and values > limit:
            return (f"TIFF whose tag {tag} holds {values} numbers, above the limit of {limit} (each is "
                    "unpacked on opening)")
        if tag in (273, 324):           # StripOffsets, TileOffsets
            parts = _u(data, e + 4, 8 if big else 4, order)
            if parts > MAX_TIFF_PARTS:
                what = "strips" if tag == 273 else "tiles"
                return (f"TIFF with {parts} {what}, above the limit of {MAX_TIFF_PARTS} (each one is "
                        f"opened and decoded on its own); rewrite it with larger {what}")
        elif tag in (256, 257, 322, 323) and tag not in tile:   # width, height, tile sides: the first
            tile[tag] = _u(data, e + (12 if big else 8), 2 if kind == 3 else 4, order)   # wins, as in Pillow
    if 322 in tile and 323 in tile:
        # A tile is decoded whole: bounded as the image is, and by the image
        # (real tiles are 16-1024 px and never far beyond the picture).
        area, image = tile[322] * tile[323], tile.get(256, 0) * tile.get(257, 0)
        if area > min(max_pixels, max(4 * image, MAX_TILE_PIXELS)):
            return (f"TIFF with {tile[322]}x{tile[323]} tiles for a {tile.get(256)}x{tile.get(257)} image "
                    "(each tile is decoded whole); rewrite it with smaller tiles")
    return None


def _png(data: bytes) -> str | None:
    """Every chunk, before the pixels and after them (Pillow reads those
    after the pixels when it finishes loading): how many that are not
    pixel data and their bytes, how many compressed, and how many in all. An animated PNG
    is read up to its second frame's control chunk, where Pillow stops
    (decoding takes the first frame): an APNG of 1,100 frames was refused
    for its 1,100 frame controls."""
    pos, other, compressed, pixels, metadata = 8, 0, 0, False, 0
    controls, frames = 0, 0                     # acTL chunks before the pixels, the frames the last says
    for _ in range(MAX_PNG_CHUNKS):
        if pos + 8 > len(data):
            return None
        kind = data[pos + 4:pos + 8]
        if kind not in (b"IDAT", b"fdAT", b"DDAT"):
            # Pillow reads each metadata chunk whole (eXIf, text, profiles), before
            # any memory is charged: a 60 MB eXIf took 120-300 MB.
            metadata += min(_u(data, pos, 4, "big"), len(data) - pos)
            if metadata > MAX_PNG_METADATA_BYTES:
                return (f"PNG with over {MAX_PNG_METADATA_BYTES >> 20} MiB of metadata chunks (EXIF, text, "
                        f"colour profiles), each read whole while decoding")
        animated = controls == 1 and 1 < frames <= 0x80000000      # as Pillow: one acTL (two: a still)
        if kind == b"IEND" or (kind == b"fcTL" and animated and pixels):
            return None
        if kind == b"acTL" and not pixels:
            controls, frames = controls + 1, _u(data, pos + 8, 4, "big")
        pixels = pixels or kind == b"IDAT"
        if kind not in (b"IDAT", b"fdAT"):
            other += 1
            if other > MAX_HEADER_SEGMENTS:
                return f"PNG with over {MAX_HEADER_SEGMENTS} chunks besides its pixel data"
        if kind in (b"iCCP", b"zTXt", b"iTXt"):
            compressed += 1
            if compressed > MAX_COMPRESSED_CHUNKS:
                return (f"PNG with over {MAX_COMPRESSED_CHUNKS} compressed metadata chunks (iCCP, zTXt, "
                        "iTXt), each inflated while decoding")
        pos += 12 + _u(data, pos, 4, "big")
    return f"PNG of over {MAX_PNG_CHUNKS} chunks"


def _jpeg(data: bytes) -> str | None:
    """Bytes between segments (junk, or 0xFF fill) before the first scan:
    Pillow reads them one at a time while opening."""
    pos, padding, n = 2, 0, len(data)
    for _ in range(MAX_HEADER_SEGMENTS):
        if pos + 4 > n:
            return None
        if data[pos] != 0xFF:
            nxt = data.find(b"\xff", pos, pos + MAX_JPEG_PADDING + 1)
            padding += (nxt if nxt >= 0 else min(n, pos + MAX_JPEG_PADDING + 1)) - pos
            pos = nxt if nxt >= 0 else n
        elif data[pos + 1] == 0xFF:
            run = data[pos + 1:pos + 2 + MAX_JPEG_PADDING]
            skip = len(run) - len(run.lstrip(b"\xff"))
            padding += skip
            pos += skip
        else:
            marker = data[pos + 1]
            if marker in (0xDA, 0xD9):          # the first scan, or the end
                return None
            if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
                # Pillow unpacks the EXIF block's first directory while opening (for the
                # DPI), warning once for each damaged entry: 5,400 entries in a 64 KB JPEG
                # took 0.09 s and wrote 1 MB of warnings. Cameras write a few dozen.
                directory = ifd0(data[pos + 10:pos + 2 + _u(data, pos + 2, 2, "big")])
                entries = 0 if directory is None else directory[2]
                if entries > MAX_HEADER_SEGMENTS:
                    return (f"JPEG whose EXIF block has {entries} entries in its first directory, above the "
                            f"limit of {MAX_HEADER_SEGMENTS} (each is unpacked while opening)")
            pos += 2 if (marker == 0x01 or 0xD0 <= marker <= 0xD8) else 2 + _u(data, pos + 2, 2, "big")
        if padding > MAX_JPEG_PADDING:
            return (f"JPEG with over {MAX_JPEG_PADDING} bytes of padding between its segments, each read on "
                    "its own while opening")
    return f"JPEG with over {MAX_HEADER_SEGMENTS} segments before its first scan"


def _psd(data: bytes) -> str | None:
    """Image resources of a Photoshop file: Pillow reads every one while
    opening (a probe: a million empty ones, 12 MB, took 1.7 s and 115 MB)."""
    at = 26 + 4 + _u(data, 26, 4, "big")          # header, colour mode data
    end = at + 4 + _u(data, at, 4, "big")
    at += 4
    for _ in range(MAX_HEADER_SEGMENTS):
        if at + 12 > min(end, len(data)):
            return None
        name = data[at + 6]
        at += 6 + (name + 2) // 2 * 2                 # signature, id, the name padded to even
        at += 4 + (_u(data, at, 4, "big") + 1) // 2 * 2
    return f"Photoshop file with over {MAX_HEADER_SEGMENTS} image resources, each read while opening"


def _jp2(data: bytes) -> str | None:
    """A JP2 file's boxes up to its codestream (``jp2c``), those inside its
    header superbox (``jp2h``) too: Pillow walks them in Python while
    opening. Real files have a handful (signature, file type, header,
    colour, resolution, XMP)."""
    at, end, boxes = 0, len(data), 0
    while at + 8 <= end:
        size, kind = _u(data, at, 4, "big"), data[at + 4:at + 8]
        head = 8
        if size == 1:                                   # a 64-bit length follows
            size, head = _u(data, at + 8, 8, "big") if at + 16 <= end else 0, 16
        if kind == b"jp2c" or size == 0 or size < head:     # the codestream, the last box, or malformed (Pillow says)
            return None
        boxes += 1
        if kind == b"jp2h":                             # the header box's own boxes, one level down
            inner, stop = at + head, min(end, at + size)
            while inner + 8 <= stop and boxes <= MAX_HEADER_SEGMENTS:
                length = _u(data, inner, 4, "big")
                if length < 8:
                    break
                boxes, inner = boxes + 1, inner + length
        if boxes > MAX_HEADER_SEGMENTS:
            return f"JPEG 2000 file with over {MAX_HEADER_SEGMENTS} boxes before its codestream, each read while opening"
        at += size
    return None


def _gif(data: bytes, max_pixels: int) -> str | None:
    """What comes before the first frame: extension blocks (comments,
    application data, frame controls) and stray bytes, which Pillow reads
    while opening, the blocks one by one and a stray byte at a time. Blocks
    after the first frame are read only when seeking to later frames, which
    decoding never does. Then the first frame's data against the canvas
    (``_gif_frame``)."""
    flags = data[10] if len(data) > 10 else 0
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)     # header, screen, global colours
    blocks = stray = carried = 0
    while pos < len(data):
        byte = data[pos]
        if byte == 0x2C:                                            # the first frame
            return _gif_frame(data, pos, max_pixels)
        if byte == 0x3B:                                            # the end
            return None
        if byte != 0x21:
            found = _GIF_MARK.search(data, pos, pos + MAX_GIF_STRAY + 1)
            nxt = found.start() if found else min(len(data), pos + MAX_GIF_STRAY + 1)
            stray, pos = stray + nxt - pos, nxt
            if stray > MAX_GIF_STRAY:
                return (f"GIF with over {MAX_GIF_STRAY} stray bytes before its first frame, each read on its "
                        "own while opening")
            continue
        blocks += 1
        if blocks > MAX_HEADER_SEGMENTS:
            return (f"GIF with over {MAX_HEADER_SEGMENTS} extension blocks before its first frame, each read "
                    "while opening")
        pos += 2                                                    # introducer and label
        while pos < len(data) and data[pos]:
            carried += data[pos]
            pos += 1 + data[pos]
            if carried > MAX_GIF_EXTENSION_BYTES:
                return (f"GIF with over {MAX_GIF_EXTENSION_BYTES >> 20} MiB of extension data before its first "
                        "frame")
        pos += 1
    return None


def _canvas_problem(what: str, w: int, h: int, coded: int, per_byte: int, of: str) -> str | None:
    """Why a ``w`` x ``h`` canvas is more than ``coded`` bytes justify, or None."""
    if w * h <= max(FREE_CANVAS_PIXELS, per_byte * coded):
        return None
    return (f"{what} of a {w}x{h} canvas ({w * h} pixels) in {coded} bytes of {of}: above "
            f"{FREE_CANVAS_PIXELS} pixels a canvas may have without the bytes to show for them (at most "
            f"{per_byte} a byte: decoding costs the whole canvas, whatever its bytes); convert it, e.g. to PNG")


def _webp_chunks(data: bytes):
    """(kind, size, body offset) of a WebP's chunks in order, at most
    MAX_HEADER_SEGMENTS of them, then None if more follow (a chunk running
    past the file's end stops the walk)."""
    at, end = 12, min(len(data), 8 + _u(data, 4, 4)) if len(data) >= 12 else 0
    for _ in range(MAX_HEADER_SEGMENTS):
        if at + 8 > end:
            return
        kind, size = data[at:at + 4], _u(data, at + 4, 4)
        yield kind, size, at + 8
        at += 8 + size + (size & 1)
    yield None


def _webp_canvas(data: bytes, body: int) -> tuple[int, int]:
    """The canvas a VP8X chunk at ``body`` declares."""
    return 1 + _u(data, body + 4, 3), 1 + _u(data, body + 7, 3)


def _webp(data: bytes) -> str | None:
    """The canvas of a WebP against the bytes of what is decoded: a still's
    bitstream (VP8 or VP8L, and ALPH), an animation's first frame (only that
    one is decoded). libwebp allocates the canvas whatever the bytes, and
    its demuxer refuses frames outside the canvas itself. Chunks are walked
    up to the first picture, at most MAX_HEADER_SEGMENTS of them."""
    canvas = None
    coded = 0
    for chunk in _webp_chunks(data):
        if chunk is None:
            return f"WebP with over {MAX_HEADER_SEGMENTS} chunks before its picture"
        kind, size, body = chunk
        if kind == b"VP8X" and size >= 10:
            canvas = _webp_canvas(data, body)
        elif kind == b"ALPH":
            coded += size
        elif kind in (b"VP8 ", b"VP8L"):
            if canvas is None:                # a simple file: the size is the bitstream's
                head = data[body:body + 10]
                if kind == b"VP8L" and len(head) >= 5 and head[0] == 0x2F:
                    bits = _u(head, 1, 4)
                    canvas = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
                elif kind == b"VP8 " and head[3:6] == b"\x9d\x01\x2a":
                    canvas = _u(head, 6, 2) & 0x3FFF, _u(head, 8, 2) & 0x3FFF
                else:
                    return None               # not a bitstream libwebp reads: it says so
            return _canvas_problem("WebP", *canvas, coded + size, WEBP_PIXELS_PER_BYTE, "image data")
        elif kind == b"ANMF":
            if canvas is None:
                return None
            return _canvas_problem("animated WebP", *canvas, max(0, size - 16), WEBP_PIXELS_PER_BYTE,
                                   "its first frame (the one decoded)")
    return None                               # no picture: damaged, which Pillow says


def _avif(data: bytes) -> str | None:
    """The largest picture an AVIF can make its decoder allocate
    (``avif_bounds.avif_canvas``) against its coded bytes. A file that walk
    cannot read as libavif would is refused."""
    try:
        canvas, coded = avif_canvas(data, MAX_HEADER_SEGMENTS)
    except AvifUnreadable as e:
        return f"AVIF file that cannot be bounded before decoding: {e}; convert it, e.g. to PNG"
    except AvifRefused as e:
        return str(e)
    return _canvas_problem("AVIF", *canvas, coded, AVIF_PIXELS_PER_BYTE, "coded image data")


def _gif_frame(data: bytes, pos: int, max_pixels: int) -> str | None:
    """The first frame (at ``pos``) against the canvas Pillow decodes it on:
    the logical screen, grown to the frame where it reaches further. The
    rest of the screen is fill, which costs its pixels and no bytes (a 1x1
    frame on a 10000x10000 screen, 37 bytes: 0.2 s and 380 MB). Its data
    blocks are read up to the bytes the canvas needs."""
    if pos + 10 > len(data):
        return None
    x, y, fw, fh, flags = _u(data, pos + 1, 2), _u(data, pos + 3, 2), _u(data, pos + 5, 2), _u(data, pos + 7, 2), data[pos + 9]
    w, h = max(_u(data, 6, 2), x + fw), max(_u(data, 8, 2), y + fh)
    if w * h <= FREE_CANVAS_PIXELS or w * h > max_pixels:        # free, or refused on its size anyway
        return None
    needed = -(-w * h // GIF_PIXELS_PER_BYTE)
    at = pos + 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1    # local colours, LZW code size
    coded = 0
    while coded < needed and at < len(data) and data[at]:
        coded += data[at]
        at += 1 + data[at]
    return _canvas_problem("GIF", w, h, coded, GIF_PIXELS_PER_BYTE, "its first frame (the one decoded)")


def webp_frames_outside(data: bytes) -> str | None:
    """Which frame of an animated WebP reaches outside its canvas, or None:
    libwebp's demuxer refuses such a file ("could not create decoder
    object"), and this says why. Reads at most MAX_HEADER_SEGMENTS chunks."""
    canvas, frame = None, 0
    for chunk in _webp_chunks(data):
        if chunk is None:
            return None
        kind, size, body = chunk
        if kind == b"VP8X" and size >= 10:
            canvas = _webp_canvas(data, body)
        elif kind == b"ANMF" and size >= 16 and canvas is not None:
            x, y = 2 * _u(data, body, 3), 2 * _u(data, body + 3, 3)
            w, h = 1 + _u(data, body + 6, 3), 1 + _u(data, body + 9, 3)
            if x + w > canvas[0] or y + h > canvas[1]:
                return (f"its frame {frame}, {w}x{h} at ({x}, {y}), reaches outside its {canvas[0]}x{canvas[1]} "
                        "canvas")
            frame += 1
    return None
