"""Probe `imagesieve audit` (defaults) on five kinds of real pictures no other probe uses,
with twelve alteration kinds no other probe or benchmark uses.

Rerunnable and deterministic (SEED). Steps:
  build : distinct originals from two pinned Debian packages (below), one altered copy of 96
          of them (12 kinds x 8, kinds written before any run), random neutral names in one
          flat folder, manifest.csv beside it (never in it).
  audit : imagesieve audit FOLDER --out OUT --no-sweep (and --raw-cosine into OUT_raw).
  score : recall overall and per kind; pairs of two different originals, split into
          "near-identical" (their 64x64 gray views differ by < 6 of 255 on average: one picture
          shipped twice), "same theme" (a Hedgewars theme's sky and horizon; kstars' screenshots
          of one dialog are not grouped: different states of one window count as different
          pictures) and "unrelated"; false pairs per 1k images, covered share beyond planted;
          contact sheets of false pairs and misses.

Usage: .venv/bin/python bench/probes/stars_and_screens.py [all|build|audit|score] [--collection C]
Files under $PROBE_DIR (default /tmp/imagesieve-probe-C). Two collections, pinned:
  "kstars" (default):
  kstars-data     5:3.6.2-2  (the western sky culture's constellation figures, grey drawings on
                              transparency; the English handbook's screenshots of a KDE app)
  hedgewars-data  1.0.2-6    (mission art, painted 314x260 scenes; the maps' terrain
                              silhouettes on transparency; the themes' skies and horizons)
  "stellarium" (a check on pictures no rule was written for; same kinds, another seed):
  stellarium-data 0.22.2-1   (200 of its deep-sky photographs, dark and alike; the drawings and
                              paintings of five other sky cultures; its landscapes' panoramas)

Kinds (none used elsewhere): duotone (luminance mapped from navy to orange), dither_1bit
(Floyd-Steinberg black and white), chroma_shift (red and blue moved 1.5% of the width apart,
JPEG q85), polaroid_tilt (white border, wider at the bottom, turned 4 degrees on grey),
region_pixelate (a 35% box in 12-px blocks), cartoon (bilateral filter and 8 colours),
offcentre_crop_70 (a 70% x 70% crop at a random corner), stretch_w130 (width x1.3),
screen_capture (at 60% inside a window on a desktop, JPEG q80), tilt_shift (top and bottom
thirds blurred), mirror_pad (15% of each side reflected outward), thumb_png8 (256 px, 64
colours). Transparent originals are altered as flattened on white (what an export does).
Last line: one JSON object.

Measured (2026-12-06, the first runs; the kinds and the scoring written before them):
  kstars      478 images: verified 88/96 (0.917), 21 pairs of "unrelated" originals (43.9 per
              1k); raw cosine 45/96, 68. By eye, of the 21: 6 different pictures matched on
              24-42% of a frame with 0-2 keypoints (two horizon strips, painted mission scenes,
              a blurred dark dialog and a dark sky), 5 template siblings (pages of one dialog,
              maps built of one set of sprites, two crops of one campaign map), 10 variants of
              one design (a theme's sky recoloured, one window in two states).
  stellarium  553 images: verified 93/96 (0.969), 11 (19.9 per 1k); raw cosine 32/96, 63. By
              eye: 6 different pictures (barred spirals M91 and M95, two edge-on galaxies, two
              galaxies on black matched on 53% of a frame, two screen captures sharing their
              window's chrome, two drawings), 5 variants of one design (a drawing redrawn).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).parent))
from cli_audit import (audit_verified_and_raw, ensure_debs, fresh_folder, neutral_ids, on_white,  # noqa: E402
                       run_steps, save_as, save_pair_sheet, write_manifest)



def _cli() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Probe imagesieve audit on two collections of unseen kinds.")
    ap.add_argument("step", nargs="?", default="all", choices=("all", "build", "audit", "score"))
    ap.add_argument("--collection", default="kstars", choices=("kstars", "stellarium"))
    return ap.parse_args()


ARGS = _cli() if __name__ == "__main__" else argparse.Namespace(step="all", collection="kstars")
COLLECTION = ARGS.collection
SEED = {"kstars": 20261207, "stellarium": 20261208}[COLLECTION]
ROOT = Path(os.environ.get("PROBE_DIR", f"/tmp/imagesieve-probe-{COLLECTION}"))
DEBS = ROOT / "debs"
FOLDER = ROOT / "pictures"
MANIFEST = ROOT / "manifest.csv"
OUT = ROOT / "audit_verified"
OUT_RAW = ROOT / "audit_raw"
PACKAGES = {"kstars": {"kstars-data": "5:3.6.2-2", "hedgewars-data": "1.0.2-6"},
            "stellarium": {"stellarium-data": "0.22.2-1"}}[COLLECTION]
KS = DEBS / "x_kstars-data/usr/share"
HW = DEBS / "x_hedgewars-data/usr/share/games/hedgewars/Data"
ST = DEBS / "x_stellarium-data/usr/share/stellarium"
KINDS = ["duotone", "dither_1bit", "chroma_shift", "polaroid_tilt", "region_pixelate", "cartoon",
         "offcentre_crop_70", "stretch_w130", "screen_capture", "tilt_shift", "mirror_pad", "thumb_png8"]
PER_KIND = 8
NEAR_IDENTICAL = 6.0     # mean abs difference of 64x64 grey views (of 255)


def sources() -> list[dict]:
    """Every candidate original: dict(name, path, set, group)."""
    out = []
    add = lambda p, s, group="": out.append(dict(name=str(p.relative_to(DEBS)), path=p, set=s, group=group))
    if COLLECTION == "stellarium":
        nebulae = sorted((ST / "nebulae/default").glob("*.png"))
        for p in random.Random(SEED).sample(nebulae, 200):
            add(p, "deep_sky")
        for culture in ("arabic_al-sufi", "egyptian_dendera", "maya", "greek_farnese", "chinese_contemporary"):
            for p in sorted((ST / "skycultures" / culture).glob("*.png")):
                add(p, "sky_culture_art")
        for p in sorted((ST / "landscapes").glob("*/*.png")):
            add(p, "landscape")
        return out
    for p in sorted((KS / "kstars/skycultures/western").glob("*.png")):
        add(p, "constellation")
    for p in sorted((KS / "doc/HTML/en/kstars").glob("*.png")):
        add(p, "screenshot")
    for p in sorted((HW / "Graphics/Missions").rglob("*.png")):
        add(p, "mission_art")
    for p in sorted((HW / "Maps").glob("*/map.png")):
        add(p, "map_silhouette")
    for p in sorted((HW / "Themes").glob("*/*.png")):
        if p.stem in ("Sky", "horizont"):
            add(p, "theme_sky", group=p.parent.name)
    return out


def grey64(im: Image.Image) -> np.ndarray:
    return np.asarray(on_white(im).convert("L").resize((64, 64), Image.BOX), np.float32)


def select() -> list[dict]:
    keep, seen = [], []
    for c in sources():
        with Image.open(c["path"]) as im:
            im.load()
            if min(im.size) < 160 or max(im.size) > 4096:
                continue
            c["image"] = im.convert("RGBA")
        g = grey64(c["image"])
        if g.std() < 4 or any(np.abs(g - s).mean() < 1.0 for s in seen):
            continue                      # blank, or the same picture again
        seen.append(g)
        keep.append(c)
    return keep


def alter(im: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, str]:
    import cv2
    rgb = on_white(im)
    w, h = rgb.size
    if kind == "duotone":
        return ImageOps.colorize(rgb.convert("L"), (20, 30, 90), (250, 160, 40)), "png"
    if kind == "dither_1bit":
        return rgb.convert("L").convert("1", dither=Image.FLOYDSTEINBERG), "png"
    if kind == "chroma_shift":
        r, g, b = rgb.split()
        d = max(2, round(0.015 * w))
        r = r.transform(rgb.size, Image.AFFINE, (1, 0, -d, 0, 1, 0))
        b = b.transform(rgb.size, Image.AFFINE, (1, 0, d, 0, 1, 0))
        return Image.merge("RGB", (r, g, b)), "jpg85"
    if kind == "polaroid_tilt":
        m = max(4, w // 20)
        card = Image.new("RGB", (w + 2 * m, h + 2 * m + 2 * m), (250, 250, 245))
        card.paste(rgb, (m, m))
        return card.rotate(4, expand=True, fillcolor=(120, 120, 120), resample=Image.BICUBIC), "jpg90"
    if kind == "region_pixelate":
        bw, bh = int(w * 0.35), int(h * 0.35)
        x, y = rng.randint(0, w - bw), rng.randint(0, h - bh)
        box = rgb.crop((x, y, x + bw, y + bh))
        box = box.resize((max(1, bw // 12), max(1, bh // 12)), Image.BOX).resize((bw, bh), Image.NEAREST)
        out = rgb.copy()
        out.paste(box, (x, y))
        return out, "png"
    if kind == "cartoon":
        a = cv2.bilateralFilter(np.asarray(rgb), 9, 75, 75)
        return Image.fromarray(a).quantize(8).convert("RGB"), "png"
    if kind == "offcentre_crop_70":
        cw, ch = int(w * 0.7), int(h * 0.7)
        x, y = rng.choice([(0, 0), (w - cw, 0), (0, h - ch), (w - cw, h - ch)])
        return rgb.crop((x, y, x + cw, y + ch)), "jpg90"
    if kind == "stretch_w130":
        return rgb.resize((int(w * 1.3), h), Image.BICUBIC), "jpg90"
    if kind == "screen_capture":
        small = rgb.resize((max(8, int(w * 0.6)), max(8, int(h * 0.6))), Image.LANCZOS)
        sw, sh = small.size
        W, H = sw + 160, sh + 140
        desk = Image.new("RGB", (W, H), (46, 52, 64))
        d = ImageDraw.Draw(desk)
        d.rectangle((40, 30, 40 + sw + 20, 30 + sh + 50), fill=(236, 236, 236))
        d.rectangle((40, 30, 40 + sw + 20, 58), fill=(60, 90, 160))
        for k in range(3):
            d.ellipse((44 + 20 * k, 36, 58 + 20 * k, 50), fill=(230, 90, 80))
        desk.paste(small, (50, 68))
        return desk, "jpg80"
    if kind == "tilt_shift":
        blur = rgb.filter(ImageFilter.GaussianBlur(max(2, w * 0.012)))
        mask = Image.new("L", rgb.size, 255)
        ImageDraw.Draw(mask).rectangle((0, h // 3, w, 2 * h // 3), fill=0)
        mask = mask.filter(ImageFilter.GaussianBlur(h * 0.05))
        return Image.composite(blur, rgb, mask), "jpg90"
    if kind == "mirror_pad":
        a = np.asarray(rgb)
        py, px = int(h * 0.15), int(w * 0.15)
        return Image.fromarray(np.pad(a, ((py, py), (px, px), (0, 0)), mode="reflect")), "png"
    if kind == "thumb_png8":
        t = rgb.copy()
        t.thumbnail((256, 256), Image.LANCZOS)
        return t.quantize(64), "png"
    raise ValueError(kind)


def build() -> None:
    ensure_debs(DEBS, PACKAGES)
    rng = random.Random(SEED)
    srcs = select()
    fresh_folder(FOLDER)
    new_id = neutral_ids(rng)
    rows = []
    for c in srcs:
        c["id"] = new_id()
        with Image.open(c["path"]) as im:
            im.load()
            p = save_as(im if im.mode in ("RGB", "RGBA", "L", "LA", "P") else im.convert("RGBA"), FOLDER / c["id"], "png")
        rows.append(dict(file=p.name, id=c["id"], role="original", original=c["id"], kind="", source=c["name"],
                         set=c["set"], group=c["group"], size="%dx%d" % c["image"].size))
    used = set()
    for kind in KINDS:
        for c in rng.sample([c for c in srcs if c["id"] not in used], PER_KIND):
            used.add(c["id"])
            im, ext = alter(c["image"], kind, rng)
            i = new_id()
            p = save_as(im, FOLDER / i, ext)
            rows.append(dict(file=p.name, id=i, role="copy", original=c["id"], kind=kind, source=c["name"],
                             set=c["set"], group=c["group"], size="%dx%d" % im.size))
    write_manifest(rows, MANIFEST)
    by_set = {s: sum(r["set"] == s and r["role"] == "original" for r in rows) for s in {r["set"] for r in rows}}
    print(f"built {FOLDER}: {len(srcs)} originals {by_set}, {len(rows) - len(srcs)} copies")


def score() -> dict:
    import pandas as pd
    man = pd.read_csv(MANIFEST, keep_default_na=False)
    row = {r.file: r for r in man.itertuples()}
    file_of = dict(zip(man.id, man.file))
    grey = {f: grey64(Image.open(FOLDER / f)) for f in man.file}

    def truth(a: str, b: str) -> str:
        ra, rb = row[a], row[b]
        if ra.original == rb.original:
            return "same"
        oa, ob = file_of[ra.original], file_of[rb.original]
        if np.abs(grey[oa] - grey[ob]).mean() < NEAR_IDENTICAL:
            return "near-identical"
        if ra.group and ra.group == rb.group:
            return "same theme"
        return "unrelated"

    copies = man[man.role == "copy"].copy()
    planted = set(copies.file) | {file_of[o] for o in copies.original}
    result = {}
    for out, name in ((OUT, "verified"), (OUT_RAW, "raw_cosine")):
        pairs = pd.read_parquet(out / "duplicate_pairs.parquet")
        pairs["fa"] = pairs.path_a.astype(str).map(lambda s: Path(s).name)
        pairs["fb"] = pairs.path_b.astype(str).map(lambda s: Path(s).name)
        pairs["truth"] = [truth(a, b) for a, b in zip(pairs.fa, pairs.fb)]
        direct = set(zip(pairs.fa, pairs.fb)) | set(zip(pairs.fb, pairs.fa))
        copies["found"] = [(r.file, file_of[r.original]) in direct for r in copies.itertuples()]
        false = pairs[pairs.truth != "same"]
        unrelated = false[false.truth == "unrelated"]
        covered = set(pairs.fa) | set(pairs.fb)
        n = len(man)
        rep = json.loads((out / "report.json").read_text())["summary"]
        result[name] = dict(
            images=n, copies=len(copies), recall=round(float(copies.found.mean()), 3),
            recall_by_kind={k: f"{int(g.found.sum())}/{len(g)}" for k, g in copies.groupby("kind")},
            recall_by_set={k: f"{int(g.found.sum())}/{len(g)}" for k, g in copies.groupby("set")},
            false_pairs=len(false), false_by_truth=false.truth.value_counts().to_dict(),
            unrelated_pairs=len(unrelated), unrelated_per_1k=round(1000 * len(unrelated) / n, 1),
            unrelated_by_sets=pd.Series([" / ".join(sorted((row[a].set, row[b].set)))
                                         for a, b in zip(unrelated.fa, unrelated.fb)]).value_counts().to_dict(),
            covered_share_beyond_planted=round(len(covered - planted) / n, 3),
            threshold=rep.get("threshold"),
            wall_s=round(json.loads((out.parent / (out.name + ".run.json")).read_text())["wall_s"], 1))
        ev = [c for c in ("cosine", "agreement", "matched_area", "keypoint_inliers", "evidence") if c in pairs.columns]
        txt = lambda r: f"{row[r.fa].set}/{row[r.fb].set} {r.truth}\n" + " ".join(
            f"{c}={getattr(r, c):.3f}" if isinstance(getattr(r, c), float) else f"{c}={getattr(r, c)}" for c in ev)
        show = lambda f: on_white(Image.open(FOLDER / f))
        save_pair_sheet([(r.fa, r.fb, txt(r)) for r in unrelated.itertuples()], ROOT / f"{name}_unrelated.png",
                        f"{name}: pairs of unrelated originals", show)
        if name == "verified":
            miss = copies[~copies.found]
            save_pair_sheet([(r.file, file_of[r.original], f"{r.kind} ({r.set})") for r in miss.itertuples()],
                            ROOT / "verified_missed.png", "verified: copies not paired with their original", show)
            miss[["file", "kind", "set", "source"]].to_csv(ROOT / "verified_missed.csv", index=False)
            unrelated[["fa", "fb", *ev]].to_csv(ROOT / "verified_unrelated.csv", index=False)
    print(json.dumps(result))
    return result


def audit() -> None:
    audit_verified_and_raw(FOLDER, OUT, OUT_RAW)


def main() -> int:
    return run_steps(ARGS.step, __doc__, build, audit, score)


if __name__ == "__main__":
    sys.exit(main())
