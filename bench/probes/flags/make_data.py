"""Build the country-flag probe for `imagesieve audit` (a helper session's probe,
2026-12-05: a kind of collection nobody here had tuned for).

Source: Debian package iso-flags-png-320x240 (262 glossy rounded-rectangle country
flag icons, 320x240 RGBA PNG); byte-identical flags kept once. 12 copy kinds written
for this probe (a UI mock-up, 2x2 tiling, JPEG q5 at half size, a warm white balance,
barrel distortion, motion blur, a favicon blown up, a waving warp on a sky, a round
button, a sticker outline, a fabric weave, a 2x2 mosaic of four flags), 6 copies each.
From the repository root:

    mkdir -p bench/out/flags/deb && (cd bench/out/flags/deb && apt-get download iso-flags-png-320x240 \
        && dpkg -x iso-flags-png-320x240_*.deb x)
    .venv/bin/python bench/probes/flags/make_data.py
    .venv/bin/python -m imagesieve.cli audit bench/out/flags/data --out bench/out/flags/out
    .venv/bin/python bench/probes/flags/score.py bench/out/flags/out [--sheets]

Writes FLAGS_PROBE_DIR (default bench/out/flags)/data (originals and copies under
random names, mixed PNG/JPEG) and its manifest.csv beside the folder.
"""
import csv
import hashlib
import glob
import os
import random
import shutil

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = os.environ.get("FLAGS_PROBE_DIR", "bench/out/flags")
SRC = os.path.join(HERE, "deb/x/usr/share/iso-flags-png-320x240")
OUT = os.path.join(HERE, "data")
MAN = os.path.join(HERE, "manifest.csv")
SEED = 20
PER_KIND = 6
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONTB = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"

rng = random.Random(SEED)
nrng = np.random.default_rng(SEED)


def on(im, bg=(255, 255, 255)):
    base = Image.new("RGBA", im.size, bg + (255,))
    base.alpha_composite(im.convert("RGBA"))
    return base.convert("RGB")


def name(ext):
    return "%016x.%s" % (rng.getrandbits(64), ext)


# ---------------------------------------------------------------- alteration kinds
def ui_mock(im, code):
    """Screenshot of a country page in a desktop app: title bar, sidebar list, flag + caption."""
    W, H = 760, 500
    s = Image.new("RGB", (W, H), (246, 246, 248))
    d = ImageDraw.Draw(s)
    f = ImageFont.truetype(FONT, 14)
    fb = ImageFont.truetype(FONTB, 22)
    d.rectangle([0, 0, W, 30], fill=(52, 56, 64))
    for i, c in enumerate([(255, 95, 86), (255, 189, 46), (39, 201, 63)]):
        d.ellipse([10 + i * 20, 9, 22 + i * 20, 21], fill=c)
    d.text((300, 7), "World Atlas — Countries", fill=(230, 230, 230), font=f)
    d.rectangle([0, 30, 190, H], fill=(232, 234, 238))
    names = ["Albania", "Belgium", "Chile", "Denmark", "Estonia", "Finland", "Ghana",
             "Hungary", "India", "Japan", "Kenya", "Latvia", "Mexico", "Nepal", "Oman",
             "Peru", "Qatar", "Russia", "Spain", "Togo"]
    sel = rng.randrange(len(names))
    for i, n in enumerate(names):
        y = 40 + i * 22
        if i == sel:
            d.rectangle([0, y - 2, 190, y + 18], fill=(60, 120, 215))
        d.text((14, y), n, fill=(255, 255, 255) if i == sel else (40, 40, 40), font=f)
    fl = im.resize((384, 288), Image.LANCZOS)
    s.paste(fl, (250, 60), fl)
    d.text((250, 360), "Country code: %s" % code.upper(), fill=(20, 20, 20), font=fb)
    d.text((250, 395), "Population, capital, currency and languages", fill=(90, 90, 90), font=f)
    d.text((250, 415), "are listed in the table below.", fill=(90, 90, 90), font=f)
    d.line([250, 445, 730, 445], fill=(200, 200, 200), width=1)
    return s, "png"


def tile2x2(im, code):
    """Pattern fill: the icon repeated 2x2 (sprite sheet / wrapping-paper preview)."""
    s = Image.new("RGBA", (640, 480), (0, 0, 0, 0))
    for x in (0, 320):
        for y in (0, 240):
            s.alpha_composite(im, (x, y))
    return s, "png"


def jpeg_tiny(im, code):
    """Heavy JPEG: half size, quality 5 (a ~5% size thumbnail)."""
    return on(im).resize((160, 120), Image.LANCZOS), ("jpg", 5)


def color_temp(im, code):
    """Warm white balance (tungsten-ish): R up, B down."""
    a = np.asarray(im).astype(np.float32)
    a[..., 0] = np.clip(a[..., 0] * 1.10 + 12, 0, 255)
    a[..., 1] = np.clip(a[..., 1] * 0.97, 0, 255)
    a[..., 2] = np.clip(a[..., 2] * 0.72, 0, 255)
    return Image.fromarray(a.astype(np.uint8), "RGBA"), "png"


def barrel(im, code):
    """Wide-angle lens barrel distortion (photo of a print through a cheap lens)."""
    a = np.asarray(on(im, (250, 250, 245)))
    h, w = a.shape[:2]
    a = cv2.copyMakeBorder(a, 30, 30, 40, 40, cv2.BORDER_CONSTANT, value=(250, 250, 245))
    h, w = a.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w / 2, h / 2
    nx, ny = (xx - cx) / cx, (yy - cy) / cy
    r2 = nx * nx + ny * ny
    k = 0.22
    f = 1 + k * r2
    mx = (nx * f * cx + cx).astype(np.float32)
    my = (ny * f * cy + cy).astype(np.float32)
    out = cv2.remap(a, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(20, 20, 20))
    return Image.fromarray(out), ("jpg", 88)


def motion_blur(im, code):
    """Horizontal motion blur, 31 px (panning camera)."""
    a = np.asarray(on(im)).astype(np.float32)
    k = np.zeros((31, 31), np.float32)
    k[15, :] = 1 / 31
    out = cv2.filter2D(a, -1, k, borderType=cv2.BORDER_REPLICATE)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)), ("jpg", 90)


def favicon_nn(im, code):
    """Flag as a 32x24 favicon, blown up 4x nearest neighbour (pixel-art look)."""
    small = im.resize((32, 24), Image.LANCZOS)
    return small.resize((128, 96), Image.NEAREST), "png"


def waving(im, code):
    """Flag waving in the wind: sinusoidal warp with light and shade, on a sky."""
    a = np.asarray(im).astype(np.float32)
    h, w = a.shape[:2]
    pad = 40
    H, W = h + 2 * pad, w + 2 * pad
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    amp, per = 14.0, 190.0
    ph = rng.uniform(0, 2 * np.pi)
    dy = amp * np.sin(2 * np.pi * (xx - pad) / per + ph) * ((xx - pad) / w).clip(0, 1)
    mx = xx - pad
    my = yy - pad - dy
    warped = cv2.remap(a, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    slope = np.cos(2 * np.pi * (xx - pad) / per + ph)
    shade = 1 + 0.28 * slope * ((xx - pad) / w).clip(0, 1)
    warped[..., :3] = np.clip(warped[..., :3] * shade[..., None], 0, 255)
    sky = np.zeros((H, W, 3), np.float32)
    t = (yy / H)[..., None]
    sky[:] = (1 - t) * np.array([110, 160, 225]) + t * np.array([190, 215, 240])
    al = warped[..., 3:4] / 255
    out = warped[..., :3] * al + sky * (1 - al)
    return Image.fromarray(out.astype(np.uint8)), ("jpg", 90)


def circle_icon(im, code):
    """Round flag button: centre disc of the flag, 128 px, transparent outside."""
    d = 200
    c = im.crop((160 - d // 2, 120 - d // 2, 160 + d // 2, 120 + d // 2))
    m = Image.new("L", (d * 4, d * 4), 0)
    ImageDraw.Draw(m).ellipse([0, 0, d * 4 - 1, d * 4 - 1], fill=255)
    m = m.resize((d, d), Image.LANCZOS)
    c = on(c, (255, 255, 255)).convert("RGBA")
    c.putalpha(m)
    return c.resize((128, 128), Image.LANCZOS), "png"


def sticker_outline(im, code):
    """Messenger sticker: thick white outline around the shape, on transparency."""
    p = 24
    s = Image.new("RGBA", (320 + 2 * p, 240 + 2 * p), (0, 0, 0, 0))
    s.alpha_composite(im, (p, p))
    al = np.asarray(s)[..., 3]
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (21, 21))
    dil = cv2.dilate((al > 40).astype(np.uint8) * 255, k)
    dil = cv2.GaussianBlur(dil, (3, 3), 0)
    base = np.zeros_like(np.asarray(s))
    base[..., :3] = 255
    base[..., 3] = dil
    b = Image.fromarray(base, "RGBA")
    b.alpha_composite(s)
    return b, "png"


def fabric(im, code):
    """Printed on woven cloth: weave texture multiplied in, soft focus (product photo)."""
    a = np.asarray(on(im)).astype(np.float32)
    h, w = a.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    weave = 0.86 + 0.07 * np.sin(xx * 1.9) * np.sin(yy * 1.9) + 0.05 * np.sin(xx * 0.35 + yy * 0.2)
    weave += nrng.normal(0, 0.03, (h, w)).astype(np.float32)
    out = a * weave[..., None]
    out = cv2.GaussianBlur(out, (3, 3), 0)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)), ("jpg", 85)


KINDS = [ui_mock, tile2x2, jpeg_tiny, color_temp, barrel, motion_blur, favicon_nn,
         waving, circle_icon, sticker_outline, fabric]


def mosaic4(ims):
    """Four different flags in a 2x2 grid on white (a quiz card / collage), 480x360."""
    s = Image.new("RGBA", (640, 480), (255, 255, 255, 255))
    for im, (x, y) in zip(ims, [(0, 0), (320, 0), (0, 240), (320, 240)]):
        s.alpha_composite(im, (x, y))
    return s.convert("RGB").resize((480, 360), Image.LANCZOS), "png"


def save(img, fmt, path_noext):
    if isinstance(fmt, tuple):
        fn = name(fmt[0])
        img.convert("RGB").save(os.path.join(OUT, fn), quality=fmt[1])
    else:
        fn = name(fmt)
        img.save(os.path.join(OUT, fn))
    return fn


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    seen = {}
    origs = []
    for f in sorted(glob.glob(os.path.join(SRC, "*.png"))):
        im = Image.open(f).convert("RGBA")
        h = hashlib.md5(np.asarray(im).tobytes()).hexdigest()
        code = os.path.basename(f)[:-4]
        if h in seen:  # pixel-identical flags (fr = gf = gp ...): keep the first only
            continue
        seen[h] = code
        origs.append((code, im))
    rows = []
    for code, im in origs:
        fn = name("png")
        im.save(os.path.join(OUT, fn))
        rows.append(dict(file=fn, orig=code, kind="original", members=code))
    order = list(range(len(origs)))
    rng.shuffle(order)
    pos = 0
    for kind in KINDS:
        for _ in range(PER_KIND):
            code, im = origs[order[pos]]
            pos += 1
            img, fmt = kind(im, code)
            fn = save(img, fmt, None)
            rows.append(dict(file=fn, orig=code, kind=kind.__name__, members=code))
    # mosaics: target + 3 other flags (which may themselves have copies; all members related)
    for _ in range(PER_KIND):
        code, im = origs[order[pos]]
        pos += 1
        others = rng.sample([o for o in origs if o[0] != code], 3)
        img, fmt = mosaic4([im] + [o[1] for o in others])
        fn = save(img, fmt, None)
        rows.append(dict(file=fn, orig=code, kind="mosaic4",
                         members="|".join([code] + [o[0] for o in others])))
    with open(MAN, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "orig", "kind", "members"])
        w.writeheader()
        w.writerows(rows)
    n_c = sum(r["kind"] != "original" for r in rows)
    print("originals %d, copies %d, files %d" % (len(origs), n_c, len(rows)))


if __name__ == "__main__":
    main()
