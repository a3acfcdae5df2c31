"""Decoding real photos in every awkward form, and refusing bad bytes."""
import io
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from imagesieve_server.engine.decode import DecodeError, DecodeLimits, decode_image, to_rgb

from conftest import encode, photo_image


@pytest.fixture(scope="module")
def photo(photos):
    return photo_image(photos[0][0])  # a real 512x512 ImageNet photo


def test_jpeg_draft_decodes_large_photo_at_reduced_scale(photo):
    big = encode(photo.resize((4000, 3000)), "JPEG", quality=90)
    t = time.perf_counter()
    img = decode_image(big, min_size=256)
    assert img.mode == "RGB"
    assert img.info["original_size"] == (4000, 3000)
    # 1/8 scale (500x375) keeps the shorter side >= 256; never below it.
    assert img.size == (500, 375)
    assert time.perf_counter() - t < 5


def test_draft_never_goes_below_min_size(photo):
    img = decode_image(encode(photo.resize((1200, 900)), "JPEG"), min_size=256)
    assert min(img.size) >= 256 and img.size[0] < 1200


def test_exif_orientation_is_applied(photo):
    wide = photo.resize((400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    img = decode_image(encode(wide, "JPEG", exif=exif.tobytes()), min_size=200)
    assert img.size == (200, 400)


def test_modes_to_rgb(photo):
    small = photo.resize((64, 48))
    cases = {
        "gray": encode(small.convert("L"), "PNG"),
        "cmyk": encode(small.convert("CMYK"), "JPEG"),
        "palette": encode(small.convert("P"), "PNG"),
        "rgba": encode(small.convert("RGBA"), "PNG"),
        "webp": encode(small, "WEBP"),
        "tiff": encode(small, "TIFF"),
        "bmp": encode(small, "BMP"),
        "gif": encode(small.convert("P"), "GIF"),
    }
    for name, data in cases.items():
        img = decode_image(data, min_size=32)
        assert img.mode == "RGB" and img.size == (64, 48), name


def test_sixteen_bit_png_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    data = encode(Image.fromarray(ramp), "PNG")
    rgb = np.asarray(decode_image(data, min_size=32))
    assert rgb.shape == (64, 64, 3)
    assert rgb.max() >= 250 and rgb.min() <= 5 and len(np.unique(rgb[..., 0])) > 200


def test_transparency_composited_on_white():
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert np.asarray(to_rgb(clear)).min() == 255
    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert np.asarray(decode_image(encode(pal, "PNG", transparency=0), 8)).min() == 255


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    img = decode_image(buf.getvalue(), 8)
    assert tuple(np.asarray(img)[5, 5]) == (255, 0, 0)


@pytest.mark.parametrize("data, fragment", [
    (b"", "empty"),
    (b"\x00" * 100, "not a recognised image"),
    (np.random.default_rng(0).bytes(5000), "not a recognised image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not a recognised image"),
])
def test_bad_bytes_get_clear_errors(data, fragment):
    with pytest.raises(DecodeError, match=fragment) as e:
        decode_image(data, 64)
    assert e.value.code == "INVALID_ARGUMENT"


def test_truncated_jpeg_is_an_error(photos):
    with pytest.raises(DecodeError):
        decode_image(photos[0][0][: len(photos[0][0]) // 3], 64)


def test_decompression_bomb_refused_from_header():
    # A PNG whose header claims 60000x60000: refused before any pixel decodes.
    small = encode(Image.new("L", (1, 1)), "PNG")
    ihdr = small.index(b"IHDR")
    bomb = bytearray(small)
    bomb[ihdr + 4: ihdr + 12] = (60000).to_bytes(4, "big") * 2
    bomb[ihdr + 17: ihdr + 21] = zlib.crc32(bytes(bomb[ihdr: ihdr + 17])).to_bytes(4, "big")
    t = time.perf_counter()
    with pytest.raises(DecodeError, match="60000x60000") as e:
        decode_image(bytes(bomb), 64)
    assert e.value.code == "RESOURCE_EXHAUSTED"
    assert time.perf_counter() - t < 0.5


def test_byte_limit():
    with pytest.raises(DecodeError, match="above the limit") as e:
        decode_image(b"x" * 2000, 64, DecodeLimits(max_bytes=1000))
    assert e.value.code == "RESOURCE_EXHAUSTED"
