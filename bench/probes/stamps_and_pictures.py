"""Probe `imagesieve audit` (defaults) on children's-software pictures: tuxpaint's stamps and
GCompris's photos and paintings, with ten alteration kinds no other probe or benchmark uses.

Written by a helper session (2026-12-06) as scripts outside the repository, gathered here
unchanged in what they build and score. Steps (files under $PROBE_DIR, default
/tmp/imagesieve-probe-stamps):
  build : tuxpaint-stamps-default 2022.06.04-1 (200 PNG stamps >= 64 px: cut-out photos,
          cartoons, signs, alphabet letters) and gcompris-qt-data 3.1-2 (its WebPs, taken out
          of the Qt .rcc bundles: 269 photos, 18 paintings, 60 word-sample cut-outs); byte-identical
          files once, near-identical ones (mean difference < 1 at 64x64 gray) once; 13 altered
          copies a kind of ten kinds written before any run (blur_fill_square, resize_chain,
          rot45_inscribed, halftone_cmyk, avatar_circle, film_filter, social_card,
          interlace_video, chat_screenshot, before_after); random 12-hex names, mixed formats,
          one flat folder, manifest.csv beside it.
  audit : imagesieve audit FOLDER --out OUT --no-sweep.
  score : recall overall, by kind and by set; the reported pairs by truth (same original,
          two originals, a copy with another original); last line one JSON object.

Usage: .venv/bin/python bench/probes/stamps_and_pictures.py [all|build|audit|score]

Measured (2026-12-06): 677 images (547 originals, 130 copies). The session's starting code
(562298e): recall 98/130, 65 pairs of two different originals (by eye 26 different pictures,
22 of them letters of one alphabet; 16 template siblings; 18 variants of one design; 5 one
photo shipped twice). With the region test (analysis/duplicates/region.py): 98/130, 64.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import random
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

sys.path.insert(0, str(Path(__file__).parent))
from cli_audit import ensure_debs, fresh_folder, run_audit  # noqa: E402

SEED = 20261206
ROOT = Path(os.environ.get("PROBE_DIR", "/tmp/imagesieve-probe-stamps"))
DEBS = ROOT / "debs"
OUTDIR = ROOT / "data"
FOLDER = OUTDIR / "pictures"
OUT = ROOT / "audit_verified"
PACKAGES = {"tuxpaint-stamps-default": "2022.06.04-1", "gcompris-qt-data": "3.1-2"}
GC = DEBS / "gc_rcc"
TUX = DEBS / "x_tuxpaint-stamps-default/usr/share/tuxpaint/stamps"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
PER_KIND = 13
KINDS = ["blur_fill_square", "resize_chain", "rot45_inscribed", "halftone_cmyk", "avatar_circle",
         "film_filter", "social_card", "interlace_video", "chat_screenshot", "before_after"]


# ------------------------------------------------------------------ GCompris's Qt resources
def extract(path, outdir):
    """The files of one Qt .rcc resource bundle (v1-v3; zlib entries inflated, zstd skipped)
    under ``outdir``/STEM/..."""
    d = Path(path).read_bytes()
    assert d[:4] == b"qres", path
    ver, tree, data, names = struct.unpack(">IIII", d[4:20])
    esz = 14 if ver == 1 else 22
    def name(off):
        n, = struct.unpack(">H", d[names + off:names + off + 2])
        return d[names + off + 6:names + off + 6 + 2 * n].decode("utf-16-be")
    out = []
    def walk(i, prefix):
        e = tree + i * esz
        noff, flags = struct.unpack(">IH", d[e:e + 6])
        nm = name(noff) if i else ""
        if flags & 2:
            cnt, first = struct.unpack(">II", d[e + 6:e + 14])
            for c in range(first, first + cnt):
                walk(c, f"{prefix}/{nm}" if nm else prefix)
        else:
            doff, = struct.unpack(">I", d[e + 10:e + 14])
            p = data + doff
            size, = struct.unpack(">I", d[p:p + 4])
            blob = d[p + 4:p + 4 + size]
            if flags & 1:
                blob = zlib.decompress(blob[4:])
            elif flags & 4:
                return      # zstd: skip
            dst = Path(outdir) / Path(path).stem / f"{prefix}/{nm}".lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(blob)
            out.append(dst)
    walk(0, "")
    return out



def extract_rcc() -> None:
    if GC.exists():
        return
    for f in sorted((DEBS / "x_gcompris-qt-data/usr/share/gcompris-qt/rcc").glob("*.rcc")):
        extract(f, GC)


# ------------------------------------------------------------------ originals
def on_white(im):
    """``im`` composited on white as a new RGB image: unlike cli_audit.on_white it carries
    none of the source's metadata (an ICC profile) into the copies (builds byte-identical
    to the measured run)."""
    im = im.convert("RGBA")
    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, im).convert("RGB")


def grey64(im):
    return np.asarray(on_white(im).convert("L").resize((64, 64), Image.BOX), np.float32)


def sources():
    out = []
    photo_dirs = ["categorization/**/images/*/", "erase/**/resource/", "explore_world_animals/**/animals/",
                  "explore_monuments/**/resource/*/", "explore_farm_animals/**/animals/"]
    for pat in photo_dirs:
        for p in sorted(GC.glob(pat + "*.webp")):
            out.append(dict(path=p, set="photo"))
    for p in sorted(GC.glob("details/**/image/*_background.webp")):
        out.append(dict(path=p, set="photo"))
    for p in sorted(GC.glob("paintings/**/image/*.webp")):
        if Image.open(p).mode == "RGB":
            out.append(dict(path=p, set="painting"))
    lang = sorted(GC.glob("lang/**/words_sample/*.webp"))
    for p in random.Random(SEED).sample(lang, 60):
        out.append(dict(path=p, set="photo_cutout"))
    tux = sorted(TUX.rglob("*.png"))
    tux = [p for p in tux if min(Image.open(p).size) >= 64]
    for p in random.Random(SEED + 1).sample(tux, 200):
        out.append(dict(path=p, set="tux_stamp"))
    return out


def select():
    keep, seen, hashes = [], [], set()
    for c in sources():
        b = c["path"].read_bytes()
        h = hashlib.sha256(b).hexdigest()
        if h in hashes:
            continue
        hashes.add(h)
        im = Image.open(io.BytesIO(b)); im.load()
        if min(im.size) < 64:
            continue
        im = im.convert("RGBA") if ("A" in im.mode or im.mode == "P") else im.convert("RGB")
        g = grey64(im)
        if g.std() < 4 or any(np.abs(g - s).mean() < 1.0 for s in seen):
            continue
        seen.append(g)
        c["image"] = im
        keep.append(c)
    return keep


# ------------------------------------------------------------------ alteration kinds
def font(size):
    return ImageFont.truetype(FONT, size)


def blur_fill_square(rgb, rng):
    w, h = rgb.size
    S = max(w, h)
    s = S / min(w, h)
    bg = rgb.resize((math.ceil(w * s), math.ceil(h * s)), Image.BILINEAR)
    l, t = (bg.width - S) // 2, (bg.height - S) // 2
    bg = bg.crop((l, t, l + S, t + S)).filter(ImageFilter.GaussianBlur(S * 0.05))
    bg = ImageEnhance.Brightness(bg).enhance(0.75)
    bg.paste(rgb, ((S - w) // 2, (S - h) // 2))
    if S > 1080:
        bg = bg.resize((1080, 1080), Image.LANCZOS)
    return bg, "jpg85"


def _jpeg_rt(im, q):
    b = io.BytesIO(); im.save(b, "JPEG", quality=q); b.seek(0)
    return Image.open(b).convert("RGB")


def resize_chain(rgb, rng):
    im = rgb
    for rs in (Image.BILINEAR, Image.NEAREST, Image.BICUBIC):
        im = _jpeg_rt(im.resize((max(8, round(im.width * .73)), max(8, round(im.height * .73))), rs), 70)
        im = _jpeg_rt(im.resize((round(im.width * 1.37), round(im.height * 1.37)), rs), 70)
    return im, "jpg70"


def _max_inscribed(w, h, angle):
    """Largest axis-aligned rectangle inside a w x h rectangle turned by angle (radians)."""
    if w <= 0 or h <= 0:
        return 0, 0
    wide = w >= h
    long_, short = (w, h) if wide else (h, w)
    sa, ca = abs(math.sin(angle)), abs(math.cos(angle))
    if short <= 2 * sa * ca * long_ or abs(sa - ca) < 1e-10:
        x = 0.5 * short
        wr, hr = (x / sa, x / ca) if wide else (x / ca, x / sa)
    else:
        cos2 = ca * ca - sa * sa
        wr, hr = (w * ca - h * sa) / cos2, (h * ca - w * sa) / cos2
    return wr, hr


def rot45_inscribed(rgb, rng):
    w, h = rgb.size
    r = rgb.rotate(45, resample=Image.BICUBIC)
    wr, hr = _max_inscribed(w, h, math.radians(45))
    wr, hr = int(wr) - 2, int(hr) - 2
    l, t = (w - wr) // 2, (h - hr) // 2
    return r.crop((l, t, l + wr, t + hr)), "webp85"


def halftone_cmyk(rgb, rng):
    w, h = rgb.size
    c = max(4, round(min(w, h) / 90))
    cmyk = rgb.convert("CMYK").split()
    outs = []
    for ch, ang in zip(cmyk, (15, 75, 0, 45)):
        r = ch.rotate(ang, expand=True, resample=Image.BILINEAR)
        gw, gh = max(1, r.width // c), max(1, r.height // c)
        means = np.asarray(r.resize((gw, gh), Image.BOX), np.float32) / 255
        dots = Image.new("L", (gw * c, gh * c), 0)
        d = ImageDraw.Draw(dots)
        for y in range(gh):
            for x in range(gw):
                rad = 0.5 * c * 1.414 * math.sqrt(means[y, x])
                if rad > 0.3:
                    cx, cy = x * c + c / 2, y * c + c / 2
                    d.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), fill=255)
        back = dots.resize(r.size).rotate(-ang, resample=Image.BILINEAR, expand=True)
        l, t = (back.width - w) // 2, (back.height - h) // 2
        outs.append(back.crop((l, t, l + w, t + h)))
    return Image.merge("CMYK", outs).convert("RGB"), "png"


def avatar_circle(rgb, rng):
    w, h = rgb.size
    s = min(w, h)
    l, t = (w - s) // 2, (h - s) // 2
    sq = rgb.crop((l, t, l + s, t + s)).resize((256, 256), Image.LANCZOS).convert("RGBA")
    m = Image.new("L", (1024, 1024), 0)
    ImageDraw.Draw(m).ellipse((0, 0, 1023, 1023), fill=255)
    sq.putalpha(m.resize((256, 256), Image.LANCZOS))
    return sq, "png"


def film_filter(rgb, rng):
    a = np.asarray(rgb, np.float32)
    a = 35 + a * (240 - 35) / 255                      # faded blacks, soft whites
    L = a.mean(axis=2, keepdims=True) / 255
    a = a + (1 - L) * np.array([-12, 4, 16]) + L * np.array([16, 5, -14])   # teal shadows, orange highlights
    grey = a.mean(axis=2, keepdims=True)
    a = grey + 0.85 * (a - grey)
    H, W = a.shape[:2]
    g = np.random.default_rng(rng.randrange(1 << 30)).normal(0, 9, ((H + 1) // 2, (W + 1) // 2)).astype(np.float32)
    g = np.asarray(Image.fromarray(g, mode="F").resize((W, H), Image.BILINEAR))
    a = a + g[..., None]
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), "jpg88"


TITLES = ["Ten things you did not know", "Weekend picks for the family", "Our guide to the season",
          "Photo of the day", "Why this matters now", "A closer look", "New in the collection"]
COLOURS = [(22, 33, 62), (120, 20, 40), (10, 90, 70), (240, 240, 235), (45, 45, 48)]


def social_card(rgb, rng):
    W, H, PW = 1200, 630, 600
    bgc = rng.choice(COLOURS)
    fg = (20, 20, 20) if sum(bgc) > 500 else (250, 250, 250)
    card = Image.new("RGB", (W, H), bgc)
    w, h = rgb.size
    s = max(PW / w, H / h)
    pic = rgb.resize((math.ceil(w * s), math.ceil(h * s)), Image.LANCZOS)
    l, t = (pic.width - PW) // 2, (pic.height - H) // 2
    card.paste(pic.crop((l, t, l + PW, t + H)), (0, 0))
    d = ImageDraw.Draw(card)
    d.rectangle((PW + 50, 90, PW + 130, 100), fill=(230, 120, 30))
    words = rng.choice(TITLES).split()
    lines, cur = [], ""
    for wd in words:
        if len(cur + " " + wd) > 14:
            lines.append(cur); cur = wd
        else:
            cur = (cur + " " + wd).strip()
    lines.append(cur)
    for i, ln in enumerate(lines):
        d.text((PW + 50, 140 + 70 * i), ln, font=font(54), fill=fg)
    d.text((PW + 50, H - 80), "example-news.org", font=font(26), fill=fg)
    return card, "jpg90"


def interlace_video(rgb, rng):
    w, h = rgb.size
    H = 360
    W = max(2, round(w * H / h / 2) * 2)
    a = np.asarray(rgb.resize((W, H), Image.BICUBIC)).copy()
    sh = max(2, round(0.015 * W))
    a[1::2] = np.roll(a[1::2], sh, axis=1)
    a = (16 + a.astype(np.float32) * 219 / 255).astype(np.uint8)
    y, cb, cr = Image.fromarray(a).convert("YCbCr").split()
    cb = cb.resize((W // 2, H // 2), Image.BOX).resize((W, H), Image.BILINEAR)
    cr = cr.resize((W // 2, H // 2), Image.BOX).resize((W, H), Image.BILINEAR)
    return Image.merge("YCbCr", (y, cb, cr)).convert("RGB"), "jpg80_420"


def chat_screenshot(rgb, rng):
    W, H = 720, 1280
    sc = Image.new("RGB", (W, H), (236, 229, 221))
    d = ImageDraw.Draw(sc)
    d.rectangle((0, 0, W, 40), fill=(5, 80, 70))
    d.text((20, 8), "12:4%d" % rng.randrange(10), font=font(22), fill=(255, 255, 255))
    d.rectangle((0, 40, W, 140), fill=(7, 94, 84))
    d.ellipse((70, 55, 140, 125), fill=(180, 190, 200))
    d.text((160, 70), rng.choice(["Mum", "Alex", "Team chat", "Sam"]), font=font(32), fill=(255, 255, 255))
    d.rounded_rectangle((20, 170, 460, 250), 18, fill=(255, 255, 255))
    d.text((40, 190), "look what I found", font=font(26), fill=(30, 30, 30))
    # picture bubble, right side
    w, h = rgb.size
    PW = 460
    ph = min(560, round(h * PW / w))
    s = max(PW / w, ph / h)
    pic = rgb.resize((math.ceil(w * s), math.ceil(h * s)), Image.LANCZOS)
    l, t = (pic.width - PW) // 2, (pic.height - ph) // 2
    pic = pic.crop((l, t, l + PW, t + ph))
    bx, by = W - PW - 40, 290
    d.rounded_rectangle((bx - 10, by - 10, bx + PW + 10, by + ph + 50), 22, fill=(220, 248, 198))
    mask = Image.new("L", (PW, ph), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, PW - 1, ph - 1), 16, fill=255)
    sc.paste(pic, (bx, by), mask)
    d.text((bx + PW - 90, by + ph + 12), "12:41", font=font(20), fill=(100, 110, 100))
    y2 = by + ph + 90
    if y2 < H - 200:
        d.rounded_rectangle((20, y2, 380, y2 + 80), 18, fill=(255, 255, 255))
        d.text((40, y2 + 22), "wow!!", font=font(26), fill=(30, 30, 30))
    d.rectangle((0, H - 110, W, H), fill=(240, 240, 240))
    d.rounded_rectangle((20, H - 90, W - 110, H - 20), 35, fill=(255, 255, 255))
    d.ellipse((W - 90, H - 90, W - 20, H - 20), fill=(7, 94, 84))
    return sc, "png"


def before_after(rgb, rng):
    w, h = rgb.size
    after = ImageEnhance.Color(ImageOps.autocontrast(rgb, cutoff=2)).enhance(1.6).filter(ImageFilter.SHARPEN)
    gap = max(4, w // 100)
    c = Image.new("RGB", (2 * w + gap, h), (255, 255, 255))
    c.paste(rgb, (0, 0)); c.paste(after, (w + gap, 0))
    d = ImageDraw.Draw(c)
    fs = max(12, h // 14)
    for x, txt in ((0, "BEFORE"), (w + gap, "AFTER")):
        tw = d.textlength(txt, font=font(fs))
        d.rectangle((x + fs // 2, fs // 2, x + fs // 2 + tw + fs // 2, fs // 2 + fs * 1.4), fill=(0, 0, 0))
        d.text((x + fs * 3 // 4, fs // 2 + fs // 5), txt, font=font(fs), fill=(255, 255, 255))
    c = c.resize((w, max(8, round(h * w / c.width))), Image.LANCZOS)
    return c, "jpg90"


ALTER = {k: globals()[k] for k in KINDS}


def save(im, stem, fmt):
    if fmt == "png":
        p = stem.with_suffix(".png"); im.save(p)
    elif fmt.startswith("webp"):
        p = stem.with_suffix(".webp")
        if fmt == "webp_lossless":
            im.save(p, "WEBP", lossless=True)
        else:
            im.save(p, "WEBP", quality=int(fmt[4:]))
    elif fmt == "jpg80_420":
        p = stem.with_suffix(".jpg"); im.convert("RGB").save(p, "JPEG", quality=80, subsampling=2)
    else:
        p = stem.with_suffix(".jpg")
        im.convert("RGB").save(p, "JPEG", quality=int(fmt[3:]))
    return p


def build():
    ensure_debs(DEBS, PACKAGES)
    extract_rcc()
    rng = random.Random(SEED)
    srcs = select()
    fresh_folder(FOLDER)
    used_names = set()

    def new_id():
        while True:
            i = "%012x" % rng.getrandbits(48)
            if i not in used_names:
                used_names.add(i); return i

    rows = []
    for c in srcs:
        c["id"] = new_id()
        im = c["image"]
        fmt = rng.choice(["png", "webp_lossless"] if im.mode == "RGBA" else ["png", "jpg95", "webp92"])
        p = save(im, FOLDER / c["id"], fmt)
        rows.append(dict(file=p.name, id=c["id"], role="original", original=c["id"], kind="",
                         source=str(c["path"].relative_to(DEBS)), set=c["set"], size="%dx%d" % im.size))
    pool = list(srcs)
    rng.shuffle(pool)
    it = iter(pool)
    for kind in KINDS:
        for _ in range(PER_KIND):
            c = next(it)
            out, fmt = ALTER[kind](on_white(c["image"]), rng)
            i = new_id()
            p = save(out, FOLDER / i, fmt)
            rows.append(dict(file=p.name, id=i, role="copy", original=c["id"], kind=kind,
                             source=str(c["path"].relative_to(DEBS)), set=c["set"], size="%dx%d" % out.size))
    with open(OUTDIR / "manifest.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader(); wr.writerows(rows)
    from collections import Counter
    print(len(srcs), "originals", Counter(c["set"] for c in srcs), len(rows) - len(srcs), "copies",
          Counter(r["set"] for r in rows if r["role"] == "copy"))


# ------------------------------------------------------------------ scoring
def score() -> dict:
    import pandas as pd
    man = pd.read_csv(OUTDIR / "manifest.csv", keep_default_na=False)
    row = {r.file: r for r in man.itertuples()}
    file_of = dict(zip(man.id, man.file))
    pairs = pd.read_parquet(OUT / "duplicate_pairs.parquet")
    fa = [Path(s).name for s in pairs.path_a.astype(str)]
    fb = [Path(s).name for s in pairs.path_b.astype(str)]

    def truth(a, b):
        ra, rb = row[a], row[b]
        if ra.original == rb.original:
            return "same"
        return "copy-other" if "copy" in (ra.role, rb.role) else "orig-orig"
    kinds = pd.Series([truth(a, b) for a, b in zip(fa, fb)])
    direct = set(zip(fa, fb)) | set(zip(fb, fa))
    copies = man[man.role == "copy"].copy()
    copies["found"] = [(r.file, file_of[r.original]) in direct for r in copies.itertuples()]
    out = dict(images=len(man), copies=len(copies), pairs=len(pairs),
               recall=round(float(copies.found.mean()), 3), found=int(copies.found.sum()),
               by_kind={k: f"{int(g.found.sum())}/{len(g)}" for k, g in copies.groupby("kind")},
               by_set={k: f"{int(g.found.sum())}/{len(g)}" for k, g in copies.groupby("set")},
               truth=kinds.value_counts().to_dict(),
               different_originals=int((kinds != "same").sum()))
    wrong = pairs[(kinds != "same").to_numpy()].assign(
        fa=[a for a, k in zip(fa, kinds) if k != "same"], fb=[b for b, k in zip(fb, kinds) if k != "same"])
    wrong.to_csv(ROOT / "wrong_pairs.csv", index=False)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", nargs="?", default="all", choices=("all", "build", "audit", "score"))
    step = ap.parse_args().step
    if step in ("all", "build"):
        build()
    if step in ("all", "audit"):
        run_audit(FOLDER, OUT)
    if step in ("all", "score"):
        print(json.dumps(score()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
