"""Build the playing-card probe (a helper session's probe, 2026-12-06: cards of one deck are
different pictures in one style, the hardest negatives for a duplicate verdict).

Source: Debian kdegames-card-data-kf5 4:22.12.3-1; each deck's .svgz rendered per card id
with rsvg-convert (librsvg2-bin 2.54.7) at width 200 by render.sh. rsvg's --export-id crops
some decks' cards wrongly: only renders whose opaque bounding box covers >= 90% of the
canvas are kept (8 decks, 330 faces). 10 copy kinds x 10 (seed 7), written for this probe.
From the repository root (CARDS_PROBE_DIR, default bench/out/cards):

    apt-get install -y librsvg2-bin
    D=bench/out/cards; mkdir -p $D/pkgs $D/render && (cd $D/pkgs && apt-get download kdegames-card-data-kf5)
    dpkg-deb -x $D/pkgs/kdegames-card-data-kf5_*.deb $D/pkgroot
    for f in $D/pkgroot/usr/share/carddecks/svg-*/*.svgz; do d=$(basename $(dirname $f)); zcat $f > $D/render/${d#svg-}.svg; done
    ls $D/render/*.svg | xargs -n1 basename | sed 's/.svg$//' | xargs -P 2 -n 1 bash bench/probes/cards/render.sh
    .venv/bin/python bench/probes/cards/make_data.py         # -> $D/cards (430 files), $D/manifest.csv
    .venv/bin/imagesieve audit $D/cards --out $D/audit
    .venv/bin/python bench/probes/cards/score.py $D/audit
"""
import csv, glob, math, os, random, shutil
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

BASE = os.environ.get("CARDS_PROBE_DIR", "bench/out/cards")
RAW = f"{BASE}/render/raw"
OUT = f"{BASE}/cards"
MAN = f"{BASE}/manifest.csv"
DECKS = ["ancient-egyptians", "dondorf", "gm-paris", "nicu-ornamental", "nicu-white",
         "standard", "tigullio-international", "xskat-german"]
SEED = 7
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def flat(im, bg=(255, 255, 255)):
    """RGBA card -> RGB on a plain ground (what a JPEG save or a screenshot does)."""
    im = im.convert("RGBA")
    base = Image.new("RGBA", im.size, bg + (255,))
    return Image.alpha_composite(base, im).convert("RGB")


def font(size):
    try:
        return ImageFont.truetype(FONT, size)
    except OSError:
        return ImageFont.load_default()


# ---------------------------------------------------------------- alteration kinds
def table_photo70(im, rng):
    """Card photographed on a green felt table: card at 70% scale, a soft drop shadow,
    a little off-centre, on a landscape canvas of textured felt; saved as JPEG q85."""
    w, h = im.size
    W, H = int(w * 1.6), int(h * 1.1)
    r = np.random.default_rng(rng.randrange(1 << 30))
    felt = np.zeros((H, W, 3), np.float32)
    felt[...] = (30, 105, 55)
    tex = r.normal(0, 1, (H // 4 + 1, W // 4 + 1)).astype(np.float32)
    tex = np.array(Image.fromarray(tex).resize((W, H), Image.BICUBIC))[:H, :W]
    felt += tex[..., None] * 9 + r.normal(0, 4, (H, W, 1))
    bg = Image.fromarray(np.clip(felt, 0, 255).astype(np.uint8)).convert("RGBA")
    card = im.convert("RGBA").resize((int(w * 0.7), int(h * 0.7)), Image.LANCZOS)
    x = (W - card.width) // 2 + rng.randint(-W // 10, W // 10)
    y = (H - card.height) // 2 + rng.randint(-H // 20, H // 20)
    sh = Image.new("RGBA", bg.size, (0, 0, 0, 0))
    alpha = card.getchannel("A").point(lambda a: a * 0.55)
    sh.paste((0, 0, 0, 255), (x + 6, y + 8), alpha)
    sh = sh.filter(ImageFilter.GaussianBlur(5))
    bg = Image.alpha_composite(bg, sh)
    bg.alpha_composite(card, (x, y))
    return bg.convert("RGB"), "jpg", {"quality": 85}


def sample_stamp(im, rng):
    """A diagonal 'SAMPLE' stamp across the card, red, 45% opaque (a shop's preview)."""
    base = im.convert("RGBA")
    w, h = base.size
    txt = Image.new("RGBA", (int(w * 1.5), int(h * 0.35)), (0, 0, 0, 0))
    d = ImageDraw.Draw(txt)
    f = font(int(w * 0.33))
    d.text((txt.width // 2, txt.height // 2), "SAMPLE", font=f, fill=(200, 0, 0, 115), anchor="mm")
    txt = txt.rotate(math.degrees(math.atan2(h, w)), expand=True, resample=Image.BICUBIC)
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    layer.alpha_composite(txt, ((w - txt.width) // 2, (h - txt.height) // 2)) if txt.width <= w else \
        layer.alpha_composite(txt.crop(((txt.width - w) // 2, (txt.height - h) // 2,
                                        (txt.width - w) // 2 + w, (txt.height - h) // 2 + h)))
    return Image.alpha_composite(base, layer), "png", {}


def rot180(im, rng):
    """Turned upside down (a scanner feeding the card the other way round)."""
    return im.rotate(180), "png", {}


def squash_w80(im, rng):
    """Width squashed to 80% (a layout forcing a fixed box), height kept."""
    return im.resize((int(im.width * 0.8), im.height), Image.LANCZOS), "png", {}


def jpeg30_resize07(im, rng):
    """Re-shared twice: JPEG q30, decoded, resized to 70%, JPEG q30 again."""
    import io
    b = io.BytesIO(); flat(im).save(b, "JPEG", quality=30); b.seek(0)
    x = Image.open(b).convert("RGB")
    x = x.resize((int(x.width * 0.7), int(x.height * 0.7)), Image.BILINEAR)
    return x, "jpg", {"quality": 30}


def colour_balance(im, rng):
    """A warm white-balance shift: R x1.15, G x1.0, B x0.78 (+8 on R in the shadows)."""
    a = np.asarray(flat(im)).astype(np.float32)
    a[..., 0] = a[..., 0] * 1.15 + 8
    a[..., 2] = a[..., 2] * 0.78
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), "png", {}


def mosaic_2x2(im, rng):
    """Four repeats of the card in a 2x2 grid with a 6-px grey gutter (a print sheet)."""
    c = flat(im)
    w, h = c.size
    g = 6
    s = Image.new("RGB", (2 * w + 3 * g, 2 * h + 3 * g), (128, 128, 128))
    for i in range(2):
        for j in range(2):
            s.paste(c, (g + i * (w + g), g + j * (h + g)))
    return s, "png", {}


def rounded_png(im, rng):
    """Cropped 8% on every side, then corners rounded to transparent (radius 12% of the
    width), saved as RGBA PNG (an app's card tile)."""
    c = flat(im)
    w, h = c.size
    dx, dy = int(w * 0.08), int(h * 0.08)
    c = c.crop((dx, dy, w - dx, h - dy)).convert("RGBA")
    m = Image.new("L", c.size, 0)
    ImageDraw.Draw(m).rounded_rectangle((0, 0, c.width - 1, c.height - 1), radius=int(c.width * 0.12), fill=255)
    c.putalpha(m)
    return c, "png", {}


def rot3_crop5(im, rng):
    """Turned 3 degrees (about the centre, canvas kept, white fill), then 5% cropped off
    each side (a slightly skewed scan, auto-cropped)."""
    c = flat(im)
    w, h = c.size
    c = c.rotate(3, resample=Image.BICUBIC, fillcolor=(255, 255, 255))
    dx, dy = int(w * 0.05), int(h * 0.05)
    return c.crop((dx, dy, w - dx, h - dy)), "png", {}


def rgb565(im, rng):
    """Reduced to 16-bit colour (5-6-5 bits, no dither) as an embedded display's frame
    buffer grab, then upscaled 1.5x nearest (the grab's scaling)."""
    a = np.asarray(flat(im)).copy()
    a[..., 0] &= 0xF8; a[..., 1] &= 0xFC; a[..., 2] &= 0xF8
    x = Image.fromarray(a)
    return x.resize((int(x.width * 1.5), int(x.height * 1.5)), Image.NEAREST), "png", {}


KINDS = [table_photo70, sample_stamp, rot180, squash_w80, jpeg30_resize07, colour_balance,
         mosaic_2x2, rounded_png, rot3_crop5, rgb565]


def good(path):
    a = np.asarray(Image.open(path).convert("RGBA"))[..., 3] > 0
    ys, xs = np.nonzero(a)
    return len(xs) > 0 and (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1) > 0.9 * a.size


def main():
    rng = random.Random(SEED)
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    origs = []
    for d in DECKS:
        for p in sorted(glob.glob(f"{RAW}/{d}/*.png")):
            if good(p):
                name = f"{d}__{os.path.basename(p)}"
                shutil.copyfile(p, f"{OUT}/{name}")
                origs.append(name)
    rows = [dict(file=o, role="original", source=o, kind="") for o in origs]
    chosen = rng.sample(origs, 100)  # ~30% of 330
    for k, o in enumerate(chosen):
        fn = KINDS[k % len(KINDS)]
        im = Image.open(f"{OUT}/{o}")
        out, ext, kw = fn(im, rng)
        name = f"copy_{k:03d}.{ext}"
        if ext == "jpg":
            out.convert("RGB").save(f"{OUT}/{name}", "JPEG", **kw)
        else:
            out.save(f"{OUT}/{name}")
        rows.append(dict(file=name, role="copy", source=o, kind=fn.__name__))
    with open(MAN, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "role", "source", "kind"])
        w.writeheader(); w.writerows(rows)
    print(len(origs), "originals,", len(chosen), "copies ->", OUT)


if __name__ == "__main__":
    main()
