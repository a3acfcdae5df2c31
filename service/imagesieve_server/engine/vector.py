"""SVG drawings -> RGBA rasters, defensively (resvg, through resvg-py).

Icon themes, clip art and wallpaper packages ship much of their artwork as
SVG (a Debian theme package: 154 SVG files beside 143 PNG); a folder walk
only named them as not decoded. A drawing is rendered to fit
RENDER_SIDE x RENDER_SIDE (its aspect kept), then decoded like any other
image (transparency composited as ``decode.to_rgb`` does).

An SVG is a program for a renderer, so it is checked before it is drawn:

- XML entities are refused (nested entities expand exponentially);
- an ``href`` is kept only for a fragment of the same file (``#id``) or an
  embedded raster (``data:image/...;base64``) whose header Pillow reads
  within the pixel limit: resvg reads any file a path names, which a server
  must never do for a client, and a 1 KB file may embed a raster of any
  size;
- elements are counted, ``<use>`` references expanded (a chain of uses,
  each drawing the next ten times, is 10^k shapes in k lines), and so are
  the passes over the canvas (layers: filters, masks, clip paths, group
  opacity; filters apart) and costly filter primitives (feMorphology
  refused: 35 s for one radius of 100 px), so what is drawn is bounded by
  what is sent;
- a gzipped drawing (.svgz) is inflated to at most MAX_SVG_BYTES.

No system font is loaded per drawing (a desktop has thousands): text is set
in DejaVu (Sans, Serif, Sans Mono for the generic families, Sans for a family
not found) where it is installed, else not drawn.
"""
from __future__ import annotations

import base64
import binascii
import functools
import io
import re
import zlib
from pathlib import Path
from xml.etree import ElementTree

from PIL import Image

RENDER_SIDE = 512            # pixels: the longer side a drawing is rendered at (keypoints and the model want ~256 on the shorter)
MAX_SVG_BYTES = 16 << 20     # an SVG's text (a .svgz inflated), at most
MAX_ELEMENTS = 10_000        # elements in the file
MAX_DEPTH = 256              # elements nested (5,000 nested groups overflowed Python's stack in the checks)
# Elements drawn once <use> references are expanded. A shape's cost is its
# area: 19,000 canvas-sized translucent triangles took 47 s at 512 px, so a
# drawing may still take ~25 s at this bound (a server draws none unless asked).
MAX_DRAWN = 10_000
# Elements drawn through an offscreen layer (a filter, a mask, a clip path, a
# group's opacity), and through a filter: each is a pass over up to the whole
# canvas (at 512 px a full-canvas rectangle ~85 ms blurred, ~13 ms at half
# opacity, ~26 ms masked: 2,000 blurred ones took 169 s before these bounds).
MAX_LAYERS = 512
MAX_FILTERED = 32
MAX_PRIMITIVES = 64          # filter primitives (fe*) in the file
MAX_CONVOLVE_ORDER = 5       # feConvolveMatrix: a kernel of order^2 taps a pixel
MAX_OCTAVES = 8              # feTurbulence: a noise pass an octave
SNIFF_BYTES = 4096

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_RASTER_URI = re.compile(r"data:image/(png|jpeg|jpg|gif|webp);base64,", re.I)
_LENGTH = re.compile(r"^\s*([0-9.]+)\s*(px|pt|pc|mm|cm|in)?\s*$")


class SvgRefused(ValueError):
    """An SVG that is not drawn; ``code`` as DecodeError's."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT"):
        super().__init__(message)
        self.code = code


def _text_head(data: bytes) -> str:
    head = data[:SNIFF_BYTES]
    if head.startswith(b"\x1f\x8b"):
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[:SNIFF_BYTES * 4], SNIFF_BYTES)
        except zlib.error:
            return ""
    return head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")


def is_svg(data: bytes) -> bool:
    """Whether ``data`` (plain or gzipped) is an SVG document: its text starts
    with an XML declaration, a comment, a doctype or the <svg> element, and
    an <svg element opens within its first SNIFF_BYTES."""
    text = _text_head(data)
    return text.startswith(("<?xml", "<!--", "<!DOCTYPE", "<svg")) and "<svg" in text


def _inflated(data: bytes) -> bytes:
    if not data.startswith(b"\x1f\x8b"):
        return data
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflate.decompress(data, MAX_SVG_BYTES + 1)
    except zlib.error as e:
        raise SvgRefused(f"a gzipped SVG that cannot be inflated: {e}") from None
    if len(out) > MAX_SVG_BYTES or inflate.unconsumed_tail:
        raise SvgRefused(f"a gzipped SVG inflating past {MAX_SVG_BYTES} bytes", "RESOURCE_EXHAUSTED")
    return out


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _embedded_raster_ok(uri: str, max_pixels: int) -> bool:
    """Whether a data: URI holds a raster whose header Pillow reads, within ``max_pixels``."""
    m = _RASTER_URI.match(uri)
    if not m:
        return False
    try:
        raw = base64.b64decode(uri[m.end():].strip(), validate=False)
        with Image.open(io.BytesIO(raw)) as im:
            w, h = im.size
    except (binascii.Error, ValueError, OSError, Image.DecompressionBombError):
        return False
    return 0 < w * h <= max_pixels


def _layer(prop: str, value: str | None) -> bool:
    """Whether ``prop: value`` draws through an offscreen layer."""
    if value is None:
        return False
    value = value.strip().lower()
    if prop == "opacity":
        try:
            return float(value.rstrip("%")) / (100 if value.endswith("%") else 1) < 1
        except ValueError:
            return False
    return value not in ("", "none")


def _costs(el) -> tuple[int, int, int]:
    """(drawn, layers, filtered) of ``el`` alone: see MAX_LAYERS (Inkscape
    writes ``opacity:1`` on every element: only what needs a layer counts)."""
    props = {k: el.get(k) for k in ("filter", "mask", "clip-path", "opacity")}
    for declaration in (el.get("style") or "").split(";"):
        name, _, value = declaration.partition(":")
        if name.strip() in props:
            props[name.strip()] = value
    filtered = _layer("filter", props["filter"])
    layered = any(_layer(k, v) for k, v in props.items())
    return 1, int(layered), int(filtered)


def _drawn(root, ids: dict) -> tuple[int, int, int]:
    """(elements, layers, filtered elements) drawn, each <use> counted as
    what it references (memoized; a reference cycle counts as too many)."""
    memo: dict[int, tuple[int, int, int]] = {}
    active: set[int] = set()
    too_many = (MAX_DRAWN + 1, MAX_LAYERS + 1, MAX_FILTERED + 1)

    def add(x, y):
        return tuple(min(a + b, m) for a, b, m in zip(x, y, too_many))

    def count(el) -> tuple[int, int, int]:
        key = id(el)
        if key in memo:
            return memo[key]
        if key in active:
            return too_many
        active.add(key)
        n = _costs(el)
        for child in el:
            n = add(n, count(child))
        if _local(el.tag) == "use":
            ref = (el.get("href") or el.get(XLINK_HREF) or "").strip()
            if ref.startswith("#") and ref[1:] in ids:
                n = add(n, count(ids[ref[1:]]))
        active.discard(key)
        memo[key] = n
        return n
    return count(root)


def _checked(text: bytes, max_pixels: int) -> str:
    """The SVG ``text`` as it may be drawn (external references removed), or SvgRefused."""
    if re.search(rb"<!ENTITY", text, re.I):
        raise SvgRefused("an SVG declaring XML entities is not drawn (entities can expand without bound)")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as e:
        raise SvgRefused(f"cannot parse SVG: {e}") from None
    if _local(root.tag) != "svg":
        raise SvgRefused(f"an XML document whose root is <{_local(root.tag)}>, not <svg>")
    elements, stack = [], [(root, 1)]
    while stack:                    # depth first, without recursion
        el, depth = stack.pop()
        elements.append(el)
        if len(elements) > MAX_ELEMENTS:
            raise SvgRefused(f"an SVG of more than {MAX_ELEMENTS} elements", "RESOURCE_EXHAUSTED")
        if depth > MAX_DEPTH:
            raise SvgRefused(f"an SVG nesting elements more than {MAX_DEPTH} deep", "RESOURCE_EXHAUSTED")
        stack.extend((child, depth + 1) for child in reversed(el))
    ids = {el.get("id"): el for el in elements if el.get("id")}
    primitives = 0
    for el in elements:
        for attr in ("href", XLINK_HREF):
            ref = el.get(attr)
            if ref is None:
                continue
            ref = ref.strip()
            if not (ref.startswith("#") or _embedded_raster_ok(ref, max_pixels)):
                del el.attrib[attr]        # a file, a URL, or a raster too large: not read
        name = _local(el.tag)
        if name.startswith("fe") and name[2:3].isupper():
            primitives += 1
        if name == "feMorphology":
            raise SvgRefused("an SVG filter with feMorphology is not drawn (its cost grows with the square of a "
                             "radius that transforms scale)", "RESOURCE_EXHAUSTED")
        if name == "feConvolveMatrix":
            order = [float(x) for x in re.findall(r"[0-9.]+", el.get("order", "3"))[:2] or [3]]
            if max(order) > MAX_CONVOLVE_ORDER:
                raise SvgRefused(f"an SVG filter convolving with a kernel of order {max(order):g} (at most "
                                 f"{MAX_CONVOLVE_ORDER})", "RESOURCE_EXHAUSTED")
        elif name == "feTurbulence":
            try:
                octaves = float(el.get("numOctaves", "1"))
            except ValueError:
                octaves = 1.0
            if octaves > MAX_OCTAVES:
                el.set("numOctaves", str(MAX_OCTAVES))     # finer octaves are below a pixel anyway
    if primitives > MAX_PRIMITIVES:
        raise SvgRefused(f"an SVG of more than {MAX_PRIMITIVES} filter primitives", "RESOURCE_EXHAUSTED")
    drawn, layers, filtered = _drawn(root, ids)
    for n, most, what in ((drawn, MAX_DRAWN, "elements"), (layers, MAX_LAYERS, "elements through a layer (a "
                                                                                 "filter, mask, clip path or opacity)"),
                          (filtered, MAX_FILTERED, "elements through a filter")):
        if n > most:
            raise SvgRefused(f"an SVG drawing more than {most} {what} once its <use> references are expanded",
                             "RESOURCE_EXHAUSTED")
    _sized(root)
    return ElementTree.tostring(root, encoding="unicode")


_PX = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}


def _sized(root) -> None:
    """The drawing's width and height in pixels: absolute units converted
    (resvg-py 0.5 refuses a root sized in points: "invalid size"), a missing
    or relative one taken from the viewBox's aspect."""
    box = [float(x) for x in re.findall(r"[-+0-9.eE]+", root.get("viewBox", ""))[:4]]
    w, h = (_LENGTH.match(root.get(k) or "") for k in ("width", "height"))
    w, h = (float(m.group(1)) * _PX[m.group(2) or ""] if m else None for m in (w, h))
    if len(box) == 4 and box[2] > 0 and box[3] > 0:
        if w and not h:
            h = w * box[3] / box[2]
        elif h and not w:
            w = h * box[2] / box[3]
        elif not (w and h):
            w, h = box[2], box[3]
    if w and h:
        root.set("width", f"{w:g}")
        root.set("height", f"{h:g}")


@functools.lru_cache(maxsize=1)
def _font_files() -> tuple[str, ...]:
    for d in (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu")):
        found = sorted(str(p) for p in d.glob("DejaVu*.ttf")) if d.is_dir() else []
        if found:
            return tuple(found)
    return ()


def rasterize(data: bytes, max_pixels: int, side: int = RENDER_SIDE) -> Image.Image:
    """An SVG (plain or gzipped) as an RGBA image fitting ``side`` x ``side``;
    SvgRefused for what is not drawn (see the module's docstring)."""
    try:
        import resvg_py
    except ImportError:
        raise SvgRefused("SVG needs resvg-py, which is not installed (pip install resvg-py)") from None
    text = _inflated(data)
    if len(text) > MAX_SVG_BYTES:
        raise SvgRefused(f"an SVG of {len(text)} bytes, above {MAX_SVG_BYTES}", "RESOURCE_EXHAUSTED")
    try:
        svg = _checked(text, max_pixels)
    except SvgRefused:
        raise
    except RecursionError:          # <use> chains through nested groups: the counts recurse
        raise SvgRefused("an SVG whose <use> references nest too deeply to count", "RESOURCE_EXHAUSTED") from None
    except ValueError as e:         # a number that is none ("1.2.3pt", a viewBox of "e")
        raise SvgRefused(f"cannot read SVG: {e}") from None
    fonts = list(_font_files())
    try:
        families = dict(font_family="DejaVu Sans", sans_serif_family="DejaVu Sans", serif_family="DejaVu Serif",
                        monospace_family="DejaVu Sans Mono", cursive_family="DejaVu Sans",
                        fantasy_family="DejaVu Sans") if fonts else {}
        png = resvg_py.svg_to_bytes(svg_string=svg, width=side, height=side, skip_system_fonts=True,
                                    font_files=fonts or None, **families)
    except (ValueError, OSError) as e:
        raise SvgRefused(f"cannot draw SVG: {e}") from None
    img = Image.open(io.BytesIO(bytes(png)))
    img.load()
    return img
