"""SVG drawings (engine.vector): rasterized and judged like any picture,
without reading what they name or drawing without bound."""
import gzip
import hashlib
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from imagesieve import Client
from imagesieve.local_server import LocalServer
from imagesieve_server.analysis.duplicates.find import find_duplicates
from imagesieve_server.engine import vector
from imagesieve_server.engine.decode import DecodeError, DecodeLimits, decode_image

from conftest import encode

PALETTE = ("#1d3557", "#e63946", "#f1faee", "#a8dadc", "#457b9d")


def drawing(seed: int, text: str = "") -> bytes:
    """One flat drawing of a shared style (one palette, one kind of shapes,
    one frame): its own composition of circles, bars and a polygon."""
    rng = np.random.default_rng(seed)
    parts = [f'<rect width="400" height="300" fill="{PALETTE[2]}"/>']
    for _ in range(6):
        x, y, r = rng.integers(30, 370), rng.integers(30, 270), rng.integers(12, 60)
        parts.append(f'<circle cx="{x}" cy="{y}" r="{r}" fill="{PALETTE[rng.integers(0, 5)]}"/>')
    for _ in range(3):
        x, y = rng.integers(0, 300), rng.integers(0, 250)
        parts.append(f'<rect x="{x}" y="{y}" width="{rng.integers(40, 120)}" height="{rng.integers(8, 30)}" '
                     f'fill="{PALETTE[rng.integers(0, 5)]}" transform="rotate({rng.integers(-30, 30)} {x} {y})"/>')
    points = " ".join(f"{rng.integers(0, 400)},{rng.integers(0, 300)}" for _ in range(5))
    parts.append(f'<polygon points="{points}" fill="{PALETTE[0]}" fill-opacity="0.6"/>')
    if text:
        parts.append(f'<text x="20" y="280" font-family="sans-serif" font-size="28">{text}</text>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="400pt" '
            'height="300pt" viewBox="0 0 400 300">' + "".join(parts) + "</svg>").encode()


def raster(svg: bytes, side: int) -> Image.Image:
    """The drawing as a program that exports PNGs would give it: on white, ``side`` px wide."""
    im = vector.rasterize(svg, 10 ** 8, side=side)
    ground = Image.new("RGBA", im.size, "white")
    ground.alpha_composite(im)
    return ground.convert("RGB")


def test_a_drawing_and_its_raster_copies_are_one_picture_and_distinct_drawings_are_not(embedder):
    drawings = [drawing(s) for s in range(8)]
    copies = {   # (drawing, copy): a PNG export at another size, a JPEG framed, the gzipped file, a mirror
        (0, "png export"): encode(raster(drawings[0], 300), "PNG"),
        (1, "framed jpeg"): encode(ImageOps.expand(raster(drawings[1], 640), 30, "#202020"), "JPEG", quality=85),
        (2, "svgz"): gzip.compress(drawings[2]),
        (3, "mirrored png"): encode(ImageOps.mirror(raster(drawings[3], 800)), "PNG"),
    }
    blobs = drawings + list(copies.values())
    out = embedder.embed_all(blobs, with_signatures=True)
    assert all(o.ok for o in out), [o.error for o in out]
    vectors = np.stack([o.vector for o in out])
    signatures = np.stack([o.signature for o in out])
    keys = [f"d{i}" for i in range(len(drawings))] + [f"copy of d{i} ({kind})" for i, kind in copies]
    none = [""] * len(blobs)
    report = find_duplicates(vectors, keys, none, none, [hashlib.sha256(b).hexdigest() for b in blobs],
                             signatures=signatures)
    pairs = {tuple(sorted((keys[a], keys[b]))) for a, b in zip(report.a.tolist(), report.b.tolist())}
    wanted = {tuple(sorted((f"d{i}", f"copy of d{i} ({kind})"))) for i, kind in copies}
    assert pairs == wanted, pairs


def test_a_drawing_reads_no_file_it_names(tmp_path, photos):
    """resvg draws any file an href names: a server must never read a
    client-chosen path. Only a fragment (#id) or an embedded raster is kept."""
    secret = tmp_path / "secret.png"
    secret.write_bytes(photos[0][0])
    plain = drawing(5)
    named = [plain.replace(b"</svg>", f'<image href="{ref}" width="400" height="300"/></svg>'.encode())
             for ref in (str(secret), f"file://{secret}", "secret.png")]
    expected = np.asarray(decode_image(plain, 256))
    for svg in named:
        assert np.array_equal(np.asarray(decode_image(svg, 256)), expected)
    # An embedded raster (data: URI) within the pixel limit is drawn.
    small = Image.open(io.BytesIO(photos[0][0])).convert("RGB").resize((40, 30))
    uri = "data:image/png;base64," + __import__("base64").b64encode(encode(small, "PNG")).decode()
    embedded = plain.replace(b"</svg>", f'<image href="{uri}" width="400" height="300"/></svg>'.encode())
    assert not np.array_equal(np.asarray(decode_image(embedded, 256)), expected)


def _bomb_png_header(w: int, h: int) -> bytes:
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + body)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("kind", ["entities", "use chain", "elements", "nesting", "gzip bomb", "convolution",
                                  "not a number"])
def test_drawings_that_would_cost_without_bound_are_refused_alone(kind):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" height="64">'
    if kind == "entities":
        data = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
                + svg + b"<text>&b;</text></svg>")
        fragment = "declaring XML entities"
    elif kind == "use chain":       # each level draws the one below ten times: 10^8 shapes in 9 lines
        levels = [b'<g id="l0"><rect width="1" height="1"/></g>'] + [
            b'<g id="l%d">' % k + b"".join(b'<use xlink:href="#l%d"/>' % (k - 1) for _ in range(10)) + b"</g>"
            for k in range(1, 9)]
        data = svg + b"<defs>" + b"".join(levels) + b'</defs><use xlink:href="#l8"/></svg>'
        fragment = "once its <use> references are expanded"
    elif kind == "elements":
        data = svg + b'<rect width="1" height="1"/>' * (vector.MAX_ELEMENTS + 1) + b"</svg>"
        fragment = f"more than {vector.MAX_ELEMENTS} elements"
    elif kind == "nesting":       # 5,000 nested groups overflowed Python's stack (RecursionError)
        data = svg + b"<g>" * 5000 + b'<rect width="1" height="1"/>' + b"</g>" * 5000 + b"</svg>"
        fragment = f"more than {vector.MAX_DEPTH} deep"
    elif kind == "not a number":
        data = b'<svg xmlns="http://www.w3.org/2000/svg" width="1.2.3pt" viewBox="0 0 e 9"><rect/></svg>'
        fragment = "cannot read SVG"
    elif kind == "gzip bomb":
        data = gzip.compress(svg + b"<!--" + b" " * (vector.MAX_SVG_BYTES + 10) + b"--></svg>")
        fragment = "inflating past"
    else:
        data = svg + (b'<filter id="f"><feConvolveMatrix order="40" kernelMatrix="' + b"1 " * 1600 + b'"/>'
                      b'</filter><rect width="64" height="64" filter="url(#f)"/></svg>')
        fragment = "a kernel of order 40"
    assert len(data) < 2 << 20
    with pytest.raises(DecodeError, match=fragment) as e:
        decode_image(data, 64)
    assert e.value.code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")
    # An embedded raster whose header claims 60000 x 60000: not drawn (the drawing is).
    claim = "data:image/png;base64," + __import__("base64").b64encode(_bomb_png_header(60000, 60000)).decode()
    drawn = decode_image(svg + f'<image href="{claim}" width="64" height="64"/><rect width="8" height="8"/>'
                         '</svg>'.encode(), 64)
    assert drawn.size[0] > 0


def test_a_server_rasterizes_drawings_only_when_asked(server, manifest_path, embedder):
    """A drawing's cost is bounded by counts, not by a header, and a decoder
    thread cannot be stopped: a server refuses drawings (one item's error,
    saying how to ask) unless started with --decode-svg; then it answers as
    the library does."""
    svg, png = drawing(6), encode(raster(drawing(6), 512), "PNG")
    with Client(server.address, timeout=60) as c:
        refused, fine = list(c.embed_stream([svg, png]))
    assert refused.error is not None and refused.error.code == "INVALID_ARGUMENT"
    assert "--decode-svg" in refused.error.message and fine.error is None
    assert DecodeLimits().drawings          # the library and the local commands draw them
    with LocalServer(["--decode-svg", "1"], model=str(manifest_path)) as srv, Client(srv.address, timeout=60) as c:
        (answer,) = list(c.embed_stream([svg]))
    assert answer.error is None
    local = embedder.embed_all([svg])[0].vector
    assert float(np.dot(answer.vector, local)) > 0.999
