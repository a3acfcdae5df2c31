"""Probe imagesieve's duplicate verdicts on Neverball's level screenshots: 178 rendered 3D
levels (Debian neverball-data 1.6.0+git20180603-3, all 256x256, JPEG and PNG), many of them
under one shared skybox (cloud hills, a starfield with Jupiter, flat colours), so different
pictures look alike.

Rerunnable and deterministic (SEED). Steps (files under $PROBE_DIR, default
/tmp/imagesieve-probe-neverball):
  build : every usr/share/games/neverball/shot-*/ picture, copied byte for byte (178
          originals); one altered copy of 22.5% of them (40: twelve kinds in turn, fixed by a
          helper session before any run, carried here verbatim); shuffled neutral names
          img_NNNN in one flat folder, manifest.csv beside it (never in it). The split-screen
          kind puts an unrelated picture beside the copy: a terrain texture of
          extremetuxracer-data 0.8.2-1.
  audit : imagesieve audit FOLDER --out OUT --no-sweep               (verified, the default)
          imagesieve audit FOLDER --out OUT_raw --no-sweep --raw-cosine
  score : per run: recall overall and by kind; pairs of two originals that are not related
          (FAMILIES, below) and per 1,000 images; copies paired with another original's copy
          or with a wrong original; wall time. Every reported pair's class in
          ROOT/<run>_pairs.csv; contact sheets ROOT/<run>_unrelated.png and
          ROOT/<run>_missed.png. Last line of stdout: one JSON object,
          {"verified": {...}, "raw_cosine": {...}}.

Usage: .venv/bin/python bench/probes/neverball.py [all|build|audit|score]   (default all)

Kinds (written before any run; none was used by an earlier probe): chroma_aberr (red plane
+2.5%, blue -2.5% about the centre), grain_grade (teal/orange grade, film grain, JPEG q88),
insta_chain (contrast, saturation, warm tint, lifted blacks, JPEG q85), split_screen (beside an
unrelated texture), circle_cut (a circle with transparent corners), hdr_tonemap (local
contrast, saturation, a highlight shoulder), rounded_shadow (rounded corners and a drop shadow
on a grey canvas), browser_zoom (at 67% inside a browser-like page, 1000x700: the picture is
about 4% of it), chanswap_crop (RGB -> BGR, an 85% centre crop), zoom_rot7 (7 degrees, a 90%
zoom), retina2x (2x Lanczos, JPEG q90), light_leak (a warm glow from a corner).

Ground truth among originals: none is byte-identical to another. FAMILIES (judged by eye from
the pairs the prototype's two runs reported, after those runs) are one level design in other
colours or mirrored: related, never false. Any other pair of two originals is unrelated
(different levels, often under one skybox), and so is a pair of two copies of different
originals (the browser pages pair with each other).

Measured (2026-12-07, the prototype: a helper session's scripts, gathered here; the same set
file for file): 218 images (178 originals, 40 copies). Verified: recall 36/40 = 0.900
(browser_zoom 0/3: its cosine to the original 0.37-0.41, ranked 87th-158th, never a
candidate; one hdr_tonemap of 3, a candidate at cosine 0.91 but agreement 0.80 against its
original's look-alike levels at 0.88-0.96); 2 pairs of unrelated originals (one skybox, passed
on 33 and 36 keypoint inliers in the shared sky; 9.2 per 1k) and 3 pairs of browser pages (5
pairs of different pictures, 22.9 per 1k); 0 copies with a wrong original; 24-27 s on 2 shared
cores. This script's run (same day): the same 43 and 54 pairs, so the same figures; 24.6 s. Raw cosine (threshold
0.75): recall 34/40 = 0.850 (split_screen 1/4); 14 pairs of unrelated originals and the same
3 browser pairs.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

sys.path.insert(0, str(Path(__file__).parent))
from cli_audit import (  # noqa: E402
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

SEED = 20240611
ROOT = Path(os.environ.get("PROBE_DIR", "/tmp/imagesieve-probe-neverball"))   # all its files
DEBS = ROOT / "debs"
PACKAGES = {"neverball-data": "1.6.0+git20180603-3", "extremetuxracer-data": "0.8.2-1"}   # pinned
SRC = DEBS / "x_neverball-data/usr/share/games/neverball"
TEXTURES = DEBS / "x_extremetuxracer-data/usr/share/games/etr/terrains"
FOLDER = ROOT / "levels"             # what is audited (flat folder)
MANIFEST = ROOT / "manifest.csv"     # file -> role / source / kind / sha256 (never in FOLDER)
OUT = ROOT / "audit_verified"
OUT_RAW = ROOT / "audit_raw"
COPY_SHARE = 0.225


# ----------------------------------------------------------------------------- alterations
# As the prototype (kinds.py) wrote them before any run. Each takes (an RGB picture, a numpy
# Generator, {"unrelated": texture paths}) and gives (picture, extension, save arguments).
def _np(im):
    return np.asarray(im.convert("RGB")).astype(np.float32)


def _pil(a):
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def chroma_aberr(im, rng, h):
    w, hh = im.size
    r, g, b = im.split()

    def scale(ch, f):
        big = ch.resize((round(w * f), round(hh * f)), Image.BICUBIC)
        bw, bh = big.size
        if f >= 1:
            l, t = (bw - w) // 2, (bh - hh) // 2
            return big.crop((l, t, l + w, t + hh))
        out = Image.new("L", (w, hh))
        # fill with the original channel then paste the shrunk one at the centre
        out.paste(ch)
        out.paste(big, ((w - bw) // 2, (hh - bh) // 2))
        return out

    return Image.merge("RGB", (scale(r, 1.025), g, scale(b, 0.975))), "png", {}


def grain_grade(im, rng, h):
    a = _np(im)
    lum = a.mean(axis=2, keepdims=True) / 255.0
    # shadows toward teal, highlights toward orange
    teal = np.array([-18, 6, 16], np.float32)
    orange = np.array([22, 6, -20], np.float32)
    a = a + (1 - lum) * teal + lum * orange
    a = a + rng.normal(0, 9, a.shape[:2])[..., None]  # monochrome grain
    return _pil(a), "jpg", {"quality": 88}


def insta_chain(im, rng, h):
    im = ImageEnhance.Contrast(im).enhance(1.25)
    im = ImageEnhance.Color(im).enhance(1.35)
    a = _np(im)
    a = a * np.array([1.08, 1.0, 0.88], np.float32)  # warm tint
    a = 30 + a * (225.0 / 255.0)  # faded blacks
    return _pil(a), "jpg", {"quality": 85}


def split_screen(im, rng, h):
    other_path = h["unrelated"][int(rng.integers(len(h["unrelated"])))]
    other = Image.open(other_path).convert("RGB").resize(im.size, Image.LANCZOS)
    w, hh = im.size
    c = Image.new("RGB", (2 * w + 6, hh), (255, 255, 255))
    c.paste(im, (0, 0))
    c.paste(other, (w + 6, 0))
    return c, "png", {"_other": other_path}


def circle_cut(im, rng, h):
    w, hh = im.size
    d = min(w, hh)
    sq = im.crop(((w - d) // 2, (hh - d) // 2, (w - d) // 2 + d, (hh - d) // 2 + d))
    mask = Image.new("L", (d * 4, d * 4), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, d * 4 - 1, d * 4 - 1), fill=255)
    mask = mask.resize((d, d), Image.LANCZOS)
    out = sq.convert("RGBA")
    out.putalpha(mask)
    return out, "png", {}


def hdr_tonemap(im, rng, h):
    im = im.filter(ImageFilter.UnsharpMask(radius=20, percent=180, threshold=0))
    im = ImageEnhance.Color(im).enhance(1.4)
    a = _np(im) / 255.0
    a = a / (a + 0.35) * 1.35  # Reinhard-like shoulder
    return _pil(a * 255), "png", {}


def rounded_shadow(im, rng, h):
    w, hh = im.size
    m = 40
    canvas = Image.new("RGB", (w + 2 * m, hh + 2 * m), (240, 240, 240))
    mask = Image.new("L", (w, hh), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, w - 1, hh - 1), radius=28, fill=255)
    shadow = Image.new("L", canvas.size, 0)
    shadow.paste(mask, (m + 8, m + 10))
    shadow = shadow.filter(ImageFilter.GaussianBlur(10))
    grey = Image.new("RGB", canvas.size, (90, 90, 90))
    canvas = Image.composite(grey, canvas, shadow.point(lambda v: int(v * 0.6)))
    canvas.paste(im, (m, m), mask)
    return canvas, "png", {}


def browser_zoom(im, rng, h):
    W, H = 1000, 700
    c = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(c)
    d.rectangle((0, 0, W, 38), fill=(222, 225, 230))  # tab strip
    d.rounded_rectangle((8, 6, 230, 40), radius=8, fill=(255, 255, 255))
    d.text((20, 16), "level preview - Neverball", fill=(40, 40, 40))
    d.rectangle((0, 38, W, 80), fill=(255, 255, 255))
    d.rounded_rectangle((90, 46, W - 120, 74), radius=14, fill=(240, 241, 243))
    d.text((110, 54), "https://example.org/levels/preview.html", fill=(60, 60, 60))
    for i, x in enumerate((14, 40, 66)):
        d.ellipse((x, 52, x + 16, 68), fill=(180, 180, 185))
    d.text((W - 100, 54), "67%", fill=(60, 60, 60))
    d.line((0, 80, W, 80), fill=(200, 200, 200))
    z = im.resize((round(im.width * 0.67), round(im.height * 0.67)), Image.BILINEAR)
    x0, y0 = 60, 130
    d.text((x0, 100), "Screenshot", fill=(0, 0, 0))
    c.paste(z, (x0, y0))
    # body text lines next to / under it
    for k in range(14):
        y = 130 + k * 22
        d.rectangle((x0 + z.width + 40, y, x0 + z.width + 40 + int(rng.integers(300, 560)), y + 9),
                    fill=(120, 120, 120))
    for k in range(8):
        y = y0 + z.height + 30 + k * 22
        if y + 9 < H:
            d.rectangle((x0, y, x0 + int(rng.integers(400, 860)), y + 9), fill=(120, 120, 120))
    return c, "png", {}


def chanswap_crop(im, rng, h):
    r, g, b = im.split()
    im = Image.merge("RGB", (b, g, r))
    w, hh = im.size
    cw, ch = round(w * 0.85), round(hh * 0.85)
    l, t = (w - cw) // 2, (hh - ch) // 2
    return im.crop((l, t, l + cw, t + ch)), "png", {}


def zoom_rot7(im, rng, h):
    w, hh = im.size
    ang = 7.0
    rot = im.rotate(ang, resample=Image.BICUBIC, expand=False)
    # largest axis-aligned box free of corners for a 7 deg rotation, then a 90% zoom
    a = math.radians(ang)
    s = 1.0 / (math.cos(a) + math.sin(a))  # conservative fill factor for a square
    s *= 0.9
    cw, ch = round(w * s), round(hh * s)
    l, t = (w - cw) // 2, (hh - ch) // 2
    return rot.crop((l, t, l + cw, t + ch)).resize((w, hh), Image.LANCZOS), "jpg", {"quality": 92}


def retina2x(im, rng, h):
    return im.resize((im.width * 2, im.height * 2), Image.LANCZOS), "jpg", {"quality": 90}


def light_leak(im, rng, h):
    a = _np(im)
    hh, w = a.shape[:2]
    yy, xx = np.mgrid[0:hh, 0:w].astype(np.float32)
    cx, cy = (w * 0.95, hh * 0.05) if rng.random() < 0.5 else (w * 0.05, hh * 0.9)
    dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / max(w, hh)
    glow = np.exp(-(dist / 0.45) ** 2)[..., None]
    leak = np.array([255, 120, 60], np.float32) * glow * 0.85 + \
        np.array([200, 40, 140], np.float32) * np.exp(-(dist / 0.8) ** 2)[..., None] * 0.25
    a = a + leak + 8
    return _pil(a), "jpg", {"quality": 90}


KINDS = [
    ("chroma_aberr", chroma_aberr),
    ("grain_grade", grain_grade),
    ("insta_chain", insta_chain),
    ("split_screen", split_screen),
    ("circle_cut", circle_cut),
    ("hdr_tonemap", hdr_tonemap),
    ("rounded_shadow", rounded_shadow),
    ("browser_zoom", browser_zoom),
    ("chanswap_crop", chanswap_crop),
    ("zoom_rot7", zoom_rot7),
    ("retina2x", retina2x),
    ("light_leak", light_leak),
]


# ----------------------------------------------------------------------------- ground truth
# Judged by eye from the pairs the prototype's two runs reported, after those runs: one level
# design in other colours, or with start and goal swapped. A pair within one is related.
FAMILIES = [["shot-medium/spiralup.jpg", "shot-medium/spiraldn.jpg"],
            ["shot-easy/peasy.jpg", "shot-tones/blue.jpg"],
            ["shot-easy/coins.jpg", "shot-easy/easy.jpg"]]
FAMILY_OF = {s: i for i, group in enumerate(FAMILIES) for s in group}


def related(s1: str, s2: str) -> bool:
    """Two source names of one picture or one family."""
    return s1 == s2 or (s1 in FAMILY_OF and FAMILY_OF.get(s1) == FAMILY_OF.get(s2))


# ----------------------------------------------------------------------------- build
def build() -> None:
    ensure_debs(DEBS, PACKAGES)
    origs = sorted((p for p in SRC.glob("shot-*/*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")), key=str)
    unrelated = sorted(str(p) for p in TEXTURES.glob("*.png") if min(Image.open(p).size) >= 200)
    rng = np.random.default_rng(SEED)
    n_copies = round(len(origs) * COPY_SHARE)
    chosen = sorted(rng.choice(len(origs), size=n_copies, replace=False).tolist())
    fresh_folder(FOLDER)
    names = [f"img_{i:04d}" for i in rng.permutation(np.arange(1000, 1000 + len(origs) + n_copies))]
    rows, orig_name = [], {}
    for name, p in zip(names, origs):
        f = FOLDER / (name + p.suffix.lower())
        shutil.copyfile(p, f)
        source = str(p.relative_to(SRC))
        orig_name[source] = f.name
        rows.append({"file": f.name, "role": "original", "source": source, "kind": "", "extra": ""})
    for j, (idx, name) in enumerate(zip(chosen, names[len(origs):])):
        kind, fn = KINDS[j % len(KINDS)]
        out, ext, kw = fn(Image.open(origs[idx]).convert("RGB"), np.random.default_rng(SEED + idx),
                          {"unrelated": unrelated})
        extra = kw.pop("_other", "")
        if ext == "jpg" and out.mode != "RGB":
            out = out.convert("RGB")
        f = FOLDER / f"{name}.{ext}"
        out.save(f, **kw)
        rows.append({"file": f.name, "role": "copy", "source": str(origs[idx].relative_to(SRC)), "kind": kind,
                     "extra": os.path.basename(extra)})
    for r in rows:
        r["sha256"] = hashlib.sha256((FOLDER / r["file"]).read_bytes()).hexdigest()
    write_manifest(rows, MANIFEST)
    print(f"built {FOLDER}: {len(origs)} originals, {n_copies} copies, {len(rows)} files; manifest {MANIFEST}")


# ----------------------------------------------------------------------------- score
def classify(ra: dict, rb: dict) -> str:
    """A reported pair's class from its two manifest rows (copy_own: a copy with its original)."""
    sa, sb = ra["source"], rb["source"]
    roles = {ra["role"], rb["role"]}
    if roles == {"original"}:
        return "orig_related" if related(sa, sb) else "orig_unrelated"
    if roles == {"copy"}:
        return "copy_copy_related" if related(sa, sb) else "copy_copy_unrelated"
    if sa == sb:
        return "copy_own"
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
        unrelated = pairs[pairs.cls.isin(["orig_unrelated", "copy_copy_unrelated", "copy_wrong_orig"])]
        n_orig = int((pairs.cls == "orig_unrelated").sum())
        result[name] = {
            "images": n, "copies": len(copies), "pairs": len(pairs),
            "recall": round(float(copies.found.mean()), 3),
            "recall_by_kind": {k: f"{int(g.found.sum())}/{len(g)}" for k, g in copies.groupby("kind")},
            "pairs_of_originals_not_related": n_orig,
            "pairs_of_originals_not_related_per_1k": round(1000 * n_orig / n, 1),
            "pairs_of_different_pictures": len(unrelated),
            "pairs_of_different_pictures_per_1k": round(1000 * len(unrelated) / n, 1),
            "copies_with_wrong_original": len(wrong_copies),
            "pairs_by_class": dict(sorted(Counter(pairs.cls).items())),
            "wall_s": wall_s(out)}
        ev = [c for c in EVIDENCE if c in pairs.columns]
        pairs[["cls", "fa", "src_a", "fb", "src_b", *ev]].sort_values(["cls", "fa", "fb"]).to_csv(
            ROOT / f"{name}_pairs.csv", index=False, float_format="%.3f")
        miss = copies[~copies.found].assign(original=lambda d: d.source.map(orig_file))

        save_pair_sheet([(r.fa, r.fb, evidence_caption(r, r.cls, ev)) for r in unrelated.itertuples()],
                        ROOT / f"{name}_unrelated.png", f"{name}: {len(unrelated)} pairs of different pictures of {len(pairs)} pairs, {n} images",
                        show, max_rows=len(unrelated))
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
