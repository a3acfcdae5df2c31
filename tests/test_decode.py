"""Decoding real photos in every awkward form, and refusing bad bytes."""
import io
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from imagesieve_server.analysis.duplicates.verify import pair_alignment
from imagesieve_server.engine.decode import DecodeError, DecodeLimits, decode_bytes, decode_image, to_rgb
from imagesieve_server.engine.signature import layout_signature

from conftest import cosine, encode, photo_image


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


def test_an_mpo_is_drafted_like_the_jpeg_it_is(photo):
    """A phone camera's MPO (a JPEG with a multi-picture index and a second
    frame) decodes at the JPEG draft scale: before, it decoded whole (a
    twelfth probe: a flat 10000x10000 took 0.32 s and ~380 MB more than as a
    JPEG, and slowed another client's Embed from 110 ms to 2 s)."""
    buf = io.BytesIO()
    photo.resize((4000, 3000)).save(buf, "MPO", save_all=True, append_images=[photo.resize((8, 8))], quality=90)
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    img = decode_image(buf.getvalue(), min_size=256)
    assert img.info["original_size"] == (4000, 3000)
    assert img.size == (500, 375)
    with pytest.raises(DecodeError) as e:     # its raster counted at the draft scale too, not whole
        decode_image(buf.getvalue(), 256, DecodeLimits(max_raster_bytes=500 * 375 * 4 - 1))
    assert "500x375" in str(e.value)


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


def test_a_png_colour_key_is_transparency_too():
    """L and RGB PNGs mark transparency with one colour (tRNS): composited
    on white like an alpha channel, with their opacity kept for the layout
    signature; before, the key colour (black here) showed."""
    rng = np.random.default_rng(0)
    for shape, key in (((40, 50, 3), (0, 0, 0)), ((40, 50), 0)):
        a = rng.integers(30, 220, shape).astype(np.uint8)
        a[:8] = 0
        img = decode_image(encode(Image.fromarray(a), "PNG", transparency=key), 8)
        rgb = np.asarray(img)
        assert (rgb[:8] == 255).all() and (rgb[8:] < 255).any()
        assert "opacity" in img.info and np.asarray(img.info["opacity"])[:8].max() == 0
        # the composited copy is charged to the memory budget from the header (an
        # RGB raster without a key is returned as it is; L is converted either way)
        keyed = Image.open(io.BytesIO(encode(Image.fromarray(a), "PNG", transparency=key)))
        plain = Image.open(io.BytesIO(encode(Image.fromarray(a), "PNG")))
        assert decode_bytes(keyed) >= decode_bytes(plain) + (40 * 50 * 3 if a.ndim == 3 else 0)


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
    (b"<svg xmlns='http://www.w3.org/2000/svg'><rect width='4'", "cannot parse SVG"),
    (b"<?xml version='1.0'?><html><svg/></html>", "whose root is <html>, not <svg>"),
    # A known signature no reader takes (a damaged file, or a variant such as scikit-image's
    # multipage_rgb.tif): named as that format, not "not a recognised image format".
    (b"II*\x00\x08\x00\x00\x00" + b"\xff" * 60, "a TIFF file that cannot be decoded"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 60, "a PNG file that cannot be decoded"),
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


# --- Alpha-only images: the picture lives only in the alpha channel --------

def _shape(kind: str, size: int = 256) -> Image.Image:
    """A distinct picture as an 8-bit mask (255 = drawn)."""
    m = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(m)
    if kind == "circle":
        d.ellipse((40, 40, 216, 216), fill=255)
    elif kind == "star":
        d.polygon([(128, 10), (160, 100), (250, 100), (175, 155), (205, 245), (128, 190),
                   (51, 245), (81, 155), (6, 100), (96, 100)], fill=255)
    elif kind == "text":
        d.text((10, 90), "Sieve!", fill=255, font=ImageFont.load_default(size=60))
    elif kind == "bars":
        for x in range(0, size, 32):
            d.rectangle((x, 0, x + 12, size), fill=255)
    return m


def _alpha_only(alpha: Image.Image, colour=(255, 255, 255), mode: str = "RGBA") -> Image.Image:
    """A flat ``colour`` whose only picture is ``alpha``, as an RGBA or LA image."""
    alpha = alpha.convert("L")
    if mode == "LA":
        return Image.merge("LA", (Image.new("L", alpha.size, colour[0]), alpha))
    img = Image.new("RGB", alpha.size, colour)
    img.putalpha(alpha)
    return img


def _on_white(img: Image.Image) -> np.ndarray:
    """Today's (and browsers') rendering: composite on white."""
    rgba = img.convert("RGBA")
    return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
                      .convert("RGB"))


@pytest.fixture(scope="module")
def luminance(photos):
    """Real photos' luminance, each to become an alpha-only picture."""
    return [photo_image(photos[i][0]).convert("L") for i in (0, 5, 11, 15)]


def test_white_alpha_only_png_renders_alpha_as_luminance(luminance):
    alpha = luminance[0]
    data = encode(_alpha_only(alpha), "PNG")
    assert _on_white(Image.open(io.BytesIO(data))).min() == 255  # the bug: a blank page
    rgb = np.asarray(decode_image(data, 64)).astype(np.int16)
    assert rgb.std() > 30  # not blank
    # White over black: each pixel's luminance is the alpha value.
    np.testing.assert_allclose(rgb, np.repeat(np.asarray(alpha)[..., None], 3, axis=2), atol=1)


@pytest.mark.parametrize("kind", ["circle", "star", "text", "bars"])
def test_shapes_in_alpha_are_visible(kind):
    mask = np.asarray(_shape(kind)) > 127
    for colour in [(255, 255, 255), (250, 235, 200)]:  # white, and a light cream
        rgb = np.asarray(decode_image(encode(_alpha_only(_shape(kind), colour), "PNG"), 64))
        gray = rgb.mean(axis=2)
        # The drawn part shows the light colour, the rest is black: clear contrast.
        assert gray[mask].mean() > 200 and gray[~mask].mean() < 5, (kind, colour)


def test_dark_alpha_only_already_contrasts_with_white_and_is_unchanged(luminance):
    # A flat black picture over white is visible (255 - alpha) and is today's output.
    img = _alpha_only(luminance[1], (0, 0, 0))
    rgb = np.asarray(decode_image(encode(img, "PNG"), 64))
    np.testing.assert_array_equal(rgb, _on_white(img))
    np.testing.assert_allclose(rgb[..., 0], 255 - np.asarray(luminance[1]).astype(np.int16), atol=1)


def test_alpha_only_in_every_alpha_mode(luminance):
    alpha = luminance[2].resize((96, 96))
    expected = np.repeat(np.asarray(alpha)[..., None], 3, axis=2).astype(np.int16)
    rgba = _alpha_only(alpha)
    la = _alpha_only(alpha, mode="LA")
    palette = Image.new("P", alpha.size, 0)
    palette.putpalette([255, 255, 255] * 256)
    pa = Image.merge("PA", (palette, alpha))
    pa.putpalette([255, 255, 255] * 256)
    # P with a tRNS table: every palette entry white, index i has alpha i.
    indexed = Image.frombytes("P", alpha.size, alpha.tobytes())
    indexed.putpalette([255, 255, 255] * 256)
    p_trns = Image.open(io.BytesIO(encode(indexed, "PNG", transparency=bytes(range(256)))))
    assert p_trns.mode == "P" and isinstance(p_trns.info["transparency"], bytes)
    cases = {"RGBA": rgba, "LA": la, "RGBa": rgba.convert("RGBa"), "La": la.convert("La"),
             "PA": pa, "P+tRNS": p_trns}
    for name, img in cases.items():
        out = to_rgb(img)
        assert out.mode == "RGB" and out.size == alpha.size, name
        # Premultiplied modes lose a little colour precision at low alpha.
        np.testing.assert_allclose(np.asarray(out).astype(np.int16), expected, atol=2, err_msg=name)
    for fmt in ("PNG", "WEBP"):  # LA through real files too
        out = np.asarray(decode_image(encode(la if fmt == "PNG" else rgba, fmt, lossless=True), 64))
        np.testing.assert_allclose(out.astype(np.int16), expected, atol=2, err_msg=fmt)


def test_colour_under_fully_transparent_pixels_is_ignored(luminance):
    # Many files keep garbage (or black) where alpha is 0; it must not hide the picture.
    alpha = np.asarray(_shape("star"))
    arr = np.full((*alpha.shape, 4), 255, np.uint8)
    arr[..., 3] = alpha
    noise = np.random.default_rng(0).integers(0, 256, (*alpha.shape, 3), dtype=np.uint8)
    arr[alpha == 0, :3] = noise[alpha == 0]
    rgb = np.asarray(decode_image(encode(Image.fromarray(arr, "RGBA"), "PNG"), 64))
    np.testing.assert_array_equal(rgb[..., 1], alpha)


def test_large_alpha_only_image_is_judged_on_a_sample(luminance):
    # 3000x2000: the flatness check samples a small grid, the output is full size.
    alpha = luminance[0].resize((3000, 2000))
    img = decode_image(encode(_alpha_only(alpha), "PNG", compress_level=1), 64)
    assert img.size == (3000, 2000)
    np.testing.assert_allclose(np.asarray(img)[::7, ::7, 0].astype(np.int16),
                               np.asarray(alpha)[::7, ::7], atol=1)


def test_ordinary_transparent_images_still_composite_on_white(photo):
    from imagesieve.alterations import ALTERATIONS

    rounded = ALTERATIONS["transparent_png"](photo)  # real photo, transparent rounded corners
    assert rounded.mode == "RGBA"
    logo = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
    d = ImageDraw.Draw(logo)
    d.ellipse((8, 8, 120, 120), fill=(30, 90, 200, 255))
    d.text((30, 50), "LOGO", fill=(255, 200, 0, 255), font=ImageFont.load_default(size=24))
    red_circle = Image.new("RGBA", (128, 128), (255, 0, 0, 0))  # one dark colour: unchanged
    ImageDraw.Draw(red_circle).ellipse((8, 8, 120, 120), fill=(255, 0, 0, 255))
    translucent = Image.new("RGBA", (64, 64), (255, 255, 255, 128))  # flat alpha too
    for name, img in {"rounded photo": rounded, "logo": logo, "red circle": red_circle,
                      "translucent": translucent}.items():
        data = encode(img, "PNG")
        np.testing.assert_array_equal(np.asarray(decode_image(data, 64)), _on_white(img), err_msg=name)
    # The corners really are white, the middle really is the photo.
    rgb = np.asarray(decode_image(encode(rounded, "PNG"), 64))
    assert (rgb[0, 0] == 255).all()
    np.testing.assert_array_equal(rgb[256, 256], np.asarray(photo)[256, 256])


def test_alpha_only_pictures_embed_apart_and_copies_together(embedder, luminance):
    pictures = {"photo0": luminance[0], "photo5": luminance[1], "photo11": luminance[2],
                **{k: _shape(k) for k in ("circle", "star", "text", "bars")}}
    originals = {name: encode(_alpha_only(a), "PNG") for name, a in pictures.items()}
    originals["star LA"] = encode(_alpha_only(_shape("star"), mode="LA"), "PNG")
    originals["photo15 black"] = encode(_alpha_only(luminance[3], (0, 0, 0)), "PNG")
    names = list(originals)
    vecs = np.stack([e.vector for e in embedder.embed_all(originals.values())])
    sims = vecs @ vecs.T
    distinct = {("star", "star LA")}  # the same picture in two modes
    for i, a in enumerate(names):
        for j, b in enumerate(names[i + 1:], i + 1):
            if (a, b) in distinct:
                assert sims[i, j] > 0.99, (a, b, sims[i, j])
            else:
                assert sims[i, j] < 0.8, (a, b, sims[i, j])
    # Copies: resized and re-saved, with the alpha scaled down a little.
    copies = {
        "photo0": _alpha_only(luminance[0].resize((300, 300), Image.BILINEAR).point(lambda v: v * 9 // 10)),
        "photo5": _alpha_only(luminance[1].resize((384, 384), Image.BICUBIC)),
        "text": _alpha_only(_shape("text").resize((320, 320), Image.BILINEAR).point(lambda v: v * 17 // 20)),
        "circle": _alpha_only(_shape("circle").resize((320, 320), Image.BICUBIC)),
        "photo15 black": _alpha_only(luminance[3].resize((400, 400), Image.BILINEAR), (0, 0, 0)),
    }
    copy_vecs = [e.vector for e in embedder.embed_all(encode(c, "PNG") for c in copies.values())]
    for name, v in zip(copies, copy_vecs):
        own = cosine(v, vecs[names.index(name)])
        assert own >= 0.9, (name, own)
        others = [cosine(v, vecs[k]) for k, n in enumerate(names) if n not in (name, "star LA")]
        assert max(others) < 0.8, (name, max(others))


def _premultiplied_mask(kind: str) -> Image.Image:
    """An antialiased ``kind`` shape whose colour is its own alpha (R = G = B =
    alpha, as a premultiplied mask saved as straight alpha, or a palette of
    grey-and-alpha pairs): its colour is not flat, yet over white it is white."""
    alpha = _shape(kind).filter(ImageFilter.GaussianBlur(0.7))     # a one-pixel soft edge
    return Image.merge("RGBA", (alpha, alpha, alpha, alpha))


def _glossy_ball() -> Image.Image:
    """Light greys of alpha 8-30 on a disc (a button's glass highlight): over
    white a blank page, over black the ball."""
    size = 256
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(xx - 128, yy - 128) / 100
    alpha = np.where(r < 1, 8 + 22 * r ** 2, 0).astype(np.uint8)
    grey = np.clip(235 + 15 * (1 - r) + 8 * np.sin(xx / 9), 0, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([grey, grey, grey, alpha]), "RGBA")


def _white_page() -> Image.Image:
    """A white document icon with a grey outline and a soft shadow: an
    ordinary transparent picture that shows, faintly, over white."""
    page = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
    shadow = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(shadow).rectangle((26, 14, 106, 120), fill=90)
    page.putalpha(shadow.filter(ImageFilter.GaussianBlur(4)))
    ImageDraw.Draw(page).rectangle((22, 10, 102, 116), fill=(250, 250, 250, 255), outline=(170, 170, 170, 255))
    return page


def test_light_pictures_that_are_blank_over_white_go_over_black(embedder):
    """The colour of a mask can vary where the mask is soft (its edge pixels'
    colour is their alpha: a game's gauge mask) or a light picture can be
    nearly transparent (a glass highlight): the colour is not flat, so such
    pictures were composited over white, as blank pages, and a gauge mask
    was verified as the same picture as a blank terrain map."""
    masks = {k: _premultiplied_mask(k) for k in ("circle", "star", "bars")}
    ball = _glossy_ball()
    for name, img in {**masks, "ball": ball}.items():
        rgba = np.asarray(img, np.float32).reshape(-1, 4)
        a = rgba[:, 3]
        weighted = np.sqrt((a @ np.square(rgba[:, :3] - (a @ rgba[:, :3]) / a.sum())) / a.sum())
        assert weighted.max() >= 2.0, name          # not a flat colour
        rgb = np.asarray(decode_image(encode(img, "PNG"), 64)).astype(np.int16)
        # Over white, a page or a faint outline; as decoded, the picture.
        assert rgb.std() > max(5.0, 3 * _on_white(img).std()), name
    for name, img in masks.items():
        gray = np.asarray(decode_image(encode(img, "PNG"), 64)).mean(axis=2)
        inside = np.asarray(_shape(name)) > 127
        assert gray[inside].mean() > 150 and gray[~inside].mean() < 60, name
    # Ordinary transparent pictures, light ones included, still go over white.
    for name, img in {"white page": _white_page(), "ball at full alpha": Image.fromarray(
            np.dstack([np.asarray(ball)[..., :3], (np.asarray(ball)[..., 3] > 0) * 255]).astype(np.uint8))}.items():
        np.testing.assert_array_equal(np.asarray(decode_image(encode(img, "PNG"), 64)), _on_white(img),
                                      err_msg=name)
    # Distinct masks embed apart, and a copy of one (smaller, re-saved) with its original.
    blobs = [encode(m, "PNG") for m in masks.values()]
    blobs.append(encode(masks["star"].resize((180, 180), Image.BILINEAR), "PNG"))
    vecs = np.stack([e.vector for e in embedder.embed_all(blobs)])
    sims = vecs @ vecs.T
    assert sims[3, 1] >= 0.9, sims[3]
    assert max(sims[0, 1], sims[0, 2], sims[1, 2], sims[3, 0], sims[3, 2]) < 0.8, sims
    # ...and no mask aligns with a blank white picture, as the gauge mask did (agreement 1.0).
    blank = layout_signature(decode_image(encode(Image.new("RGB", (80, 400), "white"), "PNG"), 0))
    assert max(pair_alignment(blank, layout_signature(decode_image(b, 0)))[0] for b in blobs) <= 0.0
