"""Probe imagesieve's duplicate finder on real photographs altered by the standard operations of
an augmentation library (torchvision's RandAugment / TrivialAugment op list, done with PIL).

Rerunnable and deterministic (SEED). Steps:
  build  : pick ~250 distinct real photographs from six pinned Debian packages (below), drop
           near-identical ones (perceptual hash, listed in near_duplicates.csv), plant one altered
           copy of 81 of them: 13 single ops x 6 + 3 chains (RandAugment N=2, N=3, N=2|3), every
           parameter drawn from fixed ranges with SEED before any run; random neutral names in
           one flat folder, all PNG (originals decoded as they are), manifest.csv beside it.
  audit  : imagesieve audit FOLDER --out OUT --no-sweep               (verified, default)
           imagesieve audit FOLDER --out OUT_raw --no-sweep --raw-cosine
  score  : recall overall and per op; false pairs (copy with a wrong original, two distinct
           originals, copies of two originals), per 1k images, covered share beyond the planted
           images, threshold, the audit's notes, wall time; CSVs of misses and false pairs with
           the parquet's evidence columns; contact sheets; then `replay`: the verified search
           replayed on the audit's stored vectors and signatures (read-only use of the tool's
           library) to name, for each missed copy, the stage and rule that lost it
           (misses_verified_stage.csv).

Usage: .venv/bin/python bench/probes/augment_ops.py [all|build|audit|score|replay]  (default all)
Files under $PROBE_DIR (default /tmp/imagesieve-probe-augment). build() runs
`apt-get download PKG=VERSION` and `dpkg -x` itself when the packages are missing. Pinned:
  endless-sky-data  0.9.8-1.2            images/land/*.jpg: landscape photographs (morguefile,
                                           Wikimedia Commons, NASA); a seeded sample of 134
  opencv-doc        4.6.0+dfsg-12        examples/data photos (fruits, baboon, building, ...),
                                           examples/text scene-text photos, hfs and alphamat inputs;
                                           one file of each stereo/viewpoint pair (aloeL/R, leuvenA/B,
                                           graf1/3, basketball1/2, left/right chessboards) is kept
  scratch           1.4.0.6~dfsg1-6.1    Media/Backgrounds/*/*.jpg (photographs of places;
                                           9 drawn ones left out: SCRATCH_DRAWN)
  tuxpaint-data     1:0.9.28-sdl2-1      templates/*.jpg (nature photographs)
  jigzo-data        0.6.1-7.1            puzzles/00_default/*.pzl (the JPEG photo inside each)
  renpy-thequestion 8.0.3+dfsg-1         game/images/bg *.jpg (photographs of a campus)
None of these is used by another probe or benchmark in bench/ or tests/ (scikit-image's and
foolbox's photos are bench/photos.py's; desktop wallpapers are reserved and not used).

Ops (torchvision's semantics: NEAREST resampling and black fill for the geometric ones, shear
about the top-left corner as RandAugment does), parameters drawn uniformly:
  ShearX / ShearY 15-25 deg, either sign; TranslateX / TranslateY 10-25% of the side, either
  sign, size kept; Rotate 10-30 deg, either sign, size kept, black corners; Brightness, Color,
  Contrast, Sharpness: factor in [0.3, 0.7] or [1.3, 1.8] (half each); Posterize 2-4 bits;
  Solarize threshold 64-192; AutoContrast; Equalize. Chains: 2 or 3 distinct ops of the list,
  each with its own drawn parameters, applied in order.
Truth: every original is a distinct photograph (near-identical ones dropped at build); a copy
is the same picture as its original only.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import sys
from pathlib import Path

import numpy as np
import cv2
from PIL import Image, ImageEnhance, ImageOps

from audit_store import AuditStore, tool  # this folder's
from cli_audit import ensure_debs, fresh_folder, neutral_ids, on_white, run_audit, save_pair_sheet, write_manifest

SEED = 20261207
ROOT = Path(os.environ.get("PROBE_DIR", "/tmp/imagesieve-probe-augment"))
DEBS = ROOT / "debs"
FOLDER = ROOT / "photos"             # what is audited (flat folder)
MANIFEST = ROOT / "manifest.csv"     # never in FOLDER
OUT = ROOT / "audit_verified"
OUT_RAW = ROOT / "audit_raw"

PACKAGES = {"endless-sky-data": "0.9.8-1.2", "opencv-doc": "4.6.0+dfsg-12", "scratch": "1.4.0.6~dfsg1-6.1",
            "tuxpaint-data": "1:0.9.28-sdl2-1", "jigzo-data": "0.6.1-7.1",
            "renpy-thequestion": "8.0.3+dfsg-1"}
ES = DEBS / "x_endless-sky-data/usr/share/games/endless-sky/images/land"
CV = DEBS / "x_opencv-doc/usr/share/doc/opencv-doc/examples"
SCRATCH = DEBS / "x_scratch/usr/share/scratch/Media/Backgrounds"
TUX = DEBS / "x_tuxpaint-data/usr/share/tuxpaint/templates"
JIGZO = DEBS / "x_jigzo-data/usr/share/games/jigzo/puzzles/00_default"
RENPY = DEBS / "x_renpy-thequestion/usr/share/games/renpy/the_question/game/images"
N_ENDLESS = 134
# scratch backgrounds that are drawings, not photographs (seen on a contact sheet before any run)
SCRATCH_DRAWN = {"party-room", "room1", "room2", "room3", "spotlight-stage", "woods-and-bench", "brick-wall1",
                 "brick-wall2", "school2"}
# opencv-doc's photographs (not logos, drawings, renders, charts or calibration series), one of
# each stereo / viewpoint / frame pair
CV_PHOTOS = ["data/aero1.jpg", "data/aloeL.jpg", "data/apple.jpg", "data/baboon.jpg", "data/basketball1.png",
             "data/board.jpg", "data/box_in_scene.png", "data/building.jpg", "data/butterfly.jpg",
             "data/chicky_512.png", "data/fruits.jpg", "data/graf1.png", "data/home.jpg", "data/leuvenA.jpg",
             "data/left01.jpg", "data/licenseplate_motion.jpg", "data/messi5.jpg", "data/orange.jpg",
             "data/smarties.png", "data/squirrel_cls.jpg", "data/stuff.jpg", "data/ela_original.jpg",
             "text/scenetext01.jpg", "text/scenetext02.jpg", "text/scenetext03.jpg", "text/scenetext04.jpg",
             "text/scenetext05.jpg", "text/scenetext06.jpg", "hfs/data/000.jpg", "hfs/data/001.jpg",
             "hfs/data/002.jpg", "alphamat/input_images/plant.jpg"]
OPS = ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize"]
PER_OP = 6
CHAINS = [2, 3, "2|3"]
PHASH_NEAR = 12          # bits of 64: originals this close are near-identical (one dropped)


# ----------------------------------------------------------------------------- sources
def jigzo_photo(p: Path) -> Image.Image:
    d = p.read_bytes()
    return Image.open(io.BytesIO(d[d.find(b"\xff\xd8\xff"):]))


def shown(f: str) -> Image.Image:
    """A planted file as a contact sheet shows it."""
    return load_rgb(FOLDER / f)


def load_rgb(p) -> Image.Image:
    p = Path(p)
    return on_white(jigzo_photo(p) if p.suffix == ".pzl" else Image.open(p))


def phash(im: Image.Image) -> np.ndarray:
    g = np.asarray(im.convert("L").resize((32, 32), Image.LANCZOS), np.float32)
    d = cv2.dct(g)[:8, :8].ravel()
    return d > np.median(d[1:])


def candidates(rng: random.Random) -> list[tuple[Path, str]]:
    es = sorted(ES.glob("*.jpg"))
    out = [(p, "endless-sky-data") for p in sorted(rng.sample(es, N_ENDLESS))]
    out += [(CV / f, "opencv-doc") for f in CV_PHOTOS]
    out += [(p, "scratch") for p in sorted(SCRATCH.glob("*/*.jpg")) if p.stem not in SCRATCH_DRAWN]
    out += [(p, "tuxpaint-data") for p in sorted(TUX.glob("*.jpg"))]
    out += [(p, "jigzo-data") for p in sorted(JIGZO.glob("*.pzl"))]
    out += [(p, "renpy-thequestion") for p in sorted(RENPY.glob("bg *.jpg"))]
    return out


def distinct_sources(rng: random.Random):
    """Candidates less near-identical ones (pHash within PHASH_NEAR bits: the later one is
    dropped). Returns (kept, dropped rows, the 20 closest pairs kept)."""
    cands = candidates(rng)
    hashes = [phash(load_rgb(p)) for p, _ in cands]
    H = np.stack(hashes).astype(np.int16)
    D = (H[:, None, :] != H[None, :, :]).sum(-1)
    drop, rows = set(), []
    for i in range(len(cands)):
        for j in range(i + 1, len(cands)):
            if D[i, j] <= PHASH_NEAR and i not in drop and j not in drop:
                drop.add(j)
                rows.append(dict(kept=str(cands[i][0]), dropped=str(cands[j][0]), phash_bits=int(D[i, j])))
    kept_idx = [i for i in range(len(cands)) if i not in drop]
    close = sorted(((int(D[i, j]), str(cands[i][0]), str(cands[j][0])) for ii, i in enumerate(kept_idx)
                    for j in kept_idx[ii + 1:]))[:20]
    return [cands[i] for i in kept_idx], rows, close


# ----------------------------------------------------------------------------- ops
def side_factor(rng):
    return rng.uniform(0.3, 0.7) if rng.random() < 0.5 else rng.uniform(1.3, 1.8)


def draw_params(op: str, rng: random.Random) -> dict:
    sign = rng.choice([-1, 1])
    if op in ("ShearX", "ShearY"):
        return {"degrees": round(sign * rng.uniform(15, 25), 2)}
    if op in ("TranslateX", "TranslateY"):
        return {"share": round(sign * rng.uniform(0.10, 0.25), 3)}
    if op == "Rotate":
        return {"degrees": round(sign * rng.uniform(10, 30), 2)}
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        return {"factor": round(side_factor(rng), 3)}
    if op == "Posterize":
        return {"bits": rng.randint(2, 4)}
    if op == "Solarize":
        return {"threshold": rng.randint(64, 192)}
    return {}


def apply_op(im: Image.Image, op: str, p: dict) -> Image.Image:
    w, h = im.size
    black = (0, 0, 0)
    if op == "ShearX":
        return im.transform(im.size, Image.AFFINE, (1, math.tan(math.radians(p["degrees"])), 0, 0, 1, 0),
                            resample=Image.NEAREST, fillcolor=black)
    if op == "ShearY":
        return im.transform(im.size, Image.AFFINE, (1, 0, 0, math.tan(math.radians(p["degrees"])), 1, 0),
                            resample=Image.NEAREST, fillcolor=black)
    if op == "TranslateX":
        return im.transform(im.size, Image.AFFINE, (1, 0, -round(p["share"] * w), 0, 1, 0),
                            resample=Image.NEAREST, fillcolor=black)
    if op == "TranslateY":
        return im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, -round(p["share"] * h)),
                            resample=Image.NEAREST, fillcolor=black)
    if op == "Rotate":
        return im.rotate(p["degrees"], resample=Image.NEAREST, expand=False, fillcolor=black)
    if op == "Brightness":
        return ImageEnhance.Brightness(im).enhance(p["factor"])
    if op == "Color":
        return ImageEnhance.Color(im).enhance(p["factor"])
    if op == "Contrast":
        return ImageEnhance.Contrast(im).enhance(p["factor"])
    if op == "Sharpness":
        return ImageEnhance.Sharpness(im).enhance(p["factor"])
    if op == "Posterize":
        return ImageOps.posterize(im, p["bits"])
    if op == "Solarize":
        return ImageOps.solarize(im, p["threshold"])
    if op == "AutoContrast":
        return ImageOps.autocontrast(im)
    if op == "Equalize":
        return ImageOps.equalize(im)
    raise ValueError(op)


# ----------------------------------------------------------------------------- build
def build():
    ensure_debs(DEBS, PACKAGES)
    rng = random.Random(SEED)
    srcs, dropped, close = distinct_sources(rng)
    with open(ROOT / "near_duplicates.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=["kept", "dropped", "phash_bits"])
        wr.writeheader()
        wr.writerows(dropped)
    (ROOT / "closest_kept.json").write_text(json.dumps(close, indent=1))
    print(f"{len(srcs)} distinct originals; {len(dropped)} near-identical dropped (near_duplicates.csv)")
    fresh_folder(FOLDER)
    new_id = neutral_ids(rng, 40, "%010x")

    # every decision before any file is written: which originals, which kinds, which parameters
    kinds = [op for op in OPS for _ in range(PER_OP)] + [f"chain{n}" for n in CHAINS]
    chosen = rng.sample(range(len(srcs)), len(kinds))
    rng.shuffle(kinds)
    plan = []
    for k, kind in zip(chosen, kinds):
        if kind.startswith("chain"):
            n = rng.choice([2, 3]) if kind == "chain2|3" else int(kind[5:])
            steps = [(op, draw_params(op, rng)) for op in rng.sample(OPS, n)]
        else:
            steps = [(kind, draw_params(kind, rng))]
        plan.append((k, kind, steps))

    rows, orig_id = [], {}
    for k, (p, pkg) in enumerate(srcs):
        i = new_id()
        load_rgb(p).save(FOLDER / f"{i}.png")
        orig_id[k] = i
        rows.append(dict(file=f"{i}.png", id=i, role="original", original=i, kind="", source=str(p),
                         package=pkg, params=""))
    for k, kind, steps in plan:
        im = load_rgb(srcs[k][0])
        for op, prm in steps:
            im = apply_op(im, op, prm)
        i = new_id()
        im.save(FOLDER / f"{i}.png")
        rows.append(dict(file=f"{i}.png", id=i, role="copy", original=orig_id[k], kind=kind,
                         source=str(srcs[k][0]), package=srcs[k][1], params=json.dumps(steps)))
    write_manifest(rows, MANIFEST)
    by_pkg = {}
    for r in rows:
        if r["role"] == "original":
            by_pkg[r["package"]] = by_pkg.get(r["package"], 0) + 1
    print(f"built {FOLDER}: {len(srcs)} originals {by_pkg}, {len(plan)} copies; manifest {MANIFEST}")


# ----------------------------------------------------------------------------- audit
def audit(raw: bool):
    run_audit(FOLDER, OUT_RAW if raw else OUT, *(["--raw-cosine"] if raw else []))


# ----------------------------------------------------------------------------- scoring
EV = ["cosine", "agreement", "layout", "detail", "matched_area", "mirrored", "turned_degrees", "inverted",
      "keypoint_inliers", "matched_simplicity", "matched_blur_px", "relative_disagreement"]


Store = AuditStore


GEOMETRIC = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}


def copy_facts(man):
    """Per copy: the share of the frame still showing the original (its geometric steps applied
    to a white mask of the same size) and the mean absolute pixel difference to the original at
    the same size (0: the op changed nothing, e.g. AutoContrast of a picture already at full range)."""
    import pandas as pd
    file_of_id = dict(zip(man.id, man.file))
    rows = []
    for r in man[man.role == "copy"].itertuples():
        im = load_rgb(FOLDER / r.file)
        mask = Image.new("RGB", im.size, (255, 255, 255))
        for op, prm in json.loads(r.params):
            if op in GEOMETRIC:
                mask = apply_op(mask, op, prm)
        a = np.asarray(im, np.int16)
        b = np.asarray(load_rgb(FOLDER / file_of_id[r.original]), np.int16)
        mad = float(np.abs(a - b).mean()) if a.shape == b.shape else float("nan")
        rows.append(dict(file=r.file, content_kept=round(float((np.asarray(mask)[..., 0] > 127).mean()), 3),
                         mean_abs_diff=round(mad, 2), identical=mad == 0))
    return pd.DataFrame(rows)


def score():
    import pandas as pd
    man = pd.read_csv(MANIFEST, keep_default_na=False)
    role_of = dict(zip(man.file, man.role))
    orig_of = dict(zip(man.file, man.original))          # id of the original (itself for originals)
    kind_of = dict(zip(man.file, man.kind))
    src_of = dict(zip(man.file, [f"{pk}:{Path(s).name}" for pk, s in zip(man.package, man.source)]))
    file_of_id = dict(zip(man.id, man.file))
    copies_all = man[man.role == "copy"]
    n_images = len(man)
    summary = {}
    for out, label in ((OUT, "verified"), (OUT_RAW, "raw_cosine")):
        pp = out / "duplicate_pairs.parquet"
        if not pp.exists():
            print(f"{label}: no pairs file in {out}")
            continue
        pairs = pd.read_parquet(pp)
        pairs["fa"] = pairs.path_a.map(lambda s: Path(s).name)
        pairs["fb"] = pairs.path_b.map(lambda s: Path(s).name)
        pairs["true"] = pairs.fa.map(orig_of) == pairs.fb.map(orig_of)
        groups = pd.read_parquet(out / "duplicate_groups.parquet")
        false = pairs[~pairs["true"]].copy()
        false["pair_kind"] = ["copy-wrong-original" if (role_of[a] == "copy") != (role_of[b] == "copy") else
                              ("copies-of-two-originals" if role_of[a] == "copy" else "two-distinct-originals")
                              for a, b in zip(false.fa, false.fb)]
        false["src_a"] = [src_of[x] + (f" [{kind_of[x]}]" if kind_of[x] else "") for x in false.fa]
        false["src_b"] = [src_of[x] + (f" [{kind_of[x]}]" if kind_of[x] else "") for x in false.fb]
        direct = set(zip(pairs.fa, pairs.fb)) | set(zip(pairs.fb, pairs.fa))
        copies = copies_all.copy()
        copies = copies.merge(copy_facts(man), on="file")
        copies["found"] = [(r.file, file_of_id[r.original]) in direct for r in copies.itertuples()]
        group_of = dict(zip(groups.path.map(lambda s: Path(s).name), groups.group)) if len(groups) else {}
        copies["grouped_with_original"] = [r.file in group_of and group_of.get(r.file) == group_of.get(
            file_of_id[r.original]) for r in copies.itertuples()]
        covered = set(pairs.fa) | set(pairs.fb)
        planted = set(copies.file) | {file_of_id[o] for o in copies.original}
        beyond = covered - planted
        rep = json.loads((out / "report.json").read_text())["summary"]
        stdout = (out.parent / (out.name + ".stdout.txt")).read_text()
        runj = json.loads((out.parent / (out.name + ".run.json")).read_text())
        res = dict(label=label, images=n_images, pairs=len(pairs), true_pairs=int(pairs["true"].sum()),
                   recall=f"{int(copies.found.sum())}/{len(copies)}",
                   recall_by_op={k: f"{int(g.found.sum())}/{len(g)}" for k, g in copies.groupby("kind")},
                   copies_identical_to_original=copies[copies.identical].kind.value_counts().to_dict(),
                   content_kept_median_by_op=copies.groupby("kind").content_kept.median().round(3).to_dict(),
                   false_pairs=len(false), false_per_1k=round(1000 * len(false) / n_images, 1),
                   false_by_kind=false.pair_kind.value_counts().to_dict(),
                   covered_share_beyond_planted=round(len(beyond) / n_images, 3),
                   covered_share_all=round(len(covered) / n_images, 3),
                   threshold=rep.get("threshold"), threshold_reason=rep.get("duplicate_threshold_reason"),
                   candidates=rep.get("duplicate_candidates"), warnings=rep.get("duplicate_warnings"),
                   notes=[ln for ln in stdout.splitlines() if ln.startswith(("note:", "warning:", "duplicate"))],
                   wall_s=round(runj["wall_s"], 1), rc=runj["rc"])
        summary[label] = res
        ev = [c for c in EV if c in false.columns]
        cols = ["fa", "fb", "src_a", "src_b", "pair_kind"] + ev
        false = false.sort_values("cosine", ascending=False)
        false[cols].to_csv(ROOT / f"false_pairs_{label}.csv", index=False)
        copies.to_csv(ROOT / f"copies_{label}.csv", index=False)
        store = Store(out)
        mrows = []
        for r in copies[~copies.found].itertuples():
            o = file_of_id[r.original]
            d = dict(copy=r.file, original=o, kind=r.kind, params=r.params, source=src_of[r.file],
                     cosine=round(store.cos(r.file, o), 3), rank_of_original_in_copy_nn=store.rank(r.file, o),
                     rank_of_copy_in_original_nn=store.rank(o, r.file))
            d.update(store.align(r.file, o))
            d.update(content_kept=r.content_kept, mean_abs_diff=r.mean_abs_diff)
            d["copy_paired_with"] = ";".join(src_of[x] for x in sorted(
                set(pairs[pairs.fa == r.file].fb) | set(pairs[pairs.fb == r.file].fa)))
            mrows.append(d)
        pd.DataFrame(mrows).to_csv(ROOT / f"misses_{label}.csv", index=False)
        fr = [(r["fa"], r["fb"], f"{r['pair_kind']}\nA: {r['src_a']}\nB: {r['src_b']}\n" +
               "\n".join(f"{c}: {round(r[c], 3) if isinstance(r[c], float) else r[c]}" for c in ev))
              for r in false[cols].to_dict("records")]
        save_pair_sheet(fr, ROOT / f"false_pairs_{label}.png",
                        f"{label}: {len(false)} false pairs (of {len(pairs)} pairs, {n_images} images)", shown, 60)
        mk = ["kind", "params", "source", "content_kept", "cosine", "rank_of_original_in_copy_nn", "agreement", "matched_area",
              "turned", "keypoint_inliers", "matched_simplicity", "copy_paired_with"]
        mr = [(d["copy"], d["original"], "copy | original\n" + "\n".join(f"{k}: {str(d[k])[:60]}" for k in mk))
              for d in mrows]
        save_pair_sheet(mr, ROOT / f"misses_{label}.png", f"{label}: {len(mr)} missed copies (copy | original)",
                        shown, 60)
    (ROOT / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary, indent=1, default=str))


# ----------------------------------------------------------------------------- replay
def replay():
    """The verified search replayed on the audit's stored vectors and signatures, stage 2's
    inputs captured, to say which stage and rule lost each missed copy. Module constants are
    patched in this process only, to see which test rejects a pair."""
    import pandas as pd
    verify, _, _ = tool()
    from imagesieve_server.analysis.duplicates import find
    st = Store(OUT)
    n = len(st.names)
    cap = {}
    orig_vp = find.verified_pairs

    def spy(n_, a, b, agreement, cosine, **kw):
        cap.update(n=n_, a=a, b=b, g=np.asarray(agreement), c=np.asarray(cosine), kw=kw)
        return orig_vp(n_, a, b, agreement, cosine, **kw)

    orig_verify_pairs = find.verify_pairs

    def spy_ev(*args, **kw):
        ev = orig_verify_pairs(*args, **kw)
        cap["ev"] = ev
        return ev

    find.verified_pairs, find.verify_pairs = spy, spy_ev
    try:
        rep = find.find_duplicates(st.V, st.paths, [""] * n, [""] * n, st.sha, signatures=st.L)
    finally:
        find.verified_pairs, find.verify_pairs = orig_vp, orig_verify_pairs
    audited = len(pd.read_parquet(OUT / "duplicate_pairs.parquet"))
    print(f"replayed pairs {len(rep.a)} (audit: {audited}), candidates {rep.candidates}")
    a, b, g, c, kw = cap["a"], cap["b"], cap["g"], cap["c"], cap["kw"]
    ev = cap["ev"]

    def verdict(**patch):
        saved = {k: getattr(verify, k) for k in patch}
        for k, v in patch.items():
            setattr(verify, k, v)
        try:
            return orig_vp(cap["n"], a, b, g, c, **kw)
        finally:
            for k, v in saved.items():
                setattr(verify, k, v)

    ok, rel = verdict()
    ok_nosib, _ = verdict(SIBLING_RATIO=None)
    ok_nocrowd, _ = verdict(CROWDED_COSINE=9.0)
    kw_nokp = {**kw, "keypoint_inliers": None}
    ok_layout = orig_vp(cap["n"], a, b, g, c, **kw_nokp)[0]
    # each image's look-alike level as verified_pairs measures it in its first pass
    look = ~kw["layout_only"] & ~kw["profile"] & ~kw["keypoint_only"]
    pa = verify._filled(verify.neighbourhood_typical(n, a[look], b[look], g[look]), verify.DEFAULT_PACK)
    pc = verify._filled(verify.neighbourhood_typical(n, a[look], b[look], c[look]), verify.DEFAULT_PACK)
    man = pd.read_csv(MANIFEST, keep_default_na=False)
    file_of_id = dict(zip(man.id, man.file))
    key = {(min(i, j), max(i, j)): k for k, (i, j) in enumerate(zip(a.tolist(), b.tolist()))}
    rows = []
    for r in man[man.role == "copy"].itertuples():
        i, j = st.idx[r.file], st.idx[file_of_id[r.original]]
        k = key.get((min(i, j), max(i, j)))
        d = dict(copy=r.file, original=file_of_id[r.original], kind=r.kind, params=r.params,
                 cosine=round(float(st.S[i, j]), 3), rank_of_original=st.rank(r.file, file_of_id[r.original]))
        if k is None:
            d.update(stage="not a candidate", rule=f"cosine {d['cosine']:.3f} (rank {d['rank_of_original']}), "
                     "no layout or keypoint candidate", found=False)
            rows.append(d)
            continue
        src = ("layout" if kw["layout_only"][k] else "keypoints" if kw["keypoint_only"][k] else "embedding")
        thr = verify.MAX_RELATIVE_LAYOUT if kw["layout_only"][k] else verify.MAX_RELATIVE
        d.update(found=bool(ok[k]), candidate_by=src, agreement=round(float(g[k]), 3),
                 relative=round(float(rel[k]), 3), rel_limit=thr,
                 look_alike_agreement=round(float(max(pa[i], pa[j])), 3),
                 look_alike_cosine=round(float(max(pc[i], pc[j])), 3),
                 profile=bool(kw["profile"][k]), uninformative=bool(kw["uninformative"][k]),
                 matched_area=round(float(ev.matched_area[k]), 3), turned=int(ev.turned[k]),
                 matched_simplicity=round(float(ev.matched_simplicity[k]), 3),
                 matched_blur_px=round(float(ev.matched_blur_px[k]), 2),
                 keypoint_inliers=int(ev.keypoint_inliers[k]))
        if ok[k]:
            d.update(stage="found", rule="keypoints" if not ok_layout[k] else "layout verdict")
        else:
            d["stage"] = "rejected by stage 2"
            if src == "keypoints":
                d["rule"] = f"keypoint test ({d['keypoint_inliers']} inliers; needs {verify.MIN_INLIERS} and 3x rivals)"
            elif g[k] < verify.MIN_AGREEMENT:
                d["rule"] = f"agreement {g[k]:.3f} < {verify.MIN_AGREEMENT}"
            elif not (rel[k] <= thr):
                d["rule"] = (f"relative disagreement {rel[k]:.3f} > {thr}" +
                             (" (agreement capped: profile)" if kw["profile"][k] else "") +
                             (" (agreement capped: simple piece)" if kw["uninformative"][k] else ""))
            elif ok_nosib[k]:
                d["rule"] = "sibling test (near look-alike agrees about as well)"
            elif ok_nocrowd[k]:
                d["rule"] = "runner-up test (crowded)"
            else:
                d["rule"] = "other (several tests)"
            if d["rule"].startswith(("agreement", "relative")) and d["keypoint_inliers"] >= verify.MIN_INLIERS:
                d["rule"] += f"; keypoints {d['keypoint_inliers']} did not confirm (rival)"
        rows.append(d)
    df = pd.DataFrame(rows)
    df.to_csv(ROOT / "stage_all_copies.csv", index=False)
    miss = df[~df.found.astype(bool)]
    miss.to_csv(ROOT / "misses_verified_stage.csv", index=False)
    with pd.option_context("display.width", 250, "display.max_colwidth", 90, "display.max_rows", 200):
        print(df.groupby("kind").apply(lambda x: pd.Series({"found": int(x.found.sum()), "n": len(x),
              "min_cos": x.cosine.min(), "max_rank": x.rank_of_original.max()})))
        print(miss[["copy", "kind", "cosine", "rank_of_original", "stage", "rule"]].to_string(index=False))
        print("found copies by the verdict that kept them:", df[df.found.astype(bool)].rule.value_counts().to_dict())
    # the false pairs: which verdict passed them
    pairs = pd.read_parquet(OUT / "duplicate_pairs.parquet")
    orig_of = dict(zip(man.file, man.original))
    fr = []
    for r in pairs.itertuples():
        fa, fb = Path(r.path_a).name, Path(r.path_b).name
        if orig_of[fa] == orig_of[fb]:
            continue
        k = key.get(tuple(sorted((st.idx[fa], st.idx[fb]))))
        fr.append(dict(fa=fa, fb=fb, candidate_by=None if k is None else (
            "layout" if kw["layout_only"][k] else "keypoints" if kw["keypoint_only"][k] else "embedding"),
            passed_by=None if k is None else ("layout verdict" if ok_layout[k] else "keypoints")))
    if fr:
        fdf = pd.DataFrame(fr)
        fdf.to_csv(ROOT / "false_pairs_verified_stage.csv", index=False)
        print("false pairs by candidate source / verdict:", fdf.groupby(["candidate_by", "passed_by"]).size().to_dict())


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
