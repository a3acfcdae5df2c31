"""Pictures shown to people and pictures altered for calibration are the
pictures the server compared (imagesieve.seen): transparency composited as
the decoder composites it, 16-bit levels mapped as it maps them, turned as
displayed. Files keep any colour under their transparent pixels (emoji
showed purple and teal squares in the audit report); a light picture held in
the alpha channel alone is blank over white; a 16-bit scan converted by
Pillow clips to white."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imagesieve.contact_sheet import SheetItem, render_contact_sheet
from imagesieve_server.engine.decode import decode_image

HIDDEN = (83, 14, 235)      # what one of the npm emoji keeps under its transparent pixels


def _disc_on_hidden_colour(photo: Image.Image, side: int = 200) -> Image.Image:
    """The photo in a disc, transparent around it, with HIDDEN under the transparent pixels."""
    rgba = photo.convert("RGB").resize((side, side)).convert("RGBA")
    alpha = Image.new("L", (side, side), 0)
    ImageDraw.Draw(alpha).ellipse((side // 8, side // 8, side * 7 // 8, side * 7 // 8), fill=255)
    rgba.putalpha(alpha)
    arr = np.asarray(rgba).copy()
    arr[arr[..., 3] == 0, :3] = HIDDEN
    return Image.fromarray(arr, "RGBA")


def _light_alpha_only(photo: Image.Image, side: int = 200) -> Image.Image:
    """White colour channels, the picture (the photo's luminance) in alpha alone."""
    alpha = photo.convert("L").resize((side, side))
    return Image.merge("RGBA", (*(Image.new("L", (side, side), 255),) * 3, alpha))


def _sixteen_bit(photo: Image.Image, side: int = 200) -> Image.Image:
    """The photo's luminance at 16 bits a level (what a scanner or a microscope writes)."""
    return Image.fromarray(np.asarray(photo.convert("L").resize((side, side)), np.uint16) * 257)


def _large_sixteen_bit(photo: Image.Image) -> Image.Image:
    return _sixteen_bit(photo, 900)      # Pillow cannot reduce I;16: reduced before decoding, no thumbnail


def _float_with_nan(photo: Image.Image) -> Image.Image:
    """32-bit float levels 0..250 with NaN at every ninth pixel (resampled first, NaN spread over all)."""
    a = np.asarray(photo.convert("L").resize((600, 400)), np.float32) * (250 / 255)
    a.reshape(-1)[::9] = np.nan
    return Image.fromarray(a, "F")


def _fine_palette(photo: Image.Image) -> Image.Image:
    """A palette image of a fine checker over the photo (reduced by nearest neighbour, it speckles)."""
    a = np.asarray(photo.convert("RGB").resize((600, 400))).copy()
    a[(np.add.outer(np.arange(400), np.arange(600)) % 2) == 0] = 0
    return Image.fromarray(a).convert("P", palette=Image.ADAPTIVE)


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="TIFF" if im.mode == "F" else "PNG")
    return buf.getvalue()


def _as_decoded(data: bytes, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(decode_image(data, 224).resize(size, Image.BOX), np.float32)


@pytest.fixture(scope="module")
def photo(photos) -> Image.Image:
    return Image.open(io.BytesIO(photos[0][0])).convert("RGB")


@pytest.mark.parametrize("make", [_disc_on_hidden_colour, _light_alpha_only, _sixteen_bit, _large_sixteen_bit,
                                  _float_with_nan, _fine_palette])
def test_report_thumbnails_show_the_picture_as_it_was_compared(tmp_path, photo, make):
    from imagesieve_server.audit.webreport import _write_thumb, thumb_limits
    data = _png(make(photo))
    (tmp_path / "t.png").write_bytes(data)
    assert _write_thumb(str(tmp_path / "t.png"), tmp_path / "t.jpg", thumb_limits(0, 0))
    thumb = np.asarray(Image.open(tmp_path / "t.jpg").convert("RGB"), np.float32)
    # The thumbnail is what was embedded (JPEG q80 and resampling apart; the failures were 50-150) ...
    assert np.abs(thumb - _as_decoded(data, thumb.shape[1::-1])).mean() < 10
    # ... and shows the picture: neither the hidden colour nor a blank tile.
    assert np.abs(thumb[:8, :8] - HIDDEN).mean() > 60
    assert thumb.std() > 15


def test_a_contact_sheet_shows_the_picture_as_it_was_compared(photo):
    sheet = np.asarray(render_contact_sheet([SheetItem(_png(_disc_on_hidden_colour(photo))),
                                             SheetItem(_png(_sixteen_bit(photo)))], columns=2, thumb=128), np.float32)
    tile = sheet[6:134, 6:134]                     # PAD = 6 around the 128-px tile
    assert tile[:10, :10].min() > 240              # the corners: white, not the hidden purple
    assert tile[54:74, 54:74].std() > 5            # the photo in the middle
    deep = sheet[6:134, 146:274]                   # the 16-bit scan: the photo, not white
    want = np.asarray(photo.convert("L").resize((128, 128)), np.float32)
    assert np.abs(deep.mean(axis=2) - want).mean() < 8


def test_calibration_alters_the_pictures_the_server_embeds(embedder, photos):
    """Copies made from the file's raw raster: a photo stored on its side
    (EXIF orientation 6) was altered turned against its upright original
    (brightness +30%: median cosine 0.78), and a transparent picture over its
    hidden purple (0.92). Made from the picture as decoded: 0.98 and 0.97, as
    plain JPEGs (0.98)."""
    from imagesieve_server.commands.calibrate import calibrate

    def embed(images):
        out = embedder.embed_all(images)
        return np.stack([o.vector for o in out]), np.array([o.ok for o in out])

    def stored_on_its_side(im):
        buf, exif = io.BytesIO(), Image.Exif()
        exif[0x0112] = 6
        im.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
        return buf.getvalue()

    ims = [Image.open(io.BytesIO(data)).convert("RGB").resize((320, 240)) for data, _, _ in photos[:6]]
    for store in (stored_on_its_side, lambda im: _png(_disc_on_hidden_colour(im))):
        result = calibrate([store(im) for im in ims], embed)
        assert result["images"] == 6
        assert result["median_cosine_by_kind"]["brightness_130"] > 0.94
        assert result["median_cosine_by_kind"]["transparent_png"] > 0.98
