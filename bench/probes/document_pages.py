"""Probe imagesieve's duplicate finder on pages of real documents.

  document_pages.py fetch  PDFDIR                  # installs Debian's doc packages (root), copies their PDFs
  document_pages.py render PDFDIR ORIGDIR          # originals (pages of 8 PDFs) + ORIGDIR/originals.csv
  document_pages.py plant  ORIGDIR PLANTDIR        # originals + ~50 altered copies, neutral names, manifest.csv
  document_pages.py audit  PLANTDIR OUTDIR [--raw] # runs the CLI as a new user would, logs + wall time
  document_pages.py score  PLANTDIR OUTDIR         # recall per kind, false pairs, diagnosis, contact sheets
  document_pages.py all    ORIGDIR WORKDIR         # plant + audit (verified and --raw-cosine) + score both

(.venv/bin/python bench/probes/document_pages.py ...; the figures in docs/verified-duplicates.md
"Pages of documents" came from fetch, render, then all.)

Deterministic: SEED below drives page choice, copy choice, alteration parameters, names.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from cli_audit import run_audit  # this folder's

SEED = 20261205
# document -> (pdf file, pages to take, dpi of its originals)
DOCS = {
    "amc": ("amc.pdf", 25, 72), "asy": ("asy.pdf", 25, 60), "camlidl": ("camlidl.pdf", 22, 80),
    "docbook": ("docbook.pdf", 25, 72), "freefem": ("freefem.pdf", 25, 66),
    "gnuplot": ("gnuplot.pdf", 28, 72), "rintro": ("rintro.pdf", 25, 90), "sbcl": ("sbcl.pdf", 25, 75),
}
KINDS = ["rerender", "jpeg_q30", "gray_noise", "rescan", "crop_content", "top_half",
         "binarize", "dark_mode", "stamp", "photo"]
PER_KIND = 5


# Where each PDF comes from: (Debian package=version, file it installs; .gz ones are unpacked).
SOURCES = {
    "amc.pdf": ("auto-multiple-choice-doc-pdf=1.6.0-1", "/usr/share/doc/auto-multiple-choice/auto-multiple-choice.en.pdf"),
    "asy.pdf": ("asymptote-doc=2.85+ds-1", "/usr/share/doc/asymptote/asymptote.pdf"),
    "camlidl.pdf": ("camlidl-doc=1.04-5", "/usr/share/doc/camlidl/camlidl-1.04.doc.pdf"),
    "docbook.pdf": ("docbook-xsl-doc-pdf=1.79.1-1", "/usr/share/doc/docbook-xsl-doc-pdf/doc/reference.pdf.gz"),
    "freefem.pdf": ("freefem-doc=3.5.8-7", "/usr/share/doc/freefem-doc/freefem.pdf"),
    "gnuplot.pdf": ("gnuplot-doc=5.4.4+dfsg1-2", "/usr/share/doc/gnuplot/gnuplot.pdf"),
    "rintro.pdf": ("r-doc-pdf=4.2.2.20221110-2", "/usr/share/R/doc/manual/R-intro.pdf"),
    "sbcl.pdf": ("sbcl-doc=2:2.2.9-1", "/usr/share/doc/sbcl/sbcl.pdf.gz"),
}


def fetch(pdfdir: Path) -> None:
    """Install the documents' Debian packages (and poppler-utils) and copy their PDFs to ``pdfdir``."""
    import gzip
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "poppler-utils",
                    *(pkg for pkg, _ in SOURCES.values())], check=True)
    pdfdir.mkdir(parents=True, exist_ok=True)
    for name, (_, src) in SOURCES.items():
        data = Path(src).read_bytes()
        (pdfdir / name).write_bytes(gzip.decompress(data) if src.endswith(".gz") else data)


# ------------------------------------------------------------------ render originals
def pdf_pages(pdf: Path) -> int:
    out = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
    return int([l for l in out.splitlines() if l.startswith("Pages:")][0].split()[1])


def words(pdf: Path, p: int) -> int:
    out = subprocess.run(["pdftotext", "-f", str(p), "-l", str(p), str(pdf), "-"],
                         capture_output=True, text=True).stdout
    return len(out.split())


def render_page(pdf: Path, page: int, dpi: int, dest: Path) -> None:
    stem = dest.with_suffix("")
    subprocess.run(["pdftoppm", "-r", str(dpi), "-png", "-singlefile", "-f", str(page), "-l", str(page),
                    str(pdf), str(stem)], check=True)


def render(pdfdir: Path, origdir: Path) -> None:
    rng = np.random.default_rng(SEED)
    origdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for doc, (fname, count, dpi) in DOCS.items():
        pdf = pdfdir / fname
        n = pdf_pages(pdf)
        wc = {p: words(pdf, p) for p in range(1, n + 1)}
        sparse = [p for p in range(4, n + 1) if wc[p] < 80]          # chapter openers, figure pages
        take = [1, 2, 3]                                              # title, verso/copyright, contents
        take += list(rng.choice(sparse, size=min(3, len(sparse)), replace=False)) if sparse else []
        rest = [p for p in range(4, n + 1) if p not in take]
        take += list(rng.choice(rest, size=count - len(take), replace=False))
        for p in sorted(int(x) for x in take):
            dest = origdir / f"{doc}_p{p:03d}.png"
            render_page(pdf, p, dpi, dest)
            rows.append({"file": dest.name, "doc": doc, "pdf": str(pdf), "page": p, "dpi": dpi, "words": wc[p]})
    with open(origdir / "originals.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} originals in {origdir}")


# ------------------------------------------------------------------ alterations
def ink(img: Image.Image) -> float:
    g = np.asarray(img.convert("L"))
    return float((g < 200).mean())


def content_box(g: np.ndarray, pad: int = 4):
    ys, xs = np.nonzero(g < 235)
    h, w = g.shape
    return (max(0, xs.min() - pad), max(0, ys.min() - pad), min(w, xs.max() + pad + 1), min(h, ys.max() + pad + 1))


def font(size: int):
    for p in ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",):
        if os.path.exists(p):
            return ImageFont.truetype(p, size)
    return ImageFont.load_default(size=size)


def alter(kind: str, img: Image.Image, meta: dict, rng: np.random.Generator, tmp: Path) -> tuple[Image.Image, str, str]:
    """Returns (altered image, file extension, parameter note)."""
    rgb = img.convert("RGB")
    a = np.asarray(rgb).astype(np.float32)
    h, w = a.shape[:2]
    if kind == "rerender":
        dpi = int(meta["dpi"])
        new = int(round(dpi * rng.choice([0.6, 1.5, 2.0])))
        dest = tmp / "rr.png"
        render_page(Path(meta["pdf"]), int(meta["page"]), new, dest)
        return Image.open(dest).convert("RGB"), "png", f"dpi {dpi}->{new}"
    if kind == "jpeg_q30":
        return rgb, "jpg30", "JPEG q30"
    if kind == "gray_noise":
        s = float(rng.uniform(5, 9))
        g = np.asarray(rgb.convert("L")).astype(np.float32) + rng.normal(0, s, (h, w))
        return Image.fromarray(np.clip(g, 0, 255).astype(np.uint8)), "png", f"gray + noise sd {s:.1f}"
    if kind == "rescan":
        deg = float(rng.uniform(1, 2) * rng.choice([-1, 1]))
        tone = float(rng.uniform(205, 228))
        g = np.asarray(rgb.convert("L")).astype(np.float32) / 255.0 * tone      # paper goes gray
        im = Image.fromarray(g.astype(np.uint8)).rotate(deg, resample=Image.BICUBIC, expand=True,
                                                        fillcolor=int(tone * 0.9))
        im = im.filter(ImageFilter.GaussianBlur(0.8))
        g = np.asarray(im).astype(np.float32) + rng.normal(0, 3, (im.height, im.width))
        return Image.fromarray(np.clip(g, 0, 255).astype(np.uint8)), "png", f"rot {deg:.2f} tone {tone:.0f} blur .8"
    if kind == "crop_content":
        box = content_box(np.asarray(rgb.convert("L")))
        return rgb.crop(box), "png", f"content box {box}"
    if kind == "top_half":
        return rgb.crop((0, 0, w, h // 2)), "png", "top half"
    if kind == "binarize":
        g = np.asarray(rgb.convert("L"))
        t, b = cv2.threshold(g, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return Image.fromarray(b), "png", f"otsu {t:.0f}"
    if kind == "dark_mode":
        inv = 255 - a
        inv = 28 + inv * (225 - 28) / 255.0      # near-black page, light-gray text (a reader's dark theme)
        return Image.fromarray(inv.astype(np.uint8)), "png", "inverted 28..225"
    if kind == "stamp":
        im = rgb.copy()
        layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        word = str(rng.choice(["RECEIVED", "APPROVED", "COPY", "CONFIDENTIAL"]))
        fs = int(w * 0.09)
        f = font(fs)
        tw = d.textlength(word, font=f)
        stamp = Image.new("RGBA", (int(tw + fs), int(fs * 2)), (0, 0, 0, 0))
        sd = ImageDraw.Draw(stamp)
        sd.rectangle((3, 3, stamp.width - 4, stamp.height - 4), outline=(200, 20, 30, 200), width=max(3, fs // 10))
        sd.text((fs // 2, fs // 3), word, font=f, fill=(200, 20, 30, 200))
        stamp = stamp.rotate(float(rng.uniform(-25, 25)), expand=True, resample=Image.BICUBIC)
        x = int(rng.uniform(0.1, 0.9) * w - stamp.width / 2)
        y = int(rng.uniform(0.15, 0.75) * h)
        layer.alpha_composite(stamp, (max(0, min(w - stamp.width, x)), max(0, min(h - stamp.height, y))))
        # handwritten-ish annotation: a wavy underline + circled margin note (blue pen)
        pts = []
        x0, y0 = rng.uniform(0.1, 0.3) * w, rng.uniform(0.2, 0.8) * h
        for t in np.linspace(0, 1, 60):
            pts.append((x0 + t * w * 0.5, y0 + np.sin(t * 14) * h * 0.006 + t * h * 0.01))
        d.line(pts, fill=(20, 40, 170, 230), width=max(2, w // 250))
        cx, cy, r = rng.uniform(0.05, 0.12) * w, rng.uniform(0.2, 0.8) * h, w * 0.04
        d.ellipse((cx - r, cy - r * 0.8, cx + r, cy + r * 0.8), outline=(20, 40, 170, 230), width=max(2, w // 250))
        im = Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")
        return im, "png", f"stamp {word} + pen marks"
    if kind == "photo":
        scale = float(rng.uniform(0.8, 1.1))
        W, H = int(w * 1.35), int(h * 1.25)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        base = float(rng.uniform(95, 140))
        table = base + 25 * (xx / W) - 15 * (yy / H) + rng.normal(0, 4, (H, W))   # gray table, light falloff
        table = np.repeat(table[..., None], 3, 2)
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        cx, cy = W / 2, H / 2
        hw, hh = w * scale / 2 * 0.92, h * scale / 2 * 0.92
        j = lambda s: float(rng.uniform(-s, s))
        dst = np.float32([[cx - hw + j(0.06 * w), cy - hh + j(0.04 * h)], [cx + hw + j(0.06 * w), cy - hh + j(0.04 * h)],
                          [cx + hw * 1.05 + j(0.03 * w), cy + hh + j(0.03 * h)], [cx - hw * 1.05 + j(0.03 * w), cy + hh + j(0.03 * h)]])
        M = cv2.getPerspectiveTransform(src, dst)
        warped = cv2.warpPerspective(a, M, (W, H), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        mask = cv2.warpPerspective(np.ones((h, w), np.float32), M, (W, H), flags=cv2.INTER_LINEAR)[..., None]
        light = (0.85 + 0.15 * (1 - yy / H))[..., None] * np.float32([1.0, 0.98, 0.93])   # warm, uneven light
        out = (warped * light * mask + table * (1 - mask))
        out = cv2.GaussianBlur(out, (0, 0), 0.7)
        return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)), "jpg85", "perspective photo on table"
    raise ValueError(kind)


def plant(origdir: Path, plantdir: Path) -> None:
    rng = np.random.default_rng(SEED + 1)
    meta = {r["file"]: r for r in csv.DictReader(open(origdir / "originals.csv"))}
    if plantdir.exists():
        shutil.rmtree(plantdir)
    plantdir.mkdir(parents=True)
    tmp = plantdir.parent / (plantdir.name + "_tmp")
    tmp.mkdir(exist_ok=True)
    files = sorted(meta)
    inks = {f: ink(Image.open(origdir / f)) for f in files}
    # copy sources: pages with some content (a copy of a blank page is every blank page's copy)
    eligible = [f for f in files if inks[f] > 0.01]
    by_doc: dict[str, list[str]] = {}
    for f in eligible:
        by_doc.setdefault(meta[f]["doc"], []).append(f)
    for d in by_doc:
        rng.shuffle(by_doc[d])
    order = []
    docs = sorted(by_doc)
    while len(order) < len(KINDS) * PER_KIND:            # round-robin over documents
        for d in docs:
            if by_doc[d]:
                order.append(by_doc[d].pop())
    order = order[: len(KINDS) * PER_KIND]
    kinds = [k for k in KINDS for _ in range(PER_KIND)]
    rng.shuffle(kinds)
    used_ids = set()

    def new_id():
        while True:
            s = "".join(rng.choice(list("abcdefghjkmnpqrstuvwxyz23456789"), 10))
            if s not in used_ids:
                used_ids.add(s)
                return s

    rows = []
    for f in files:
        i = new_id()
        shutil.copy(origdir / f, plantdir / f"{i}.png")
        rows.append({"file": f"{i}.png", "source": f, "doc": meta[f]["doc"], "page": meta[f]["page"],
                     "kind": "original", "note": f"dpi {meta[f]['dpi']} ink {inks[f]:.3f}"})
    for f, kind in zip(order, kinds):
        im, ext, note = alter(kind, Image.open(origdir / f), meta[f], rng, tmp)
        i = new_id()
        if ext.startswith("jpg"):
            name = f"{i}.jpg"
            im.convert("RGB").save(plantdir / name, quality=int(ext[3:]))
        else:
            name = f"{i}.png"
            im.save(plantdir / name)
        rows.append({"file": name, "source": f, "doc": meta[f]["doc"], "page": meta[f]["page"],
                     "kind": kind, "note": note})
    shutil.rmtree(tmp)
    man = plantdir.parent / (plantdir.name + "_manifest.csv")     # outside the audited folder
    with open(man, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} images ({len(rows) - len(files)} copies) in {plantdir}; manifest {man}")


# ------------------------------------------------------------------ audit
def audit(plantdir: Path, outdir: Path, raw: bool) -> None:
    run_audit(plantdir, outdir, *(["--raw-cosine"] if raw else []))


# ------------------------------------------------------------------ score
def _load_pairs(outdir: Path):
    import pandas as pd
    pairs = pd.read_parquet(outdir / "duplicate_pairs.parquet")
    groups = pd.read_parquet(outdir / "duplicate_groups.parquet")
    for c in ("path_a", "path_b"):
        pairs[c] = pairs[c].astype(str).map(lambda s: Path(s).name)
    groups["path"] = groups["path"].astype(str).map(lambda s: Path(s).name)
    return pairs, groups


def _same_look(plantdir: Path, fa: str, fb: str) -> float:
    """Mean abs gray difference (0-255) of two images at 96x128: ~0 means the two originals really are
    the same picture (e.g. two blank pages), not a false pair in any useful sense."""
    ga = np.asarray(Image.open(plantdir / fa).convert("L").resize((96, 128), Image.BILINEAR), np.float32)
    gb = np.asarray(Image.open(plantdir / fb).convert("L").resize((96, 128), Image.BILINEAR), np.float32)
    return float(np.abs(ga - gb).mean())


def _stored(outdir: Path):
    """The audit's resumable embeddings and layout signatures: (vectors, signatures, name -> row)."""
    import sqlite3
    e = outdir / "embeddings"
    con = sqlite3.connect(e / "index.sqlite")
    rows = {Path(p).name: (s, r) for p, s, r in con.execute("select path, shard, row from items where shard >= 0")}
    shards = sorted({s for s, _ in rows.values()})
    vec = {s: np.load(e / f"shard-{s:05d}.npy") for s in shards}
    sig = {s: np.load(e / f"layout-{s:05d}.npy") for s in shards if (e / f"layout-{s:05d}.npy").exists()}
    names = sorted(rows)
    V = np.stack([vec[rows[k][0]][rows[k][1]] for k in names]).astype(np.float32)
    S = np.stack([sig[rows[k][0]][rows[k][1]] for k in names]) if sig else None
    return V, S, {k: i for i, k in enumerate(names)}


def _tool_evidence(sigs, row, fa: str, fb: str):
    """The tool's own stage-2 alignment of one pair, from its stored signatures (read-only use)."""
    try:
        from imagesieve_server.analysis.duplicates import verify
        ev = verify.verify_pairs(sigs, np.array([row[fa]]), np.array([row[fb]]), processes=False)
        return {k: float(np.asarray(getattr(ev, k))[0]) for k in
                ("agreement", "layout", "detail", "matched_area", "keypoint_inliers", "matched_simplicity")}
    except Exception as e:  # noqa: BLE001
        return {"err": repr(e)[:80]}


def contact_sheet(rows, plantdir: Path, dest: Path, title: str) -> None:
    """rows: list of (file_a, file_b, text lines)."""
    if not rows:
        im = Image.new("RGB", (900, 80), "white")
        ImageDraw.Draw(im).text((10, 30), f"{title}: none", fill="black", font=font(18))
        im.save(dest)
        return
    TW, TXT = 260, 380
    TH = max(300, 17 * max(len(r[2]) for r in rows) + 12)
    cols = 2 if len(rows) > 6 else 1
    cell_w = 2 * TW + TXT + 20
    nrow = (len(rows) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell_w, 40 + nrow * (TH + 10)), "white")
    d = ImageDraw.Draw(sheet)
    d.text((10, 8), title, fill="black", font=font(20))
    f = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 13) \
        if os.path.exists("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf") else ImageFont.load_default(13)
    for i, (fa, fb, lines) in enumerate(rows):
        r, c = divmod(i, cols)
        x0, y0 = c * cell_w, 40 + r * (TH + 10)
        for j, fn in enumerate((fa, fb)):
            im = Image.open(plantdir / fn).convert("RGB")
            im.thumbnail((TW - 6, TH - 6))
            sheet.paste(im, (x0 + j * TW + 3, y0 + 3))
            d.rectangle((x0 + j * TW + 2, y0 + 2, x0 + j * TW + 3 + im.width, y0 + 3 + im.height), outline=(150, 150, 150))
        d.multiline_text((x0 + 2 * TW + 8, y0 + 4), "\n".join(lines), fill="black", font=f, spacing=3)
        d.line((x0, y0 + TH + 4, x0 + cell_w, y0 + TH + 4), fill=(200, 200, 200))
    sheet.save(dest)


def score(plantdir: Path, outdir: Path, sheets: bool = True) -> dict:
    import pandas as pd
    man = pd.read_csv(plantdir.parent / (plantdir.name + "_manifest.csv"))
    info = man.set_index("file")
    n = len(man)
    pairs, groups = _load_pairs(outdir)
    run = json.load(open(outdir.parent / (outdir.name + ".run.json")))
    out_txt = (outdir.parent / (outdir.name + ".stdout.txt")).read_text() + \
        (outdir.parent / (outdir.name + ".stderr.txt")).read_text()
    src_of = info["source"].to_dict()
    orig_file = {r.source: r.file for r in man.itertuples() if r.kind == "original"}
    group_of = dict(zip(groups["path"], groups["group"]))
    pairset = {frozenset((a, b)) for a, b in zip(pairs["path_a"], pairs["path_b"])}
    emb, sigs, row = _stored(outdir)
    rp = replay(outdir)
    replayed = {k for k, v in rp.items() if v["replay_verdict"]}
    print(f"replay check: {len(replayed)} verified pairs replayed vs {len(pairset)} in the audit; "
          f"{len(replayed & pairset)} in both")

    def cos(a, b):
        if emb is None or a not in row or b not in row:
            return float("nan")
        return float(emb[row[a]] @ emb[row[b]])

    def cos_rank(a, b):
        """rank of b among a's neighbours by cosine (1 = nearest)."""
        if emb is None or a not in row:
            return -1
        s = emb @ emb[row[a]]
        s[row[a]] = -9
        return int((s > s[row[b]]).sum() + 1)

    # recall per kind
    copies = man[man.kind != "original"]
    found = {}
    for r in copies.itertuples():
        o = orig_file[r.source]
        direct = frozenset((r.file, o)) in pairset
        grouped = r.file in group_of and o in group_of and group_of[r.file] == group_of[o]
        found[r.file] = (direct, grouped)
    recall = {}
    for k in KINDS:
        fs = copies[copies.kind == k]["file"]
        recall[k] = (sum(found[f][0] or found[f][1] for f in fs), len(fs))
    tot = (sum(v[0] for v in recall.values()), sum(v[1] for v in recall.values()))

    # false pairs
    ev_cols = [c for c in ("cosine", "agreement", "layout", "detail", "matched_area", "keypoint_inliers",
                           "matched_simplicity", "matched_blur_px", "relative_disagreement", "turned_degrees",
                           "inverted", "mirrored", "exact") if c in pairs.columns]
    false_rows, identical_rows = [], []
    for r in pairs.itertuples(index=False):
        a, b = r.path_a, r.path_b
        if src_of[a] == src_of[b]:
            continue
        oa, ob = orig_file[src_of[a]], orig_file[src_of[b]]
        mad = _same_look(plantdir, oa, ob)
        rec = {"a": a, "b": b, "a_is": f"{src_of[a]}[{info.loc[a, 'kind']}]",
               "b_is": f"{src_of[b]}[{info.loc[b, 'kind']}]", "same_doc": info.loc[a, "doc"] == info.loc[b, "doc"],
               "orig_mean_abs_diff": round(mad, 2)}
        rec.update({c: getattr(r, c) for c in ev_cols})
        rec.update({f"rp_{k}": v for k, v in rp.get(frozenset((a, b)), {}).items()
                    if k in ("cand_source", "lookalike_agreement", "lookalike_cosine", "uninformative", "kp_runner_up")})
        (identical_rows if mad < 1.0 else false_rows).append(rec)
    # images in a group beyond the planted relations
    extra = 0
    for g, members in groups.groupby("group")["path"]:
        srcs = [src_of[m] for m in members]
        for m in members:
            if sum(s == src_of[m] for s in srcs) < 2:
                extra += 1
    in_group = groups["path"].nunique()

    # misses with diagnosis
    miss_rows = []
    for r in copies.itertuples():
        if found[r.file][0] or found[r.file][1]:
            continue
        o = orig_file[r.source]
        rec = {"copy": r.file, "original": o, "source": r.source, "kind": r.kind, "note": r.note,
               "cosine": round(cos(r.file, o), 3), "orig_rank_from_copy": cos_rank(r.file, o),
               "copy_rank_from_orig": cos_rank(o, r.file),
               "copy_paired_with": ";".join(sorted(src_of[p] for p in
                                                   set(pairs.loc[pairs.path_a == r.file, "path_b"]) |
                                                   set(pairs.loc[pairs.path_b == r.file, "path_a"])))}
        cand = rp.get(frozenset((r.file, o)))
        rec["stage1_candidate"] = cand is not None
        if cand is not None:
            rec.update({f"rp_{k}": v for k, v in cand.items()})
        else:
            rec.update({f"tool_{k}": (round(v, 3) if isinstance(v, float) else v)
                        for k, v in _tool_evidence(sigs, row, r.file, o).items()})
        miss_rows.append(rec)
    # found copies' cosine, for context
    found_cos = [cos(r.file, orig_file[r.source]) for r in copies.itertuples()]

    thr = None
    for line in out_txt.splitlines():
        if "threshold" in line.lower():
            thr = (thr + " | " if thr else "") + line.strip()
    warns = [l.strip() for l in out_txt.splitlines() if any(w in l.lower() for w in ("warn", "caution", "note", "!"))]
    summ = {
        "outdir": str(outdir), "images": n, "copies": len(copies), "wall_s": round(run["wall_s"], 1),
        "rc": run["rc"], "pairs": len(pairs), "groups": int(groups["group"].nunique()),
        "recall_per_kind": {k: f"{v[0]}/{v[1]}" for k, v in recall.items()},
        "recall_total": f"{tot[0]}/{tot[1]}",
        "false_pairs": len(false_rows), "false_pairs_per_1000_images": round(1000 * len(false_rows) / n, 1),
        "false_pairs_same_doc": int(sum(r["same_doc"] for r in false_rows)),
        "pairs_of_identical_looking_originals": len(identical_rows),
        "images_in_groups": int(in_group), "images_in_groups_beyond_planted": extra,
        "share_in_groups_beyond_planted": round(extra / n, 4),
        "threshold_lines": thr, "warning_like_lines": warns[:20],
        "copy_orig_cosine_quartiles": [round(float(q), 3) for q in np.nanpercentile(found_cos, [0, 25, 50, 75, 100])],
    }
    tag = outdir.name
    pd.DataFrame(false_rows).to_csv(outdir.parent / f"{tag}_false_pairs.csv", index=False)
    pd.DataFrame(identical_rows).to_csv(outdir.parent / f"{tag}_identical_original_pairs.csv", index=False)
    pd.DataFrame(miss_rows).to_csv(outdir.parent / f"{tag}_misses.csv", index=False)
    json.dump(summ, open(outdir.parent / f"{tag}_summary.json", "w"), indent=1, default=str)
    if sheets:
        fr = []
        for r in sorted(false_rows, key=lambda r: -r["cosine"]):
            fr.append((r["a"], r["b"], [f"A {r['a_is']}", f"B {r['b_is']}", f"same doc: {r['same_doc']}",
                                       f"orig mean|diff| {r['orig_mean_abs_diff']}"] +
                       [f"{c}: {r[c]:.3f}" if isinstance(r[c], float) else f"{c}: {r[c]}" for c in ev_cols]))
        contact_sheet(fr, plantdir, outdir.parent / f"{tag}_false_pairs.png",
                      f"{tag}: false pairs ({len(fr)}) - different originals joined")
        keep = ("source", "kind", "cosine", "orig_rank_from_copy", "stage1_candidate", "rp_cand_source",
                "rp_agreement", "rp_matched_area", "rp_simplicity", "rp_inliers", "rp_kp_runner_up",
                "rp_lookalike_agreement", "rp_lookalike_cosine", "rp_relative_disagreement", "tool_agreement",
                "tool_matched_area", "tool_keypoint_inliers", "copy_paired_with")
        mr = [(r["copy"], r["original"], [f"{k}: {str(r[k])[:48]}" for k in keep if k in r and str(r[k]) != "nan"])
              for r in miss_rows]
        contact_sheet(mr, plantdir, outdir.parent / f"{tag}_misses.png",
                      f"{tag}: missed copies ({len(mr)}) - copy (left) vs its original (right)")
    print(json.dumps(summ, indent=1, default=str))
    return summ


# ------------------------------------------------------------------ replay of stage 1 + 2 (diagnosis only)
def _candidates(outdir: Path):
    """Stage 1 and the stage-2 evidence as the tool computes them, from the audit's stored vectors and
    signatures: (names, n, a, b, cosine, source (0 embedding / 1 layout / 2 keypoints), twins,
    PairEvidence, profile pairs)."""
    from imagesieve_server.analysis.duplicates import find, verify
    from imagesieve_server.analysis.duplicates.keypoint_candidates import keypoint_candidate_pairs
    V, S, row = _stored(outdir)
    names = sorted(row, key=row.get)
    n = len(names)
    a, b, sim = find.candidate_pairs(V)
    la, lb = find.layout_candidate_pairs(S)
    la, lb, ls = find._new_pairs(la, lb, a, b, V, -1.0)
    twins = np.arange(n)
    ka, kb, _ = keypoint_candidate_pairs(S, find.KEYPOINT_K, twins=twins)
    ka, kb, ks = find._new_pairs(ka, kb, np.r_[a, la], np.r_[b, lb], V, -1.0)
    src = np.repeat([0, 1, 2], [len(a), len(la), len(ka)])
    A, B, C = np.r_[a, la, ka], np.r_[b, lb, kb], np.r_[sim, ls, ks]
    ev = verify.verify_pairs(S, A, B, processes=False)
    return names, n, A, B, C, src, twins, ev, verify.profile_pairs(n, A, B, verify.one_dimensional(S), ev)


def replay(outdir: Path):
    """Re-runs the tool's own duplicate stages on the audit's stored vectors and signatures (read-only
    use of its modules) and returns, per candidate pair (by file names): source (embedding / layout /
    keypoints), cosine, stage-2 evidence, look-alike levels, relative disagreement, verdict flags."""
    from imagesieve_server.analysis.duplicates import verify
    names, n, A, B, C, src, twins, ev, prof = _candidates(outdir)
    unin = verify.uninformative_matches(ev)
    ok, rel = verify.verified_pairs(n, A, B, ev.agreement, C, layout_only=src == 1, profile=prof,
                                    uninformative=unin, keypoint_inliers=ev.keypoint_inliers, twins=twins,
                                    near_identical=verify.near_identical_matches(ev, C), keypoint_only=src == 2)
    look = ~(src == 1) & ~prof & ~(src == 2)
    pa = verify._filled(verify.neighbourhood_typical(n, A[look], B[look], ev.agreement[look]), verify.DEFAULT_PACK)
    pc = verify._filled(verify.neighbourhood_typical(n, A[look], B[look], C[look]), verify.DEFAULT_PACK)
    kp_runner = verify._runner_up(n, A, B, ev.keypoint_inliers.astype(np.float32), ~ok, twins,
                                  np.ones(len(A), bool))
    out = {}
    for i in range(len(A)):
        out[frozenset((names[A[i]], names[B[i]]))] = {
            "cand_source": ["embedding", "layout", "keypoints"][src[i]], "cand_cosine": round(float(C[i]), 3),
            "agreement": round(float(ev.agreement[i]), 3), "matched_area": round(float(ev.matched_area[i]), 3),
            "simplicity": round(float(ev.matched_simplicity[i]), 3), "inliers": int(ev.keypoint_inliers[i]),
            "turned": int(ev.turned[i]), "uninformative": bool(unin[i]),
            "lookalike_agreement": round(float(max(pa[A[i]], pa[B[i]])), 3),
            "lookalike_cosine": round(float(max(pc[A[i]], pc[B[i]])), 3),
            "relative_disagreement": round(float(rel[i]), 3), "kp_runner_up": int(kp_runner[i]),
            "replay_verdict": bool(ok[i])}
    return out


def variants(plantdir: Path, outdir: Path):
    """What-if replays of stage 2 with constants patched IN THIS PROCESS ONLY (the tool's files are
    untouched): which general changes would remove the false pairs without losing copies. Scored on
    direct pairs (copy-original pair verified)."""
    import pandas as pd
    from imagesieve_server.analysis.duplicates import verify
    man = pd.read_csv(plantdir.parent / (plantdir.name + "_manifest.csv"))
    src = dict(zip(man.file, man.source)); kind = dict(zip(man.file, man.kind))
    names, n, A, B, C, srcs, twins, ev, prof = _candidates(outdir)
    look = (srcs == 0) & ~prof
    pc = verify._filled(verify.neighbourhood_typical(n, A[look], B[look], C[look]), verify.DEFAULT_PACK)
    level_c = np.maximum(pc[A], pc[B])
    base = dict(SIMPLE_MATCH=verify.SIMPLE_MATCH, INLIER_RATIO=verify.INLIER_RATIO,
                DEEP_SIMPLE_MATCH=verify.DEEP_SIMPLE_MATCH)

    def run(cap_cos=False, **patch):
        for k, v in base.items():
            setattr(verify, k, patch.get(k, v))
        unin = verify.uninformative_matches(ev)
        c = np.where(unin & cap_cos, np.minimum(C, level_c), C)
        ok, _ = verify.verified_pairs(n, A, B, ev.agreement, c, layout_only=srcs == 1, profile=prof,
                                      uninformative=unin, keypoint_inliers=ev.keypoint_inliers, twins=twins,
                                      near_identical=verify.near_identical_matches(ev, C), keypoint_only=srcs == 2)
        for k, v in base.items():
            setattr(verify, k, v)
        fa, fb = np.array(names)[A[ok]], np.array(names)[B[ok]]
        true = sum(src[x] == src[y] for x, y in zip(fa, fb))
        false = [(f"{src[x]}[{kind[x]}]", f"{src[y]}[{kind[y]}]") for x, y in zip(fa, fb) if src[x] != src[y]]
        found = {x if kind[x] != "original" else y for x, y in zip(fa, fb) if src[x] == src[y]}
        per = {k: sum(1 for f in found if kind[f] == k) for k in KINDS}
        print("   false:", false)
        return true, len(false), per
    res = {
        "baseline (as shipped)": run(),
        "A: uninformative match -> cosine also capped at look-alikes'": run(cap_cos=True),
        "B: SIMPLE_MATCH 0.97 -> 0.94": run(SIMPLE_MATCH=0.94),
        "A+B": run(cap_cos=True, SIMPLE_MATCH=0.94),
        "C: INLIER_RATIO 3 -> 2": run(INLIER_RATIO=2.0),
        "A+B+C": run(cap_cos=True, SIMPLE_MATCH=0.94, INLIER_RATIO=2.0),
    }
    for k, (t, f, per) in res.items():
        print(f"{k:62s} copies found {t:2d}/50  false pairs {f:2d}  per kind {per}")
    return res


def main(argv):
    cmd = argv[1]
    if cmd == "fetch":
        fetch(Path(argv[2]))
    elif cmd == "render":
        render(Path(argv[2]), Path(argv[3]))
    elif cmd == "plant":
        plant(Path(argv[2]), Path(argv[3]))
    elif cmd == "audit":
        audit(Path(argv[2]), Path(argv[3]), "--raw" in argv)
    elif cmd == "score":
        score(Path(argv[2]), Path(argv[3]))
    elif cmd == "variants":
        variants(Path(argv[2]), Path(argv[3]))
    elif cmd == "all":
        orig, work = Path(argv[2]), Path(argv[3])
        plantdir = work / "planted"
        plant(orig, plantdir)
        audit(plantdir, work / "audit_verified", raw=False)
        score(plantdir, work / "audit_verified")
        audit(plantdir, work / "audit_raw", raw=True)
        score(plantdir, work / "audit_raw")
        variants(plantdir, work / "audit_verified")
        for f in ("audit_verified_false_pairs.png", "audit_verified_misses.png"):
            shutil.copy(work / f, work.parent / f)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
