"""Bytes -> RGB PIL image, fast and defensive.

JPEGs are decoded at reduced scale (libjpeg's DCT scaling via Pillow's
``draft``) when the model needs far fewer pixels than the file has: a 12 MP
photo decodes at 1/8 scale in a fraction of the full-decode time; JPEG 2000
likewise decodes only the wavelet resolutions it needs (OpenJPEG's reduce).
A large PNG (a whole raster of 32 MiB or more, 8-bit L/LA/RGB/RGBA or 16-bit
gray, not interlaced) is decoded a band of rows at a time and box-reduced as
the bands come (``png_bands``): a 10000x10000 16-bit PNG takes ~16 MB, not its
200 MB raster. Every other image decodes at full size. The pixel count and the bytes of
the raster the decoder will allocate (``raster_bytes``) are checked from the
header before any pixel is decoded, so decompression bombs cost nothing; so
is a progressive JPEG's number of scans (each a pass over the whole image).

16-bit and 32-bit images (I;16, I, F) become 8-bit in row strips with integer
arithmetic (float only for F, and only a strip at a time), box-reduced first
when far larger than the model needs: a 16-bit TIFF costs its raster and
little more, not gigabytes of float64 arrays.

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
import math
import re
import warnings
from typing import Callable

import numpy as np
from PIL import Image, ImageMode, UnidentifiedImageError

from imagesieve.orientation import TRANSPOSE as _TRANSPOSE, orientation as _orientation, upright
from imagesieve.seen import HIGH_DEPTH as _HIGH_DEPTH, alpha_kind, background, full_scale, has_transparency, to_8bit, to_rgba

from ..formats import FORMATS      # what is decoded (and why not more)
from . import png_bands, preflight, vector
from .preflight import MAX_HEADER_SEGMENTS

# Pillow's advice to convert such palettes to RGBA is what decoding does; the
# warning only cluttered a client's or an audit's console.
warnings.filterwarnings("ignore", message="Palette images with Transparency expressed in bytes", category=UserWarning)
# Pillow warns once for each damaged EXIF or TIFF entry, each message naming its tag (so
# each one is shown): 64 crafted PNGs in four calls wrote 398 MB of server log. What is
# wrong with a file's metadata is not what a decode answers; its pixels are.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")

# Pillow's own bomb guard would raise after we already refused; our limit
# (DecodeLimits.max_pixels) is the one that applies.
Image.MAX_IMAGE_PIXELS = None


class DecodeError(ValueError):
    """The bytes are not an image we can read. ``code`` is a google.rpc.Code
    name: INVALID_ARGUMENT for unreadable data, RESOURCE_EXHAUSTED for limits."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT"):
        super().__init__(message)
        self.code = code

    def detached(self) -> "DecodeError":
        """This error without its traceback and chained exception, fit to be
        kept as an item's answer. Caught where it was raised again (a
        future's result, an await), its traceback holds the catching frame,
        whose locals hold the future and so the error: a cycle that kept the
        decoder's frames, and the partly decoded rasters in them, until a
        full garbage collection (a probe: 24 truncated 8000x8000 PNGs a call
        kept ~1 GB alive each call past a 512 MB budget, which had already
        been given back)."""
        self.__traceback__ = self.__context__ = self.__cause__ = None
        return self


@dataclasses.dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = 64 << 20          # 64 MiB of encoded data
    max_pixels: int = 100_000_000      # 100 MP, from the header
    # Bytes of the raster the decoder will allocate (``raster_bytes``, after
    # JPEG draft scaling), from the header. 512 MiB: every mode at the default
    # 100 MP fits (at most 4 bytes a pixel); binds when max_pixels is raised.
    max_raster_bytes: int = 512 << 20
    # Longest side, from the header: JPEG's own limit. Pillow keeps a pointer
    # and pays decoder overhead per row, so a 194 KB PNG of 1 x 100,000,000
    # (within max_pixels) took 5 s and 2 GB to decode, charged as 95 MiB.
    max_side: int = 65_535
    # SVG drawings rasterized (``vector``). A server turns them off unless asked
    # (--decode-svg): a drawing's cost is bounded by element counts, not by a
    # header, and a decoder thread cannot be stopped mid-render.
    drawings: bool = True


# Bytes a pixel as Pillow stores it: single-band 8-bit modes (1-bit too) one
# byte, I;16 two, everything else (I, F and every multi-band mode; RGB, LA,
# YCbCr... are padded to 32 bits) four.
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def _pixel_bytes(mode: str) -> int:
    if mode in _PIXEL_BYTES:
        return _PIXEL_BYTES[mode]
    try:
        m = ImageMode.getmode(mode)
    except KeyError:
        return 4
    return 1 if len(m.bands) == 1 and m.typestr.endswith("1") else 4


# Pillow's names for JPEG data: MPO is a camera's JPEG with a picture index
# (decoded whole before it was drafted like one: a twelfth probe).
JPEG_FORMATS = ("JPEG", "MPO")


def _jpeg_draft_request(w: int, h: int, min_size: int) -> tuple[int, int] | None:
    """The size decode_image asks JPEG ``draft`` for, or None when it does not
    draft (the shorter side is not more than twice ``min_size``)."""
    if min(w, h) <= 2 * min_size:
        return None
    return (max(1, w * min_size // min(w, h)), max(1, h * min_size // min(w, h)))


def _decoded_size(img: Image.Image, min_size: int | None) -> tuple[int, int]:
    """The size ``img`` decodes at: its header size, or with ``min_size`` the
    JPEG draft scale decode_image will ask for (already in ``img.size`` once
    ``draft`` was applied)."""
    w, h = img.size
    if (min_size is not None and img.format in JPEG_FORMATS and not getattr(img, "decoderconfig", ())
            and len(getattr(img, "tile", ())) == 1):
        req = _jpeg_draft_request(w, h, min_size)
        if req is not None:
            # As JpegImageFile.draft: the largest of 1/8, 1/4, 1/2, 1/1 that
            # keeps both sides >= the request; sides round up.
            scale = min(w // req[0], h // req[1])
            s = next(s for s in (8, 4, 2, 1) if scale >= s)
            w, h = (w + s - 1) // s, (h + s - 1) // s
    elif img.format == "JPEG2000":
        r = getattr(img, "_reduce", 0) or (_j2k_reduce(img, min_size) if min_size is not None else 0)
        if r:       # as Jpeg2KImageFile.load
            power = 1 << r
            w, h = int((w + (power >> 1)) / power), int((h + (power >> 1)) / power)
    return w, h




def _j2k_header(img: Image.Image) -> tuple[int, int, int]:
    """(levels, x offset, y offset) of an opened JPEG 2000 image's main
    header: the fewest wavelet decomposition levels of its COD and COC
    segments (how many resolutions OpenJPEG can drop), and the image
    offsets of its SIZ segment; levels 0 when they cannot be read. Reads at
    most MAX_HEADER_SEGMENTS segments of the header, never the tiles."""
    fp = getattr(img, "fp", None)
    if fp is None or not hasattr(fp, "getbuffer"):
        return 0, 0, 0
    data = fp.getbuffer()
    start = bytes(data[:1 << 16]).find(b"\xff\x4f\xff\x51")        # SOC, SIZ
    if start < 0:
        return 0, 0, 0
    pos, levels, components, x0, y0 = start + 2, [], 0, 0, 0
    for _ in range(MAX_HEADER_SEGMENTS):
        if pos + 4 > len(data):
            break
        marker, length = bytes(data[pos:pos + 2]), int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker[0] != 0xFF or length < 2 or marker == b"\xff\x90":   # not a marker, or the first tile
            break
        body = bytes(data[pos + 4:pos + 2 + length])
        if marker == b"\xff\x51" and len(body) >= 36:                  # SIZ
            x0, y0 = int.from_bytes(body[10:14], "big"), int.from_bytes(body[14:18], "big")
            components = int.from_bytes(body[34:36], "big")
        elif marker == b"\xff\x52" and len(body) >= 6:                 # COD
            levels.append(body[5])
        elif marker == b"\xff\x53":                                     # COC
            at = 1 + (1 if components < 257 else 2)
            if len(body) > at:
                levels.append(body[at])
        pos += 2 + length
    return (min(levels) if levels else 0), x0, y0


def _j2k_reduce(img: Image.Image, min_size: int) -> int:
    """How many halvings decode_image asks OpenJPEG for (``img.reduce``):
    as many as keep the shorter side >= ``min_size`` and the file allows,
    and where Pillow's idea of the reduced size (rounded half up) is
    OpenJPEG's (ceil(x1 / 2^r) - ceil(x0 / 2^r)), else Pillow refuses the
    data. OpenJPEG then decodes only those resolutions: a 10000x10000 file
    took 8 s and 1.9 GB at full size, 0.05 s and 46 MB at 1/32."""
    w, h = img.size
    if min(w, h) <= 2 * min_size:
        return 0
    levels, x0, y0 = _j2k_header(img)
    r = 0
    while min(w, h) >> (r + 1) >= min_size and r < levels:
        r += 1
    for r in range(r, 0, -1):
        p = 1 << r
        if all(int((side + (p >> 1)) / p) == -(-(offset + side) // p) + (-offset // p)
               for side, offset in ((w, x0), (h, y0))):
            return r
    return 0


def raster_bytes(img: Image.Image, min_size: int | None = None) -> int:
    """Bytes of the raster Pillow will allocate to decode ``img`` (opened,
    header read, pixels not yet loaded): width x height x bytes a pixel as
    Pillow stores it (1 for 1-bit, L and P; 2 for I;16; 4 for I, F and every
    multi-band mode: RGB, LA, PA, RGBA, CMYK, YCbCr...). Reads only header
    fields: never decodes, never changes ``img``.

    JPEG draft scaling counts: once ``draft`` was applied ``img.size`` is the
    reduced size; given ``min_size``, a JPEG not yet drafted is counted at the
    scale ``decode_image(data, min_size)`` will decode it at. For an animated
    image, the first frame (the one decoded). What decode_image needs in all,
    this raster and its output, is ``decode_bytes``.
    """
    w, h = _decoded_size(img, min_size)
    return w * h * _pixel_bytes(img.mode)


def decode_bytes(img: Image.Image, min_size: int | None = None) -> int:
    """Peak working memory of ``decode_image(data, min_size)`` for ``img``
    (opened, header read), as cheap and side-effect free as ``raster_bytes``:
    the raster, plus the 8-bit RGB output (4 bytes a pixel, none for an RGB
    raster without a colour key, which is returned as it is; for 16/32-bit
    modes the reduced L and RGB images), plus strip temporaries. An 8-bit image rotated by its EXIF
    orientation needs one more raster while it is transposed (known only
    once decoded, for some formats): not counted."""
    w, h = _decoded_size(img, min_size)
    if _in_bands(img, min_size):
        f = _reduce_factor(w, h, min_size)
        # The reduced image in the file's mode, its RGB (and for 16-bit its L), one band;
        # turned by its EXIF orientation as RGB, once the reduced image is gone.
        return (-(-w // f)) * (-(-h // f)) * 9 + png_bands.WORKING_BYTES
    raster = w * h * _pixel_bytes(img.mode)
    if img.mode == "RGB" and "transparency" not in img.info:     # a colour key is composited (to_rgb)
        out = 0
    elif img.mode in _HIGH_DEPTH:
        f = _reduce_factor(w, h, min_size or 0)
        out = (-(-w // f)) * (-(-h // f)) * 5   # L, then RGB
    else:
        out = w * h * 4
    return raster + out + _STRIP_BYTES + _decoder_buffers(img, min_size)


def output_pixels(img: Image.Image, min_size: int | None = None) -> int:
    """Pixels of the image ``decode_image(data, min_size)`` returns for
    ``img`` (opened, header read): its decoded size, box-reduced where a
    16/32-bit image or a PNG decoded in bands is (what the layout signature
    and the image properties then work on, at full size)."""
    w, h = _decoded_size(img, min_size)
    if _in_bands(img, min_size) or img.mode in _HIGH_DEPTH:
        f = _reduce_factor(w, h, min_size or 0)
        return (-(-w // f)) * (-(-h // f))
    return w * h


def _in_bands(img: Image.Image, min_size: int | None) -> bool:
    """Whether decode_image decodes ``img`` a band at a time (``png_bands``):
    a PNG it covers, whose whole raster would take at least
    ``png_bands.MIN_RASTER_BYTES``, that is to be box-reduced."""
    return (bool(min_size) and png_bands.applies(img) and _reduce_factor(*img.size, min_size) > 1
            and raster_bytes(img) >= png_bands.MIN_RASTER_BYTES)


# Working memory of decoders beyond the raster, bytes a pixel of the full
# header size, measured (peak RSS rise less the raster, 7000x7000 files):
# libwebp, OpenJPEG and libavif hold their own full-size buffers.
_DECODER_BYTES_PER_PIXEL = {"WEBP": 16, "JPEG2000": 20, "AVIF": 10}


def _progressive_jpeg(img: Image.Image) -> bool:
    return img.format in JPEG_FORMATS and ("progressive" in img.info or "progression" in img.info)


def _decoder_buffers(img: Image.Image, min_size: int | None = None) -> int:
    # Before any draft these buffers are full-size; OpenJPEG's follow its reduction.
    w, h = _decoded_size(img, min_size) if img.format == "JPEG2000" else img.size
    if _progressive_jpeg(img) or img.info.get("jpeg_scans", 1) > 1:
        # A JPEG of several scans (progressive, or a sequential one with its
        # components in separate scans) keeps every DCT coefficient of the
        # whole image (2 bytes each) until the last scan: draft scaling does
        # not shrink it (a 162-byte 10000x10000 file of 3 scans: +579 MiB).
        cw, ch = img.info.get("jpeg_coded_size", (w, h))
        return 2 * cw * ch * max(1, len(img.getbands()))
    extra = 0
    if img.format == "JPEG2000" and hasattr(getattr(img, "fp", None), "getbuffer"):
        extra = img.fp.getbuffer().nbytes          # OpenJPEG holds the whole codestream as well
    return _DECODER_BYTES_PER_PIXEL.get(img.format, 0) * w * h + extra


def decode_image(data: bytes, min_size: int, limits: DecodeLimits = DecodeLimits(),
                 on_header: Callable[[Image.Image], None] | None = None) -> Image.Image:
    """Decode ``data`` to an RGB image whose shorter side is at least
    ``min_size`` pixels where the original allows (JPEG draft scaling never
    goes below it). EXIF orientation is applied; palette, alpha, CMYK,
    16-bit and grayscale images come out as 8-bit RGB (alpha over white, or
    over black for light alpha-only images; see ``to_rgb``). A 16/32-bit
    image whose shorter side is at least 4 x ``min_size`` is box-reduced by
    an integer factor, keeping the shorter side >= 2 x ``min_size``; so is a
    PNG decoded in bands (``_in_bands``); other 8-bit images but JPEG keep
    their size. Animated images give their
    first frame. Refused (RESOURCE_EXHAUSTED) from the header above
    ``limits``: encoded bytes, pixels, and ``raster_bytes`` (after draft).

    ``on_header(img)`` is called with the opened image (header read, draft
    applied) after these checks and before any pixel is decoded: the server
    charges its memory budget there (``decode_bytes``) and may raise.

    Returns the image and sets ``image.info["original_size"]`` = (w, h) of
    the file before scaling. Raises DecodeError.
    """
    if not data:
        raise DecodeError("empty image data (0 bytes)")
    if len(data) > limits.max_bytes:
        raise DecodeError(f"image is {len(data)} bytes, above the limit of {limits.max_bytes}",
                          "RESOURCE_EXHAUSTED")
    if vector.is_svg(data):
        img = _drawing(data, limits)
        if on_header is not None:
            on_header(img)
        rgb = to_rgb(img)
        rgb.info["original_size"] = img.size
        return rgb
    refused = preflight.problem(data, limits.max_pixels)     # what Pillow would pay for while opening
    if refused:
        raise DecodeError(refused, "RESOURCE_EXHAUSTED")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        claimed = _claimed_format(data)
        if claimed:        # its signature says TIFF (say), yet no reader took it: a variant Pillow lacks
            raise DecodeError(f"a {claimed} file that cannot be decoded: damaged, or a variant the decoder "
                              f"lacks (bit depth, layout, compression); if another program opens it, convert it "
                              f"(e.g. to PNG)") from None
        raise DecodeError(f"not a recognised image format (accepted: {', '.join(FORMATS)})") from None
    except Exception as e:  # noqa: BLE001 - any parser failure is bad input
        why = preflight.webp_frames_outside(data) if data[8:12] == b"WEBP" else None
        raise DecodeError(f"cannot read image header: {e}" + (f" ({why})" if why else "")) from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise DecodeError(f"image header has an invalid size {w}x{h}")
    if w * h > limits.max_pixels:
        raise DecodeError(f"image is {w}x{h} = {w * h} pixels, above the limit of "
                          f"{limits.max_pixels}", "RESOURCE_EXHAUSTED")
    python = {t[0] for t in getattr(img, "tile", ()) or ()} & set(Image.DECODERS)
    if python and (len(data) > preflight.MAX_PYTHON_DECODE_BYTES or w * h > preflight.MAX_PYTHON_DECODE_PIXELS):
        raise DecodeError(f"a {img.format} image of {w}x{h} in {len(data)} bytes, whose decoder runs in Python "
                          f"({', '.join(sorted(python))}): above its limits of {preflight.MAX_PYTHON_DECODE_PIXELS} "
                          f"pixels and {preflight.MAX_PYTHON_DECODE_BYTES} bytes; convert it (e.g. to PNG)",
                          "RESOURCE_EXHAUSTED")
    if max(w, h) > limits.max_side:
        raise DecodeError(f"image is {w}x{h}: a side above the limit of {limits.max_side} pixels",
                          "RESOURCE_EXHAUSTED")
    if img.format in JPEG_FORMATS:
        # Progressive or not: a sequential JPEG may split its components over
        # scans too, and libjpeg walks the whole image on each of them (a 60 KB
        # baseline file of 6,000 empty scans held a decode thread 83 s).
        scans = img.info["jpeg_scans"] = jpeg_scans(data)
        img.info["jpeg_coded_size"] = (w, h)          # its coefficients' size, whatever the draft
        if scans > max_jpeg_scans(w * h):
            count = scans if scans <= MAX_JPEG_SCANS else f"over {MAX_JPEG_SCANS}"
            kind = "progressive JPEG" if _progressive_jpeg(img) else "JPEG"
            raise DecodeError(f"{kind} with {count} scans, above the limit of {max_jpeg_scans(w * h)} "
                              f"for {w}x{h} (each scan is a pass over the whole image)", "RESOURCE_EXHAUSTED")
    try:
        req = _jpeg_draft_request(w, h, min_size) if img.format in JPEG_FORMATS else None
        if req is not None:
            # Scale so the shorter side stays >= min_size (draft picks the
            # smallest 1/1, 1/2, 1/4, 1/8 scale whose size is >= requested).
            img.draft("RGB", req)
        elif img.format == "JPEG2000":
            img.reduce = _j2k_reduce(img, min_size)
    except Exception as e:  # noqa: BLE001 - a header draft cannot handle is bad input
        raise DecodeError(f"cannot read image header: {e}") from None
    raster = raster_bytes(img)
    if raster > limits.max_raster_bytes:
        dw, dh = img.size
        raise DecodeError(f"image would decode to a {dw}x{dh} {img.mode} raster of {raster} bytes "
                          f"({raster / 2**20:.0f} MiB), above the limit of {limits.max_raster_bytes} "
                          f"bytes", "RESOURCE_EXHAUSTED")
    if on_header is not None:
        on_header(img)
    if _in_bands(img, min_size):
        rgb = _decode_png_in_bands(data, img, min_size)
        rgb.info["original_size"] = (w, h)
        return rgb
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
        if img.mode in _HIGH_DEPTH:
            # To 8-bit (and reduced) first, then oriented: the transpose
            # copies a small 8-bit image, not the 16/32-bit raster.
            method = _TRANSPOSE.get(_orientation(img))
            gray = _high_depth_to_l(img, _reduce_factor(*img.size, min_size))
            del img
            rgb = (gray.transpose(method) if method is not None else gray).convert("RGB")
        else:
            # Turned as ImageOps.exif_transpose turns it, without its copy of the
            # EXIF block re-serialised: that unpacks every tag into Python objects
            # (a 64x64 WebP with 24 MB of EXIF rationals: ~20 s of a decode thread
            # and ~0.5 GB the budget never saw, for metadata nothing here reads).
            rgb = to_rgb(upright(img))
    except DecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated/corrupt data of any kind
        if getattr(img, "_reduce", 0):
            # Reduced as its main header allows: a tile that overrides it with
            # fewer levels cannot be. Not decoded in full instead: that would
            # cost memory the budget was not charged for.
            raise DecodeError(f"cannot decode image: {e} (a JPEG 2000 file whose tiles have fewer resolution "
                              f"levels than its header declares; convert it, e.g. to PNG)") from None
        raise DecodeError(f"cannot decode image: {e}") from None
    rgb.info["original_size"] = (w, h)
    return rgb


def _drawing(data: bytes, limits: DecodeLimits) -> Image.Image:
    """An SVG drawing rasterized (``vector.rasterize``), or DecodeError."""
    if not limits.drawings:
        raise DecodeError("an SVG drawing: this server does not rasterize drawings (start it with --decode-svg 1, "
                          "or send a PNG of it)")
    try:
        return vector.rasterize(data, limits.max_pixels)
    except vector.SvgRefused as e:
        raise DecodeError(str(e), e.code) from None


def _decode_png_in_bands(data: bytes, img: Image.Image, min_size: int) -> Image.Image:
    """A large PNG (``_in_bands``) -> RGB, box-reduced a band at a time as
    16/32-bit images are: the same pixels as decoding it whole and reducing,
    without the whole raster (a 10000x10000 16-bit PNG: ~16 MB, not 200)."""
    factor = _reduce_factor(*img.size, min_size)
    try:
        method = _TRANSPOSE.get(png_bands.orientation(data))
        png = png_bands.PngRows(data, img)
        small = (_high_depth_to_l(img, factor, png.array) if img.mode in _HIGH_DEPTH
                 else png_bands.reduced(png, factor))
        rgb = to_rgb(small)
    except Exception as e:  # noqa: BLE001 - truncated/corrupt data of any kind, as decode_image
        raise DecodeError(f"cannot decode image: {e}") from None
    del small           # turned as RGB, the reduced image gone: what decode_bytes counts
    return rgb.transpose(method) if method is not None else rgb


# Progressive JPEG: each scan walks every coefficient block of the image
# (~20 ms a scan at 100 MP, draft scaling or not), and a 0.4 MB file of 1,500
# near-empty scans held a decode thread for a minute. Encoders write 6-10
# scans (libjpeg's progression), a few more when optimised; libjpeg-turbo
# offers the same guard (djpeg -maxscans, TJPARAM_SCANLIMIT).
MAX_JPEG_SCANS = 100
MAX_JPEG_SCAN_PIXELS = 2_500_000_000      # scans x pixels: 25 scans at 100 MP
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def max_jpeg_scans(pixels: int) -> int:
    """Scans a JPEG of ``pixels`` may have (progressive or sequential)."""
    return max(10, min(MAX_JPEG_SCANS, MAX_JPEG_SCAN_PIXELS // max(pixels, 1)))


def jpeg_scans(data: bytes) -> int:
    """Start-of-scan markers in a JPEG's own stream: segments are skipped by
    their lengths (an EXIF thumbnail's scans are not counted), entropy-coded
    data up to the next marker. Stops counting past MAX_JPEG_SCANS + 1, and
    returns that for a stream of more than MAX_HEADER_SEGMENTS segments
    (thousands of empty ones cost seconds to walk, and no encoder writes them)."""
    pos, scans, n, steps = 2, 0, len(data), 0
    while pos + 4 <= n and scans <= MAX_JPEG_SCANS:
        steps += 1
        if steps > MAX_HEADER_SEGMENTS:         # thousands of empty segments: not a real encoder's
            return MAX_JPEG_SCANS + 1
        if data[pos] != 0xFF:
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
            continue
        marker = data[pos + 1]
        if marker == 0xFF:                           # fill bytes: to the last of the run
            pos += len(data[pos:pos + 65536]) - len(data[pos:pos + 65536].lstrip(b"\xff")) - 1
            if data[pos + 1] == 0xFF:                # a run longer than that: not a real encoder's
                return MAX_JPEG_SCANS + 1
            continue
        if marker == 0xD9:                           # end of image
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xDA:
            scans += 1
            found = _JPEG_MARKER.search(data, pos + 2 + length)
            if found is None:
                break
            pos = found.start()
            continue
        pos += 2 + length
    return scans


def _claimed_format(data: bytes) -> str | None:
    """The accepted format whose signature ``data`` starts with (Pillow's own
    per-format ``accept`` tests), or None."""
    for fmt in FORMATS:
        accept = Image.OPEN.get(fmt, (None, None))[1]
        try:
            if accept is not None and accept(data[:64]):
                return fmt
        except Exception:  # noqa: BLE001 - a plugin's test on a short prefix: not this format
            continue
    return None


# 16-bit and 32-bit modes (imagesieve.seen.HIGH_DEPTH) are made 8-bit by _high_depth_to_l in strips.
_STRIP_PIXELS = 1 << 20   # pixels a strip (before reduction)
_STRIP_BYTES = 32 * _STRIP_PIXELS   # bound on a strip's temporaries (F: float32, float64 copies)


def _reduce_factor(w: int, h: int, min_size: int) -> int:
    """Integer box-reduction factor for an image far larger than the model
    needs: the shorter side stays >= 2 * min_size (so >= min_size, as JPEG
    draft, with room for the model's own antialiased resize). 1 = none."""
    if min_size <= 0:
        return 1
    return max(1, min(w, h) // (2 * min_size))


def _high_depth_to_l(img: Image.Image, factor: int = 1,
                     rows: Callable[[int, int], np.ndarray] | None = None) -> Image.Image:
    """A loaded I;16* / I / F image -> 8-bit L, box-reduced by ``factor``.
    ``rows(y0, y1)``, when given, supplies the pixels instead, in order (an
    I;16 PNG decoded in bands: ``png_bands.PngRows.array``; ``img`` is then
    only its opened header).

    Values map by the range their maximum says (``imagesieve.seen.full_scale``
    and ``to_8bit``, shared with the pictures people are shown: I;16 by
    v // 257; I and F by 255, 65535 or their maximum; F up to 1 as 0..1);
    negatives clip to 0 (F's NaN counts as 0). Done in row strips of ~1 MP, so the temporaries are a few
    MB whatever the size: integer arithmetic for I;16 and I (sums in int64,
    mean rounded), float64 only on an F strip. With
    ``factor`` > 1 each factor x factor block is averaged (clipped values,
    the last row and column of blocks over the pixels they have, as
    ``Image.reduce``) before the mapping.
    """
    mode = img.mode
    w, h = img.size
    is_float = mode == "F"
    if mode.startswith("I;16"):
        hi = 65535
    else:
        top = img.getextrema()[1]   # native, no copy
        if not math.isfinite(top):      # F with inf or NaN: the largest finite value, a strip at a time
            step = max(1, _STRIP_PIXELS // w)
            top = 0.0
            for y in range(0, h, step):
                a = np.asarray(img.crop((0, y, w, min(h, y + step))))
                top = max(top, float(a[np.isfinite(a)].max(initial=0.0)))
        hi = full_scale(mode, top)
    acc_type = np.float64 if is_float else np.int64

    def levels(v: np.ndarray) -> np.ndarray:
        return to_8bit(v, hi, is_float)

    def mean(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return sums / counts if is_float else (sums + counts // 2) // counts

    out = np.empty((-(-h // factor), -(-w // factor)), np.uint8)
    col_starts = np.arange(0, w, factor)
    col_counts = np.minimum(factor, w - col_starts)
    # Strips of ~_STRIP_PIXELS: whole rows of blocks, or, when one row of
    # blocks is larger than that, parts of one summed into ``partial``.
    step = max(1, _STRIP_PIXELS // w)
    whole = step >= factor
    if whole:
        step -= step % factor
    partial = np.zeros(len(col_starts), acc_type)
    y0 = 0
    while y0 < h:
        block_end = min(h, (y0 // factor + 1) * factor)
        y1 = min(h, y0 + step) if whole else min(block_end, y0 + step)
        a = rows(y0, y1) if rows is not None else np.asarray(img.crop((0, y0, w, y1)))
        if is_float:
            a = np.nan_to_num(a, nan=0.0)
        if factor == 1:
            out[y0:y1] = levels(a)
        else:
            if mode == "I" or is_float:
                a = np.clip(a, 0, hi)
            if whole:
                row_starts = np.arange(0, y1 - y0, factor)
                sums = np.add.reduceat(np.add.reduceat(a, row_starts, axis=0, dtype=acc_type),
                                       col_starts, axis=1)
                counts = np.minimum(factor, (y1 - y0) - row_starts)[:, None] * col_counts[None, :]
                out[y0 // factor: y0 // factor + len(row_starts)] = levels(mean(sums, counts))
            else:
                partial += np.add.reduceat(a.sum(axis=0, dtype=acc_type), col_starts)
                if y1 == block_end:
                    rows_in_block = block_end - (y0 // factor) * factor
                    out[y0 // factor] = levels(mean(partial, rows_in_block * col_counts))
                    partial[:] = 0
        y0 = y1
    return Image.fromarray(out, "L")


def to_rgb(img: Image.Image, min_size: int = 0) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB.

    16-bit and 32-bit images (I;16*, I, F) go through ``_high_depth_to_l``
    (integer arithmetic in strips); given ``min_size``, one whose shorter side
    is at least 4 x ``min_size`` is box-reduced first, keeping the shorter
    side >= 2 x ``min_size``. Other modes keep their size.

    Transparency (an alpha channel, a palette's, or a PNG's colour key on L
    or RGB) is composited on white (``imagesieve.seen``, shared with
    what people are shown), so a transparent logo looks like it
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
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _HIGH_DEPTH:
        return _high_depth_to_l(img, _reduce_factor(*img.size, min_size)).convert("RGB")
    # P, L and RGB carry transparency as a palette alpha or one colour key (PNG tRNS).
    if has_transparency(img):
        return _composite(img)
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _composite(img: Image.Image) -> Image.Image:
    """An image with alpha (or P with transparency) -> RGB over white, or
    over black when light alpha-only (see to_rgb). Converted and composited
    in row strips (every step is per pixel, so the result is the same as at
    once): the working memory is the input and the RGB output, not three
    more full-size RGBA rasters.

    An ordinary transparent image (not alpha-only, some pixel below
    ``seen.OPAQUE``) also gets ``info["opacity"]``: its alpha channel as an "L" image
    of at most ``seen.PROBE_SIDE`` a side (nearest-neighbour), for the layout
    signature's opacity mask: a copy saved without regard to the alpha shows
    whatever colour lies under the transparent pixels, and the verifier
    compares the opaque part only (engine.signature)."""
    kind, alpha = alpha_kind(img)
    fill = background(kind)
    w, h = img.size
    out = Image.new("RGB", img.size)
    rows = max(1, _STRIP_PIXELS // w)
    for y0 in range(0, h, rows):
        strip = to_rgba(img.crop((0, y0, w, min(h, y0 + rows))))
        ground = Image.new("RGBA", strip.size, fill)
        out.paste(Image.alpha_composite(ground, strip).convert("RGB"), (0, y0))
    if kind == "transparent":
        out.info["opacity"] = alpha
    return out


