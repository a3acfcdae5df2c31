"""`imagesieve audit` with default settings on game and teaching art with ML-pipeline augmentations.

    .venv/bin/python bench/augment_audit.py [--out bench/out/augment]

The collection: four pinned Debian bookworm packages (``collections_real.package_dir``):
``kgeography-data`` 4:22.12.3-1, 70 flags (``flags/*.png``) and 40 region maps
(``*.png``); ``openarena-081-textures`` 0.8.5split-14, whose ``pak4-textures.pk3``
(a zip, read in place) gives 170 game textures (``textures/*/*.jpg``: vents,
crates, bricks, trims) and 15 skybox faces (``env/*/*.jpg``);
``colobot-common-textures`` 0.2.0-2, 80 of ``textures/*.png`` and
``textures/*/*.png`` (terrain, planets, object atlases; not the AltTextures mod);
``palapeli-data`` 4:22.12.3-1, 10 of ``*/*.jpg`` (puzzle photos, table textures).
Each pool's sorted file list is shuffled by one generator (seed 1616) and walked
until its count is met, skipping a file that fails to decode, is under 96 px a
side, is byte-identical to one kept or within a mean difference of 3 of one at
32x32 grey, or is flat: 385 originals, many of them hard negatives (textures
sharing a frame, flags on one stripe layout, two maps of one country, faces of
one sky). Transparency goes on white; sides above 1600 px are scaled to 1600.
40% of the originals (154) get one copy each, the 11 kinds in turn (14 each):

- mosaic: a 640x640 canvas of four 320 px tiles, the image centre-cropped into a random quadrant,
  3 other originals beside it;
- cutout: 1-3 grey (127) boxes covering 20-30% of the area;
- mixup: 0.7 x the image + 0.3 x another original resized to it;
- rrc224: random-resized crop of 35-90% of the area, its aspect the image's x0.8 or x1.25 times a
  jitter of 3/4-4/3 (log-uniform), resized to 224x224;
- jitter: brightness and contrast x0.6-0.75 or x1.25-1.4, saturation x0.5-0.7 or x1.3-1.5, hue +-13-26/256;
- elastic: a smooth random displacement field, amplitude 4% of the longer side, sigma 6%;
- clahe: CLAHE on L of LAB, clip limit 4, 8x8 tiles;
- chshuffle: a permutation of the RGB channels (never the identity);
- letterbox: padded to a square with the image's mean colour (a square one to 1.3x);
- thumb150q50: fitted into 150 px, saved as JPEG quality 50;
- zoom1.4: the centre 1/1.4 of each side, upscaled bicubically to the original size.

These kinds were written for an ad-hoc probe on 2026-12-04 (its build.py is
ported here call for call), and verify.py was since changed with that probe's
data in view: they are not unseen any more. Deterministic: one seeded
``random.Random`` (and a numpy generator for elastic), sorted globs and pk3
listing, sets only asked, never iterated; with the same Pillow, OpenCV and
libwebp the files are byte for byte the probe's, names included. Files get
random 16-hex names and mixed formats (png, jpg q95, webp q92) in one folder;
the truth stays in memory and goes to OUT/truth.csv. Then the real CLI runs
(`imagesieve audit FOLDER --out OUT/audit`, no other flags) and its
``duplicate_pairs.parquet`` is scored:

- ``recall`` (a copy paired with its recorded source) and ``recall_by_kind``
  (a mosaic's recorded source is one of its four tiles, none more its source
  than the others: ``mosaic_tiles_found`` is the mosaics' figure);
- ``mosaic_tiles_found`` of ``mosaic_tiles`` (4 pictures in each mosaic: how
  many are paired with it); ``mixup_other_paired`` (mixups paired with their
  0.3 image) and ``mixup_other_instead`` (that, and not with their source);
- ``cross_file_pairs``: pairs of two images that hold no picture in common
  (not a copy and its source, nor two copies of one source, nor a mosaic or
  mixup and a picture it holds). Uncurated: the probe judged by eye that most
  original-original pairs here are colour or material variants of one design
  (33 of 42), so this is an upper bound on false pairs;
- ``wrong_original_pairs``: a copy paired with an original that is neither
  its source nor a picture it holds; ``pairs``, ``images``, ``audit_s``.

A contact sheet of the cross-file pairs goes to OUT/cross_file_pairs.png.
Baselines from the same run's stored embeddings (``baselines``, as in
stranger_audit): the embedding's candidates alone (no layout or keypoint
candidates) and raw cosine (stage 1 alone). Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import random
import shutil
import sys
import uuid
import zipfile
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).parent))
import collections_real  # noqa: E402
from stranger_audit import _flat, baselines, contact_sheet, run_audit  # noqa: E402

SEED = 1616
KGEO = ("kgeography-data", "4:22.12.3-1", "usr/share/kgeography")
OPENARENA = ("openarena-081-textures", "0.8.5split-14", "usr/share/games/openarena/baseoa")
COLOBOT = ("colobot-common-textures", "0.2.0-2", "usr/share/games/colobot/textures")
PALAPELI = ("palapeli-data", "4:22.12.3-1", "usr/share/palapeli")
# pool name, package, patterns under the package's dir (or inside the pk3), originals wanted
POOLS = [("flag", KGEO, ["flags/*.png"], 70), ("map", KGEO, ["*.png"], 40),
         ("oatex", OPENARENA, ["textures/*/*.jpg"], 170), ("oaenv", OPENARENA, ["env/*/*.jpg"], 15),
         ("colobot", COLOBOT, ["*.png", "*/*.png"], 80), ("palapeli", PALAPELI, ["*/*.jpg"], 10)]
KINDS = ["mosaic", "cutout", "mixup", "rrc224", "jitter", "elastic", "clahe", "chshuffle", "letterbox",
         "thumb150q50", "zoom1.4"]
COPY_SHARE = 0.4
# The figures the baselines (the same run's embeddings, without what the audit adds) report.
BASELINE_KEYS = ("recall", "recall_by_kind", "mosaic_tiles_found", "cross_file_pairs", "wrong_original_pairs")


def pool_files(package: tuple, patterns: list[str]) -> list[tuple[str, callable]]:
    """Sorted (name, read bytes) of one pool; globs and the zip's listing are
    sorted so that filesystem or archive order never leaks in."""
    d = collections_real.package_dir(*package)
    if package == OPENARENA:
        with zipfile.ZipFile(d / "pak4-textures.pk3") as z:     # read whole: ~170 of its files are used
            names = sorted(n for n in z.namelist()
                           if any(fnmatchcase(n, p) and n.count("/") == p.count("/") for p in patterns))
            members = {n: z.read(n) for n in names}
        return [(f"{package[0]}:{n}", lambda n=n: members[n]) for n in names]
    files = sorted(str(f) for p in patterns for f in d.glob(p))   # one sort over all patterns, as the probe
    return [(f"{package[0]}:{Path(f).relative_to(d)}", lambda f=f: Path(f).read_bytes()) for f in files]


def _load(data: bytes) -> Image.Image:
    im = _flat(Image.open(io.BytesIO(data)))               # transparency composited on white
    if max(im.size) > 1600:
        im.thumbnail((1600, 1600), Image.LANCZOS)
    return im


def pick_originals(R: random.Random) -> list[tuple[str, str, Image.Image]]:
    """(pool, origin, image) of every original, in the probe's order."""
    origs, seen_md5, thumbs = [], set(), []
    for pool, package, patterns, want in POOLS:
        files = pool_files(package, patterns)
        R.shuffle(files)
        k = 0
        for origin, read in files:
            if k >= want:
                break
            data = read()
            try:
                im = _load(data)
            except Exception:
                continue
            h = hashlib.md5(data).hexdigest()
            if min(im.size) < 96 or h in seen_md5:        # a set only asked, never iterated
                continue
            t = np.asarray(im.convert("L").resize((32, 32), Image.BILINEAR), np.float32)
            if any(np.abs(t - u).mean() < 3 for u in thumbs) or t.std() < 4:
                continue
            seen_md5.add(h)
            thumbs.append(t)
            origs.append((pool, origin, im))
            k += 1
        print(f"originals: {pool} {k} of {len(files)} files", file=sys.stderr, flush=True)
    return origs


# ---- the 11 kinds (PIL RGB in, PIL RGB out); R and NP are the seeded generators
def mosaic(im, others, R):
    s, pos = 320, list(range(4))
    R.shuffle(pos)
    canvas = Image.new("RGB", (2 * s, 2 * s))
    for t, q in zip([im] + others, pos):
        canvas.paste(ImageOps.fit(t, (s, s), Image.BILINEAR), ((q % 2) * s, (q // 2) * s))
    return canvas


def cutout(im, R, NP):
    a = np.asarray(im).copy()
    H, W = a.shape[:2]
    n = R.randint(1, 3)
    target = R.uniform(.2, .3) * H * W / n
    for _ in range(n):
        ar = R.uniform(.5, 2)
        h = int(min(H, (target * ar) ** .5))
        w = int(min(W, target / max(h, 1)))
        y, x = R.randint(0, H - h), R.randint(0, W - w)
        a[y:y + h, x:x + w] = 127
    return Image.fromarray(a)


def mixup(im, other):
    o = np.asarray(other.resize(im.size, Image.BILINEAR))
    return Image.fromarray((0.7 * np.asarray(im) + 0.3 * o).astype(np.uint8))


def rrc224(im, R, NP):
    W, H = im.size
    for _ in range(50):
        area = R.uniform(.35, .9) * W * H
        ar = np.exp(R.uniform(np.log(3 / 4), np.log(4 / 3))) * R.choice([0.8, 1.25])
        w, h = int(round((area * ar) ** .5)), int(round((area / ar) ** .5))
        if 0 < w <= W and 0 < h <= H:
            break
    else:
        w, h = W, H
    x, y = R.randint(0, W - w), R.randint(0, H - h)
    return im.crop((x, y, x + w, y + h)).resize((224, 224), Image.BILINEAR)


def jitter(im, R, NP):
    im = ImageEnhance.Brightness(im).enhance(R.choice([R.uniform(.6, .75), R.uniform(1.25, 1.4)]))
    im = ImageEnhance.Contrast(im).enhance(R.choice([R.uniform(.6, .75), R.uniform(1.25, 1.4)]))
    im = ImageEnhance.Color(im).enhance(R.choice([R.uniform(.5, .7), R.uniform(1.3, 1.5)]))
    hsv = np.asarray(im.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + R.choice([-1, 1]) * R.randint(13, 26)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def elastic(im, R, NP):
    import cv2
    a = np.asarray(im)
    H, W = a.shape[:2]
    alpha, sigma = 0.04 * max(H, W), 0.06 * max(H, W)
    dx, dy = (cv2.GaussianBlur(NP.uniform(-1, 1, (H, W)).astype(np.float32), (0, 0), sigma) for _ in "xy")
    dx, dy = (d * (alpha / (np.abs(d).max() + 1e-6)) for d in (dx, dy))
    xx, yy = np.meshgrid(np.arange(W), np.arange(H))
    return Image.fromarray(cv2.remap(a, (xx + dx).astype(np.float32), (yy + dy).astype(np.float32),
                                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101))


def clahe(im, R, NP):
    import cv2
    lab = cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=4.0, tileGridSize=(8, 8)).apply(lab[..., 0])
    return Image.fromarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))


def chshuffle(im, R, NP):
    perm = R.choice([(1, 2, 0), (2, 0, 1), (2, 1, 0), (0, 2, 1), (1, 0, 2)])
    return Image.fromarray(np.asarray(im)[..., list(perm)].copy())


def letterbox(im, R, NP):
    W, H = im.size
    s = max(W, H) if W != H else int(max(W, H) * 1.3)     # a square one is padded too, not left as is
    c = Image.new("RGB", (s, s), tuple(int(v) for v in np.asarray(im).reshape(-1, 3).mean(0)))
    c.paste(im, ((s - W) // 2, (s - H) // 2))
    return c


def thumb(im, R, NP):
    im = im.copy()
    im.thumbnail((150, 150), Image.BILINEAR)
    return im


def zoom(im, R, NP):
    W, H = im.size
    w, h = int(W / 1.4), int(H / 1.4)
    x, y = (W - w) // 2, (H - h) // 2
    return im.crop((x, y, x + w, y + h)).resize((W, H), Image.BICUBIC)


SIMPLE = {"cutout": cutout, "rrc224": rrc224, "jitter": jitter, "elastic": elastic, "clahe": clahe,
          "chshuffle": chshuffle, "letterbox": letterbox, "thumb150q50": thumb,
          "zoom1.4": zoom}


def build(folder: Path) -> dict:
    """Write the collection into ``folder``; returns {file name: row} (kind,
    source, others, pool, origin), originals first, in the order written."""
    R, NP = random.Random(SEED), np.random.default_rng(SEED)
    origs = pick_originals(R)

    def save(im, fmt=None, q=95):
        fmt = fmt or R.choice(["png", "jpg", "webp"])
        name = uuid.UUID(int=R.getrandbits(128)).hex[:16] + "." + fmt
        if (folder / name).exists():          # 64 random bits: never yet, but a clash would lose a file silently
            raise RuntimeError(f"two files drew the name {name}")
        im.save(folder / name, **({"quality": q} if fmt == "jpg" else {"quality": 92} if fmt == "webp" else {}))
        return name

    truth, names = {}, []
    for pool, origin, im in origs:
        names.append(save(im))
        truth[names[-1]] = dict(kind="original", source=names[-1], others=(), pool=pool, origin=origin)
    idx = list(range(len(origs)))
    R.shuffle(idx)
    for j, i in enumerate(idx[:int(round(COPY_SHARE * len(origs)))]):
        kind, (pool, origin, im), others = KINDS[j % len(KINDS)], origs[i], []
        if kind == "mosaic":
            others = R.sample([k for k in range(len(origs)) if k != i], 3)
            out = mosaic(im, [origs[k][2] for k in others], R)
        elif kind == "mixup":
            others = [R.choice([k for k in range(len(origs)) if k != i])]
            out = mixup(im, origs[others[0]][2])
        else:
            out = SIMPLE[kind](im, R, NP)
        name = save(out, "jpg", 50) if kind == "thumb150q50" else save(out)
        truth[name] = dict(kind=kind, source=names[i], others=tuple(names[k] for k in others), pool=pool,
                           origin=origin)
        if (j + 1) % 22 == 0:
            print(f"copies: {j + 1}", file=sys.stderr, flush=True)
    return truth


def holds(t: dict) -> set:
    """The originals an image holds: itself, or a copy's source and (mosaic, mixup) the others."""
    return {t["source"], *t["others"]}


def score(pairs: list[dict], truth: dict) -> dict:
    pairset = {frozenset((Path(r["path_a"]).name, Path(r["path_b"]).name)) for r in pairs}
    copies = [n for n, t in truth.items() if t["kind"] != "original"]
    hit = {c: frozenset((c, truth[c]["source"])) in pairset for c in copies}
    by_kind = {k: round(float(np.mean([hit[c] for c in copies if truth[c]["kind"] == k])), 3)
               for k in sorted({truth[c]["kind"] for c in copies})}
    mosaics = [c for c in copies if truth[c]["kind"] == "mosaic"]
    tiles = sum(frozenset((c, o)) in pairset for c in mosaics for o in holds(truth[c]))
    other_paired = [c for c in copies if truth[c]["kind"] == "mixup"
                    and frozenset((c, truth[c]["others"][0])) in pairset]
    cross, wrong = [], 0
    for r in pairs:
        a, b = Path(r["path_a"]).name, Path(r["path_b"]).name
        if holds(truth[a]) & holds(truth[b]):
            continue                  # copy and source, two copies of one source, mosaic/mixup and a picture in it
        cross.append((a, b))
        wrong += (truth[a]["kind"] == "original") != (truth[b]["kind"] == "original")
    return {"images": len(truth), "copies": len(copies), "recall": round(float(np.mean(list(hit.values()))), 4),
            "recall_by_kind": by_kind, "mosaic_tiles_found": int(tiles), "mosaic_tiles": 4 * len(mosaics),
            "mixup_other_paired": len(other_paired), "mixup_other_instead": sum(not hit[c] for c in other_paired),
            "cross_file_pairs": len(cross), "wrong_original_pairs": int(wrong), "pairs": len(pairs),
            "_cross": sorted(tuple(sorted(p)) for p in cross)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/out/augment", help="folder for the collection and the audit")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    folder = out / "images"
    folder.mkdir(parents=True)
    truth = build(folder)
    with open(out / "truth.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["name", "kind", "source", "others", "pool", "origin"]] + [
            [n, t["kind"], t["source"], ";".join(t["others"]), t["pool"], t["origin"]] for n, t in truth.items()])
    print(f"built {len(truth)} files in {folder}", file=sys.stderr, flush=True)
    pairs, took = run_audit(folder, out / "audit")
    result = score(pairs, truth)
    cross = result.pop("_cross")
    contact_sheet(folder, cross, out / "cross_file_pairs.png")
    result.update(audit_s=round(took, 1), contact_sheet=str(out / "cross_file_pairs.png"),
                  baselines=baselines(folder, out / "audit" / "embeddings", truth, score, BASELINE_KEYS))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
