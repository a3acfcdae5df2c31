"""Probe imagesieve's duplicate verdicts on GRASS GIS manual illustrations: maps, diagrams
and plots of one GIS (Debian grass-doc 8.2.1-1), many of them one base map (North Carolina's
elevation, its streams and roads) with another analysis drawn on it.

Rerunnable and deterministic (SEED). Steps (files under $PROBE_DIR, default
/tmp/imagesieve-probe-grass):
  build : grass-doc's html/*.png|jpg|jpeg, less the EXCLUDE names (screenshots of the GUI and
          its dialogs, benchmarks, histograms, time plots), < 120 px on a side or <= 4,000
          bytes: 247 originals, copied byte for byte; one altered copy of 20% of them (49: ten
          kinds, fixed before any run, in turn, then shuffled: 5 each, tiny_upscale 4);
          shuffled neutral names img_NNNN (1000..1295) in one flat folder, manifest.csv beside
          it (never in it). The set is the prototype's (see below) file for file, sha256 and all.
  audit : imagesieve audit FOLDER --out OUT --no-sweep               (verified, the default)
          imagesieve audit FOLDER --out OUT_raw --no-sweep --raw-cosine
  score : per run: recall (a copy paired with its own original) overall and by kind; pairs of
          two originals that are not related (tier B + C, below) and per 1,000 images; tier C
          alone; copies paired with a wrong original (one not of their family); wall time.
          Every reported pair's class in ROOT/<run>_pairs.csv, the misses in
          ROOT/<run>_missed.csv; contact sheets ROOT/<run>_unrelated_originals.png (the tier B
          and C pairs) and ROOT/<run>_missed.png (copy | its original). Last line of stdout:
          one JSON object, {"verified": {...}, "raw_cosine": {...}}.

Usage: .venv/bin/python bench/probes/grass_maps.py [all|build|audit|score]   (default all)
build() runs `apt-get download grass-doc=8.2.1-1` and `dpkg -x` into $PROBE_DIR/debs itself
when it is missing.

Kinds (alteration code and seed kept exactly as the prototype wrote them before its run; not
tuned since): jpeg_chain (JPEG q80, 90% bilinear, JPEG q65, WebP q55, saved JPEG q70), ui_frame
(inside a 1100x780 map-display window: title bar, toolbar, layer panel, status bar), lut_grade
(per-channel curves, contrast, +25% saturation, JPEG q92), rescale_sharpen (80% bicubic and an
unsharp mask), mirror_crop (mirrored, 6%/4%/10%/8% cut off the sides, JPEG q90), sticker (a
smiley 22% of the short side in a corner and a text tag), border_caption (a white border and
a caption below, JPEG q88), print_scan (halftone screen, paper tint, noise, turned 1.8 degrees,
blur, JPEG q82), aspect (width x1.3, height x0.9), tiny_upscale (a 120-px JPEG q45 thumbnail
blown up to the original size, JPEG q85).

Ground truth among originals (score). An original pair is
  identical : byte-identical in the package (three pairs: one figure shipped under two names);
  related   : of one FAMILIES entry below (one picture edited: before/after, zoomed, redrawn
              with a legend; or colour variants of one scene), counted with the copies, never
              as false;
  tier C    : a TIER_C pair: different content drawn in one template (slope and two curvatures
              of one DEM, two filter diagrams, two random surfaces with their legends);
  tier B    : any other pair: as far as was looked, one base map (or scene) with a different
              analysis drawn on it. Tier B + C is "pairs_of_originals_not_related".
A copy inherits its original's relations. FAMILIES and TIER_C were judged by eye from the
pairs that the prototype's two runs reported (sheets of each pair side by side), after those
runs and not before: pairs that no run reported were never looked at, so a pair of originals
a later tool version reports for the first time counts as tier B until someone looks at it.

Measured (2026-12-07, the prototype: a helper session's scripts, gathered here): 296 images
(247 originals, 49 copies). Verified: recall 47/49 = 0.959 (missed: a mirror_crop of
d_grid_blue_grid.png, a tiny_upscale of v_mkgrid_ppattern.png); tier B 63, tier C 5 (68, 229.7
per 1k); 7 copies paired with a wrong original; ~47 s on 2 shared cores. Raw cosine (threshold
0.891, from the data): recall 27/49 = 0.551; tier B 46, tier C 2 (48, 162.2 per 1k); 6 copies
paired with a wrong original. This script's runs (2026-12-07, same day): the same set (every
file's sha256), the same 173 and 100 pairs in the same classes, so the same figures; wall 30-36 s
(defaults) and 7-12 s (raw cosine), on 2 cores shared with other work.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

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
    save_as,
    save_pair_sheet,
    wall_s,
    write_manifest,
)

SEED = 20240611
ROOT = Path(os.environ.get("PROBE_DIR", "/tmp/imagesieve-probe-grass"))   # all its files
DEBS = ROOT / "debs"
PACKAGES = {"grass-doc": "8.2.1-1"}   # pinned
SRC = DEBS / "x_grass-doc/usr/share/doc/grass-doc/html"
FOLDER = ROOT / "maps"               # what is audited (flat folder)
MANIFEST = ROOT / "manifest.csv"     # file -> role / source / kind / sha256 (never in FOLDER)
OUT = ROOT / "audit_verified"
OUT_RAW = ROOT / "audit_raw"
# Not originals: screenshots of the GUI and its dialogs, benchmark plots, histograms, time plots.
EXCLUDE = re.compile(r'^(g_gui_|wxGUI_|gi_|dbmgr_|datacatalog|grass_start|g_mapsets_gui|g_parser_test|'
                     r'iclass_frame|psmap_frame|d_mon_wx0|d_histogram|tplot|timeline_2D)|benchmark|_hist\.png$')
COPY_SHARE = 0.2

KINDS = ['jpeg_chain', 'ui_frame', 'lut_grade', 'rescale_sharpen', 'mirror_crop',
         'sticker', 'border_caption', 'print_scan', 'aspect', 'tiny_upscale']


# ----------------------------------------------------------------------------- alterations
# As the prototype (make_set.py) wrote them before any run; only noqa marks added.
def jpeg(im, q, sub=None):
    b = io.BytesIO()
    kw = {'quality': q}
    if sub is not None:
        kw['subsampling'] = sub
    im.save(b, 'JPEG', **kw)
    return Image.open(io.BytesIO(b.getvalue())).convert('RGB')


def font(sz):
    for f in ['/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf']:
        if os.path.exists(f):
            return ImageFont.truetype(f, sz)
    return ImageFont.load_default()


# ---- alteration kinds ----
def k_jpeg_chain(im, r):
    # messaging-app style chain: JPEG q80 -> 90% resize -> JPEG q65 -> WebP q55 -> JPEG q70 (final)
    im = jpeg(im, 80)
    im = im.resize((max(8, int(im.width * .9)), max(8, int(im.height * .9))), Image.BILINEAR)
    im = jpeg(im, 65)
    b = io.BytesIO(); im.save(b, 'WEBP', quality=55); im = Image.open(io.BytesIO(b.getvalue())).convert('RGB')  # noqa: E702
    return im, 'jpg', {'quality': 70}


def k_ui_frame(im, r):
    # screenshot of the image shown inside a viewer window: title bar, toolbar, side panel,
    # status bar; image scaled to fit a 1024x700 canvas area
    W, H = 1100, 780
    can = Image.new('RGB', (W, H), (236, 236, 236))
    d = ImageDraw.Draw(can)
    d.rectangle([0, 0, W, 30], fill=(53, 57, 64))
    d.text((12, 8), 'Map Display 1 - GRASS GIS', fill=(230, 230, 230), font=font(14))
    for i, c in enumerate([(237, 106, 94), (245, 191, 79), (98, 197, 84)]):
        d.ellipse([W - 80 + i * 24, 8, W - 66 + i * 24, 22], fill=c)
    d.rectangle([0, 30, W, 66], fill=(222, 222, 222))
    for i in range(14):
        x = 10 + i * 34
        d.rectangle([x, 37, x + 24, 60], fill=(190 - (i * 7) % 60, 200, 210 - (i * 11) % 70), outline=(150, 150, 150))
    d.rectangle([0, 66, 200, H - 26], fill=(245, 245, 245), outline=(200, 200, 200))
    for i in range(12):
        d.text((14, 80 + i * 24), ['elevation', 'streams', 'roads', 'landuse', 'aspect', 'slope',
                                   'zipcodes', 'lakes', 'geology', 'soils', 'census', 'points'][i],
               fill=(40, 40, 40), font=font(13))
    d.rectangle([0, H - 26, W, H], fill=(210, 210, 210))
    d.text((10, H - 20), '637825.12; 221340.77', fill=(30, 30, 30), font=font(12))
    aw, ah = W - 220, H - 26 - 76
    s = min(aw / im.width, ah / im.height)
    s = min(s, 1.6)
    t = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
    can.paste(t, (210 + (aw - t.width) // 2, 72 + (ah - t.height) // 2))
    return can, 'png', {}


def k_lut_grade(im, r):
    # 'teal & orange' style grade: per-channel curves, S-contrast, +25% saturation
    a = np.asarray(im).astype(np.float32) / 255.
    a = a ** np.array([0.85, 0.95, 1.15], np.float32)  # warm highlights, cooler shadows
    a = 0.5 + (a - 0.5) * 1.12
    a = np.clip(a, 0, 1)
    a = a + np.array([0.03, 0.0, -0.02], np.float32) * (1 - a)  # lifted, tinted blacks
    out = Image.fromarray((np.clip(a, 0, 1) * 255 + .5).astype(np.uint8))
    out = ImageEnhance.Color(out).enhance(1.25)
    return out, 'jpg', {'quality': 92}


def k_rescale_sharpen(im, r):
    s = 0.8
    out = im.resize((max(8, round(im.width * s)), max(8, round(im.height * s))), Image.BICUBIC)
    out = out.filter(ImageFilter.UnsharpMask(radius=1.5, percent=120, threshold=2))
    return out, 'png', {}


def k_mirror_crop(im, r):
    out = ImageOps.mirror(im)
    w, h = out.size
    l, t = int(w * .06), int(h * .04)  # noqa: E741
    rr, b = int(w * .10), int(h * .08)
    out = out.crop((l, t, w - rr, h - b))
    return out, 'jpg', {'quality': 90}


def k_sticker(im, r):
    # emoji-like sticker (~15% of the short side... 22%) in a corner + small text tag
    out = im.copy()
    d = ImageDraw.Draw(out)
    s = max(24, int(min(out.size) * .22))
    x0 = out.width - s - int(out.width * .04)
    y0 = int(out.height * .05)
    d.ellipse([x0, y0, x0 + s, y0 + s], fill=(255, 204, 51), outline=(200, 120, 0), width=max(1, s // 20))
    e = s // 8
    d.ellipse([x0 + s * .3 - e / 2, y0 + s * .35 - e / 2, x0 + s * .3 + e / 2, y0 + s * .35 + e], fill=(60, 40, 20))
    d.ellipse([x0 + s * .7 - e / 2, y0 + s * .35 - e / 2, x0 + s * .7 + e / 2, y0 + s * .35 + e], fill=(60, 40, 20))
    d.arc([x0 + s * .22, y0 + s * .35, x0 + s * .78, y0 + s * .8], 15, 165, fill=(60, 40, 20), width=max(1, s // 14))
    fs = max(10, out.height // 18)
    d.text((int(out.width * .04), out.height - fs - int(out.height * .04)), 'so cool!!', fill=(255, 0, 140),
           font=font(fs), stroke_width=max(1, fs // 10), stroke_fill=(255, 255, 255))
    return out, 'png', {}


def k_border_caption(im, r):
    bw = max(6, int(max(im.size) * .05))
    cap = max(28, int(im.height * .14))
    out = Image.new('RGB', (im.width + 2 * bw, im.height + 2 * bw + cap), (255, 255, 255))
    out.paste(im, (bw, bw))
    d = ImageDraw.Draw(out)
    fs = max(10, cap // 3)
    d.text((bw, im.height + bw + cap // 4), 'Figure 4.2: study area, North Carolina (source: GRASS)',
           fill=(20, 20, 20), font=font(fs))
    return out, 'jpg', {'quality': 88}


def k_print_scan(im, r):
    # print + scan: halftone-ish screen, paper tint, slight rotation on white, blur, noise, JPEG
    a = np.asarray(im).astype(np.float32)
    h, w = a.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    screen = (np.sin(xx * 0.9) * np.sin(yy * 0.9)) * 10.0
    a = a + screen[..., None]
    a = a * np.array([0.96, 0.94, 0.88]) + np.array([8, 8, 12])  # paper tint / ink gain
    rng = np.random.default_rng(r.randrange(1 << 30))
    a = a + rng.normal(0, 5, a.shape)
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    out = out.rotate(1.8, resample=Image.BICUBIC, expand=True, fillcolor=(250, 248, 240))
    out = out.filter(ImageFilter.GaussianBlur(0.8))
    out = ImageEnhance.Contrast(out).enhance(0.9)
    return out, 'jpg', {'quality': 82}


def k_aspect(im, r):
    out = im.resize((max(8, round(im.width * 1.3)), max(8, round(im.height * 0.9))), Image.BICUBIC)
    return out, 'png', {}


def k_tiny_upscale(im, r):
    t = im.copy()
    t.thumbnail((120, 120), Image.BILINEAR)
    t = jpeg(t, 45)
    out = t.resize(im.size, Image.BICUBIC)
    return out, 'jpg', {'quality': 85}


FUNCS = {k: globals()['k_' + k] for k in KINDS}


# ----------------------------------------------------------------------------- ground truth
# Judged by eye from the pairs the prototype's two runs reported (side-by-side sheets), after
# those runs: a pair no run reported was never looked at. Source file names in the package.
# Families: originals that are one picture edited (before/after, zoomed, with a legend added,
# resampled) or colour variants of one scene: a pair within one is related, never false.
FAMILIES = [
    ["i_colors_enhance_corrected.jpg", "i_colors_enhance_uncorrected.jpg", "d_rgb.png", "i_maxlik_rgb.png"],
    ["i_pansharpen_rgb_brovey542.jpg", "i_pansharpen_rgb_ihs542.jpg", "i_pansharpen_rgb_landsat542.jpg",
     "i_pansharpen_rgb_pca542.jpg"],
    ["d_rast_elevation.png", "ps_map_basic.png", "d_legend.png", "d_legend_custom_labels_and_background.png",
     "rshade.png"],
    ["r_carve_dem_orig_shaded.png", "r_carve_dem_carved_shaded.png"],
    ["r_carve_dem_orig_accum.png", "r_carve_dem_carved_accum.png", "r_water_outlet.png",
     "rterraflow_accumulation.png"],
    ["r_resamp_interp_orig_500m.png", "r_resamp_interp_new_250m.png"],
    ["r_fill_stats_01.png", "r_fill_stats_02.png"],
    ["r_drain.png", "r_path.png"],
    ["r_drain_with_r_watershed_direction.png", "r_path_with_r_watershed_direction.png"],
    ["v_select_op_overlap.png", "v_select_op_overlaps.png"],
]
# Tier C: different content in one template (judged by eye as above). Every other pair of
# unrelated originals is tier B: one base map with a different analysis drawn on it.
TIER_C = {frozenset(p) for p in [
    ("slope.png", "tcurv.png"), ("slope.png", "pcurv.png"), ("tcurv.png", "pcurv.png"),
    ("r_mfilter.png", "r_neighbors.png"), ("r_surf_random.jpg", "r_random_surface.jpg")]}
FAMILY_OF = {s: i for i, group in enumerate(FAMILIES) for s in group}


def related(s1: str, s2: str) -> bool:
    """Two source names of one picture or one family."""
    return s1 == s2 or (s1 in FAMILY_OF and FAMILY_OF.get(s1) == FAMILY_OF.get(s2))


def tier(s1: str, s2: str) -> str:
    """The tier of two unrelated source names: C (one template) or B (one base map)."""
    return "C" if frozenset((s1, s2)) in TIER_C else "B"


# ----------------------------------------------------------------------------- build
def originals() -> list[Path]:
    files = sorted([*SRC.glob("*.png"), *SRC.glob("*.jpg"), *SRC.glob("*.jpeg")])
    out = []
    for f in files:
        if EXCLUDE.search(f.name):
            continue
        with Image.open(f) as im:
            if min(im.size) < 120 or f.stat().st_size <= 4000:
                continue
        out.append(f)
    return out


def build() -> None:
    ensure_debs(DEBS, PACKAGES)
    r = random.Random(SEED)
    origs = originals()
    fresh_folder(FOLDER)
    n_copy = round(len(origs) * COPY_SHARE)
    chosen = r.sample(origs, n_copy)
    kinds = [KINDS[i % len(KINDS)] for i in range(n_copy)]
    r.shuffle(kinds)
    items = [("original", f, "") for f in origs] + [("copy", f, k) for f, k in zip(chosen, kinds)]
    ids = list(range(1000, 1000 + len(items)))
    r.shuffle(ids)
    rows = []
    for (role, f, k), i in zip(items, ids):
        if role == "original":
            p = FOLDER / f"img_{i}{f.suffix.lower()}"
            shutil.copyfile(f, p)
        else:
            out, ext, kw = FUNCS[k](on_white(Image.open(f)), r)
            p = save_as(out, FOLDER / f"img_{i}", f"jpg{kw['quality']}" if ext == "jpg" else "png")
        rows.append({"file": p.name, "role": role, "source": f.name, "kind": k,
                     "sha256": hashlib.sha256(p.read_bytes()).hexdigest()})
    write_manifest(rows, MANIFEST)
    print(f"built {FOLDER}: {len(origs)} originals, {n_copy} copies, {len(rows)} files; manifest {MANIFEST}")


# ----------------------------------------------------------------------------- score
def classify(ra: dict, rb: dict) -> str:
    """A reported pair's class from its two manifest rows (copy_own: a copy with its original)."""
    sa, sb = ra["source"], rb["source"]
    if ra["role"] == "original" and rb["role"] == "original":
        if ra["sha256"] == rb["sha256"]:
            return "orig_identical"
        return "orig_related" if related(sa, sb) else "orig_unrelated_" + tier(sa, sb)
    if ra["role"] == "copy" and rb["role"] == "copy":
        return "copy_copy_related" if related(sa, sb) else "copy_copy_unrelated_" + tier(sa, sb)
    if sa == sb:
        return "copy_own"
    return "copy_related_orig" if related(sa, sb) else "copy_wrong_orig_" + tier(sa, sb)


def score() -> dict:
    man, row, orig_file, copies = read_manifest(MANIFEST)
    n = len(man)

    def show(f):
        return on_white(Image.open(FOLDER / f))

    result = {}
    for out, name in ((OUT, "verified"), (OUT_RAW, "raw_cosine")):
        pairs = classified_pairs(out, row, classify)
        copies["found"] = copies_found(pairs, copies)
        wrong = pairs[pairs.cls.str.startswith("copy_wrong_orig")]
        wrong_copies = copy_files(wrong, row)
        unrelated = pairs[pairs.cls.isin(["orig_unrelated_B", "orig_unrelated_C"])]
        n_c = int((pairs.cls == "orig_unrelated_C").sum())
        result[name] = {
            "images": n, "copies": len(copies), "pairs": len(pairs),
            "recall": round(float(copies.found.mean()), 3),
            "recall_by_kind": {k: f"{int(g.found.sum())}/{len(g)}" for k, g in copies.groupby("kind")},
            "pairs_of_originals_not_related": len(unrelated),
            "pairs_of_originals_not_related_per_1k": round(1000 * len(unrelated) / n, 1),
            "tier_c_pairs": n_c, "tier_c_pairs_per_1k": round(1000 * n_c / n, 1),
            "copies_with_wrong_original": len(wrong_copies),
            "pairs_by_class": dict(sorted(Counter(pairs.cls).items())),
            "wall_s": wall_s(out)}
        ev = [c for c in EVIDENCE if c in pairs.columns]
        pairs[["cls", "fa", "src_a", "fb", "src_b", *ev]].sort_values(["cls", "fa", "fb"]).to_csv(
            ROOT / f"{name}_pairs.csv", index=False, float_format="%.3f")
        miss = copies[~copies.found].assign(original=lambda d: d.source.map(orig_file))
        miss[["file", "kind", "source", "original"]].to_csv(ROOT / f"{name}_missed.csv", index=False)

        unrelated = unrelated.sort_values(["cls", "cosine"], ascending=[False, False])
        save_pair_sheet([(r.fa, r.fb, evidence_caption(r, f"tier {r.cls[-1]}", ev)) for r in unrelated.itertuples()],
                        ROOT / f"{name}_unrelated_originals.png",
                        f"{name}: {len(unrelated)} pairs of unrelated originals (tier B + C) of {len(pairs)} pairs, "
                        f"{n} images", show, max_rows=len(unrelated))
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
