"""Probe imagesieve's duplicate verdicts on GCompris's photos and paintings: 316 pictures of
Debian gcompris-qt-data 3.1-2 (monuments, animals, fishes, tools, renewable energy, the
"erase" activity's landscapes, instruments; paintings of the details and paintings
activities, three of them cut into six puzzle pieces), many of one subject (26 fishes, 9
hammers, the Eiffel Tower and the Taj Mahal in three photos each), so different pictures
look alike.

The package keeps its pictures inside Qt resource bundles, usr/share/gcompris-qt/rcc/*.rcc
(186 of them, format version 3): a header, a tree of nodes (a name offset, flags, then a
directory's children or a file's data offset), UTF-16 names, and the files' bytes, stored
as they are or zlib-compressed (flag 1). rcc_files() below walks that tree; every picture
is a WebP stored as it is. A picture's source name is its resource path below
:/gcompris/src/activities/ (e.g. paintings/resource/image/gogh_auvert_1.webp).

Rerunnable and deterministic (SEED). Steps (files under $PROBE_DIR, default
/tmp/imagesieve-probe-gcompris):
  build : the package (apt-get download, pinned) unpacked, its bundles' pictures written
          under ROOT/rcc_pictures; the originals: every picture (.webp .png .jpg .jpeg .gif
          .bmp, none under a lang/ folder) at least 150 px both ways in mode RGB, P or L,
          the first of byte-identical ones, in sorted path order (316), copied byte for
          byte; one altered copy of 25% of them (79: ten kinds in turn, fixed before any run,
          carried here verbatim); shuffled neutral names img_NNNN in one flat folder,
          manifest.csv beside it (never in it).
  audit : imagesieve audit FOLDER --out OUT --no-sweep               (verified, the default)
          imagesieve audit FOLDER --out OUT_raw --no-sweep --raw-cosine
  score : per run: recall overall and by kind; pairs of two originals that are not related
          (FAMILIES, below) and per 1,000 images; pairs of different pictures (those, two
          copies of unrelated originals, a copy with a wrong original) and per 1,000; copies
          paired with a wrong original; pairs of a collage with one of its other cells
          (correct, counted apart); wall time. Every reported pair's class in
          ROOT/<run>_pairs.csv; contact sheets ROOT/<run>_unrelated.png and
          ROOT/<run>_missed.png. Last line of stdout: one JSON object,
          {"verified": {...}, "raw_cosine": {...}}.

Usage: .venv/bin/python bench/probes/gcompris.py [all|build|audit|score]   (default all)

Kinds (fixed before any audit result was seen, not tuned after; one random.Random(SEED) and
one numpy default_rng(SEED) drawn in this order: the originals' shuffle, the names' shuffle,
then each copy in turn; copies PNG unless said):
  viewer_screenshot  in a desktop image viewer, 1280x800 #2b2b2b: 32 px title bar (#3c3f41,
                     title text, 3 window buttons), 40 px toolbar of 8 grey icons, 180 px
                     right panel of 5 grey thumbnails, 24 px status bar with text; the picture
                     fitted (LANCZOS) into the rest with 20 px margins, centred.
  video_thumb        cover-cropped to 16:9 at 320x180; a black gradient (0 -> 60% over the
                     lowest 40%), a white 60 px play circle (80%) with a dark triangle, a
                     "12:34" badge bottom right (black 70% box, white text).
  collage_2x2        516x516: four 256x256 centre cover-crops, 4 px white gutters; the picture
                     in cell (i mod 4), three other originals chosen at random in the others.
  tiny_jpeg420       longest side 96 px (LANCZOS), JPEG quality 40, 4:2:0.
  halftone_scan      print and scan at longest side 600 px: CMYK halftone (6 px cells, screens
                     at 15/75/0/45 degrees, dot radius ~ sqrt(ink)) on cream paper
                     (245,240,225), rotated 0.8 degrees (bicubic, paper fill), Gaussian blur
                     0.8, Gaussian noise sigma 4, JPEG q90.
  gif_websafe        GIF, the 216 web-safe colours, Floyd-Steinberg dither.
  meme_text          "WHEN YOU SEE IT" on top, "AND YOU CAN'T UNSEE IT" at the bottom, white
                     DejaVuSans-Bold with a black outline (8% of the size), size 11% of the
                     height, shrunk to fit 94% of the width.
  region_mosaic      one 35% x 35% rectangle at a random place inside the central 80%,
                     pixelated in blocks of 1/12 of its width.
  story_blurfill     540x960 story: the picture cover-scaled, blurred (radius 25), darkened to
                     70%, the picture fitted to 540 px width on top, centred.
  slide_embed        1280x720 white slide: a 6 px blue bar on top, a 44 px bold title, the
                     picture fitted into a 560x460 box at (60, 170), 4 bullet lines at right.

Ground truth among originals: none is byte-identical to another (the build keeps the first
of byte-identical pictures). FAMILIES are related, never false: each painting's six puzzle
pieces (tiles of one painting), the two textures of digital_electricity, and three
monuments that two activities ship as one photo (judged by eye from the pairs the
prototype's two runs reported, after those runs). Any other pair of two originals is
unrelated; JUDGED_DIFFERENT lists the 31 the prototype's runs reported and that were judged
different by eye (one subject in another photo, or different pictures); score counts pairs
of different pictures outside it as "not_judged_by_eye" (look at them). A copy of an
original is related to that original's family; a collage is related to its other cells'
originals and their copies (class collage_other_cell).

Measured (2026-12-07, this script's two runs of `all`, 2 shared cores; the set is the
prototype's (/tmp/probe26) file for file, names and sha256 alike, and both audits report the
same 94 and 88 pairs it reported): 395 images (316 originals, 79 copies). Verified: recall
71/79 = 0.899 (collage_2x2 3/8, video_thumb 6/8, story_blurfill 7/8, the other kinds all);
2 pairs of unrelated originals (two photos of the Eiffel Tower, 10 keypoint inliers; the
number and letter blocks, 11; 5.1 per 1k), no other pair of different pictures, 0 copies with
a wrong original; 16 pairs of a collage with its other cells; 43.0 and 50.8 s. Raw cosine:
recall 46/79 = 0.582 (collage_2x2 0/8, halftone_scan 0/8, slide_embed 0/7, tiny_jpeg420
2/8); 28 pairs of unrelated originals (70.9 per 1k) and 33 pairs of different pictures (83.5
per 1k: also 3 pairs of two halftone copies of different originals, 2 copies with a wrong
original); 9.0 and 10.7 s. The prototype counted 7 copies with a wrong original in that run:
every copy in those 5 pairs, here copies_in_pairs_of_different_pictures (7); by this
script's classes, which keep copy_copy_unrelated apart as neverball.py does, 2.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import shutil
import struct
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).parent))
from cli_audit import (
    EVIDENCE,
    audit_verified_and_raw,
    classified_pairs,
    copies_found,
    copy_files,
    ensure_debs,
    evidence_caption,
    fresh_folder,
    on_white,
    read_manifest,
    run_steps,
    save_pair_sheet,
    wall_s,
    write_manifest,
)

SEED = 26
ROOT = Path(os.environ.get("PROBE_DIR", "/tmp/imagesieve-probe-gcompris"))   # all its files
DEBS = ROOT / "debs"
PACKAGES = {"gcompris-qt-data": "3.1-2"}   # pinned
BUNDLES = DEBS / "x_gcompris-qt-data/usr/share/gcompris-qt/rcc"
PICTURES = ROOT / "rcc_pictures"     # the bundles' pictures, by resource path
RESOURCE_ROOT = "gcompris/src/activities/"   # every source name is below it
FOLDER = ROOT / "pictures"           # what is audited (flat folder)
MANIFEST = ROOT / "manifest.csv"     # file -> role / source / kind / sha256 (never in FOLDER)
OUT = ROOT / "audit_verified"
OUT_RAW = ROOT / "audit_raw"
COPY_SHARE = 0.25
PICTURE_EXTENSIONS = ("webp", "png", "jpg", "jpeg", "gif", "bmp")
MIN_SIDE = 150
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"   # fonts-dejavu-core
REGULAR = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


# ----------------------------------------------------------------------------- the package
def rcc_files(bundle: Path):
    """(resource path, bytes) of every file in a Qt .rcc bundle (format 1 to 3)."""
    b = bundle.read_bytes()
    if b[:4] != b"qres":
        raise ValueError(f"{bundle}: not a Qt resource bundle")
    version, tree, data, names = struct.unpack(">4I", b[4:20])
    node_size = 22 if version >= 2 else 14   # version 2 added a last-modified stamp

    def name(offset):
        n, = struct.unpack(">H", b[names + offset:names + offset + 2])
        return b[names + offset + 6:names + offset + 6 + 2 * n].decode("utf-16-be")   # after its length and a hash

    def walk(i, prefix):
        p = tree + i * node_size
        name_offset, flags = struct.unpack(">IH", b[p:p + 6])
        node_name = name(name_offset) if i else ""   # node 0 is the unnamed root
        if flags & 2:   # a directory: its children are consecutive nodes
            count, first = struct.unpack(">II", b[p + 6:p + 14])
            for c in range(count):
                yield from walk(first + c, prefix + node_name + "/" if node_name else prefix)
            return
        data_offset, = struct.unpack(">I", b[p + 10:p + 14])
        q = data + data_offset
        length, = struct.unpack(">I", b[q:q + 4])
        blob = b[q + 4:q + 4 + length]
        if flags & 1:
            blob = zlib.decompress(blob[4:])   # after the uncompressed length
        elif flags & 4:
            raise ValueError(f"{bundle}: {prefix + node_name} is zstd-compressed (not read here)")
        yield prefix + node_name, blob

    yield from walk(0, "")


def extract_pictures() -> list[str]:
    """Every bundle's pictures written under PICTURES; their resource paths, sorted."""
    if PICTURES.exists():
        shutil.rmtree(PICTURES)
    paths = []
    for bundle in sorted(BUNDLES.glob("*.rcc")):
        for path, blob in rcc_files(bundle):
            if path.rsplit(".", 1)[-1].lower() not in PICTURE_EXTENSIONS:
                continue
            target = PICTURES / path
            if target.exists():
                raise ValueError(f"{path} is in two bundles")   # none is in 3.1-2
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
            paths.append(path)
    return sorted(paths)


def select_originals(paths: list[str]) -> list[str]:
    """The pictures the probe plants: photos and paintings, not icons or text."""
    keep, seen = [], set()
    for path in paths:
        if "/lang/" in "/" + path:   # letters and words, per language
            continue
        try:
            im = Image.open(PICTURES / path)
        except OSError:   # a format Pillow cannot read
            continue
        if min(im.size) < MIN_SIDE or im.mode not in ("RGB", "P", "L"):   # RGBA: cut-out icons
            continue
        digest = hashlib.sha1((PICTURES / path).read_bytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        keep.append(path)
    return keep


def source_name(path: str) -> str:
    return path.removeprefix(RESOURCE_ROOT)


# ----------------------------------------------------------------------------- alterations
# As the prototype (make_set.py) wrote them before any run, reformatted only. Each takes an
# RGB picture and gives (a PIL picture or encoded bytes, extension); the draws from the shared
# generators are the prototype's, in its order.
def rgb(path: Path) -> Image.Image:
    im = Image.open(path)
    im.load()
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        bg = Image.new("RGB", im.size, "white")
        bg.paste(im, mask=im.split()[3])
        return bg
    return im.convert("RGB")


def fit(im, w, h):
    s = min(w / im.width, h / im.height)
    return im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)


def cover(im, w, h):
    s = max(w / im.width, h / im.height)
    r = im.resize((max(w, round(im.width * s)), max(h, round(im.height * s))), Image.LANCZOS)
    x, y = (r.width - w) // 2, (r.height - h) // 2
    return r.crop((x, y, x + w, y + h))


def viewer_screenshot(im, rng, nprng):
    W, H = 1280, 800
    S = Image.new("RGB", (W, H), (43, 43, 43))
    d = ImageDraw.Draw(S)
    d.rectangle((0, 0, W, 32), fill=(60, 63, 65))
    d.text((12, 8), "img_4711.jpg - Image Viewer", fill=(220, 220, 220), font=ImageFont.truetype(REGULAR, 14))
    for j, c in enumerate([(237, 106, 94), (245, 191, 79), (98, 197, 84)]):
        d.ellipse((W - 90 + j * 26, 9, W - 76 + j * 26, 23), fill=c)
    d.rectangle((0, 32, W, 72), fill=(50, 50, 50))
    for j in range(8):
        d.rectangle((12 + j * 40, 40, 40 + j * 40, 64), fill=(110, 110, 110))
    d.rectangle((W - 180, 72, W, H - 24), fill=(55, 55, 55))
    for j in range(5):
        d.rectangle((W - 165, 90 + j * 125, W - 15, 200 + j * 125), fill=(90, 90, 90))
    d.rectangle((0, H - 24, W, H), fill=(60, 63, 65))
    d.text((10, H - 20), "1920 x 1080   100%   3 / 42", fill=(200, 200, 200), font=ImageFont.truetype(REGULAR, 12))
    aw, ah = W - 180 - 40, H - 72 - 24 - 40
    f = fit(im, aw, ah)
    S.paste(f, (20 + (aw - f.width) // 2, 72 + 20 + (ah - f.height) // 2))
    return S, "png"


def video_thumb(im, rng, nprng):
    S = cover(im, 320, 180).convert("RGBA")
    ov = Image.new("RGBA", S.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(ov)
    for y in range(108, 180):
        d.line((0, y, 320, y), fill=(0, 0, 0, int(153 * (y - 108) / 72)))
    d.ellipse((130, 60, 190, 120), fill=(255, 255, 255, 204))
    d.polygon([(152, 74), (152, 106), (178, 90)], fill=(30, 30, 30, 255))
    d.rectangle((270, 156, 314, 174), fill=(0, 0, 0, 179))
    d.text((275, 158), "12:34", fill=(255, 255, 255, 255), font=ImageFont.truetype(BOLD, 12))
    return Image.alpha_composite(S, ov).convert("RGB"), "png"


def collage_2x2(im, rng, nprng, others, slot):
    S = Image.new("RGB", (516, 516), "white")
    cells = list(others)
    cells.insert(slot, im)
    for j, c in enumerate(cells):
        S.paste(cover(c, 256, 256), (4 * (j % 2 == 1) + 256 * (j % 2), 4 * (j // 2 == 1) + 256 * (j // 2)))
    return S, "png"


def tiny_jpeg420(im, rng, nprng):
    t = im.copy()
    t.thumbnail((96, 96), Image.LANCZOS)
    b = io.BytesIO()
    t.save(b, "JPEG", quality=40, subsampling=2)
    return b.getvalue(), "jpg"


def halftone_scan(im, rng, nprng):
    im = im.copy()
    im.thumbnail((600, 600), Image.LANCZOS)
    a = np.asarray(im).astype(float) / 255
    K = 1 - a.max(2)
    C = (1 - a[..., 0] - K) / (1 - K + 1e-6)
    M = (1 - a[..., 1] - K) / (1 - K + 1e-6)
    Y = (1 - a[..., 2] - K) / (1 - K + 1e-6)
    h, w = K.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    cell = 6.0
    paper = np.array([245, 240, 225], float) / 255
    out = np.ones((h, w, 3)) * paper
    # ink, screen angle, what it absorbs of red, green, blue (each ink its complement)
    inks = {"C": (C, 15, np.array([.9, .15, 0])), "M": (M, 75, np.array([.1, .9, .1])),
            "Y": (Y, 0, np.array([0, .05, .9])), "K": (K, 45, np.array([.85, .85, .85]))}
    for ink_plane, angle, absorb in inks.values():
        t = math.radians(angle)
        u = xx * math.cos(t) + yy * math.sin(t)
        v = -xx * math.sin(t) + yy * math.cos(t)
        cu, cv = (np.floor(u / cell) + .5) * cell, (np.floor(v / cell) + .5) * cell
        # the ink sampled at the screen cell's centre
        cx = cu * math.cos(t) - cv * math.sin(t)
        cy = cu * math.sin(t) + cv * math.cos(t)
        ink = ink_plane[np.clip(cy.round().astype(int), 0, h - 1), np.clip(cx.round().astype(int), 0, w - 1)]
        r = cell * 0.5 * np.sqrt(np.clip(ink, 0, 1)) * 1.2
        dot = (np.hypot(u - cu, v - cv) <= r)
        out = out * (1 - dot[..., None] * absorb)
    o = Image.fromarray((np.clip(out, 0, 1) * 255).astype(np.uint8)).rotate(
        0.8, Image.BICUBIC, expand=True, fillcolor=(245, 240, 225))
    o = o.filter(ImageFilter.GaussianBlur(0.8))
    a = np.asarray(o).astype(float) + nprng.normal(0, 4, (o.height, o.width, 3))
    b = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(b, "JPEG", quality=90)
    return b.getvalue(), "jpg"


def gif_websafe(im, rng, nprng):
    pal = Image.new("P", (1, 1))
    p = [v for r in range(6) for g in range(6) for bb in range(6) for v in (r * 51, g * 51, bb * 51)]
    pal.putpalette(p + [0] * (768 - len(p)))
    q = im.quantize(palette=pal, dither=Image.Dither.FLOYDSTEINBERG)
    b = io.BytesIO()
    q.save(b, "GIF")
    return b.getvalue(), "gif"


def meme_text(im, rng, nprng):
    S = im.copy()
    d = ImageDraw.Draw(S)
    W, H = S.size
    for txt, top in (("WHEN YOU SEE IT", True), ("AND YOU CAN'T UNSEE IT", False)):
        size = max(8, int(0.11 * H))
        while True:   # shrink until it fits 94% of the width
            fnt = ImageFont.truetype(BOLD, size)
            bb = d.textbbox((0, 0), txt, font=fnt, stroke_width=max(1, int(.08 * size)))
            if bb[2] - bb[0] <= 0.94 * W or size <= 6:
                break
            size -= 1
        sw = max(1, int(.08 * size))
        tw, th = bb[2] - bb[0], bb[3] - bb[1]
        y = int(0.02 * H) if top else H - th - int(0.04 * H)
        d.text(((W - tw) // 2 - bb[0], y - bb[1]), txt, font=fnt, fill="white", stroke_width=sw, stroke_fill="black")
    return S, "png"


def region_mosaic(im, rng, nprng):
    S = im.copy()
    W, H = S.size
    rw, rh = int(.35 * W), int(.35 * H)
    x = rng.randint(int(.1 * W), int(.9 * W) - rw)
    y = rng.randint(int(.1 * H), int(.9 * H) - rh)
    blk = max(2, rw // 12)
    reg = S.crop((x, y, x + rw, y + rh))
    small = reg.resize((max(1, rw // blk), max(1, rh // blk)), Image.BOX)
    S.paste(small.resize((rw, rh), Image.NEAREST), (x, y))
    return S, "png"


def story_blurfill(im, rng, nprng):
    bg = cover(im, 540, 960).filter(ImageFilter.GaussianBlur(25))
    bg = Image.eval(bg, lambda v: int(v * .7))
    f = fit(im, 540, 960)
    bg.paste(f, ((540 - f.width) // 2, (960 - f.height) // 2))
    return bg, "png"


def slide_embed(im, rng, nprng):
    S = Image.new("RGB", (1280, 720), "white")
    d = ImageDraw.Draw(S)
    d.rectangle((0, 0, 1280, 6), fill=(30, 90, 200))
    d.text((60, 50), "Quarterly review - section 3", fill=(30, 30, 30), font=ImageFont.truetype(BOLD, 44))
    f = fit(im, 560, 460)
    S.paste(f, (60 + (560 - f.width) // 2, 170 + (460 - f.height) // 2))
    fnt = ImageFont.truetype(REGULAR, 26)
    for j, t in enumerate(["Collected on site visits", "Reviewed by the team", "Archived for reference",
                           "Next steps: publish"]):
        d.ellipse((680, 196 + j * 70, 692, 208 + j * 70), fill=(120, 120, 120))
        d.text((710, 186 + j * 70), t, fill=(60, 60, 60), font=fnt)
    return S, "png"


KINDS = [
    ("viewer_screenshot", viewer_screenshot),
    ("video_thumb", video_thumb),
    ("collage_2x2", collage_2x2),
    ("tiny_jpeg420", tiny_jpeg420),
    ("halftone_scan", halftone_scan),
    ("gif_websafe", gif_websafe),
    ("meme_text", meme_text),
    ("region_mosaic", region_mosaic),
    ("story_blurfill", story_blurfill),
    ("slide_embed", slide_embed),
]


# ----------------------------------------------------------------------------- ground truth
# Related originals. The puzzle pieces are tiles of one painting (by their names); the
# monuments were judged by eye from the pairs the prototype's two runs reported, after them.
FAMILIES = [
    [f"paintings/resource/image/{painting}_{piece}.webp" for piece in range(1, 7)]
    for painting in ("bazille_rampart", "cassat_summertime", "gogh_auvert")
] + [
    ["digital_electricity/resource/texture01.webp", "digital_electricity/resource/texture02.webp"],
    # one photo in two activities
    ["explore_monuments/resource/germany/brandenburgGate.webp",
     "categorization/resource/images/monuments/brandenburgGate.webp"],
    ["categorization/resource/images/monuments/greatPyramid.webp",
     "explore_monuments/resource/egypt/greatPyramidOfGiza.webp"],
    ["categorization/resource/images/monuments/colosseum.webp",
     "explore_monuments/resource/wonders/colosseum.webp"],
]
FAMILY_OF = {s: i for i, group in enumerate(FAMILIES) for s in group}

# Pairs the prototype's runs reported, judged different by eye (a pair of different pictures
# outside this list has not been looked at).
_SAME_SUBJECT = "same subject, different photo"
JUDGED_DIFFERENT = {frozenset(pair): note for *pair, note in [
    ("categorization/resource/images/monuments/eiffelTower.webp", "details/resource/image/TourEiffel_background.webp", _SAME_SUBJECT),
    ("categorization/resource/images/monuments/eiffelTower.webp", "explore_monuments/resource/france/eiffelTower.webp", _SAME_SUBJECT),
    ("details/resource/image/TourEiffel_background.webp", "explore_monuments/resource/france/eiffelTower.webp", _SAME_SUBJECT),
    ("explore_monuments/resource/wonders/tajMahal.webp", "categorization/resource/images/monuments/tajMahal.webp",
     _SAME_SUBJECT + " (checked at full size)"),
    ("explore_monuments/resource/wonders/tajMahal.webp", "details/resource/image/TajMahal_background.webp", _SAME_SUBJECT),
    ("categorization/resource/images/monuments/tajMahal.webp", "details/resource/image/TajMahal_background.webp", _SAME_SUBJECT),
    ("details/resource/image/Neuschwanstein_background.webp", "explore_monuments/resource/germany/neuschwansteinCastle.webp",
     _SAME_SUBJECT),
    ("categorization/resource/images/fishes/fish14.webp", "categorization/resource/images/fishes/fish5.webp", _SAME_SUBJECT),
    ("explore_monuments/resource/india/victoriaMemorial.webp", "explore_monuments/resource/wonders/tajMahal.webp", "different"),
    ("explore_monuments/resource/india/victoriaMemorial.webp", "categorization/resource/images/monuments/tajMahal.webp", "different"),
    ("categorization/resource/images/numbers/numbers.webp", "categorization/resource/images/alphabets/alphabets.webp", "different"),
    ("categorization/resource/images/tools/screwDriver.webp", "categorization/resource/images/tools/screwDriver1.webp", "different"),
    ("categorization/resource/images/tools/hammer9.webp", "categorization/resource/images/tools/hammer2.webp", "different"),
    ("categorization/resource/images/tools/hammer9.webp", "categorization/resource/images/tools/hammer8.webp", "different"),
    ("categorization/resource/images/tools/scissors1.webp", "categorization/resource/images/tools/scissors4.webp", "different"),
    ("categorization/resource/images/fishes/fish21.webp", "categorization/resource/images/fishes/fish16.webp", "different"),
    ("categorization/resource/images/fishes/fish2.webp", "categorization/resource/images/fishes/fish26.webp", "different"),
    ("categorization/resource/images/fishes/fish23.webp", "categorization/resource/images/fishes/fish24.webp", "different"),
    ("categorization/resource/images/fishes/fish19.webp", "categorization/resource/images/fishes/fish18.webp", "different"),
    ("categorization/resource/images/fishes/fish19.webp", "categorization/resource/images/fishes/fish16.webp", "different"),
    ("categorization/resource/images/fishes/fish19.webp", "categorization/resource/images/fishes/fish12.webp", "different"),
    ("categorization/resource/images/fishes/fish19.webp", "categorization/resource/images/fishes/fish14.webp", "different"),
    ("categorization/resource/images/fishes/fish19.webp", "categorization/resource/images/fishes/fish5.webp", "different"),
    ("categorization/resource/images/fishes/fish16.webp", "categorization/resource/images/fishes/fish12.webp", "different"),
    ("categorization/resource/images/renewable/solar6.webp", "categorization/resource/images/renewable/solar8.webp", "different"),
    ("categorization/resource/images/renewable/solar8.webp", "categorization/resource/images/renewable/solar7.webp", "different"),
    ("categorization/resource/images/renewable/solar8.webp", "categorization/resource/images/renewable/solar5.webp", "different"),
    ("categorization/resource/images/renewable/solar5.webp", "categorization/resource/images/renewable/solar4.webp", "different"),
    ("paintings/resource/image/cassat_summertime_6.webp", "categorization/resource/images/fishes/fish27.webp", "different"),
    ("erase/resource/long_nosed_monkey.webp", "clickgame/resource/sea4.webp", "different"),
    ("clickgame/resource/sea4.webp", "explore_monuments/resource/india/greatStupa.webp", "different"),
]}


def related(s1: str, s2: str) -> bool:
    """Two source names of one picture or one family."""
    return s1 == s2 or (s1 in FAMILY_OF and FAMILY_OF.get(s1) == FAMILY_OF.get(s2))


# ----------------------------------------------------------------------------- build
def build() -> None:
    for font in (BOLD, REGULAR):
        if not Path(font).exists():
            sys.exit(f"{font} missing (Debian fonts-dejavu-core): the kinds draw text with it")
    ensure_debs(DEBS, PACKAGES)
    originals = select_originals(extract_pictures())
    rng, nprng = random.Random(SEED), np.random.default_rng(SEED)
    order = list(range(len(originals)))
    rng.shuffle(order)
    n_copies = round(COPY_SHARE * len(originals))
    chosen = order[:n_copies]
    names = [f"img_{i:04d}" for i in range(1, len(originals) + n_copies + 1)]
    rng.shuffle(names)
    fresh_folder(FOLDER)
    rows = []
    for name, path in zip(names, originals):
        f = FOLDER / (name + os.path.splitext(path)[1])
        shutil.copyfile(PICTURES / path, f)
        rows.append({"file": f.name, "role": "original", "source": source_name(path), "kind": "",
                     "collage_others": ""})
    for c, (i, name) in enumerate(zip(chosen, names[len(originals):])):
        kind, alter = KINDS[c % len(KINDS)]
        extra, others = {}, []
        if kind == "collage_2x2":
            others = rng.sample([o for o in range(len(originals)) if o != i], 3)
            extra = {"others": [rgb(PICTURES / originals[o]) for o in others], "slot": c % 4}
        out, ext = alter(rgb(PICTURES / originals[i]), rng, nprng, **extra)
        f = FOLDER / f"{name}.{ext}"
        if isinstance(out, bytes):
            f.write_bytes(out)
        else:
            out.save(f)
        rows.append({"file": f.name, "role": "copy", "source": source_name(originals[i]), "kind": kind,
                     "collage_others": ";".join(source_name(originals[o]) for o in others)})
    for r in rows:
        r["sha256"] = hashlib.sha256((FOLDER / r["file"]).read_bytes()).hexdigest()
    write_manifest(rows, MANIFEST)
    print(f"built {FOLDER}: {len(originals)} originals, {n_copies} copies, {len(rows)} files; manifest {MANIFEST}")


# ----------------------------------------------------------------------------- score
DIFFERENT_PICTURES = ("orig_unrelated", "copy_copy_unrelated", "copy_wrong_orig")


def classify(ra: dict, rb: dict) -> str:
    """A reported pair's class from its two manifest rows (copy_own: a copy with its original)."""
    sa, sb = ra["source"], rb["source"]
    roles = {ra["role"], rb["role"]}
    if sa == sb and roles == {"original", "copy"}:
        return "copy_own"
    for collage, other in ((ra, rb), (rb, ra)):
        # the collage pasted that picture (or the original of that copy) in another cell
        if collage["kind"] == "collage_2x2" and other["source"] in collage["collage_others"].split(";"):
            return "collage_other_cell"
    if roles == {"original"}:
        return "orig_related" if related(sa, sb) else "orig_unrelated"
    if roles == {"copy"}:
        return "copy_copy_related" if related(sa, sb) else "copy_copy_unrelated"
    return "copy_related_orig" if related(sa, sb) else "copy_wrong_orig"


def score() -> dict:
    man, row, orig_file, copies = read_manifest(MANIFEST)
    n = len(man)

    def show(f):
        return on_white(Image.open(FOLDER / f))

    result = {}
    for out, name in ((OUT, "verified"), (OUT_RAW, "raw_cosine")):
        pairs = classified_pairs(out, row, classify)
        copies["found"] = copies_found(pairs, copies)
        wrong = pairs[pairs.cls == "copy_wrong_orig"]
        wrong_copies = copy_files(wrong, row)
        different = pairs[pairs.cls.isin(DIFFERENT_PICTURES)]
        # the prototype's "copies with a wrong original" counted every copy in such a pair
        copies_in_different = {f for a, b in zip(different.fa, different.fb) for f in (a, b) if row[f]["role"] == "copy"}
        not_judged = [(a, b) for a, b in zip(different.fa, different.fb)
                      if frozenset((row[a]["source"], row[b]["source"])) not in JUDGED_DIFFERENT]
        n_orig = int((pairs.cls == "orig_unrelated").sum())
        result[name] = {
            "images": n, "copies": len(copies), "pairs": len(pairs),
            "recall": round(float(copies.found.mean()), 3),
            "copies_found": f"{int(copies.found.sum())}/{len(copies)}",
            "recall_by_kind": {k: f"{int(g.found.sum())}/{len(g)}" for k, g in copies.groupby("kind")},
            "pairs_of_originals_not_related": n_orig,
            "pairs_of_originals_not_related_per_1k": round(1000 * n_orig / n, 1),
            "pairs_of_different_pictures": len(different),
            "pairs_of_different_pictures_per_1k": round(1000 * len(different) / n, 1),
            "copies_with_wrong_original": len(wrong_copies),
            "copies_in_pairs_of_different_pictures": len(copies_in_different),
            "collage_pairs_with_other_cells": int((pairs.cls == "collage_other_cell").sum()),
            "pairs_of_different_pictures_not_judged_by_eye": len(not_judged),
            "pairs_by_class": dict(sorted(Counter(pairs.cls).items())),
            "wall_s": wall_s(out)}
        for a, b in not_judged:
            print(f"{name}: not judged by eye yet: {a} {row[a]['source']} | {b} {row[b]['source']}")
        ev = [c for c in EVIDENCE if c in pairs.columns]
        pairs[["cls", "fa", "src_a", "fb", "src_b", *ev]].sort_values(["cls", "fa", "fb"]).to_csv(
            ROOT / f"{name}_pairs.csv", index=False, float_format="%.3f")
        miss = copies[~copies.found].assign(original=lambda d: d.source.map(orig_file))
        save_pair_sheet([(r.fa, r.fb, evidence_caption(r, r.cls, ev)) for r in different.itertuples()],
                        ROOT / f"{name}_unrelated.png",
                        f"{name}: {len(different)} pairs of different pictures of {len(pairs)} pairs, {n} images",
                        show, max_rows=len(different))
        save_pair_sheet([(r.file, r.original, f"{r.kind}\n{r.source}") for r in miss.itertuples()],
                        ROOT / f"{name}_missed.png",
                        f"{name}: {len(miss)} copies not paired with their original (copy | original)", show,
                        max_rows=len(miss))
    (ROOT / "summary.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


def audit() -> None:
    audit_verified_and_raw(FOLDER, OUT, OUT_RAW)


def main() -> int:
    return run_steps(sys.argv[1] if len(sys.argv) > 1 else "all", __doc__, build, audit, score)


if __name__ == "__main__":
    sys.exit(main())
