"""Probe imagesieve's duplicate finder on charts (scientific plots of one style).

Rerunnable and deterministic (SEED). Steps:
  build  : pick ~230 real chart PNGs shipped by Debian doc packages (statsmodels notebook/API
           figures: matplotlib's default style; Octave's manual figures: gnuplot style),
           plant one altered copy of 54 of them (9 kinds x 6), random neutral names,
           manifest.csv (hidden from the audited folder: written beside it).
  audit  : imagesieve audit FOLDER --out OUT --no-sweep  (verified, default)
           imagesieve audit FOLDER --out OUT_raw --no-sweep --raw-cosine
  score  : recall per kind, false pairs / 1k images, covered share beyond planted, threshold,
           warnings, wall time; CSVs of false pairs and misses with evidence; contact sheets.

Usage: .venv/bin/python bench/probes/charts.py [all|build|audit|score]   (default all)
Source packages are extracted (dpkg -x) under $PROBE_DIR/debs (default /tmp/imagesieve-probe-charts) by `apt-get download`
python-statsmodels-doc octave-doc; build() does that itself when missing.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import cv2
from PIL import Image, ImageDraw, ImageFont, ImageOps

from audit_store import AuditStore, tool  # this folder's
from cli_audit import fresh_folder, neutral_ids, run_audit, write_manifest

SEED = 20261205
ROOT = Path(os.environ.get("PROBE_DIR", "/tmp/imagesieve-probe-charts"))   # all its files
DEBS = ROOT / "debs"
FOLDER = ROOT / "charts"             # what is audited (flat folder)
MANIFEST = ROOT / "manifest.csv"     # id -> source / original / kind (never in FOLDER)
OUT = ROOT / "audit_verified"
OUT_RAW = ROOT / "audit_raw"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT_B = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
KINDS = ["resize", "jpeg_q30", "crop_plot", "window_border", "dark_mode", "grayscale",
         "slide", "screen_photo", "watermark"]
PER_KIND = 6

SM = DEBS / "x_python-statsmodels-doc/usr/share/doc/python-statsmodels-doc/html/_images"
OCT = DEBS / "x_octave-doc/usr/share/doc/octave/octave.html"
# statsmodels' _images also holds gallery thumbnails (crops of notebook figures: natural
# duplicates we do not want among "distinct" originals), logos and photos of people.
SM_API = re.compile(r"^(graphics|var_|stl_plot|bkf_plot|cff_plot|hpf_plot|statsmodels-graphics)")


# ----------------------------------------------------------------------------- sources
def ensure_debs():
    need = {"python-statsmodels-doc": ("0.13.5+dfsg-7", SM), "octave-doc": ("7.3.0-2", OCT)}   # pinned
    DEBS.mkdir(parents=True, exist_ok=True)
    for pkg, (version, path) in need.items():
        if path.exists():
            continue
        subprocess.run(["apt-get", "download", f"{pkg}={version}"], cwd=DEBS, check=True)
        deb = sorted(DEBS.glob(f"{pkg}_*.deb"))[-1]
        subprocess.run(["dpkg", "-x", str(deb), str(DEBS / f"x_{pkg}")], check=True)


def source_files() -> list[Path]:
    files = sorted(SM.glob("examples_notebooks_generated_*.png"))
    files += sorted(p for p in SM.glob("*.png") if SM_API.match(p.name))
    files += sorted(OCT.glob("*.png"))
    seen, out = set(), []
    for p in files:
        h = hashlib.sha256(p.read_bytes()).hexdigest()
        if h in seen:
            continue
        with Image.open(p) as im:
            if min(im.size) < 120:
                continue
        seen.add(h)
        out.append(p)
    return out


def load_rgb(p: Path) -> Image.Image:
    im = Image.open(p)
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        bg.alpha_composite(im)
        im = bg
    return im.convert("RGB")


# ----------------------------------------------------------------------------- alterations
def font(size, bold=False):
    return ImageFont.truetype(FONT_B if bold else FONT, size)


def plot_box(im: Image.Image) -> tuple[int, int, int, int]:
    """The plot area: the bounding box of long dark horizontal/vertical lines (axes spines),
    else a fixed inner box."""
    g = np.asarray(im.convert("L")) < 110
    h, w = g.shape
    rows = np.where(g.mean(1) > 0.45)[0]
    cols = np.where(g.mean(0) > 0.45)[0]
    if len(rows) >= 2 and len(cols) >= 2 and rows[-1] - rows[0] > h * 0.3 and cols[-1] - cols[0] > w * 0.3:
        return int(cols[0]) + 2, int(rows[0]) + 2, int(cols[-1]) - 1, int(rows[-1]) - 1
    return int(w * 0.12), int(h * 0.06), int(w * 0.95), int(h * 0.88)


def alter(im: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, str, dict]:
    """Return (copy, file extension, params)."""
    w, h = im.size
    if kind == "resize":      # re-rendered / resized for the web: 45-70% or 130-150%
        s = rng.choice([rng.uniform(0.45, 0.7), rng.uniform(1.3, 1.5)])
        return im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS), "png", {"scale": round(s, 3)}
    if kind == "jpeg_q30":
        return im, "jpg30", {"quality": 30}
    if kind == "crop_plot":   # screenshot of the plot area only (ticks/labels/title cut off)
        x0, y0, x1, y1 = plot_box(im)
        m = rng.randint(0, 6)
        box = (max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m))
        c = im.crop(box)
        return c, "png", {"box": box, "area_share": round((box[2] - box[0]) * (box[3] - box[1]) / (w * h), 3)}
    if kind == "window_border":  # screenshot of a viewer window: title bar, frame, grey padding
        pad = rng.randint(20, 60)
        bar = 32
        frame = 3
        W, H = w + 2 * pad + 2 * frame, h + 2 * pad + bar + frame
        canvas = Image.new("RGB", (W, H), (236, 236, 236))
        d = ImageDraw.Draw(canvas)
        d.rectangle([0, 0, W - 1, bar], fill=(50, 54, 62))
        d.rectangle([0, 0, W - 1, H - 1], outline=(50, 54, 62), width=frame)
        for i, col in enumerate([(255, 95, 86), (255, 189, 46), (39, 201, 63)]):
            d.ellipse([10 + i * 22, 9, 24 + i * 22, 23], fill=col)
        d.text((90, 8), "Figure 1 - Image Viewer", fill=(220, 220, 220), font=font(15))
        canvas.paste(im, (frame + pad, bar + pad))
        return canvas, "png", {"pad": pad}
    if kind == "dark_mode":   # inverted (a dark-mode viewer / reader)
        return ImageOps.invert(im), "png", {}
    if kind == "grayscale":
        return im.convert("L").convert("RGB"), "png", {}
    if kind == "slide":       # pasted onto a 16:9 slide, scaled down, title above
        W, H = 1280, 720
        bg = rng.choice([(255, 255, 255), (255, 255, 255), (31, 56, 100), (242, 242, 230)])
        canvas = Image.new("RGB", (W, H), bg)
        d = ImageDraw.Draw(canvas)
        fg = (255, 255, 255) if sum(bg) < 300 else (20, 20, 20)
        title = rng.choice(["Results", "Model diagnostics", "Quarterly review", "Findings (2)",
                            "Residual analysis", "Forecast vs. actual"])
        d.text((60, 36), title, fill=fg, font=font(44, True))
        d.line([60, 100, W - 60, 100], fill=(200, 80, 40), width=4)
        avail_w, avail_h = int(W * rng.uniform(0.55, 0.8)), H - 150
        s = min(avail_w / w, avail_h / h)
        c = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
        x = rng.choice([60, (W - c.width) // 2])
        canvas.paste(c, (x, 120))
        if x == 60 and W - c.width - 120 > 200:
            for i in range(3):
                d.text((c.width + 100, 160 + 60 * i), "- key point %d" % (i + 1), fill=fg, font=font(26))
        return canvas, "png", {"scale": round(s, 3), "bg": bg}
    if kind == "screen_photo":  # phone photo of a screen: perspective, moire, blur, cast, noise
        a = np.asarray(im).astype(np.float32)
        t = rng.uniform(0.03, 0.07)
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        dst = np.float32([[w * t * rng.random(), h * t * rng.random()],
                          [w - w * t * rng.random(), h * t * rng.random()],
                          [w - w * t * rng.random(), h - h * t * rng.random()],
                          [w * t * rng.random(), h - h * t * rng.random()]])
        M = cv2.getPerspectiveTransform(src, dst)
        a = cv2.warpPerspective(a, M, (w, h), borderValue=(40, 40, 45))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        f1, f2 = rng.uniform(0.25, 0.45), rng.uniform(0.2, 0.4)
        moire = 12 * np.sin(f1 * xx + f2 * yy) * np.sin(0.07 * xx - 0.05 * yy)
        a = a * np.float32([0.95, 0.97, 1.05]) + moire[..., None] - 8
        a = cv2.GaussianBlur(a, (0, 0), rng.uniform(1.0, 1.8))
        a = a + np.random.default_rng(rng.randint(0, 2**31)).normal(0, 6, a.shape)
        out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        return out, "jpg85", {"tilt": round(t, 3)}
    if kind == "watermark":
        base = im.convert("RGBA")
        layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        text = rng.choice(["CONFIDENTIAL", "DRAFT", "(c) ACME Analytics", "PREVIEW"])
        fs = max(18, int(min(w, h) / 7))
        f = font(fs, True)
        tw = d.textlength(text, font=f)
        d.text(((w - tw) / 2, h / 2 - fs / 2), text, fill=(200, 30, 30, 90), font=f)
        layer = layer.rotate(rng.uniform(20, 35), resample=Image.BICUBIC, center=(w / 2, h / 2))
        d2 = ImageDraw.Draw(layer)
        small = font(max(10, fs // 4))
        d2.text((w - d2.textlength("www.example-stats.org", font=small) - 8, h - fs // 4 - 10),
                "www.example-stats.org", fill=(90, 90, 90, 160), font=small)
        base.alpha_composite(layer)
        return base.convert("RGB"), "png", {"text": text}
    raise ValueError(kind)


def save(im: Image.Image, path_noext: Path, ext: str) -> Path:
    if ext.startswith("jpg"):
        p = path_noext.with_suffix(".jpg")
        im.save(p, quality=int(ext[3:]))
    else:
        p = path_noext.with_suffix(".png")
        im.save(p, optimize=False)
    return p


def build():
    ensure_debs()
    rng = random.Random(SEED)
    srcs = source_files()
    print(f"{len(srcs)} distinct chart PNGs found")
    fresh_folder(FOLDER)
    new_id = neutral_ids(rng)

    rows, orig_id = [], {}
    for p in srcs:
        im = load_rgb(p)
        i = new_id()
        out = save(im, FOLDER / i, "png")
        orig_id[p] = i
        pkg = "statsmodels" if "statsmodels" in str(p) else "octave"
        rows.append(dict(file=out.name, id=i, role="original", original=i, kind="", source=str(p),
                         package=pkg, params=""))
    # copies: 54 distinct originals, 6 per kind
    chosen = rng.sample(srcs, PER_KIND * len(KINDS))
    for n, p in enumerate(chosen):
        kind = KINDS[n % len(KINDS)]
        im = load_rgb(p)
        c, ext, params = alter(im, kind, rng)
        i = new_id()
        out = save(c, FOLDER / i, ext)
        pkg = "statsmodels" if "statsmodels" in str(p) else "octave"
        rows.append(dict(file=out.name, id=i, role="copy", original=orig_id[p], kind=kind,
                         source=str(p), package=pkg, params=json.dumps(params)))
    write_manifest(rows, MANIFEST)
    print(f"built {FOLDER}: {sum(r['role']=='original' for r in rows)} originals, "
          f"{sum(r['role']=='copy' for r in rows)} copies; manifest {MANIFEST}")


# ----------------------------------------------------------------------------- audit
def audit(raw: bool):
    run_audit(FOLDER, OUT_RAW if raw else OUT, *(["--raw-cosine"] if raw else []))


# ----------------------------------------------------------------------------- scoring
def contact_sheet(rows, out_png: Path, title: str, text_fn, max_rows=40):
    rows = rows[:max_rows]
    th = 260
    W = 2 * th * 16 // 10 + 40 + 430
    H = 50 + max(1, len(rows)) * (th + 20)
    sheet = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(sheet)
    d.text((10, 10), title, fill="black", font=font(20, True))
    y = 50
    for (fa, fb, txt) in rows:
        x = 10
        for f in (fa, fb):
            im = load_rgb(FOLDER / f)
            im.thumbnail((th * 16 // 10, th))
            sheet.paste(im, (x, y))
            d.rectangle([x - 1, y - 1, x + im.width, y + im.height], outline=(150, 150, 150))
            d.text((x, y + th + 1), f, fill=(80, 80, 80), font=font(12))
            x += th * 16 // 10 + 15
        d.multiline_text((x + 5, y), txt, fill="black", font=font(13), spacing=3)
        y += th + 20
    if not rows:
        d.text((10, 60), "(none)", fill="black", font=font(16))
    sheet.save(out_png)


def fmt_ev(r, cols):
    out = []
    for c in cols:
        v = r[c]
        if isinstance(v, float):
            v = round(v, 3)
        out.append(f"{c}: {v}")
    return "\n".join(out)


# ------------------------------------------------------------------ ground truth refinements
TWIN_INK = 0.03       # originals whose differing pixels are < 3% of their ink: the same figure
REVISION_INK = 0.15   # < 15%: the same chart with one series / legend / label changed


def ink_diff(fa: str, fb: str) -> float | None:
    A = np.asarray(Image.open(FOLDER / fa).convert("L"), np.int16)
    B = np.asarray(Image.open(FOLDER / fb).convert("L"), np.int16)
    if A.shape != B.shape:
        return None
    ink = (A < 224) | (B < 224)
    return float((np.abs(A - B) > 32).sum() / max(1, ink.sum()))


def twin_classes(man):
    """Originals that the doc packages ship as (nearly) the same figure twice (two notebooks
    render one plot): union-find over same-size originals with ink_diff < TWIN_INK."""
    o = man[man.role == "original"]
    parent = {i: i for i in o.id}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    sizes = {}
    for _, r in o.iterrows():
        with Image.open(FOLDER / r.file) as im:
            sizes.setdefault(im.size, []).append((r.id, r.file))
    twins = []
    for grp in sizes.values():
        for i in range(len(grp)):
            for j in range(i + 1, len(grp)):
                d = ink_diff(grp[i][1], grp[j][1])
                if d is not None and d < TWIN_INK:
                    parent[find(grp[i][0])] = find(grp[j][0])
                    twins.append((grp[i][1], grp[j][1], round(d, 4)))
    return {i: find(i) for i in parent}, twins


class Store(AuditStore):
    """The audit's store, with the look-alike levels of one image."""

    def pack(self, a, exclude, k=8):
        """Approximate look-alike levels of image a: median cosine and agreement with its k
        nearest (by cosine) other images, and the most keypoint inliers with any of them."""
        row = self.S[self.idx[a]].copy()
        for e in exclude:
            row[self.idx[e]] = -2
        nn = np.argsort(-row)[:k]
        al = [self.align(a, self.names[j]) for j in nn]
        return dict(pack_cosine=round(float(np.median(row[nn])), 3),
                    pack_agreement=round(float(np.median([x["agreement"] for x in al])), 3),
                    max_rival_inliers=int(max(x["keypoint_inliers"] for x in al)),
                    nearest=self.names[nn[0]], nearest_cos=round(float(row[nn[0]]), 3))


def mechanism(r) -> str:
    verify, _, _ = tool()
    rel = r.get("relative_disagreement")
    if rel is None or (isinstance(rel, float) and np.isnan(rel)):
        return "keypoints (keypoint-only candidate)"
    if rel > verify.MAX_RELATIVE:
        return "keypoints (layout verdict failed, inliers confirmed)"
    if r.get("matched_area", 1) < 0.5:
        return "layout, partial (matched_area<0.5)"
    return "layout, full frame"


def score():
    import pandas as pd
    man = pd.read_csv(MANIFEST, keep_default_na=False)
    twin_of, twins = twin_classes(man)
    print(f"natural twins among originals (ink diff < {TWIN_INK}): {twins}")
    pd.DataFrame(twins, columns=["a", "b", "ink_diff"]).to_csv(ROOT / "natural_twins.csv", index=False)
    man["origin"] = man.original.map(twin_of)
    src_of = dict(zip(man.file, man.source.map(lambda s: Path(s).name.replace("examples_notebooks_generated_", "nb_"))))
    kind_of = dict(zip(man.file, man.kind))
    role_of = dict(zip(man.file, man.role))
    origin_of = dict(zip(man.file, man.origin))
    orig_file_of = {f: o for f, o in zip(man.file, man.original)}
    file_of_id = dict(zip(man.id, man.file))
    summary = {}
    for out, label in ((OUT, "verified"), (OUT_RAW, "raw_cosine")):
        pp = out / "duplicate_pairs.parquet"
        if not pp.exists():
            print(f"{label}: no pairs file in {out}")
            continue
        pairs = pd.read_parquet(pp)
        pairs["fa"] = pairs.path_a.map(lambda s: Path(s).name)
        pairs["fb"] = pairs.path_b.map(lambda s: Path(s).name)
        pairs["true"] = pairs.fa.map(origin_of) == pairs.fb.map(origin_of)
        n_images = len(man)
        groups = pd.read_parquet(out / "duplicate_groups.parquet")
        group_of = dict(zip(groups.path.map(lambda s: Path(s).name), groups.group))
        false = pairs[~pairs["true"]].copy()
        false["pair_kind"] = ["copy-wrong-original" if (role_of[a] == "copy") != (role_of[b] == "copy") else
                              ("copy-copy" if role_of[a] == "copy" else "original-original")
                              for a, b in zip(false.fa, false.fb)]
        tiers = []
        for a, b in zip(false.fa, false.fb):
            d = ink_diff(file_of_id[orig_file_of[a]], file_of_id[orig_file_of[b]])
            tiers.append("revision (same chart, a series/label changed)" if d is not None and d < REVISION_INK
                         else "distinct chart")
        false["truth_tier"] = tiers
        false["src_a"] = [src_of[x] + (f" [{kind_of[x]}]" if kind_of[x] else "") for x in false.fa]
        false["src_b"] = [src_of[x] + (f" [{kind_of[x]}]" if kind_of[x] else "") for x in false.fb]
        if label == "verified":
            false["mechanism"] = [mechanism(r) for r in false.to_dict("records")]
        else:
            false["mechanism"] = "raw cosine >= threshold"
        copies = man[man.role == "copy"].copy()
        direct = set(zip(pairs.fa, pairs.fb)) | set(zip(pairs.fb, pairs.fa))
        found = []
        for _, r in copies.iterrows():
            mates = [f for f, o in origin_of.items() if o == r.origin and role_of[f] == "original"]
            found.append(any((r.file, m) in direct or (r.file in group_of and group_of.get(r.file) == group_of.get(m))
                             for m in mates))
        copies["found"] = found
        covered = set(group_of) | set(pairs.fa) | set(pairs.fb)
        planted = set(copies.file) | {file_of_id[o] for o in copies.original}
        beyond = {f for f in covered if f not in planted}
        nd = false[false.truth_tier == "distinct chart"]
        res = dict(label=label, images=n_images, pairs=len(pairs), true_pairs=int(pairs["true"].sum()),
                   natural_twin_pairs_found=int(sum(1 for a, b, _ in twins if (a, b) in direct)),
                   false_pairs=len(false), false_per_1k=round(1000 * len(false) / n_images, 1),
                   false_pairs_distinct_only=len(nd), false_per_1k_distinct_only=round(1000 * len(nd) / n_images, 1),
                   false_revisions=int((false.truth_tier != "distinct chart").sum()),
                   copy_wrong_original=int((false.pair_kind == "copy-wrong-original").sum()),
                   copy_copy=int((false.pair_kind == "copy-copy").sum()),
                   recall=round(copies.found.mean(), 3),
                   recall_by_kind={k: f"{int(g.found.sum())}/{len(g)}" for k, g in copies.groupby("kind")},
                   covered_share_beyond_planted=round(len(beyond) / n_images, 3),
                   covered_share_all=round(len(covered) / n_images, 3),
                   groups=int(groups.group.nunique()))
        if label == "verified":
            res["false_by_mechanism"] = false.mechanism.value_counts().to_dict()
            res["false_distinct_by_mechanism"] = nd.assign(m=false.mechanism).m.value_counts().to_dict()
        rep = json.loads((out / "report.json").read_text())
        res["threshold_reason"] = rep.get("summary", {}).get("duplicate_threshold_reason")
        res["threshold"] = rep.get("summary", {}).get("threshold")
        res["warnings"] = rep.get("summary", {}).get("duplicate_warnings")
        runf = out.parent / (out.name + ".run.json")
        if runf.exists():
            res["wall_s"] = round(json.loads(runf.read_text())["wall_s"], 1)
        summary[label] = res
        ev = [c for c in ("cosine", "agreement", "layout", "detail", "matched_area", "keypoint_inliers",
                          "relative_disagreement", "inverted", "matched_simplicity") if c in false.columns]
        cols = ["fa", "fb", "src_a", "src_b", "pair_kind", "truth_tier", "mechanism"] + ev
        false = false.sort_values("cosine", ascending=False)
        false[cols].to_csv(ROOT / f"false_pairs_{label}.csv", index=False)
        # misses, with the candidate's evidence recomputed by the tool's own functions
        store = Store(out)
        misses = copies[~copies.found]
        mrows = []
        for _, r in misses.iterrows():
            o = file_of_id[r.original]
            d = dict(copy=r.file, original=o, kind=r.kind, params=r.params, source=src_of[r.file],
                     cosine=round(store.cos(r.file, o), 3), rank_of_original_in_copy_nn=store.rank(r.file, o),
                     rank_of_copy_in_original_nn=store.rank(o, r.file))
            d.update(store.align(r.file, o))
            d.update({f"copy_{k}": v for k, v in store.pack(r.file, [o]).items()})
            d.update({f"orig_{k}": v for k, v in store.pack(o, [r.file]).items()
                      if k in ("pack_cosine", "pack_agreement", "max_rival_inliers")})
            la = max(d["copy_pack_agreement"], d["orig_pack_agreement"])
            lc = max(d["copy_pack_cosine"], d["orig_pack_cosine"])
            d["est_relative_disagreement"] = round(max(1 - d["agreement"], 0) / max(1 - la, 1e-3)
                                                   * max(1 - d["cosine"], 0) / max(1 - lc, 1e-3), 3)
            d["copy_paired_with"] = ";".join(src_of[x] for x in sorted(
                set(pairs[pairs.fa == r.file].fb) | set(pairs[pairs.fb == r.file].fa)))
            mrows.append(d)
        pd.DataFrame(mrows).to_csv(ROOT / f"misses_{label}.csv", index=False)
        copies.to_csv(ROOT / f"copies_{label}.csv", index=False)
        fr = [(r["fa"], r["fb"], f"{r['pair_kind']} | {r['truth_tier']}\nA: {r['src_a']}\nB: {r['src_b']}\n"
               f"passed by: {r['mechanism']}\n" + fmt_ev(r, ev)) for r in false[cols].to_dict("records")]
        contact_sheet(fr, ROOT / f"false_pairs_{label}.png",
                      f"{label}: {len(false)} false pairs (of {len(pairs)} pairs, {n_images} images)", None,
                      max_rows=80 if label == "verified" else 40)
        mk = ["kind", "params", "cosine", "rank_of_original_in_copy_nn", "agreement", "matched_area",
              "keypoint_inliers", "copy_pack_cosine", "copy_pack_agreement", "orig_pack_agreement",
              "copy_max_rival_inliers", "est_relative_disagreement", "copy_nearest", "copy_nearest_cos",
              "copy_paired_with"]
        mr = [(d["copy"], d["original"], "copy | original\n" + "\n".join(f"{k}: {d[k]}" for k in mk)) for d in mrows]
        contact_sheet(mr, ROOT / f"misses_{label}.png", f"{label}: {len(mr)} missed copies (copy | original)", None)
    (ROOT / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary, indent=1, default=str))


def _dig_threshold(obj, path=""):
    found = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = f"{path}.{k}" if path else k
            if re.search(r"thresh|warn|note|implaus", k, re.I) and not isinstance(v, (dict, list)):
                found[p] = v
            elif re.search(r"notes|warnings", k, re.I) and isinstance(v, list):
                found[p] = [str(x)[:300] for x in v[:10]]
            else:
                found.update(_dig_threshold(v, p))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            found.update(_dig_threshold(v, f"{path}[{i}]"))
    return found


def replay():
    """Replay the audit's verified search on its stored vectors/signatures (read-only use of the
    tool's library; module constants patched in this process only) to see which rule drops each
    missed copy and what general rule changes would do."""
    import sqlite3
    import pandas as pd
    verify, _, _ = tool()
    from imagesieve_server.analysis.duplicates import find

    out = OUT
    st = Store(out)
    c = sqlite3.connect(f"file:{out}/embeddings/index.sqlite?mode=ro", uri=True)
    sha = dict(c.execute("select path, sha256 from items"))
    keys = [str(FOLDER / n) for n in st.names]
    n = len(keys)
    cap = {}
    orig_vp = find.verified_pairs
    def spy(n_, a, b, agreement, cosine, **kw):
        cap.update(n=n_, a=a, b=b, g=agreement, c=cosine, kw=kw)
        return orig_vp(n_, a, b, agreement, cosine, **kw)
    find.verified_pairs = spy
    rep = find.find_duplicates(st.V, keys, [""] * n, [""] * n, [sha[k] for k in keys], signatures=st.L)
    print("replayed pairs:", len(rep.a), "candidates:", rep.candidates)

    man = pd.read_csv(MANIFEST, keep_default_na=False)
    twin_of, _ = twin_classes(man)
    man["origin"] = man.original.map(twin_of)
    origin = dict(zip(man.file, man.origin)); role = dict(zip(man.file, man.role))
    a, b = cap["a"], cap["b"]
    truth = np.array([origin[st.names[i]] == origin[st.names[j]] for i, j in zip(a, b)])
    is_copy_pair = np.array([(role[st.names[i]] == "copy") != (role[st.names[j]] == "copy") and t for i, j, t in zip(a, b, truth)])

    def run(label, args=None, **patch):
        saved = {k: getattr(verify, k) for k in patch}
        for k, v in patch.items(): setattr(verify, k, v)
        try:
            ok, rel = orig_vp(cap["n"], a, b, cap["g"], cap["c"], **{**cap["kw"], **(args or {})})
        finally:
            for k, v in saved.items(): setattr(verify, k, v)
        copies = man[man.role == "copy"]
        idx = st.idx
        okset = {(min(i, j), max(i, j)) for i, j in zip(a[ok], b[ok])}
        found = 0
        for _, r in copies.iterrows():
            mates = [f for f, o in origin.items() if o == r.origin and role[f] == "original"]
            found += any((min(idx[r.file], idx[m]), max(idx[r.file], idx[m])) in okset for m in mates)
        fp = int((ok & ~truth).sum())
        print(f"{label:55s} recall {found}/{len(copies)}  false pairs {fp}")
        return ok, rel

    base_ok, base_rel = run("as shipped")
    # what removes each missed copy?
    miss = pd.read_csv(ROOT / "misses_verified.csv")
    rule_rows = []
    for _, r in miss.iterrows():
        i, j = sorted((st.idx[r["copy"]], st.idx[r.original]))
        k = np.flatnonzero((a == i) & (b == j))
        src = "not a candidate" if not len(k) else (
            "layout" if cap["kw"]["layout_only"][k[0]] else "keypoint" if cap["kw"]["keypoint_only"][k[0]] else "embedding")
        line = f"MISS {r.kind:13s} {r.source[:40]:40s} candidate={src}"
        if len(k):
            k = k[0]
            line += f" g={cap['g'][k]:.3f} cos={cap['c'][k]:.3f} rel={base_rel[k]:.3f} uninformative={cap['kw']['uninformative'][k]} profile={cap['kw']['profile'][k]}"
            for lab, patch in (("no-sibling", dict(SIBLING_RATIO=None)), ("no-runner-up", dict(CROWDED_COSINE=9.0)),
                               ("both off", dict(SIBLING_RATIO=None, CROWDED_COSINE=9.0))):
                ok, _ = run(f"  [{lab}]", **patch)
                line += f" | {lab}: {'FOUND' if ok[k] else 'miss'}"
        print(line)
        rule_rows.append(dict(copy=r["copy"], original=r["original"], kind=r.kind, source=r.source, line=line))
    pd.DataFrame(rule_rows).to_csv(ROOT / "misses_verified_rules.csv", index=False)

    print("\n-- general variants (whole set) --")
    run("no sibling test", SIBLING_RATIO=None)
    run("no runner-up test", CROWDED_COSINE=9.0)
    run("max_relative 0.10", dict(max_relative=0.10))
    run("max_relative 0.05", dict(max_relative=0.05))
    run("min_agreement 0.9", dict(min_agreement=0.9))
    run("no profile rule", dict(profile=np.zeros_like(cap["kw"]["profile"])))
    run("no uninformative rule", dict(uninformative=np.zeros_like(cap["kw"]["uninformative"])))
    run("no profile + no uninformative", dict(profile=np.zeros_like(cap["kw"]["profile"]),
                                              uninformative=np.zeros_like(cap["kw"]["uninformative"])))
    run("no profile + no uninform. + sibling rank 0", dict(profile=np.zeros_like(cap["kw"]["profile"]),
        uninformative=np.zeros_like(cap["kw"]["uninformative"])), SIBLING_RANK=0)
    prof = cap["kw"]["profile"]; unin = cap["kw"]["uninformative"]
    imgs_prof = np.unique(np.r_[a[prof], b[prof]])
    print(f"\ncandidates {len(a)}; flagged profile (one-dimensional side) {prof.mean():.2f}, "
          f"uninformative (simple piece) {unin.mean():.2f}; images in a profile pair {len(imgs_prof)}/{n}")
    print(f"true copy candidate pairs: {int(is_copy_pair.sum())}, of them profile {int((prof & is_copy_pair).sum())}, "
          f"uninformative {int((unin & is_copy_pair).sum())}")
    fp = base_ok & ~truth
    print(f"false pairs {int(fp.sum())}: median agreement {np.median(cap['g'][fp]):.3f}, median cosine "
          f"{np.median(cap['c'][fp]):.3f}, median rel {np.nanmedian(base_rel[fp]):.3f}; "
          f"found copies: median agreement {np.median(cap['g'][base_ok & is_copy_pair]):.3f}, "
          f"median cosine {np.median(cap['c'][base_ok & is_copy_pair]):.3f}")
    look = ~truth
    print(f"non-duplicate candidate pairs {int(look.sum())}: agreement p50 {np.median(cap['g'][look]):.3f} "
          f"p90 {np.percentile(cap['g'][look], 90):.3f}; cosine p50 {np.median(cap['c'][look]):.3f} "
          f"p90 {np.percentile(cap['c'][look], 90):.3f}")
    run("sibling rank 0 (closest other candidate)", SIBLING_RANK=0)
    run("sibling rank 0 + ratio 0.5", SIBLING_RANK=0, SIBLING_RATIO=0.5)
    run("runner-up everywhere (crowded at 0)", CROWDED_COSINE=0.0)
    run("runner-up everywhere, ratio 0.3", CROWDED_COSINE=0.0, RUNNER_RATIO=0.3)
    np.savez(ROOT / "replay_candidates.npz", a=a, b=b, g=cap["g"], c=cap["c"], truth=truth,
             rel=base_rel, ok=base_ok, names=np.array(st.names))


def ink_check():
    """Hypothesis test (not the tool): for full-frame verified pairs (matched_area >= 0.95), the
    mutual ink coverage at 384 px: the share of each image's ink (foreground pixels, either
    polarity) within 2 px of the other's ink; the min of both directions. Copies keep their ink;
    another chart on the same axes adds or moves strokes."""
    import pandas as pd
    man = pd.read_csv(MANIFEST, keep_default_na=False)
    twin_of, _ = twin_classes(man)
    origin = dict(zip(man.file, man.original.map(twin_of)))
    kind = dict(zip(man.file, man.kind))
    p = pd.read_parquet(OUT / "duplicate_pairs.parquet")
    p = p[(p.matched_area >= 0.95)]

    def ink(f, w=384):
        g = np.asarray(load_rgb(FOLDER / f).convert("L"))
        h = max(1, round(g.shape[0] * w / g.shape[1]))
        g = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
        bg = np.median(np.r_[g[0], g[-1], g[:, 0], g[:, -1]])
        return (np.abs(g.astype(np.int16) - bg) > 60).astype(np.uint8)

    rows = []
    for r in p.itertuples():
        fa, fb = Path(r.path_a).name, Path(r.path_b).name
        A, B = ink(fa), ink(fb)
        if A.shape != B.shape:
            B = cv2.resize(B, (A.shape[1], A.shape[0]), interpolation=cv2.INTER_NEAREST)
        k = np.ones((5, 5), np.uint8)
        cov_ab = (A & cv2.dilate(B, k)).sum() / max(1, A.sum())
        cov_ba = (B & cv2.dilate(A, k)).sum() / max(1, B.sum())
        rows.append(dict(a=fa, b=fb, same=origin[fa] == origin[fb], kinds=(kind[fa] or "orig") + "/" + (kind[fb] or "orig"),
                         agreement=round(r.agreement, 3), cosine=round(r.cosine, 3),
                         ink_coverage=round(float(min(cov_ab, cov_ba)), 3)))
    d = pd.DataFrame(rows).sort_values("ink_coverage")
    d.to_csv(ROOT / "ink_check.csv", index=False)
    for same, g in d.groupby("same"):
        print(f"same={same}: n={len(g)} ink_coverage min {g.ink_coverage.min():.3f} p10 {g.ink_coverage.quantile(.1):.3f} "
              f"median {g.ink_coverage.median():.3f} max {g.ink_coverage.max():.3f}")
    for t in (0.85, 0.9, 0.95):
        print(f"  keep ink_coverage >= {t}: true kept {int((d.same & (d.ink_coverage >= t)).sum())}/{int(d.same.sum())}, "
              f"false kept {int((~d.same & (d.ink_coverage >= t)).sum())}/{int((~d.same).sum())}")


if __name__ == "__main__":
    step = sys.argv[1] if len(sys.argv) > 1 else "all"
    if step in ("all", "build"):
        build()
    if step in ("all", "audit"):
        audit(raw=False)
        audit(raw=True)
    if step in ("all", "score"):
        score()
    if step in ("all", "score", "replay"):
        replay()
    if step in ("all", "score", "inkcheck"):
        ink_check()
