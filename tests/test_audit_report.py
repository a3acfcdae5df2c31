"""report.json is written with its long lists streamed item by item: it must
still be exactly the JSON document the same dict would give."""
from __future__ import annotations

import json

from imagesieve_server.audit.report import write_json_streaming


def test_streamed_json_equals_the_whole_document(tmp_path):
    doc = {"source": "/data/ü", "summary": {"images": 3, "notes": ["a\nb"], "rate": 0.5}, "files": []}
    groups = [{"paths": ["/x/1.jpg", "/x/2.jpg"], "min_internal_cosine": 0.91}, {"paths": ["/y"], "min_internal_cosine": 1.0}]
    write_json_streaming(tmp_path / "r.json", doc, {"duplicate_groups": lambda: iter(groups),
                                                    "leakage_pairs": lambda: iter(())})
    assert json.loads((tmp_path / "r.json").read_text()) == {**doc, "duplicate_groups": groups, "leakage_pairs": []}
    write_json_streaming(tmp_path / "plain.json", doc, {})
    assert json.loads((tmp_path / "plain.json").read_text()) == doc


def test_class_balance_chart_takes_any_class_name():
    """Class names are text: a dollar sign is not mathtext (one crashed the
    report after every analysis had run), and two long names cut alike
    stay two bars."""
    from imagesieve_server.audit.report import _bar_chart
    names = {"a$\\frac$": 3, "$5 and $10": 2, "x" * 30 + "1": 1, "x" * 30 + "2": 4}
    svg = _bar_chart(names)
    assert svg.startswith("<svg") and svg.count("#4a7bd0") == 4
    assert _bar_chart({}) == ""


def test_report_thumbnails_are_upright_as_the_photo_is_displayed(tmp_path, photos):
    """A photo stored on its side with EXIF orientation 6 gets a thumbnail
    turned as a viewer shows it (the same pixels as the photo saved upright),
    through imagesieve.orientation.upright: ImageOps.exif_transpose re-serialised the whole
    EXIF block, ~1 s per MB of tags for each thumbnail of a hostile folder."""
    import io

    import numpy as np
    from PIL import Image

    from imagesieve_server.audit.webreport import _write_thumb, thumb_limits

    photo = Image.open(io.BytesIO(photos[0][0])).convert("RGB").resize((300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6                                   # stored turned: displayed after a 270-degree turn
    photo.save(tmp_path / "turned.jpg", quality=95, exif=exif.tobytes())
    photo.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "upright.jpg", quality=95)
    assert _write_thumb(str(tmp_path / "turned.jpg"), tmp_path / "a.jpg", thumb_limits(300, 200))
    assert _write_thumb(str(tmp_path / "upright.jpg"), tmp_path / "b.jpg", thumb_limits(200, 300))
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.jpg").convert("L"), np.float32) for n in "ab")
    assert a.shape == b.shape and a.shape[0] > a.shape[1]          # portrait, as displayed
    assert np.abs(a - b).mean() < 4


def test_a_thumbnail_is_decoded_no_larger_than_the_audit_read_the_file(tmp_path):
    """Thumbnails had no pixel bound (the audit had decoded the files within
    its own): a file swapped after the audit for a 12,000 x 12,000 PNG of a
    few hundred KB was decoded whole, 144 MP, for a 112 px tile. Now the
    audit's default bound holds, or the size the audit read it at where
    larger; a small TIFF in one large tile still gets its thumbnail."""
    import numpy as np
    import tifffile
    from PIL import Image

    from imagesieve_server.audit.webreport import _write_thumb, thumb_limits
    from imagesieve_server.engine import DecodeLimits

    Image.new("L", (12_000, 12_000), 200).save(tmp_path / "swapped.png")
    assert (tmp_path / "swapped.png").stat().st_size < 1 << 20
    assert not _write_thumb(str(tmp_path / "swapped.png"), tmp_path / "a.jpg", thumb_limits(640, 480))
    assert not _write_thumb(str(tmp_path / "swapped.png"), tmp_path / "b.jpg", thumb_limits(0, 0))  # > 100 MP
    assert 12_000 * 12_000 > DecodeLimits.max_pixels
    assert _write_thumb(str(tmp_path / "swapped.png"), tmp_path / "c.jpg", thumb_limits(12_000, 12_000))
    assert Image.open(tmp_path / "c.jpg").size == (112, 112)
    tifffile.imwrite(tmp_path / "tiled.tif", np.full((150, 200, 3), 90, np.uint8), tile=(256, 256))
    assert _write_thumb(str(tmp_path / "tiled.tif"), tmp_path / "d.jpg", thumb_limits(200, 150))
