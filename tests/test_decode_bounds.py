"""Decoding bounded by the raster it will produce: refused from the header
above DecodeLimits.max_raster_bytes, 16/32-bit images made 8-bit (and box-
reduced when far larger than the model needs) with integer arithmetic in
strips, never as float64 copies of the whole image. Real files throughout;
peak memory measured in a child process (ru_maxrss), as the server would pay."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from imagesieve_server.engine.decode import (DecodeError, DecodeLimits, decode_bytes, decode_image,
                                             raster_bytes)

from conftest import cosine, encode, photo_image

MB = 1 << 20


def png_claiming(width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A well-formed PNG header claiming width x height, with almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def old_to_8bit(values: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """The mapping of I;16 / I / F values to 8 bits, in float64 (the
    reference): by the range the maximum says (255, 65535, else the maximum
    itself; a float maximum of at most 1 means 0..1)."""
    arr = np.asarray(values, dtype=np.float64)
    top = arr[np.isfinite(arr)].max(initial=0)
    is_float = np.asarray(values).dtype.kind == "f"
    hi = (65535.0 if sixteen_bit else 1.0 if is_float and top <= 1 else 255.0 if top <= 255
          else 65535.0 if top <= 65535 else top)
    return np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8)


def block_means(arr: np.ndarray, f: int) -> np.ndarray:
    """f x f block means, edge blocks over the pixels they have (Image.reduce's rule)."""
    h, w = arr.shape
    pad = np.full((-(-h // f) * f, -(-w // f) * f), np.nan)
    pad[:h, :w] = arr
    return np.nanmean(pad.reshape(pad.shape[0] // f, f, pad.shape[1] // f, f), axis=(1, 3))


# -- the refusal from the header ---------------------------------------------------

def test_a_side_above_jpegs_limit_is_refused_from_the_header():
    """Pillow keeps a pointer and pays decoder work per row: a 194 KB PNG of
    1 x 100,000,000 (within the 100 MP limit, a 95 MiB raster) took 5 s and
    2 GB to decode. Sides above 65,535 (JPEG's own limit) are refused from
    the header; a strip of 65,535 still decodes."""
    for w, h in ((1, 100_000_000), (2, 50_000_000), (70_000, 1)):
        t = time.perf_counter()
        with pytest.raises(DecodeError, match="a side above the limit of 65535") as e:
            decode_image(png_claiming(w, h, 8, 0), 224)
        assert time.perf_counter() - t < 1
        assert e.value.code == "RESOURCE_EXHAUSTED"
    strip = encode(Image.new("L", (1, 65_535), 128), "PNG")
    assert decode_image(strip, 224).size == (1, 65_535)


def test_raster_above_limit_refused_from_header_before_decoding():
    # 20000x20000 RGBA: 400 MP (let through by a raised pixel limit), a 1.6 GB raster.
    bomb = png_claiming(20000, 20000, 8, 6)
    limits = DecodeLimits(max_pixels=10**9)
    t = time.perf_counter()
    with pytest.raises(DecodeError, match=r"20000x20000 RGBA raster of 1600000000 bytes") as e:
        decode_image(bomb, 256, limits)
    assert time.perf_counter() - t < 1
    assert e.value.code == "RESOURCE_EXHAUSTED"
    assert str(limits.max_raster_bytes) in str(e.value)
    # Under the default pixel limit: a 16-bit 10000x10000 header is a 200 MB raster,
    # refused by a 100 MiB raster limit, before its (absent) pixels are read.
    with pytest.raises(DecodeError, match=r"10000x10000 I;16 raster of 200000000 bytes") as e:
        decode_image(png_claiming(10000, 10000, 16, 0), 256, DecodeLimits(max_raster_bytes=100 * MB))
    assert e.value.code == "RESOURCE_EXHAUSTED"


def test_default_raster_limit_admits_every_mode_at_the_default_pixel_limit():
    limits = DecodeLimits()
    assert limits.max_raster_bytes == 512 * MB
    assert limits.max_pixels * 4 <= limits.max_raster_bytes  # 4 bytes a pixel is the most


def test_jpeg_raster_is_counted_at_its_draft_scale(photos):
    # A 4000x3000 JPEG decodes at 1/8 (500x375) for min_size 256: that raster is
    # what counts, not the 48 MB of a full decode.
    big = encode(photo_image(photos[0][0]).resize((4000, 3000)), "JPEG", quality=90)
    drafted = 500 * 375 * 4
    img = decode_image(big, 256, DecodeLimits(max_raster_bytes=drafted))
    assert img.size == (500, 375) and img.info["original_size"] == (4000, 3000)
    with pytest.raises(DecodeError, match="500x375 RGB") as e:
        decode_image(big, 256, DecodeLimits(max_raster_bytes=drafted - 1))
    assert e.value.code == "RESOURCE_EXHAUSTED"


# -- raster_bytes ------------------------------------------------------------------

def _opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_raster_bytes_per_mode_from_real_headers(photos):
    w, h = 300, 200
    photo = photo_image(photos[1][0]).resize((w, h))
    gray16 = Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257)
    files = {  # file -> (mode Pillow opens it in, bytes a pixel as Pillow stores it)
        "1-bit PNG": (encode(photo.convert("1"), "PNG"), "1", 1),
        "L PNG": (encode(photo.convert("L"), "PNG"), "L", 1),
        "P PNG": (encode(photo.convert("P"), "PNG"), "P", 1),
        "LA PNG": (encode(photo.convert("LA"), "PNG"), "LA", 4),
        "RGB PNG": (encode(photo, "PNG"), "RGB", 4),
        "RGBA PNG": (encode(photo.convert("RGBA"), "PNG"), "RGBA", 4),
        "16-bit PNG": (encode(gray16, "PNG"), "I;16", 2),
        "16-bit TIFF": (encode(gray16, "TIFF"), "I;16", 2),
        "I TIFF": (encode(Image.fromarray(np.asarray(gray16, np.int32)), "TIFF"), "I", 4),
        "F TIFF": (encode(Image.fromarray(np.asarray(gray16, np.float32)), "TIFF"), "F", 4),
        "CMYK JPEG": (encode(photo.convert("CMYK"), "JPEG"), "CMYK", 4),
        "CMYK TIFF": (encode(photo.convert("CMYK"), "TIFF"), "CMYK", 4),
        "L JPEG": (encode(photo.convert("L"), "JPEG"), "L", 1),
        "RGB WEBP": (encode(photo, "WEBP"), "RGB", 4),
    }
    for name, (data, mode, per_pixel) in files.items():
        img = _opened(data)
        assert img.mode == mode, name
        assert raster_bytes(img) == w * h * per_pixel, name
        assert raster_bytes(img, 128) == w * h * per_pixel, name  # too small to draft
        assert img.tile or img.format == "WEBP", name  # header only: nothing decoded (WebP has no tile)
        decode_image(data, 64)  # and every one of them decodes
    # A 16-bit RGB PNG decodes to 8-bit RGB storage: counted as such.
    rgb16 = png_claiming(100, 50, 16, 2)
    assert _opened(rgb16).mode == "RGB" and raster_bytes(_opened(rgb16)) == 100 * 50 * 4


def test_raster_bytes_predicts_the_jpeg_draft_without_applying_it(photos):
    photo = photo_image(photos[2][0])
    for size, min_size in [((4000, 3000), 256), ((1200, 900), 256), ((3001, 777), 100),
                           ((640, 480), 256), ((5000, 4999), 224), ((2000, 2000), 1)]:
        data = encode(photo.resize(size), "JPEG", quality=80)
        img = _opened(data)
        predicted = raster_bytes(img, min_size)
        assert img.size == size and not img.decoderconfig and img.tile  # untouched
        out = decode_image(data, min_size)
        assert predicted == out.size[0] * out.size[1] * 4, (size, min_size)
        assert min(out.size) >= min(min_size, *size)
        # Once drafted, img.size already says it: counted once, not twice.
        img.draft("RGB", (max(1, size[0] * min_size // min(size)),
                          max(1, size[1] * min_size // min(size))))
        if min(size) > 2 * min_size:
            assert raster_bytes(img) == raster_bytes(img, min_size) == predicted


# -- 16-bit and 32-bit images: the same values, without float64 of the image ------

def test_sixteen_bit_gradient_keeps_its_values():
    # Unreduced: every one of the 65536 levels maps exactly as before (v // 257).
    levels = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    for fmt in ("PNG", "TIFF"):
        rgb = np.asarray(decode_image(encode(Image.fromarray(levels), fmt), 256))
        np.testing.assert_array_equal(rgb[..., 0], old_to_8bit(levels, True), err_msg=fmt)
        np.testing.assert_array_equal(rgb[..., 0], levels // 257, err_msg=fmt)
        assert (rgb[..., 0] == rgb[..., 2]).all()
    # Big-endian 16-bit rasters map the same.
    big_endian = Image.frombytes("I;16B", (256, 256), levels.astype(">u2").tobytes())
    from imagesieve_server.engine.decode import to_rgb
    np.testing.assert_array_equal(np.asarray(to_rgb(big_endian))[..., 0], levels // 257)
    # Reduced (shorter side 1500 >= 4 x 64): the same gradient, within one level.
    y, x = np.mgrid[0:1500, 0:2000]
    ramp = (x * 20 + y * 16).astype(np.uint16)   # 0 .. 63964
    img = decode_image(encode(Image.fromarray(ramp), "PNG"), 64)
    f = 1500 // 128
    assert img.info["original_size"] == (2000, 1500)
    assert img.size == (-(-2000 // f), -(-1500 // f)) and min(img.size) >= 128
    full = old_to_8bit(ramp, True).astype(np.float64)   # what the old path produced
    got = np.asarray(img)[..., 0].astype(np.int16)
    assert np.abs(got - block_means(full, f)).max() <= 1
    assert got.min() <= 1 and got.max() >= 247


# -- large PNGs decoded a band at a time ---------------------------------------------

def png_every_filter(pixels: np.ndarray, colour_type: int, bit_depth: int = 8, exif: bytes | None = None,
                     idat_bytes: int = 8192) -> bytes:
    """A PNG written by hand whose rows cycle through all five filter types
    (None, Sub, Up, Average, Paeth), as no one encoder here does; IDAT chunks
    of ``idat_bytes``; an eXIf chunk after the image data when given.
    ``pixels``: (h, w) or (h, w, channels), uint8 or (16-bit) uint16."""
    h, w = pixels.shape[:2]
    raw = pixels.astype(">u2").view(np.uint8) if bit_depth == 16 else pixels.astype(np.uint8)
    rows = raw.reshape(h, -1).astype(np.int32)
    bpp = rows.shape[1] // w
    out = bytearray()
    prior = np.zeros(rows.shape[1], np.int32)
    for y in range(h):
        x = rows[y]
        left = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int32), prior[:-bpp]])
        kind = y % 5
        if kind == 0:
            pred = 0
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = prior
        elif kind == 3:
            pred = (left + prior) // 2
        else:
            p = left + prior - up_left
            pa, pb, pc = np.abs(p - left), np.abs(p - prior), np.abs(p - up_left)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prior, up_left))
        out.append(kind)
        out += ((x - pred) % 256).astype(np.uint8).tobytes()
        prior = x

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    stream = zlib.compress(bytes(out), 6)
    idat = b"".join(chunk(b"IDAT", stream[i:i + idat_bytes]) for i in range(0, len(stream), idat_bytes))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0))
            + idat + (chunk(b"eXIf", exif) if exif else b"") + chunk(b"IEND", b""))


def decoded_whole_then_reduced(data: bytes, min_size: int) -> np.ndarray:
    """What decoding the whole raster gives (the path before bands): Pillow
    decodes it all, then the same integer reduction."""
    from imagesieve_server.engine.decode import _high_depth_to_l, _reduce_factor, to_rgb
    img = Image.open(io.BytesIO(data))
    img.load()
    f = _reduce_factor(*img.size, min_size)
    small = _high_depth_to_l(img, f).convert("RGB") if img.mode.startswith("I;16") else to_rgb(img.reduce(f))
    return np.asarray(small)


def textured(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth waves, hard-edged blocks and noise: rows that need every filter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    waves = np.sin(x / (17.0 + seed)) * 60 + np.cos(y / 29.0) * 50 + 128
    return np.clip(waves + ((x // 83 + y // 57) % 3) * 25 + rng.integers(0, 30, (h, w)), 0, 255).astype(np.uint8)


@pytest.fixture
def bands_for_any_size(monkeypatch):
    """Bands for PNGs of any raster size (from 32 MiB by default), so the
    files compared with a whole decode stay small enough to write by hand."""
    from imagesieve_server.engine import png_bands
    monkeypatch.setattr(png_bands, "MIN_RASTER_BYTES", 0)


@pytest.mark.parametrize("kind", ["L", "LA", "RGB", "RGBA", "I;16", "RGB 16-bit", "RGBA 16-bit"])
def test_large_pngs_decode_in_bands_to_the_pixels_of_a_whole_decode(kind, bands_for_any_size):
    from imagesieve_server.engine.decode import _in_bands
    h, w = 1237, 1811                  # no multiple of the bands or of the reduction
    planes = [textured(h, w, s) for s in range(4)]
    mode, sixteen = kind.split()[0], kind == "I;16" or kind.endswith("16-bit")
    colour_type, channels = {"L": (0, 1), "LA": (4, 2), "RGB": (2, 3), "RGBA": (6, 4), "I;16": (0, 1)}[mode]
    pixels = np.stack(planes[:channels], axis=-1) if channels > 1 else planes[0]
    if mode == "RGBA":
        pixels[..., 3] = np.where(planes[3] > 120, 255, planes[3] // 2)   # opaque, and partly transparent
    if sixteen:        # low bytes that differ from the high ones, so a mixed-up byte shows
        low = np.random.default_rng(9).integers(0, 256, pixels.shape).astype(np.uint16)
        pixels = pixels.astype(np.uint16) * 256 + low
    files = {"every filter": png_every_filter(pixels, colour_type, 16 if sixteen else 8)}
    import cv2
    if mode != "LA":       # and real encoders, with their own filter choices and chunking
        bgr = pixels[..., [2, 1, 0, 3][:channels]] if channels >= 3 else pixels
        files["OpenCV"] = cv2.imencode(".png", bgr)[1].tobytes()
    if not sixteen or mode == "I;16":
        files["Pillow"] = encode(Image.fromarray(pixels), "PNG")
    for name, data in files.items():
        header = Image.open(io.BytesIO(data))
        assert header.mode == mode and _in_bands(header, 64), (name, header.mode)
        got = decode_image(data, 64)
        assert got.info["original_size"] == (w, h)
        np.testing.assert_array_equal(np.asarray(got), decoded_whole_then_reduced(data, 64), err_msg=name)


def test_a_png_in_bands_keeps_an_exif_orientation_written_after_its_pixels(bands_for_any_size):
    ramp = np.tile(np.linspace(0, 255, 1600).astype(np.uint8), (1200, 1))   # dark left, light right
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise
    img = decode_image(png_every_filter(ramp, 0, exif=exif.tobytes()[6:]), 64)
    assert img.size[1] > img.size[0]                                        # portrait now
    col = np.asarray(img)[:, img.size[0] // 2, 0].astype(int)
    assert col[0] <= 2 and col[-1] >= 250 and (np.diff(col) >= 0).all()    # dark at top


def test_a_damaged_png_in_bands_fails_alone(embedder, photos, bands_for_any_size):
    from imagesieve_server.engine.decode import _in_bands
    pixels = np.stack([textured(1400, 1400, s) for s in range(3)], axis=-1)
    good = png_every_filter(pixels, 2)
    assert _in_bands(Image.open(io.BytesIO(good)), 256 // 2)
    truncated = good[: len(good) * 2 // 3]
    bad_filter = bytearray(png_every_filter(pixels, 2, idat_bytes=1 << 30))
    # An unknown filter type (7) on some row: inflate, alter, deflate again.
    start = bad_filter.index(b"IDAT") + 4
    length = struct.unpack(">I", bad_filter[start - 8:start - 4])[0]
    rows = bytearray(zlib.decompress(bytes(bad_filter[start:start + length])))
    rows[900 * (1 + 1400 * 3)] = 7
    body = zlib.compress(bytes(rows))
    bad_filter = (bad_filter[:start - 8] + struct.pack(">I", len(body)) + b"IDAT" + body
                  + struct.pack(">I", zlib.crc32(b"IDAT" + body)) + bad_filter[start + length + 4:])
    garbage = good[:good.index(b"IDAT") + 4 + 100] + bytes(range(256)) * 40 + good[-12:]
    for data, why in ((truncated, "truncated"), (bytes(bad_filter), "damaged"), (garbage, "damaged")):
        with pytest.raises(DecodeError, match=why):
            decode_image(data, 128)
    out = embedder.embed_all([photos[0][0], truncated, good, bytes(bad_filter), photos[1][0]])
    assert [o.ok for o in out] == [True, False, True, False, True]
    assert out[2].width == 1400 and "truncated" in str(out[1].error)


def _rechunked(data: bytes, sizes) -> bytes:
    """``data`` (a PNG of one IDAT run) with its compressed stream re-cut into
    IDAT chunks of ``sizes`` (cycled; 0 = an empty chunk)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    first = data.index(b"IDAT") - 4
    pos, stream = first, b""
    while data[pos + 4:pos + 8] == b"IDAT":
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        stream += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    parts, at, k = [], 0, 0
    while at < len(stream):
        n = sizes[k % len(sizes)]
        parts.append(chunk(b"IDAT", stream[at:at + n]))
        at, k = at + n, k + 1
    return data[:first] + b"".join(parts) + data[pos:]


def test_a_png_in_bands_reads_its_data_however_it_is_chunked(bands_for_any_size):
    # Empty chunks, the zlib header alone, one-byte chunks: all legal, all
    # decoded whole by Pillow (a review found them refused as truncated).
    pixels = np.stack([textured(700, 600, s) for s in range(3)], axis=-1)
    data = png_every_filter(pixels, 2)
    reference = decoded_whole_then_reduced(data, 64)
    for sizes in ([0, 5000], [2, 0, 0, 70000], [1, 60], [1 << 30]):
        layout = _rechunked(data, sizes)
        np.testing.assert_array_equal(np.asarray(decode_image(layout, 64)), reference, err_msg=str(sizes[:4]))


def test_a_png_in_bands_ending_short_of_its_rows_is_refused(bands_for_any_size):
    # Pillow fills the rows a cleanly ended stream lacks with black; in bands
    # such a file is an error for that image, naming where its data ends.
    data = bytearray(png_every_filter(textured(599, 700, 1), 0))     # 599 rows...
    data[20:24] = struct.pack(">I", 600)                               # ...said to be 600
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    with pytest.raises(DecodeError, match="ends at row 599 of 600"):
        decode_image(bytes(data), 64)


def test_a_png_in_bands_turns_as_a_whole_decode_would(bands_for_any_size):
    # The last eXIf wins (Pillow reads the ones after the pixels last); an
    # orientation stored as text is no orientation to Pillow.
    ramp = np.tile(np.linspace(0, 255, 1600).astype(np.uint8), (1200, 1))

    def exif(value) -> bytes:
        """A big-endian TIFF header and one IFD entry: the orientation, as a
        SHORT, or as ASCII when ``value`` is a string."""
        kind, count, field = ((3, 1, struct.pack(">HH", value, 0)) if isinstance(value, int)
                              else (2, 2, value.encode() + b"\0\0"))
        return b"MM\0*" + struct.pack(">IHHHI", 8, 1, 0x0112, kind, count) + field + struct.pack(">I", 0)
    data = png_every_filter(ramp, 0, exif=exif(6))
    later = struct.pack(">I", len(exif(3))) + b"eXIf" + exif(3) + struct.pack(">I", zlib.crc32(b"eXIf" + exif(3)))
    last_wins = data[:-12] + later + data[-12:]
    for layout, turned in ((data, True), (last_wins, False),
                           (png_every_filter(ramp, 0, exif=exif("6")), False)):
        img = decode_image(layout, 64)
        whole = Image.open(io.BytesIO(layout))
        whole.load()
        assert (img.size[1] > img.size[0]) == turned
        assert whole.getexif().get(0x0112) in ((6,) if turned else (3, "6"))


def test_one_large_image_data_chunk_costs_no_more_than_its_band(tmp_path):
    # Real encoders often write one IDAT. Inflating it with max_length copied
    # its unread rest for every band: a 62 MB chunk took 10 s and 124 MiB.
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (3000, 4000, 4), dtype=np.uint8)      # 48 MB RGBA, barely compressible
    path = tmp_path / "one_chunk.png"
    path.write_bytes(png_every_filter(pixels, 6, idat_bytes=1 << 30))
    r = measure_decode(path, 256)
    assert r["raster"] >= 32 * MB and r["size"] == [-(-4000 // 5), -(-3000 // 5)]      # in bands
    assert r["growth"] <= r["estimate"], (r["growth"] / MB, r["estimate"] / MB)


def interlaced_png(gray: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit gray PNG written by hand (Pillow writes none)."""
    h, w = gray.shape
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    raw = b"".join(b"\0" + row.tobytes() for x0, y0, dx, dy in passes for row in gray[y0::dy, x0::dx]
                   if row.size)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 1))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_pngs_bands_do_not_cover_decode_whole_as_before(bands_for_any_size):
    # Interlaced, a colour key, a palette: the whole-image path, its pixels as ever.
    from imagesieve_server.engine.decode import _in_bands, to_rgb
    g = textured(1100, 1300, 3)
    files = {"interlaced": interlaced_png(g)}
    for name, img, kwargs in (("colour key", Image.fromarray(g), {"transparency": 17}),
                              ("palette", Image.fromarray(g).convert("P"), {})):
        files[name] = encode(img, "PNG", **kwargs)
    for name, data in files.items():
        header = Image.open(io.BytesIO(data))
        assert not _in_bands(header, 64), name
        whole = Image.open(io.BytesIO(data))
        whole.load()
        np.testing.assert_array_equal(np.asarray(decode_image(data, 64)), np.asarray(to_rgb(whole)), err_msg=name)
    np.testing.assert_array_equal(np.asarray(decode_image(files["interlaced"], 64))[..., 0], g)


def test_int_and_float_modes_map_by_their_range(tmp_path):
    """Each range keeps its picture: a float TIFF of 0..1 came out black and
    a 32-bit one of values up to 65,535,000 white (a probe found both
    decoding silently as blank images, paired as duplicates of anything blank)."""
    rng = np.random.default_rng(4)
    cases = {
        "I <= 255": rng.integers(0, 256, (120, 160)).astype(np.int32),
        "I negatives, <= 255": rng.integers(-300, 256, (120, 160)).astype(np.int32),
        "I 16-bit range": rng.integers(0, 65536, (120, 160)).astype(np.int32),
        "I beyond 16 bits": rng.integers(-5000, 200000, (120, 160)).astype(np.int32),
        "I up to 65,535,000": rng.integers(0, 65_535_001, (120, 160)).astype(np.int32),
        "F <= 255": rng.uniform(0, 255, (120, 160)).astype(np.float32),
        "F 0..1": rng.uniform(0, 1, (120, 160)).astype(np.float32),
        "F negatives, > 255": rng.uniform(-100, 90000, (120, 160)).astype(np.float32),
        "F 0..1 with inf and NaN": np.where(rng.random((120, 160)) < 0.01, np.inf,
                                            rng.uniform(0, 1, (120, 160))).astype(np.float32),
    }
    cases["F 0..1 with inf and NaN"][0, :5] = np.nan
    for name, arr in cases.items():
        data = encode(Image.fromarray(arr), "TIFF")
        assert _opened(data).mode == ("F" if arr.dtype == np.float32 else "I"), name
        grey = np.asarray(decode_image(data, 32))[..., 0].astype(int)
        ref = old_to_8bit(np.nan_to_num(arr, nan=0.0, posinf=np.inf), False).astype(int)
        # Integer arithmetic beyond 16 bits may floor one level below float64's.
        assert np.abs(grey - ref).max() <= (1 if name.startswith("I beyond") or "65,535,000" in name else 0), name
        finite = np.isfinite(arr)
        assert grey[finite].std() > 40, name          # a picture, not a blank
    # Values <= 255 are the 8-bit levels themselves.
    levels = np.arange(256, dtype=np.int32).reshape(16, 16)
    for arr in (levels, levels.astype(np.float32)):
        np.testing.assert_array_equal(np.asarray(decode_image(encode(Image.fromarray(arr), "TIFF"), 8))[..., 0],
                                      levels)
    # Reduced I and F: block means of the clipped values, mapped the same way.
    arr = rng.integers(0, 256, (1100, 1300)).astype(np.int32)
    for a in (arr, (arr * 250).astype(np.int32), arr.astype(np.float32) / 4):
        img = decode_image(encode(Image.fromarray(a), "TIFF"), 100)   # factor 1100 // 200 = 5
        assert img.size == (260, 220) and img.info["original_size"] == (1300, 1100)
        ref = block_means(old_to_8bit(a, False).astype(np.float64), 5)
        assert np.abs(np.asarray(img)[..., 0] - ref).max() <= 1.01


def test_reduced_sixteen_bit_image_keeps_exif_orientation():
    ramp = np.tile(np.linspace(0, 65535, 1600).astype(np.uint16), (1200, 1))  # dark left, light right
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise
    img = decode_image(encode(Image.fromarray(ramp), "PNG", exif=exif.tobytes()), 64)
    assert img.info["original_size"] == (1600, 1200)
    f = 1200 // 128
    assert img.size == (-(-1200 // f), -(-1600 // f))   # portrait now
    col = np.asarray(img)[:, img.size[0] // 2, 0].astype(int)
    assert col[0] <= 2 and col[-1] >= 250 and (np.diff(col) >= 0).all()  # dark at top


def test_large_sixteen_bit_photo_embeds_as_its_eight_bit_self(embedder, photos):
    # The reduction must not change what the model sees beyond noise.
    photo = photo_image(photos[7][0]).convert("L").resize((2400, 1800), Image.BICUBIC)
    eight = encode(photo, "PNG")
    sixteen = encode(Image.fromarray(np.asarray(photo, np.uint16) * 257), "PNG")
    a, b = embedder.embed_all([eight, sixteen])
    assert (b.width, b.height) == (2400, 1800)
    assert cosine(a.vector, b.vector) > 0.99


# -- peak memory, measured in a child process -------------------------------------

_MEASURE = textwrap.dedent("""
    import io, json, resource, sys, time
    import numpy as np
    from PIL import Image
    from imagesieve_server.engine.decode import decode_bytes, decode_image, raster_bytes
    data = open(sys.argv[1], "rb").read()
    min_size = int(sys.argv[2])
    header = Image.open(io.BytesIO(data))
    estimate, raster = decode_bytes(header, min_size), raster_bytes(header, min_size)
    del header
    def high_water():
        # VmHWM, reset below: ru_maxrss would start at the parent's size at
        # fork (Linux keeps it across exec) and hide any smaller peak.
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) * 1024
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * resource.getpagesize()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    t = time.perf_counter()
    img = decode_image(data, min_size)
    seconds = time.perf_counter() - t
    growth = high_water() - before
    print(json.dumps({"growth": growth, "seconds": seconds, "size": img.size, "estimate": estimate,
                      "raster": raster, "original_size": img.info["original_size"],
                      "pixels": np.asarray(img)[..., 0].tolist() if max(img.size) <= 1000 else None}))
""")


def measure_decode(path, min_size: int = 256) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(min_size)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def huge_sixteen_bit_png(tmp_path_factory):
    """A real 10000x10000 16-bit grayscale PNG (100 MP, under the pixel limit):
    a diagonal gradient, which PNG's filters compress to a few hundred KB."""
    n = 10000
    axis = np.arange(n, dtype=np.uint16) * 3
    ramp = axis[None, :] + axis[:, None]        # 0 .. 59994
    path = tmp_path_factory.mktemp("huge") / "gradient16.png"
    Image.fromarray(ramp).save(path, "PNG")
    return path


def test_huge_sixteen_bit_png_decodes_in_bounded_memory(huge_sixteen_bit_png):
    assert huge_sixteen_bit_png.stat().st_size < 2 * MB
    r = measure_decode(huge_sixteen_bit_png, 256)
    # Decoded a band at a time: not even the 200 MB raster (the float64 path
    # peaked at ~2.5-2.7 GB, the whole raster reduced with integers ~220 MB).
    assert r["raster"] == 10000 * 10000 * 2
    assert r["growth"] < 48 * MB, r["growth"] / MB
    assert r["growth"] <= r["estimate"], (r["growth"] / MB, r["estimate"] / MB)
    assert r["seconds"] < 30  # loose: was ~5-15 s, now well under a second here; bench/ times it
    assert r["original_size"] == [10000, 10000]
    f = 10000 // 512
    assert r["size"] == [-(-10000 // f)] * 2 and min(r["size"]) >= 256
    # Still the gradient: each output pixel is its block's mean level, within one.
    got = np.asarray(r["pixels"], np.float64)
    centres = (np.arange(len(got)) * f + (np.minimum(f, 10000 - np.arange(len(got)) * f) - 1) / 2) * 3
    expected = (centres[None, :] + centres[:, None]) / 257
    assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize("mode", ["RGBA", "P+tRNS", "L", "F"])
def test_peak_memory_stays_within_decode_bytes(tmp_path, mode):
    # 5000x5000 real files; RGBA used to take ~5 rasters (copies and full-size
    # composites), now the raster and the RGB output.
    n = 5000
    axis = np.arange(n, dtype=np.uint32)
    grad = ((axis[None, :] + axis[:, None]) % 256).astype(np.uint8)
    path = tmp_path / "big.tif" if mode == "F" else tmp_path / "big.png"
    if mode == "RGBA":
        img = Image.merge("RGBA", [Image.fromarray(grad)] * 3 + [Image.fromarray(255 - grad)])
        img.save(path)
    elif mode == "P+tRNS":
        Image.fromarray(grad).convert("P").save(path, transparency=bytes(range(256)))
    elif mode == "L":
        Image.fromarray(grad).save(path)
    else:
        Image.fromarray(grad.astype(np.float32) * 100).save(path, compression="tiff_adobe_deflate")
    r = measure_decode(path, 256)
    assert r["growth"] <= r["estimate"], (mode, r["growth"] / MB, r["estimate"] / MB)
    if mode == "RGBA":     # decoded a band at a time: far under its 100 MB raster
        assert r["growth"] < 0.3 * r["raster"], r["growth"] / r["raster"]
    if mode == "F":
        assert r["growth"] < 1.3 * r["raster"], r["growth"] / r["raster"]


def test_decode_bytes_is_header_only():
    img = _opened(png_claiming(9000, 7000, 16, 0))
    # Decoded whole (no reduction asked for): the raster and more.
    assert decode_bytes(img) >= raster_bytes(img, 256) == 9000 * 7000 * 2
    # Reduced, it is decoded a band at a time: its output and one band's working memory.
    from imagesieve_server.engine import png_bands
    f = 7000 // 512
    assert decode_bytes(img, 256) == -(-9000 // f) * -(-7000 // f) * 9 + png_bands.WORKING_BYTES
    assert img.tile  # nothing decoded


def _ico_holding(png: bytes) -> bytes:
    """An ICO whose one directory entry says 16x16 but holds ``png``."""
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + png


def test_an_icon_cannot_hide_a_huge_picture():
    """Pillow decodes an ICO's picture while opening it, before any size is
    known: a 16x16 entry holding a 20000x20000 PNG is refused from the PNG's
    own header, in milliseconds; a real icon still decodes."""
    big = Image.new("L", (20000, 20000))
    buf = io.BytesIO()
    big.save(buf, "PNG")
    bomb = _ico_holding(buf.getvalue())
    assert len(bomb) < 2 << 20
    t = time.perf_counter()
    with pytest.raises(DecodeError) as e:
        decode_image(bomb, 224)
    assert e.value.code == "RESOURCE_EXHAUSTED" and "20000x20000" in str(e.value)
    assert time.perf_counter() - t < 1.0
    small = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8))
    assert decode_image(_ico_holding(encode(small, "PNG")), 16).size == (32, 32)


def test_formats_outside_the_list_are_refused():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(DecodeError) as e:
        decode_image(eps, 224)
    assert e.value.code == "INVALID_ARGUMENT" and "accepted: JPEG" in str(e.value)


def test_decoder_buffers_are_charged(photos):
    """A progressive JPEG keeps every DCT coefficient until its last scan
    (draft scaling does not shrink that); WebP's decoder holds full-size
    buffers: what the budget is charged includes them."""
    big = photo_image(photos[0][0]).resize((4000, 3000))
    base = Image.open(io.BytesIO(encode(big, "JPEG", quality=90)))
    prog = Image.open(io.BytesIO(encode(big, "JPEG", quality=90, progressive=True)))
    assert decode_bytes(prog, 224) - decode_bytes(base, 224) == 2 * 4000 * 3000 * 3
    webp = Image.open(io.BytesIO(encode(big.resize((1000, 750)), "WEBP")))
    assert decode_bytes(webp, 224) >= 16 * 1000 * 750


def progressive_jpeg_of_empty_scans(width: int, height: int, scans: int) -> bytes:
    """A valid progressive grayscale JPEG: a DC scan, then ``scans`` AC scans
    that are each a few end-of-band runs (~90 bytes) covering every block."""
    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload

    def bits(values) -> bytes:        # (value, nbits) MSB first, 1-padded, 0xFF stuffed
        acc = "".join(format(v, f"0{n}b") for v, n in values)
        acc += "1" * (-len(acc) % 8)
        out = bytearray()
        for i in range(0, len(acc), 8):
            out.append(int(acc[i:i + 8], 2))
            if out[-1] == 0xFF:
                out.append(0)
        return bytes(out)

    blocks = -(-width // 8) * -(-height // 8)
    out = bytearray(b"\xff\xd8")
    out += segment(0xDB, b"\x00" + bytes([1] * 64))
    out += segment(0xC2, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    out += segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")      # DC: one symbol, code "0"
    out += segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\xe0")      # AC: EOB14, code "0"
    out += segment(0xDA, b"\x01\x01\x00\x00\x00\x00") + bits([(0, 1)] * blocks)
    runs, left = [], blocks
    while left > 0:
        run = min(left, 32767)
        runs += [(0, 1), (max(run, 16384) - 16384, 14)]
        left -= max(run, 16384)
    out += (segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + bits(runs)) * scans
    return bytes(out + b"\xff\xd9")


def test_progressive_jpeg_with_too_many_scans_is_refused_from_its_markers():
    """Each scan of a progressive JPEG is a pass over every block, draft or
    not: a 0.4 MB file of 1,500 near-empty scans at 10000x10000 held a decode
    thread for a minute (cancelling the call could not stop it). Scans are
    now counted from the markers first; encoders write 6-10."""
    attack = progressive_jpeg_of_empty_scans(4000, 4000, 400)
    few = progressive_jpeg_of_empty_scans(4000, 4000, 5)
    assert decode_image(few, 224).size == (500, 500)         # valid, and decoded
    t = time.perf_counter()
    with pytest.raises(DecodeError) as e:
        decode_image(attack, 224)
    assert time.perf_counter() - t < 0.5
    assert e.value.code == "RESOURCE_EXHAUSTED" and "scans" in str(e.value)
    # At 10000x10000 the bound is lower (scans x pixels).
    with pytest.raises(DecodeError, match="above the limit of 25"):
        decode_image(progressive_jpeg_of_empty_scans(10000, 10000, 30), 224)
    # Thousands of empty segments between the scans cost seconds to walk
    # byte by byte; no encoder writes them.
    comments = few[:-2] + b"\xff\xfe\x00\x02" * 200_000 + few[-2:]
    t = time.perf_counter()
    with pytest.raises(DecodeError):
        decode_image(comments, 224)
    assert time.perf_counter() - t < 0.5


def sequential_jpeg_of_scans(width: int, height: int, scans: int) -> bytes:
    """A baseline (sequential, SOF0) JPEG whose three components are sent in
    separate scans, ``scans`` of them in turn, each empty (libjpeg fills
    the blocks it lacks)."""
    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload

    out = b"\xff\xd8" + segment(0xDB, b"\x00" + b"\x01" * 64)
    out += segment(0xC0, struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([i + 1, 0x11, 0]) for i in range(3)))
    out += segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00" + b"\x10" + bytes([1] + [0] * 15) + b"\x00")
    for s in range(scans):
        out += segment(0xDA, bytes([1, s % 3 + 1, 0x00, 0, 63, 0]))
    return out + b"\xff\xd9"


def test_sequential_jpegs_of_many_scans_are_bounded_like_progressive_ones():
    """Only progressive JPEGs had their scans counted and their coefficient
    buffer charged, yet a sequential JPEG may split its components over
    scans too (an attack: a 60 KB baseline file of 6,000 empty scans held a
    server's decode thread for 83 s; a 162-byte one of 3 scans at
    10000x10000 took 579 MiB that the budget was charged 47 MiB for)."""
    t = time.perf_counter()
    with pytest.raises(DecodeError, match="JPEG with over 100 scans") as e:
        decode_image(sequential_jpeg_of_scans(10000, 10000, 6000), 224)
    assert time.perf_counter() - t < 0.5 and e.value.code == "RESOURCE_EXHAUSTED"
    # Three scans, one a component, is a legal layout: decoded, and charged
    # the whole image's coefficients (2 bytes each), whatever the draft.
    charged = []
    img = decode_image(sequential_jpeg_of_scans(4000, 4000, 3), 224, on_header=lambda h: charged.append(
        decode_bytes(h, 224)))
    assert img.size == (500, 500)
    # An ordinary baseline JPEG (one interleaved scan) is charged as before: its draft's raster.
    one = io.BytesIO()
    Image.new("RGB", (4000, 4000), (90, 120, 30)).save(one, "JPEG")
    decode_image(one.getvalue(), 224, on_header=lambda h: charged.append(decode_bytes(h, 224)))
    assert charged[0] - charged[1] == 2 * 4000 * 4000 * 3


def test_ordinary_progressive_jpegs_decode_and_embedded_markers_do_not_count(photos):
    from imagesieve_server.engine.decode import jpeg_scans
    im = photo_image(photos[0][0])
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, progressive=True, optimize=True)
    data = buf.getvalue()
    assert 6 <= jpeg_scans(data) <= 12
    # 150 start-of-scan byte pairs inside an application segment (as in an
    # EXIF thumbnail or an ICC profile) are not scans of this image.
    padded = data[:2] + struct.pack(">BBH", 0xFF, 0xEF, 2 + 600) + b"\xff\xda\x00\x04" * 150 + data[2:]
    assert jpeg_scans(padded) == jpeg_scans(data)
    assert decode_image(padded, 224).size == decode_image(data, 224).size


def test_jpeg2000_decodes_only_the_resolutions_it_needs():
    """OpenJPEG decoded every file at full size: a 5 KB 10000x10000 file took
    ~5-8 s and ~2 GB. It now drops the resolution levels the model does not
    need (as JPEG's draft scaling does), and the memory charged follows."""
    rng = np.random.default_rng(0)
    small = Image.fromarray((rng.random((75, 75, 3)) * 255).astype(np.uint8)).resize((6000, 6000), Image.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, "JPEG2000", quality_mode="rates", quality_layers=[200], irreversible=True)
    data = buf.getvalue()
    t = time.perf_counter()
    out = decode_image(data, 224)
    took = time.perf_counter() - t
    assert min(out.size) >= 224 and max(out.size) < 6000 // 8 and out.info["original_size"] == (6000, 6000)
    assert took < 2.0, took
    opened = Image.open(io.BytesIO(data))
    assert decode_bytes(opened, 224) < 64 << 20                    # charged at the reduced size
    # Sides that are not multiples of the reduction: Pillow rounds the reduced
    # size half up, OpenJPEG up; a reduction where they differ is not asked for.
    for w, h in ((1001, 1001), (4000, 3001), (1025, 768)):
        odd = io.BytesIO()
        small.resize((w, h)).save(odd, "JPEG2000")
        got = decode_image(odd.getvalue(), 224)
        assert min(got.size) >= 224 and got.info["original_size"] == (w, h)
    # The same picture as a full decode, reduced.
    full = np.asarray(Image.open(io.BytesIO(data)).convert("L").resize(out.size, Image.BOX), np.float32)
    reduced = np.asarray(out.convert("L"), np.float32)
    assert np.corrcoef(full.ravel(), reduced.ravel())[0, 1] > 0.95


# -- what Pillow would pay for while opening (engine/preflight.py) --------------------

def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _rle8_bmp(w: int, h: int, rows: bytes) -> bytes:
    palette = b"".join(bytes((i, 255 - i, i // 2, 0)) for i in range(256))
    start = 14 + 40 + len(palette)
    return (b"BM" + struct.pack("<IHHI", start + len(rows), 0, 0, start)
            + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(rows), 2835, 2835, 256, 0) + palette + rows)


def _rle8_rows(w: int, h: int) -> bytes:
    """Rows of runs of 16 pixels, as an encoder writes them."""
    row = b"".join(bytes((min(16, w - x), (x // 16) % 256)) for x in range(0, w, 16))
    return (row + b"\x00\x00") * h + b"\x00\x01"


def _ico_holding_bitmap(w: int, h: int) -> bytes:
    """A 16x16 directory entry whose bitmap says w x h (RLE8, a few delta codes fill it)."""
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    codes = b"\x00\x02\x00\xff" * (h // 255 + 1) + b"\x00\x01"
    dib = struct.pack("<IiiHHIIiiII", 40, w, 2 * h, 1, 8, 1, len(codes), 0, 0, 256, 0) + palette + codes
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 8, len(dib), 22) + dib


def _tiff_gray(w: int, h: int, rows_per_strip: int = 0, tile: int = 0, decoys: int = 0,
               then_tile: int = 0) -> bytes:
    """An uncompressed 8-bit gray TIFF of a gradient: strips of ``rows_per_strip``
    rows (each its own StripOffsets entry), or one ``tile`` x ``tile`` tile
    (``then_tile``: its sides given a second time, smaller: Pillow keeps the
    first); ``decoys`` ignored entries (an unknown type) before the real ones."""
    pixels = bytes((x + y) % 256 for y in range(h) for x in range(w))
    def tag(t, c, v, ty=4):
        return struct.pack("<HHII", t, ty, c, v)
    first = [struct.pack("<HHI4s", 65000, 99, 1, b"\0" * 4)] * decoys
    if tile:
        body = b"\x00" * min(tile * tile, 1 << 16)      # a bomb need not carry its tile
        sides = [tag(322, 1, tile), tag(322, 1, then_tile), tag(323, 1, tile), tag(323, 1, then_tile)] \
            if then_tile else [tag(322, 1, tile), tag(323, 1, tile)]
        n = decoys + 7 + len(sides)
        data_at = 8 + 2 + 12 * n + 4
        tags = first + [tag(256, 1, w), tag(257, 1, h), tag(258, 1, 8, 3), tag(259, 1, 1, 3), tag(262, 1, 1, 3),
                        *sides, tag(324, 1, data_at), tag(325, 1, len(body))]
        return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", n) + b"".join(tags) + b"\0\0\0\0" + body
    rps = rows_per_strip or h
    strips = -(-h // rps)
    n = decoys + 8
    pix_at = 8 + 2 + 12 * n + 4
    offs_at = pix_at + len(pixels)
    offs = struct.pack(f"<{strips}I", *[pix_at + s * rps * w for s in range(strips)])
    counts = struct.pack(f"<{strips}I", *[min(rps, h - s * rps) * w for s in range(strips)])
    one = strips == 1                   # a single value is stored in its entry, not pointed to
    tags = first + [tag(256, 1, w), tag(257, 1, h), tag(258, 1, 8, 3), tag(259, 1, 1, 3), tag(262, 1, 1, 3),
            tag(273, strips, pix_at if one else offs_at), tag(278, 1, rps),
            tag(279, strips, h * w if one else offs_at + len(offs))]
    return (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", n) + b"".join(tags) + b"\0\0\0\0"
            + pixels + offs + counts)


def _tiff_with_numbers(tag_id: int, kind: int, count: int) -> bytes:
    """An 8x8 gray TIFF of one strip with one more tag, ``tag_id``, holding
    ``count`` numbers of TIFF type ``kind`` (3 SHORT, 5 RATIONAL, 12 DOUBLE)."""
    pixels = bytes(range(64))
    n = 9
    pix_at = 8 + 2 + 12 * n + 4
    def tag(t, c, v, ty=4):
        return struct.pack("<HHII", t, ty, c, v)
    entries = {256: tag(256, 1, 8), 257: tag(257, 1, 8), 258: tag(258, 1, 8, 3), 259: tag(259, 1, 1, 3),
               262: tag(262, 1, 1, 3), 273: tag(273, 1, pix_at), 278: tag(278, 1, 8), 279: tag(279, 1, 64)}
    values = (struct.pack("<II", 72, 1) * count if kind == 5 else struct.pack("<d", 1.5) * count if kind == 12
              else struct.pack("<H", 1) * count)
    entries[tag_id] = tag(tag_id, count, pix_at + len(pixels), kind) if len(values) > 4 else \
        struct.pack("<HHI", tag_id, kind, count) + values.ljust(4, b"\0")
    return (b"II*\x00" + struct.pack("<IH", 8, n) + b"".join(entries[t] for t in sorted(entries)) + b"\0\0\0\0"
            + pixels + values)


def _exif_of(entries: list[bytes], data: bytes = b"") -> bytes:
    """An EXIF block (big-endian, after ``Exif\\0\\0``) whose first directory holds ``entries``."""
    return b"MM\x00*" + struct.pack(">IH", 8, len(entries)) + b"".join(entries) + b"\0\0\0\0" + data


def _avif_orientation_of_fractions(count: int) -> bytes:
    """A 64x64 AVIF whose EXIF Orientation holds ``count`` fractions
    (written as an unknown tag, which Pillow's encoder does not read, then
    renamed in the file)."""
    decoy = struct.pack(">HHII", 0x9999, 7, 8 * count, 26)
    exif = b"Exif\0\0" + _exif_of([decoy], struct.pack(">II", 6, 1) * count)
    data = encode(Image.new("RGB", (64, 64), (10, 200, 30)), "AVIF", exif=exif)
    assert data.count(decoy) == 1
    return data.replace(decoy, struct.pack(">HHII", 0x0112, 5, count, 26))


def _png_with(chunks: list[bytes], size: int = 8, after: list[bytes] = ()) -> bytes:
    """A gray PNG with ``chunks`` before its pixels and ``after`` after them."""
    img = encode(Image.fromarray(np.arange(size * size, dtype=np.uint8).reshape(size, size)), "PNG")
    return img[:33] + b"".join(chunks) + img[33:-12] + b"".join(after) + img[-12:]   # IHDR first, IEND last


def _ico_of(entries: list[bytes]) -> bytes:
    """An ICO of bitmap (DIB) entries, each said to be 16x16 in the directory."""
    start = 6 + 16 * len(entries)
    directory, at = b"", start
    for e in entries:
        directory += struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 8, len(e), at)
        at += len(e)
    return struct.pack("<HHH", 0, 1, len(entries)) + directory + b"".join(entries)


def _plain_dib(side: int = 16) -> bytes:
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    return (struct.pack("<IiiHHIIiiII", 40, side, 2 * side, 1, 8, 0, side * side, 0, 0, 256, 0) + palette
            + bytes(range(side)) * side + b"\0" * (side * side // 8))


def _dds_masked(w: int, h: int) -> bytes:
    """Uncompressed DDS, 8 bits a pixel with R/G/B bit masks (Pillow decodes it in Python)."""
    hdr = bytearray(124)
    struct.pack_into("<7I", hdr, 0, 124, 0x1007, h, w, w, 0, 0)
    struct.pack_into("<4I", hdr, 72, 32, 0x40, 0, 8)
    struct.pack_into("<4I", hdr, 88, 0xE0, 0x1C, 0x03, 0)
    struct.pack_into("<I", hdr, 104, 0x1000)
    return b"DDS " + bytes(hdr) + bytes((x * 7) % 256 for x in range(w * h))


def _psd(side: int, resources: int) -> bytes:
    """A gray 8-bit Photoshop file of ``resources`` empty image resources, raw pixels."""
    block = b"8BIM" + struct.pack(">H", 1000) + b"\0\0" + struct.pack(">I", 0)
    res = block * resources
    return (b"8BPS" + struct.pack(">H6sHIIHH", 1, b"", 1, side, side, 8, 1) + struct.pack(">I", 0)
            + struct.pack(">I", len(res)) + res + struct.pack(">I", 0) + struct.pack(">H", 0)
            + bytes((x + y) % 256 for y in range(side) for x in range(side)))


def _gif_with(extensions: bytes) -> bytes:
    """A 32x32 gradient GIF with ``extensions`` before its first frame."""
    buf = io.BytesIO()
    Image.fromarray(np.add.outer(np.arange(32), np.arange(32)).astype(np.uint8) * 4).save(buf, "GIF")
    gif = buf.getvalue()
    at = 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)
    return gif[:at] + extensions + gif[at:]


def _jp2_with(boxes: bytes, inside_header: bytes = b"") -> bytes:
    """A 32x32 gradient JP2 with ``boxes`` after its file-type box and
    ``inside_header`` boxes at the end of its header superbox."""
    buf = io.BytesIO()
    Image.fromarray(np.add.outer(np.arange(32), np.arange(32)).astype(np.uint8) * 4).convert("RGB").save(
        buf, "JPEG2000", no_jp2=False)
    jp2 = buf.getvalue()
    at = 12 + struct.unpack(">I", jp2[12:16])[0]                  # signature, file type
    size = struct.unpack(">I", jp2[at:at + 4])[0]
    assert jp2[at + 4:at + 8] == b"jp2h"
    header = struct.pack(">I", size + len(inside_header)) + jp2[at + 4:at + size] + inside_header
    return jp2[:at] + boxes + header + jp2[at + size:]


BOMBS = {
    # a 5 KB bitmap whose rows end after one pixel: Pillow pads each row a byte at a time (~30 s)
    "RLE bitmap rows ended early": (_rle8_bmp(100_000, 1000, b"\x01\x05\x00\x00" * 1000 + b"\x00\x01"),
                                    "decoder runs in Python (bmp_rle)"),
    "icon holding a huge bitmap": (_ico_holding_bitmap(16000, 16000), "16000x16000"),
    "icon holding an RLE bitmap": (_ico_holding_bitmap(3000, 3000), "RLE8 bitmap of 3000x3000"),
    "TIFF of 100,000 strips": (_tiff_gray(1, 100_000, rows_per_strip=1), "100000 strips"),
    "TIFF tile far beyond its image": (_tiff_gray(8, 8, tile=8192), "8192x8192 tiles"),
    "PNG of 100 ICC profiles": (_png_with([_png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * 1000))] * 100),
                                "compressed metadata chunks"),
    "PNG of 2,000 empty chunks": (_png_with([_png_chunk(b"prVt", b"")] * 2000), "chunks besides its pixel data"),
    "JPEG of 1 MB fill bytes": (b"\xff\xd8" + b"\xff" * (1 << 20), "padding"),
    "JPEG of 1 MB junk": (b"\xff\xd8" + b"\x00" * (1 << 20), "padding"),
    "QOI of 2 MB": (b"qoif" + struct.pack(">IIBB", 2000, 1000, 3, 0) + b"\x00" * (2 << 20) + b"\0" * 7 + b"\1",
                    "decoder runs in Python (qoi)"),
    # ways past the first checks, found by a fifth probe
    "the RLE bitmap without its file header": (_rle8_bmp(100_000, 1000, b"\x01\x05\x00\x00" * 1000
                                                         + b"\x00\x01")[14:], "decoder runs in Python (bmp_rle)"),
    "TIFF strips behind 1,100 ignored entries": (_tiff_gray(1, 2000, rows_per_strip=1, decoys=1100), "1108 entries"),
    "TIFF tile sides given twice, large first": (_tiff_gray(8, 8, tile=12000, then_tile=16), "12000x12000 tiles"),
    "PNG of 100 ICC profiles after its pixels": (_png_with([], after=[_png_chunk(b"iCCP", b"icc\0\0" +
                                                                                  zlib.compress(b"\0" * 1000))] * 100),
                                                 "compressed metadata chunks"),
    "icon's 301st entry a huge bitmap": (_ico_of([_plain_dib()] * 300 + [_ico_holding_bitmap(16000, 16000)[22:]]),
                                         "icon entry 300 is a 16000x16000"),
    "DDS of colour masks, 1000x1000": (_dds_masked(1000, 1000), "decoder runs in Python (dds_rgb)"),
    "PGM of maxval 254, 1000x1000": (b"P5\n1000 1000\n254\n" + b"\x10" * 1_000_000, "decoder runs in Python (ppm)"),
    "Photoshop file of 2,000 resources": (_psd(8, 2000), "image resources"),
    # a sixth probe: 840,000 one-byte comments before the first frame, 4 MB, held a thread 0.6 s
    "GIF of 100,000 comments": (_gif_with(b"\x21\xfe\x01x\x00" * 100_000), "extension blocks"),
    "GIF of a 20 MB comment": (_gif_with(b"\x21\xfe" + (b"\xff" + b"x" * 255) * 80_000 + b"\x00"),
                               "16 MiB of extension data"),
    # a review: one stray byte first (Pillow skips it) let the 100,000 comments past
    "GIF of a stray byte and 100,000 comments": (_gif_with(b"\x00" + b"\x21\xfe\x01x\x00" * 100_000),
                                                 "extension blocks"),
    "GIF of 1 MB of stray bytes": (_gif_with(b"\x00" * (1 << 20)), "stray bytes"),
    # a review of PNG bands: Pillow reads a 60 MB eXIf whole while opening (120-300 MB)
    "PNG of a 20 MB eXIf after its pixels": (_png_with([], after=[_png_chunk(b"eXIf", b"MM\0*" + bytes(20 << 20))]),
                                             "16 MiB of metadata"),
    "PNG of a 20 MB eXIf before its pixels": (_png_with([_png_chunk(b"eXIf", b"MM\0*" + bytes(20 << 20))]),
                                              "16 MiB of metadata"),
    # an eighth probe: Pillow reads a netpbm header a byte at a time (30 MB: 5-7 s)
    "PPM of 2 MB of header whitespace": (b"P6" + b" " * (2 << 20) + b"\n64 64\n255\n" + b"\0" * (64 * 64 * 3),
                                         "header runs past"),
    "PGM of a 2 MB comment": (b"P5\n#" + b"x" * (2 << 20) + b"\n64 64\n255\n" + b"\0" * (64 * 64), "header runs past"),
    # Pillow walks a JP2's boxes in Python (2 million empty ones, 15 MB: 1.7 s)
    "JP2 of 100,000 empty boxes": (_jp2_with(struct.pack(">I4s", 8, b"free") * 100_000), "boxes before its codestream"),
    "JP2 header of 100,000 empty boxes": (_jp2_with(b"", struct.pack(">I4s", 8, b"free") * 100_000),
                                          "boxes before its codestream"),
    # an eighteenth probe: Pillow unpacks every TIFF tag while opening (3.9 million fractions
    # in an 8x8 TIFF's XResolution: 14 s and 664 MB), and a JPEG's EXIF directory for its DPI
    "TIFF of 100,000 fractions in one tag": (_tiff_with_numbers(282, 5, 100_000), "tag 282 holds 100000"),
    "TIFF of 300,000 numbers in one tag": (_tiff_with_numbers(339, 3, 300_000), "tag 339 holds 300000"),
    # a review: Pillow parses an AVIF's EXIF item while opening (a million fractions: 2.1 s, 236 MB)
    "AVIF of a 0.8 MB EXIF": (_avif_orientation_of_fractions(100_000), "EXIF is 8000"),
    "JPEG of an EXIF directory of 5,000 entries": (
        encode(Image.new("RGB", (64, 64), (120, 30, 200)), "JPEG", exif=b"Exif\0\0" + _exif_of(
            [struct.pack(">HHII", 40000 + i, 7, 1000, 8) for i in range(5000)])), "5000 entries"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_files_pillow_would_pay_for_while_opening_are_refused_from_their_headers(name):
    """A fourth probe found each of these holding a decode thread for seconds
    to minutes, or allocating gigabytes, inside ``Image.open`` or a decoder
    written in Python, before any limit applied. Each is now refused from
    its container's headers, alone (RESOURCE_EXHAUSTED, saying why)."""
    data, says = BOMBS[name]
    t = time.perf_counter()
    with pytest.raises(DecodeError) as e:
        decode_image(data, 224)
    assert e.value.code == "RESOURCE_EXHAUSTED" and says in str(e.value), str(e.value)
    assert time.perf_counter() - t < 1.0, name          # headers only: not the seconds Pillow took


def test_ordinary_files_of_those_kinds_still_decode():
    """The same containers as an encoder writes them pass: an RLE bitmap, a TIFF
    of one strip a row and one of a tile, a PNG with an ICC profile and text."""
    rle = decode_image(_rle8_bmp(300, 200, _rle8_rows(300, 200)), 16)
    assert rle.size == (300, 200) and np.asarray(rle).std() > 10
    strips = np.asarray(decode_image(_tiff_gray(64, 48, rows_per_strip=1), 16))[..., 0]
    whole = np.asarray(decode_image(_tiff_gray(64, 48), 16))[..., 0]
    np.testing.assert_array_equal(strips, whole)
    assert whole[5, 7] == 12
    assert decode_image(_tiff_gray(200, 200, tile=256), 16).size == (200, 200)
    png = _png_with([_png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * 500)),
                     _png_chunk(b"tEXt", b"Title\0x"), _png_chunk(b"zTXt", b"Note\0\0" + zlib.compress(b"y" * 99))],
                    after=[_png_chunk(b"tEXt", b"Later\0z")])
    np.testing.assert_array_equal(np.asarray(decode_image(png, 4))[..., 0],
                                  np.arange(64, dtype=np.uint8).reshape(8, 8))
    icon = np.asarray(decode_image(_ico_of([_plain_dib()] * 3), 4))[..., 0]
    assert icon.shape == (16, 16) and icon.std() > 1
    assert decode_image(_dds_masked(256, 256), 16).size == (256, 256)          # small: in Python, but bounded
    assert decode_image(b"P5\n300 200\n254\n" + b"\x10" * 60_000, 16).size == (300, 200)
    assert decode_image(b"P6\n# a comment, as GIMP writes one\n300 200\n255\n" + b"\x10" * 180_000, 16).size == (300, 200)
    assert decode_image(b"P4 16 8\n" + b"\xf0\x0f" * 8, 4).size == (16, 8)
    psd = np.asarray(decode_image(_psd(32, 3), 8))[..., 0]
    assert psd.shape == (32, 32) and psd[3, 5] == 8
    gif = np.asarray(decode_image(_gif_with(b"\x21\xfe\x05hello\x00" * 3 + b"\x21\xfe" + b"\xff" + b"y" * 255
                                            + b"\x00" + b"\x00" * 16), 32))[..., 0]
    assert gif.shape == (32, 32) and gif[0, 0] < gif[31, 31]
    jp2 = np.asarray(decode_image(_jp2_with(struct.pack(">I4s", 20, b"uuid") + b"x" * 12, struct.pack(
        ">I4s", 8, b"free")), 32))[..., 0]
    assert jp2.shape == (32, 32) and jp2[0, 0] < jp2[31, 31]
    # a TIFF with its resolution (one fraction) and a short table of numbers
    assert np.asarray(decode_image(_tiff_with_numbers(282, 5, 1), 4))[1, 2, 0] == 10
    assert decode_image(_tiff_with_numbers(320, 3, 768), 4).size == (8, 8)
    # tags Pillow does not read stay bytes, however many numbers they hold (a review: a GeoTIFF's
    # 50,000 tie points, a MetaMorph stack's 300 per-plane fractions were refused)
    assert decode_image(_tiff_with_numbers(33922, 12, 300_000), 4).size == (8, 8)
    assert decode_image(_tiff_with_numbers(33629, 5, 300), 4).size == (8, 8)


def test_an_exif_orientation_is_read_without_unpacking_the_exif(monkeypatch):
    """The orientation was read through Pillow's ``getexif``, which unpacks
    every tag first, in whatever type the file declares: a 64x64 WebP whose
    Orientation held 3.9 million fractions took 9.4 s and 724 MB a file
    (an eighteenth probe; 4 clients held another's Embeds 20 s). It is now
    read from its directory entry alone (one SHORT or LONG, as a display
    orientation is); anything else is upright. Ordinary orientations turn
    the picture as before, in every format that carries EXIF."""
    from imagesieve.orientation import ifd0_orientation

    def no_getexif(self):
        raise AssertionError("the EXIF block was unpacked")
    monkeypatch.setattr(Image.Image, "getexif", no_getexif)
    wide = Image.new("RGB", (80, 40), (200, 30, 30))
    wide.paste((30, 30, 200), (0, 0, 20, 40))                  # blue on the left
    fractions = _exif_of([struct.pack(">HHII", 0x0112, 5, 200_000, 26)], struct.pack(">II", 6, 1) * 200_000)
    for fmt in ("WEBP", "PNG"):
        crafted = decode_image(encode(wide, fmt, exif=b"Exif\0\0" + fractions), 16)
        assert crafted.size == (80, 40), fmt
        turned = decode_image(encode(wide, fmt, exif=b"Exif\0\0" + _exif_of([struct.pack(">HHHH", 0x0112, 3, 0, 1)
                                                                              + struct.pack(">HH", 6, 0)])), 16)
        assert turned.size == (40, 80) and np.asarray(turned)[0, 20, 2] > 150, fmt    # the left side on top
    assert ifd0_orientation(_exif_of([struct.pack(">HHIHH", 0x0112, 3, 1, 8, 0)])) == (8, False)
    assert ifd0_orientation(_exif_of([struct.pack(">HHIHH", 0x0112, 8, 1, 6, 0)])) == (6, False)    # SSHORT
    exif = Image.Exif()
    exif[0x0112] = 6
    avif = decode_image(encode(wide, "AVIF", exif=exif.tobytes()), 16)        # an ordinary AVIF EXIF
    assert avif.size == (40, 80) and np.asarray(avif)[0, 20, 2] > 150
    # a TIFF's own Orientation tag before its XMP's, as Pillow reads them (a review); its tags are
    # parsed on opening (preflight bounds them), so Pillow may read its EXIF there
    monkeypatch.undo()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="1"/></rdf:RDF></x:xmpmeta>'
    tiff = decode_image(encode(wide, "TIFF", tiffinfo={274: 6, 700: xmp}), 16)
    assert tiff.size == (40, 80) and np.asarray(tiff)[0, 20, 2] > 150
    assert ifd0_orientation(_exif_of([struct.pack(">HHII", 0x0112, 4, 1, 3)])) == (3, False)
    assert ifd0_orientation(fractions) == (None, False) and ifd0_orientation(b"MM\x00*\x00") == (None, True)


def test_damaged_exif_entries_leave_the_log_quiet(tmp_path):
    """Pillow warned once for each damaged EXIF entry, each message naming
    its tag so each was shown: 64 crafted PNGs in four calls wrote 398 MB
    of server log. A decode in a fresh process now writes nothing."""
    damaged = _exif_of([struct.pack(">HHII", 40000 + i, 7, 1 << 20, 8) for i in range(900)])
    path = tmp_path / "damaged.png"
    path.write_bytes(encode(Image.new("RGB", (64, 64), (9, 9, 9)), "PNG", exif=b"Exif\0\0" + damaged))
    code = ("import sys; from PIL import Image; from imagesieve_server.engine.decode import decode_image; "
            f"im = decode_image(open({str(path)!r}, 'rb').read(), 16); "
            "Image.open(sys.argv[1]).getexif(); print(im.size)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "(64, 64)", out.stderr[-2000:]
    assert out.stderr == "", out.stderr[:500]


# -- canvases the bytes do not pay for (issue 14, F6) ------------------------------

def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\0" if len(body) & 1 else b"")


def _webp(*chunks: bytes) -> bytes:
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _vp8l_flat(w: int, h: int) -> bytes:
    """A lossless WebP bitstream of w x h in which every pixel costs zero
    bits: no transform, no colour cache, five prefix codes of one symbol."""
    bits: list[int] = []

    def put(value: int, n: int) -> None:
        bits.extend((value >> i) & 1 for i in range(n))
    put(0x2F, 8), put(w - 1, 14), put(h - 1, 14), put(1, 1), put(0, 3)
    put(0, 3)                                   # no transform, no cache, no meta codes
    for symbol in (30, 200, 30, 255, 0):        # green, red, blue, alpha, distance
        put(0b101, 3), put(symbol, 8)           # a simple code of one 8-bit symbol
    bits += [0] * (-len(bits) % 8)
    return bytes(sum(bits[i + j] << j for j in range(8)) for i in range(0, len(bits), 8))


def _vp8x(w: int, h: int, animated: bool) -> bytes:
    return _riff_chunk(b"VP8X", bytes([0x12 if animated else 0x10, 0, 0, 0])
                       + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little"))


def _anmf(w: int, h: int, bitstream: bytes, x: int = 0, y: int = 0) -> bytes:
    return _riff_chunk(b"ANMF", (x // 2).to_bytes(3, "little") + (y // 2).to_bytes(3, "little")
                       + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
                       + (100).to_bytes(3, "little") + b"\0" + bitstream)


def _animated_webp(canvas: int, frames: list[tuple[int, bytes]]) -> bytes:
    """An animated WebP of a canvas x canvas canvas; frames: (side, VP8L bitstream)."""
    return _webp(_vp8x(canvas, canvas, True), _riff_chunk(b"ANIM", b"\0" * 6),
                 *(_anmf(side, side, _riff_chunk(b"VP8L", bits)) for side, bits in frames))


def _gif_screen(side: int, frame: int = 1) -> bytes:
    """A GIF whose logical screen is side x side, its one frame frame x frame."""
    gif = bytearray(encode(Image.new("P", (frame, frame), 1), "GIF"))
    gif[6:10] = struct.pack("<HH", side, side)
    return bytes(gif)


CANVAS_BOMBS = {
    # as the probe's file (142 bytes, Pillow's encoder): 1.8 s and 1.5 GB before
    "animated WebP of two 10000x10000 frames, 136 bytes": (
        _animated_webp(10000, [(10000, _vp8l_flat(10000, 10000))] * 2), "10000x10000 canvas"),
    # 34 bytes: 2.5 s and 1.5 GB before; smaller here, to cost a test little before the fix too
    "lossless WebP still of 6000x6000, 34 bytes": (_webp(_riff_chunk(b"VP8L", _vp8l_flat(6000, 6000))),
                                                   "6000x6000 canvas"),
    "WebP still of 6000x6000 after 200 KB of XMP": (
        _webp(_vp8x(6000, 6000, False), _riff_chunk(b"XMP ", b"x" * 200_000),
              _riff_chunk(b"VP8L", _vp8l_flat(6000, 6000))), "in 13 bytes of image data"),
    "animated WebP, a 16x16 first frame on a 6000x6000 canvas": (
        _animated_webp(6000, [(16, _vp8l_flat(16, 16))] * 2), "first frame"),
    # the bytes that count are the first frame's, the one decoded: 200 KB of later frames buy nothing
    "animated WebP of 6000x6000, 200 KB of later frames": (
        _animated_webp(6000, [(6000, _vp8l_flat(6000, 6000))] + [(64, _vp8l_flat(64, 64) + b"\0" * 1000)] * 200),
        "in 22 bytes of its first frame"),
    # a 1x1 frame on a 10000x10000 screen, 37 bytes: 0.2 s and 380 MB before
    "GIF of a 1x1 frame on a 10000x10000 screen": (_gif_screen(10000), "GIF of a 10000x10000 canvas"),
}


@pytest.mark.parametrize("name", list(CANVAS_BOMBS))
def test_canvases_the_bytes_do_not_pay_for_are_refused(name):
    """libwebp allocates a WebP's canvas whatever its bytes (Pillow decodes a
    still through the animation decoder too), and its lossless coding can
    spend zero bits a pixel; a GIF's screen beyond its first frame is fill.
    Beyond FREE_CANVAS_PIXELS the canvas is bounded by the bytes of the
    picture decoded, from the chunks, before Pillow opens the file."""
    data, says = CANVAS_BOMBS[name]
    t = time.perf_counter()
    with pytest.raises(DecodeError) as e:
        decode_image(data, 224)
    assert e.value.code == "RESOURCE_EXHAUSTED" and says in str(e.value), str(e.value)
    assert "convert it" in str(e.value)
    assert time.perf_counter() - t < 0.5, name


def _avif_declaring(data: bytes, side: int) -> bytes:
    """``data`` (an AVIF) with every size its boxes declare (ispe, the AV1
    sample entry, the track header) made ``side`` x ``side``; its AV1 data as it was."""
    out = bytearray(data)
    at = out.find(b"ispe")
    while at >= 0:
        out[at + 8:at + 16] = struct.pack(">II", side, side)
        at = out.find(b"ispe", at + 4)
    stsd = out.find(b"stsd")
    if stsd >= 0:
        entry = out.find(b"av01", stsd)
        out[entry + 4 + 24:entry + 4 + 28] = struct.pack(">HH", side, side)
        tkhd = out.find(b"tkhd")
        end = tkhd - 4 + struct.unpack(">I", out[tkhd - 4:tkhd])[0]
        out[end - 8:end] = struct.pack(">II", side << 16, side << 16)
    return bytes(out)


def _avif_padded(data: bytes, obus: int) -> bytes:
    """``data`` (an AVIF still as Pillow writes it: one item, iloc version 0
    of 4-byte offsets and lengths, mdat last) with ``obus`` empty padding
    OBUs before its AV1 data."""
    at = data.find(b"iloc") + 4
    assert data[at] == 0 and data[at + 4:at + 6] == b"\x44\x00" and struct.unpack(">H", data[at + 6:at + 8])[0] == 1
    offset, length = struct.unpack(">II", data[at + 14:at + 22])
    pad = bytes([15 << 3 | 2, 0]) * obus                     # OBU_PADDING with a size field of 0
    out = bytearray(data[:offset] + pad + data[offset:])
    out[at + 18:at + 22] = struct.pack(">I", length + len(pad))
    mdat = out.find(b"mdat") - 4
    out[mdat:mdat + 4] = struct.pack(">I", struct.unpack(">I", out[mdat:mdat + 4])[0] + len(pad))
    return bytes(out)


def _avif_grid(tile: bytes, cols: int, rows: int, declared: tuple[int, int], split: bool = False) -> bytes:
    """An AVIF grid of cols x rows tiles that all point at ``tile``'s one
    coded picture (an AVIF still), its grid item's ``ispe`` ``declared``;
    with ``split``, its descriptor in two extents of ``idat`` around a decoy
    that declares ``declared``."""
    def boxes(d, at, end, found):
        while at + 8 <= end:
            size, kind = struct.unpack(">I4s", d[at:at + 8])
            found.setdefault(kind, d[at:at + size])
            if kind in (b"meta", b"iprp", b"ipco"):
                boxes(d, at + (12 if kind == b"meta" else 8), at + size, found)
            at += size
        return found

    found = boxes(tile, 0, len(tile), {})
    coded, (tw, th) = found[b"mdat"][8:], struct.unpack(">II", found[b"ispe"][12:20])

    def box(kind, payload):
        return struct.pack(">I4s", 8 + len(payload), kind) + payload

    def full(kind, version, flags, payload):
        return box(kind, struct.pack(">I", (version << 24) | flags) + payload)

    n = cols * rows
    infes = [full(b"infe", 2, 0, struct.pack(">HH4s", 1, 0, b"grid") + b"\0")]
    infes += [full(b"infe", 2, 1, struct.pack(">HH4s", 2 + i, 0, b"av01") + b"\0") for i in range(n)]
    ipco = box(b"ipco", found[b"av1C"] + found[b"pixi"] + full(b"ispe", 0, 0, struct.pack(">II", tw, th))
               + full(b"ispe", 0, 0, struct.pack(">II", *declared)))
    ipma = full(b"ipma", 0, 0, struct.pack(">I", 1 + n) + struct.pack(">HBBB", 1, 2, 0x84, 0x02)
                + b"".join(struct.pack(">HBBBB", 2 + i, 3, 0x81, 0x02, 0x03) for i in range(n)))
    grid = struct.pack(">BBBBHH", 0, 0, rows - 1, cols - 1, cols * tw, rows * th)
    located = struct.pack(">HHHHII", 1, 1, 0, 1, 0, len(grid))
    if split:
        grid = grid[:6] + struct.pack(">HH", *declared) + grid[6:]      # read whole, the middle is a decoy
        located = struct.pack(">HHHHIIII", 1, 1, 0, 2, 0, 6, 10, 2)
    head = box(b"ftyp", b"avif" + b"\0" * 4 + b"avifmif1miaf")

    def meta(mdat_at):
        iloc = full(b"iloc", 1, 0, struct.pack(">BBH", 0x44, 0x00, 1 + n) + located
                    + b"".join(struct.pack(">HHHHII", 2 + i, 0, 0, 1, mdat_at, len(coded)) for i in range(n)))
        return full(b"meta", 0, 0, full(b"hdlr", 0, 0, b"\0" * 4 + b"pict" + b"\0" * 13)
                    + full(b"pitm", 0, 0, struct.pack(">H", 1)) + iloc
                    + full(b"iinf", 0, 0, struct.pack(">H", len(infes)) + b"".join(infes))
                    + full(b"iref", 0, 0, box(b"dimg", struct.pack(">HH", 1, n)
                                              + b"".join(struct.pack(">H", 2 + i) for i in range(n))))
                    + box(b"iprp", ipco + ipma) + box(b"idat", grid))
    size = len(head) + len(meta(0)) + 8
    return head + meta(size) + box(b"mdat", coded)


def test_an_avif_canvas_is_bounded_by_its_coded_bytes(photos):
    """AV1 codes a flat picture in almost nothing: 2,181 bytes of
    10000x10000 cost 0.74 s and ~900 MB to decode, and 64 of them in one
    call stalled another client's embeds for 1.5-2 s (a ninth probe).
    Beyond FREE_CANVAS_PIXELS, the canvas its boxes declare is bounded by its
    coded bytes, a still's or an animation's, before Pillow opens it; what
    encoders write of real pictures passes."""
    flat = Image.new("RGB", (6000, 6000), (120, 130, 140))
    still = encode(flat, "AVIF", quality=10, speed=10)
    animated = encode(flat, "AVIF", save_all=True, append_images=[Image.new("RGB", (6000, 6000), (10, 20, 30))],
                      quality=10, speed=10)
    for data in (still, animated):
        t = time.perf_counter()
        with pytest.raises(DecodeError) as e:
            decode_image(data, 224)
        assert e.value.code == "RESOURCE_EXHAUSTED" and "AVIF of a 6000x6000 canvas" in str(e.value), str(e.value)
        assert time.perf_counter() - t < 0.5
    # Sizes the boxes declare are not what the decoder allocates by: the AV1
    # sequence header at the start of the item's or track's data is (a review:
    # 64x64 written into ispe, the sample entry and the track header, 10000x10000 decoded).
    for data in (still, animated):
        lying = _avif_declaring(data, 64)
        assert Image.open(io.BytesIO(lying)).size != (6000, 6000)
        with pytest.raises(DecodeError) as e:
            decode_image(lying, 224)
        assert "AVIF of a 6000x6000 canvas" in str(e.value), str(e.value)
    # A grid's tiles may all be one coded tile, and libavif decodes the grid
    # its descriptor describes whatever the grid's ispe says (a tenth probe:
    # 1.5 KB of 16384x16384 decoded with 2-4 GB, its size read as 64x64).
    tile = encode(Image.new("RGB", (2000, 2000), (120, 130, 140)), "AVIF", quality=10, speed=10)
    honest = _avif_grid(tile, 2, 2, (4000, 4000))
    assert Image.open(io.BytesIO(honest)).size == (4000, 4000)             # a grid Pillow reads
    lying = _avif_grid(tile, 3, 3, (64, 64))
    assert Image.open(io.BytesIO(lying)).size == (64, 64)
    with pytest.raises(DecodeError) as e:
        decode_image(lying, 224)
    assert "AVIF of a 6000x6000 canvas" in str(e.value), str(e.value)
    # ... or split its descriptor into two extents around a decoy (an eleventh probe: 6.9 s, 2.4 GB).
    split = _avif_grid(tile, 3, 3, (64, 64), split=True)
    with pytest.raises(DecodeError) as e:
        decode_image(split, 224)
    assert "AVIF of a 6000x6000 canvas" in str(e.value), str(e.value)
    # The decoder skips any number of padding OBUs before the sequence header
    # (an eleventh probe hid one behind 8; 16384x16384 decoded, read as 64x64).
    padded = _avif_padded(_avif_declaring(still, 64), 40)
    with pytest.raises(DecodeError) as e:
        decode_image(padded, 224)
    assert "AVIF of a 6000x6000 canvas" in str(e.value), str(e.value)
    # An item location list of zero-byte extents cost a million loops a box (23 s
    # for 400 boxes); an animation listing 2.5 million frames in 53 KB cost
    # libavif 0.24 s and 371 MB while opening.
    zero = struct.pack(">I4sI", 20, b"iloc", 0) + struct.pack(">BBHHHH", 0x00, 0x00, 1, 1, 0, 65535)
    empty_extents = still[:struct.unpack(">I", still[:4])[0]] + struct.pack(">I4sI", 12 + len(zero), b"meta", 0) + zero
    frames = bytearray(animated)
    at = frames.find(b"stsz")
    frames[at + 12:at + 16] = struct.pack(">I", 2_500_000)
    for data, says in ((empty_extents, "extents"), (bytes(frames), "2500000 frames")):
        t = time.perf_counter()
        with pytest.raises(DecodeError) as e:
            decode_image(data, 224)
        assert says in str(e.value) and time.perf_counter() - t < 0.5, str(e.value)
    # An ftyp box of 256 bytes starts like an ICO (00 00 01 00); Pillow opens it as AVIF.
    brands = still[16:struct.unpack(">I", still[:4])[0]]
    grown = struct.pack(">I", 256) + still[4:16] + brands + b"mif1" * ((256 - 16 - len(brands)) // 4)
    assert len(grown) == 256 and grown[:4] == b"\x00\x00\x01\x00"
    with pytest.raises(DecodeError) as e:
        decode_image(grown + still[struct.unpack(">I", still[:4])[0]:], 224)
    assert str(e.value).startswith("AVIF"), str(e.value)        # read as an AVIF (its moved data: unreadable)
    # within FREE_CANVAS_PIXELS whatever its bytes; a photo of 36 MP has the bytes
    assert decode_image(encode(Image.new("RGB", (4096, 4096), (9, 9, 9)), "AVIF", speed=10), 224).size == (4096, 4096)
    photo = photo_image(photos[0][0]).resize((6000, 6000))
    assert decode_image(encode(photo, "AVIF", quality=30, speed=10), 224).size == (6000, 6000)


def test_a_webp_frame_outside_its_canvas_is_refused_saying_so():
    """libwebp's demuxer refuses it (cheaply); the error now says why."""
    data = _animated_webp(64, [(10000, _vp8l_flat(10000, 10000)), (16, _vp8l_flat(16, 16))])
    with pytest.raises(DecodeError) as e:
        decode_image(data, 224)
    assert e.value.code == "INVALID_ARGUMENT"
    assert "frame 0, 10000x10000 at (0, 0), reaches outside its 64x64 canvas" in str(e.value)


def test_ordinary_webp_and_gif_still_decode(photos):
    """What encoders write passes: animated WebP (lossy, lossless, 2,000
    frames), a flat picture within FREE_CANVAS_PIXELS whatever its bytes, an
    asset on a mostly transparent 4096x4096 canvas, a
    lossless 4K page of text (1,220 pixels a byte), a 12 MP photo, and a
    25 MP GIF of one colour as Pillow writes it (LZW: ~1,300 pixels a byte)."""
    from PIL import ImageDraw
    photo = photo_image(photos[0][0])
    frames = [photo, photo.rotate(90), photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    for kw in ({"quality": 80}, {"lossless": True, "method": 0}):
        anim = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], **kw)
        out = decode_image(anim, 224)
        assert out.size == photo.size and cosine(np.asarray(out, np.float32).ravel(),
                                                 np.asarray(photo, np.float32).ravel()) > 0.99
    many = _animated_webp(64, [(64, _vp8l_flat(64, 64))] * 2000)
    assert decode_image(many, 16).size == (64, 64)
    assert decode_image(_webp(_riff_chunk(b"VP8L", _vp8l_flat(2048, 4096))), 224).size == (2048, 4096)
    assert decode_image(_gif_screen(2048, 16), 224).size == (2048, 2048)
    page = Image.new("RGB", (3840, 2160), "white")
    draw = ImageDraw.Draw(page)
    for y in range(100, 2100, 40):
        draw.text((100, y), f"The quick brown fox jumps over the lazy dog {y}", fill="black")
    assert decode_image(encode(page, "WEBP", lossless=True), 224).size == (3840, 2160)
    big = encode(photo.resize((4000, 3000)), "WEBP", quality=80)
    assert decode_image(big, 224).size == (4000, 3000)
    flat = encode(Image.new("P", (5000, 5000), 3), "GIF")
    assert decode_image(flat, 224).size == (5000, 5000)
    # an asset on a large transparent canvas: 1.7 KB of lossless WebP for 16.8 MP (refused at first)
    sheet = Image.new("RGBA", (4096, 4096), (0, 0, 0, 0))
    ImageDraw.Draw(sheet).ellipse((1900, 1900, 2200, 2150), fill=(200, 30, 30, 255), outline=(0, 0, 0, 255), width=8)
    sparse = encode(sheet, "WEBP", lossless=True)
    assert 4096 * 4096 > 2048 * len(sparse) and decode_image(sparse, 224).size == (4096, 4096)


def test_an_apng_of_many_frames_decodes_its_first():
    """Pillow reads an animated PNG up to its second frame's control chunk
    (decoding takes the first frame): 1,100 frames were refused for their
    frame controls, counted as chunks besides the pixel data. After the
    first frame they no longer count; before it, and in a still PNG, they do."""
    frames = [Image.new("RGB", (32, 32), (i % 256, 0, 0)) for i in range(1100)]
    apng = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    out = decode_image(apng, 16)
    assert out.size == (32, 32) and out.getpixel((0, 0)) == (0, 0, 0)
    still = _png_with([], after=[_png_chunk(b"prVt", b"")] * 2000)
    with pytest.raises(DecodeError, match="chunks besides its pixel data"):
        decode_image(still, 16)


def test_signatures_and_properties_are_charged_for_their_full_size_copies(manifest_path):
    """The layout signature and the image properties each copy the decoded
    image at full size (a grayscale and an RGB copy): an attack embedding
    100 MP TIFFs with signatures on two threads passed a 512 MiB budget by
    300 MiB. Their copies are now charged with the decode, from the header."""
    from imagesieve_server.engine import Embedder
    from imagesieve_server.engine.pipeline import ANALYSIS_BYTES_PER_PIXEL
    data = encode(Image.new("RGB", (3000, 2000), (20, 140, 90)), "PNG")
    peaks = {}
    for with_signature in (False, True):
        emb = Embedder.from_model(str(manifest_path))
        try:
            p = emb.prepare(data, with_signature=with_signature)
            peaks[with_signature] = emb.budget.peak
            emb.budget.release(p.charged)
        finally:
            emb.close()
    assert peaks[True] - peaks[False] == ANALYSIS_BYTES_PER_PIXEL * 3000 * 2000
