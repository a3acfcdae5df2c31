"""Probe imagesieve's duplicate finder on game sprites, tiles and textures (pixel art and small
painted game graphics).

Rerunnable and deterministic (SEED). Steps:
  build  : pick ~300 distinct originals from three pinned Debian game-data packages (below),
           plant one altered copy of 60 of them (10 kinds x 6, kinds fixed before any run),
           random neutral names in one flat folder, manifest.csv beside it (never in it).
  audit  : imagesieve audit FOLDER --out OUT --no-sweep               (verified, default)
           imagesieve audit FOLDER --out OUT_raw --no-sweep --raw-cosine
  score  : recall overall and per kind; false pairs split into animation/tileset siblings,
           other distinct pictures and related originals (recolours, near-identical frames);
           false pairs per 1k images, covered share beyond planted, threshold, warnings, wall
           time; CSVs of false pairs and misses with the evidence columns; contact sheets
           (pixel art enlarged with NEAREST).

Usage: .venv/bin/python bench/probes/sprites.py [all|build|audit|score]   (default all)
Files under $PROBE_DIR (default /tmp/imagesieve-probe-sprites). build() runs
`apt-get download PKG=VERSION` and `dpkg -x` itself when the packages are missing. Pinned:
  minetest-data      5.6.1+dfsg+~1.9.0mt8+dfsg-2  (minetest_game's 16x16 textures: blocks, items, wool/dye)
  pingus-data        0.7.6-5.1                    (painted ground pieces; 32x32 frames cut from the
                                                   pingu animation sheets by their .sprite files)
  frozen-bubble-data 2.212-11                     (80x60 penguin animation frames, bubbles, panels)

Ground truth among originals (score):
  related  : a pair of originals of one recolour family (same shape, other colours: minetest's
             wool_*/dye_*, frozen-bubble's players p1/p2/rp1.. of one frame, its bubble-N), or
             of one size whose opaque masks match (IoU >= 0.95) and whose gray tones correlate
             by rank >= 0.9, or of which < 5% of the visible pixels differ by > 24 levels (near-identical).
  sibling  : two originals of one animation (frames) or of one tileset folder.
  distinct : any other pair.
A planted copy inherits its original's relations. Exact byte duplicates and pixel-identical
images (decoded RGBA, transparent pixels' colour ignored) are dropped before sampling.
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import os
import random
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from audit_store import AuditStore  # this folder's
from cli_audit import (ensure_debs, fresh_folder, neutral_ids, run_audit, run_steps, save_as,
                       save_pair_sheet, write_manifest)

SEED = 20261206
ROOT = Path(os.environ.get("PROBE_DIR", "/tmp/imagesieve-probe-sprites"))
DEBS = ROOT / "debs"
FOLDER = ROOT / "sprites"            # what is audited (flat folder)
MANIFEST = ROOT / "manifest.csv"     # never in FOLDER
OUT = ROOT / "audit_verified"
OUT_RAW = ROOT / "audit_raw"

PACKAGES = {"minetest-data": "5.6.1+dfsg+~1.9.0mt8+dfsg-2", "pingus-data": "0.7.6-5.1",
            "frozen-bubble-data": "2.212-11"}
MT = DEBS / "x_minetest-data/usr/share/games/minetest/games/minetest_game/mods"
PG = DEBS / "x_pingus-data/usr/share/games/pingus/data/images"
FB = DEBS / "x_frozen-bubble-data/usr/share/games/frozen-bubble/gfx"

# Decided before any run: 10 kinds x 6 copies.
KINDS = ["nn_up4", "bilinear_up3", "hue_swap", "jpeg_q60", "outline1", "sheet_cell", "mirror",
         "tile_crop", "depth_reduce", "composite_bg"]
PER_KIND = 6
NEEDS_ALPHA = {"outline1", "composite_bg"}     # only sprites with transparency
NEEDS_SIZE = {"tile_crop": 64}                  # a quarter of the picture must still be a tile


# ----------------------------------------------------------------------------- sources
def rgba(im: Image.Image) -> Image.Image:
    im.load()
    return im.convert("RGBA")


def pixel_key(im: Image.Image) -> str:
    a = np.asarray(rgba(im)).copy()
    a[a[..., 3] == 0] = 0
    return hashlib.sha256(np.ascontiguousarray(a).tobytes() + repr(a.shape).encode()).hexdigest()


def _sprite_spec(path: Path) -> dict | None:
    t = path.read_text(errors="replace")
    m = {k: re.search(rf"\({k} ([^)]*)\)", t) for k in ("image", "array", "size", "position")}
    if not (m["image"] and m["array"] and m["size"]):
        return None
    num = lambda s: [int(x) for x in s.split()]
    return dict(image=(path.parent / m["image"].group(1).strip('"')).resolve(), array=num(m["array"].group(1)),
                size=num(m["size"].group(1)), position=num(m["position"].group(1)) if m["position"] else [0, 0])


PINGU_ANIMS = ["walker", "digger", "bomber", "climber", "floater", "basher", "miner", "blocker",
               "bridger", "faller", "drownfall", "slider"]


def candidates(rng: random.Random) -> list[dict]:
    """Every source picture as dict(name, image, package, family, group, group_kind, recolour)."""
    out = []
    # minetest_game: 16x16 block and item textures of all mods; wool and dye are recolour families
    for p in sorted(MT.glob("*/textures/*.png")):
        mod = p.parts[-3]
        if re.search(r"overlay|mask|crack|_inv\b|gui_|formspec|bubble", p.name):
            continue
        with Image.open(p) as im:
            if im.size != (16, 16):
                continue
            img = rgba(im)
        fam = mod if mod in ("wool", "dye") else ""
        out.append(dict(name=f"minetest/{mod}/{p.name}", image=img, package="minetest-data",
                        group=f"minetest-tiles:{mod}", group_kind="tileset", recolour=fam))
    # pingus: ground pieces (painted tiles of one set per folder), and frames of the pingu sheets
    for p in sorted((PG / "groundpieces").glob("*/*/*.png")):
        if "test" in p.parts:
            continue
        with Image.open(p) as im:
            if min(im.size) < 12 or max(im.size) > 640:
                continue
            img = rgba(im)
        out.append(dict(name=f"pingus/{p.relative_to(PG / 'groundpieces')}", image=img, package="pingus-data",
                        group=f"pingus-ground:{p.parts[-3]}/{p.parts[-2]}", group_kind="tileset", recolour=""))
    for anim in PINGU_ANIMS:
        d = PG / "pingus/player0" / anim
        spec = _sprite_spec(d / "right.sprite") if (d / "right.sprite").exists() else None
        if spec is None:
            continue
        sheet = rgba(Image.open(spec["image"]))
        n = spec["array"][0] * spec["array"][1]
        w, h = spec["size"]
        x0, y0 = spec["position"]
        for k in sorted({0, n // 3, (2 * n) // 3}):
            cx, cy = k % spec["array"][0], k // spec["array"][0]
            fr = sheet.crop((x0 + cx * w, y0 + cy * h, x0 + (cx + 1) * w, y0 + (cy + 1) * h))
            out.append(dict(name=f"pingus/player0/{anim}#right{k}", image=fr, package="pingus-data",
                            group=f"pingus-anim:{anim}", group_kind="animation", recolour=""))
    # frozen-bubble: penguin animation frames (player colours p1/p2/rp1.. are recolours of a frame)
    for anim, frames in (("win", 68), ("loose", 158), ("wait", 97), ("anime-shooter", 71)):
        for k in np.linspace(1, frames, 7).round().astype(int)[:-1]:
            for col in ("p1",) + (("rp1",) if k in (1,) or anim == "win" and k == 23 else ()):
                p = FB / "pinguins" / f"{anim}_{col}_{k:04d}.png"
                out.append(dict(name=f"frozen-bubble/pinguins/{p.name}", image=rgba(Image.open(p)),
                                package="frozen-bubble-data", group=f"fb-anim:{anim}", group_kind="animation",
                                recolour=f"fb-frame:{anim}_{k}"))
    for i in range(1, 9):
        p = FB / "balls" / f"bubble-{i}.gif"
        out.append(dict(name=f"frozen-bubble/balls/{p.name}", image=rgba(Image.open(p)), package="frozen-bubble-data",
                        group="fb-balls", group_kind="tileset", recolour="fb-bubble"))
    for k in (1, 9, 18, 27):
        p = FB / f"pause_{k:04d}.png"
        out.append(dict(name=f"frozen-bubble/{p.name}", image=rgba(Image.open(p)), package="frozen-bubble-data",
                        group="fb-anim:pause", group_kind="animation", recolour=""))
    for nm in ("shooter.png", "tomate.png", "banane.png", "compressor_main.png", "compressor_ext.png",
               "on_top_next.png", "hurry_p1.png", "attack_rp1.png", "win_panel_1player.png", "lose_panel.png",
               "back_one_player.png", "back_multiplayer.png", "hiscore_frame.png", "loading.png",
               "menu/1p_panel.png", "menu/fblogo.png", "menu/void_panel.png", "menu/banner_artwork.png",
               "menu/back_start.png", "menu/please_wait.png"):
        p = FB / nm
        if p.exists():
            out.append(dict(name=f"frozen-bubble/{nm}", image=rgba(Image.open(p)), package="frozen-bubble-data",
                            group="fb-misc", group_kind="misc", recolour=""))
    return out


def select(rng: random.Random) -> list[dict]:
    """Distinct pictures (bytes and decoded pixels), sampled to ~300."""
    seen, cands = set(), []
    for c in candidates(rng):
        k = pixel_key(c["image"])
        if k in seen:
            continue
        a = np.asarray(c["image"])
        if a[..., 3].max() == 0 or np.ptp(a[a[..., 3] > 0][:, :3]) < 8:
            continue                    # blank or one flat colour: nothing to match
        seen.add(k)
        cands.append(c)
    keep = []
    mt = [c for c in cands if c["package"] == "minetest-data"]
    mt_fam = [c for c in mt if c["recolour"]]
    mt_rest = [c for c in mt if not c["recolour"]]
    keep += rng.sample(mt_rest, min(130, len(mt_rest))) + rng.sample(mt_fam, min(16, len(mt_fam)))
    pg_ground = [c for c in cands if c["group"].startswith("pingus-ground")]
    keep += rng.sample(pg_ground, min(70, len(pg_ground)))
    keep += [c for c in cands if c["group"].startswith("pingus-anim") or c["package"] == "frozen-bubble-data"]
    keep.sort(key=lambda c: c["name"])
    return keep


# ----------------------------------------------------------------------------- alterations
def has_alpha(im: Image.Image) -> bool:
    a = np.asarray(im)[..., 3]
    return bool((a < 255).mean() > 0.05)


def hue_rotate(im: Image.Image, deg: float) -> Image.Image:
    a = np.asarray(im).astype(np.float32) / 255
    rgb = a[..., :3].reshape(-1, 3)
    hsv = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
    hsv[:, 0] = (hsv[:, 0] + deg / 360) % 1
    out = np.array([colorsys.hsv_to_rgb(*p) for p in hsv]).reshape(a.shape[:2] + (3,))
    return Image.fromarray(np.dstack([out, a[..., 3:]]).__mul__(255).round().astype(np.uint8), "RGBA")


def alter(im: Image.Image, kind: str, rng: random.Random, others: list[tuple[str, Image.Image]]) -> tuple[Image.Image, str, dict]:
    """(copy as RGBA or RGB, file extension, params)."""
    w, h = im.size
    if kind == "nn_up4":            # pixel art scaled up for a HD build / a screenshot
        return im.resize((w * 4, h * 4), Image.NEAREST), "png", {}
    if kind == "bilinear_up3":      # scaled up by an editor's default filter
        return im.resize((w * 3, h * 3), Image.BILINEAR), "png", {}
    if kind == "hue_swap":          # palette swap: hue rotated, alpha kept
        d = rng.choice([90, 120, 150, 210, 240])
        return hue_rotate(im, d), "png", {"degrees": d}
    if kind == "jpeg_q60":          # re-saved as JPEG: alpha flattened on white, or dropped
        if rng.random() < 0.5:
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            bg.alpha_composite(im)
            return bg.convert("RGB"), "jpg60", {"alpha": "on white"}
        return im.convert("RGB"), "jpg60", {"alpha": "dropped (hidden colour shows)"}
    if kind == "outline1":          # 1-px dark outline around the opaque pixels
        a = np.asarray(im)
        op = Image.fromarray(((a[..., 3] >= 128) * 255).astype(np.uint8))
        canvas = Image.new("RGBA", (w + 2, h + 2), (0, 0, 0, 0))
        canvas.paste(im, (1, 1))
        big = Image.new("L", (w + 2, h + 2), 0)
        big.paste(op, (1, 1))
        ring = (np.asarray(big.filter(ImageFilter.MaxFilter(3))) > 0) & (np.asarray(big) == 0)
        c = np.asarray(canvas).copy()
        col = rng.choice([(0, 0, 0), (30, 20, 40), (255, 255, 255)])
        c[ring] = (*col, 255)
        return Image.fromarray(c, "RGBA"), "png", {"colour": col}
    if kind == "sheet_cell":        # placed in a larger sprite-sheet cell: transparent or a colour key
        W, H = int(w * rng.uniform(1.4, 2.2)) + 2, int(h * rng.uniform(1.4, 2.2)) + 2
        bg = rng.choice([(0, 0, 0, 0), (0, 0, 0, 0), (255, 0, 255, 255), (0, 128, 128, 255)])
        canvas = Image.new("RGBA", (W, H), bg)
        x, y = rng.randint(0, W - w), rng.randint(0, H - h)
        canvas.alpha_composite(im, (x, y))
        return canvas, "png", {"canvas": [W, H], "at": [x, y], "bg": bg}
    if kind == "mirror":
        return im.transpose(Image.FLIP_LEFT_RIGHT), "png", {}
    if kind == "tile_crop":         # one tile of a 2x2 tileset: a quarter of the picture
        q = rng.randrange(4)
        x, y = (q % 2) * (w // 2), (q // 2) * (h // 2)
        return im.crop((x, y, x + w // 2, y + h // 2)), "png", {"quarter": q}
    if kind == "depth_reduce":      # fewer colours: 3 bits a channel, alpha kept
        a = np.asarray(im).copy()
        a[..., :3] = (a[..., :3] >> 5 << 5) + 16
        return Image.fromarray(a, "RGBA"), "png", {"bits": 3}
    if kind == "composite_bg":      # the sprite over a level background (another picture, tiled)
        bgname, bgsrc = rng.choice(others)
        W, H = max(w, 64), max(h, 64)
        bg = Image.new("RGBA", (W, H))
        tile = bgsrc if bgsrc.width >= 16 else bgsrc.resize((16, 16), Image.NEAREST)
        for yy in range(0, H, tile.height):
            for xx in range(0, W, tile.width):
                bg.alpha_composite(tile, (xx, yy))
        bg = Image.alpha_composite(Image.new("RGBA", (W, H), (90, 140, 200, 255)), bg)
        x, y = (W - w) // 2, (H - h) // 2
        bg.alpha_composite(im, (x, y))
        return bg.convert("RGB"), "png", {"canvas": [W, H], "background": bgname}
    raise ValueError(kind)


def save(im: Image.Image, path_noext: Path, ext: str) -> Path:
    if not ext.startswith("jpg") and im.mode == "RGBA" and not has_alpha(im) and np.asarray(im)[..., 3].min() == 255:
        im = im.convert("RGB")
    return save_as(im, path_noext, ext)


def build():
    ensure_debs(DEBS, PACKAGES)
    rng = random.Random(SEED)
    srcs = select(rng)
    print(f"{len(srcs)} distinct originals: " + ", ".join(
        f"{k} {sum(c['package'] == k for c in srcs)}" for k in PACKAGES))
    fresh_folder(FOLDER)
    new_id = neutral_ids(rng)

    rows = []
    for c in srcs:
        i = new_id()
        out = save(c["image"], FOLDER / i, "png")
        c["id"] = i
        rows.append(dict(file=out.name, id=i, role="original", original=i, kind="", source=c["name"],
                         package=c["package"], group=c["group"], group_kind=c["group_kind"],
                         recolour=c["recolour"], size="%dx%d" % c["image"].size,
                         alpha=int(has_alpha(c["image"])), params=""))
    # copies: 60 distinct originals, 6 per kind, each kind from the originals it applies to
    used = set()
    backgrounds = [(c["id"], c["image"]) for c in srcs if c["group"].startswith("minetest") and not has_alpha(c["image"])]
    for kind in KINDS:
        ok = [c for c in srcs if c["id"] not in used
              and (kind not in NEEDS_ALPHA or has_alpha(c["image"]))
              and min(c["image"].size) >= NEEDS_SIZE.get(kind, 0)]
        for c in rng.sample(ok, PER_KIND):
            used.add(c["id"])
            im, ext, params = alter(c["image"], kind, rng, backgrounds)
            i = new_id()
            out = save(im, FOLDER / i, ext)
            rows.append(dict(file=out.name, id=i, role="copy", original=c["id"], kind=kind, source=c["name"],
                             package=c["package"], group=c["group"], group_kind=c["group_kind"],
                             recolour=c["recolour"], size="%dx%d" % im.size, alpha=int(im.mode == "RGBA"),
                             params=json.dumps(params)))
    write_manifest(rows, MANIFEST)
    print(f"built {FOLDER}: {sum(r['role'] == 'original' for r in rows)} originals, "
          f"{sum(r['role'] == 'copy' for r in rows)} copies; manifest {MANIFEST}")


# ----------------------------------------------------------------------------- audit
def audit(raw: bool):
    run_audit(FOLDER, OUT_RAW if raw else OUT, *(["--raw-cosine"] if raw else []))



# ----------------------------------------------------------------------------- scoring
RELATED_IOU = 0.95        # opaque masks of two recolours of one sprite
RELATED_RANK = 0.9        # rank correlation of their gray tones
NEAR_IDENTICAL = 0.05     # near-identical: under this share of the visible pixels changed ...
NEAR_CHANGE = 24          # ... by more than this (of 255) in some channel


def _arr(f: str) -> np.ndarray:
    return np.asarray(Image.open(FOLDER / f).convert("RGBA")).astype(np.float32)


def related_originals(man) -> dict:
    """{frozenset(id_a, id_b): reason} among originals (see the docstring)."""
    from scipy.stats import spearmanr
    o = man[man.role == "original"]
    out = {}
    fam = {}
    for r in o.itertuples():
        if r.recolour:
            fam.setdefault(r.recolour, []).append(r.id)
    for ids in fam.values():
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                out[frozenset((ids[i], ids[j]))] = "recolour family"
    by_size = {}
    for r in o.itertuples():
        by_size.setdefault(r.size, []).append((r.id, r.file))
    for grp in by_size.values():
        arrs = {i: _arr(f) for i, f in grp}
        for x in range(len(grp)):
            for y in range(x + 1, len(grp)):
                A, B = arrs[grp[x][0]], arrs[grp[y][0]]
                key = frozenset((grp[x][0], grp[y][0]))
                ma, mb = A[..., 3] >= 128, B[..., 3] >= 128
                union = ma | mb
                if (np.abs(A - B).max(-1) > NEAR_CHANGE)[union].mean() < NEAR_IDENTICAL:
                    out[key] = "near-identical"
                    continue
                iou = (ma & mb).sum() / max(1, (ma | mb).sum())
                both = ma & mb
                if iou >= RELATED_IOU and both.sum() >= 16:
                    ga, gb = A[..., :3].mean(-1)[both], B[..., :3].mean(-1)[both]
                    if ga.std() > 1 and gb.std() > 1 and spearmanr(ga, gb)[0] >= RELATED_RANK:
                        out.setdefault(key, "recolour (mask IoU, tone rank)")
    return out


def truth_of(man, rel):
    """f(fa, fb) -> "same" | "related: ..." | "animation sibling" | "tileset sibling" | "other distinct"."""
    row = {r.file: r for r in man.itertuples()}
    bg = {r.file: json.loads(r.params).get("background") for r in man.itertuples() if r.kind == "composite_bg"}

    def f(fa, fb):
        ra, rb = row[fa], row[fb]
        if ra.original == rb.original:
            return "same"
        if bg.get(fa) == rb.original or bg.get(fb) == ra.original:
            return "related: composite background"
        why = rel.get(frozenset((ra.original, rb.original)))
        if why:
            return f"related: {why}"
        if ra.group == rb.group and ra.group_kind in ("animation", "tileset"):
            return f"{ra.group_kind} sibling"
        return "other distinct"
    return f


Store = AuditStore


def replay(store: Store):
    """find_duplicates on the stored vectors and signatures, in process (the tool's own code,
    unchanged), with its stage-2 inputs captured: candidates, evidence, flags, verdicts."""
    from imagesieve_server.analysis.duplicates import find, verify
    cap = {}
    vp, vps = find.verified_pairs, find.verify_pairs

    def spy_vp(n_, a, b, agreement, cosine, **kw):
        cap.update(n=n_, a=a, b=b, g=agreement, c=cosine, kw=kw)
        return vp(n_, a, b, agreement, cosine, **kw)

    def spy_vps(*args, **kw):
        ev = vps(*args, **kw)
        cap["ev"] = ev
        return ev
    find.verified_pairs, find.verify_pairs = spy_vp, spy_vps
    try:
        n = len(store.paths)
        rep = find.find_duplicates(store.V, store.paths, [""] * n, [""] * n, np.array(store.sha, dtype=object),
                                   signatures=store.L)
    finally:
        find.verified_pairs, find.verify_pairs = vp, vps

    def run(**patch):
        saved = {k: getattr(verify, k) for k in patch}
        for k, v in patch.items():
            setattr(verify, k, v)
        try:
            return vp(cap["n"], cap["a"], cap["b"], cap["g"], cap["c"], **cap["kw"])
        finally:
            for k, v in saved.items():
                setattr(verify, k, v)
    cap["ok"], cap["rel"] = run()
    cap["ok_no_runner"], _ = run(CROWDED_COSINE=9.0)
    cap["ok_no_sibling"], _ = run(SIBLING_RATIO=None)
    cap["ok_no_both"], _ = run(CROWDED_COSINE=9.0, SIBLING_RATIO=None)
    kw = dict(cap["kw"])
    kw["uninformative"] = np.zeros_like(kw["uninformative"])
    cap["ok_no_uninformative"], _ = vp(cap["n"], cap["a"], cap["b"], cap["g"], cap["c"], **kw)
    cap["pairs_in_report"] = len(rep.a)
    return cap


def _mechanism(cap, k) -> str:
    from imagesieve_server.analysis.duplicates import verify
    kw = cap["kw"]
    if kw["keypoint_only"][k]:
        return "keypoints (keypoint-only candidate)"
    lim = verify.MAX_RELATIVE_LAYOUT if kw["layout_only"][k] else verify.MAX_RELATIVE
    src = "layout-only candidate, " if kw["layout_only"][k] else ""
    if not (cap["g"][k] >= verify.MIN_AGREEMENT and cap["rel"][k] <= lim):
        return src + "keypoints (layout verdict failed, inliers confirmed)"
    area = cap["ev"].matched_area[k]
    return src + ("layout, partial (matched_area<0.5)" if area < 0.5 else "layout, full frame")


def _dropped_by(cap, k) -> str:
    from imagesieve_server.analysis.duplicates import verify
    kw = cap["kw"]
    if kw["keypoint_only"][k]:
        return "keypoint test (inliers below MIN_INLIERS or rival ratio)"
    notes = []
    if cap["ok_no_runner"][k] and not cap["ok"][k]:
        notes.append("runner-up test (crowded)")
    if cap["ok_no_sibling"][k] and not cap["ok"][k]:
        notes.append("sibling test")
    if not notes and cap["ok_no_both"][k]:
        notes.append("runner-up + sibling tests together")
    if cap["ok_no_uninformative"][k] and not cap["ok"][k]:
        notes.append("simple-piece cap (uninformative)")
    if notes:
        return "; ".join(notes)
    if cap["g"][k] < verify.MIN_AGREEMENT:
        return f"agreement < MIN_AGREEMENT {verify.MIN_AGREEMENT}"
    lim = verify.MAX_RELATIVE_LAYOUT if kw["layout_only"][k] else verify.MAX_RELATIVE
    extra = " (profile pair: agreement counts as look-alikes')" if kw["profile"][k] else ""
    return f"relative disagreement > {lim}{extra}; keypoints not confirmed"


def shown(f: str) -> Image.Image:
    """A planted file as a contact sheet shows it: on a checkerboard (transparency shows),
    at its own size (the sheet enlarges pixel art with NEAREST)."""
    im = Image.open(FOLDER / f).convert("RGBA")
    cb = np.indices((im.height, im.width)).sum(0) // max(2, max(im.size) // 16) % 2
    bg = Image.fromarray(np.where(cb[..., None], 205, 235).astype(np.uint8).repeat(3, -1)).convert("RGBA")
    bg.alpha_composite(im)
    return bg.convert("RGB")


EVIDENCE = ["cosine", "agreement", "layout", "detail", "matched_area", "mirrored", "turned_degrees", "inverted",
            "keypoint_inliers", "matched_simplicity", "matched_blur_px", "relative_disagreement"]


def score():
    import pandas as pd
    man = pd.read_csv(MANIFEST, keep_default_na=False)
    rel = related_originals(man)
    pd.DataFrame([dict(a=sorted(k)[0], b=sorted(k)[1], reason=v) for k, v in rel.items()]).to_csv(
        ROOT / "related_originals.csv", index=False)
    truth = truth_of(man, rel)
    row = {r.file: r for r in man.itertuples()}
    file_of_id = dict(zip(man.id, man.file))
    copies = man[man.role == "copy"].copy()
    planted = set(copies.file) | {file_of_id[o] for o in copies.original}
    n_images = len(man)
    label = lambda f: row[f].source + (f" [{row[f].kind}]" if row[f].kind else "")
    summary = {"related_original_pairs": pd.Series(list(rel.values())).value_counts().to_dict()}
    for out, name in ((OUT, "verified"), (OUT_RAW, "raw_cosine")):
        pairs = pd.read_parquet(out / "duplicate_pairs.parquet")
        pairs["fa"] = pairs.path_a.astype(str).map(lambda s: Path(s).name)
        pairs["fb"] = pairs.path_b.astype(str).map(lambda s: Path(s).name)
        pairs["truth"] = [truth(a, b) for a, b in zip(pairs.fa, pairs.fb)]
        groups = pd.read_parquet(out / "duplicate_groups.parquet")
        group_of = dict(zip(groups.path.astype(str).map(lambda s: Path(s).name), groups.group))
        direct = set(zip(pairs.fa, pairs.fb)) | set(zip(pairs.fb, pairs.fa))
        copies["found"] = [(r.file, file_of_id[r.original]) in direct for r in copies.itertuples()]
        copies["in_group"] = [r.file in group_of and group_of.get(r.file) == group_of.get(file_of_id[r.original])
                              for r in copies.itertuples()]
        false = pairs[pairs.truth != "same"].copy()
        false["src_a"], false["src_b"] = false.fa.map(label), false.fb.map(label)
        false["pair_kind"] = ["copy-copy" if row[a].role == row[b].role == "copy" else
                              "copy-original" if "copy" in (row[a].role, row[b].role) else "original-original"
                              for a, b in zip(false.fa, false.fb)]
        covered = set(group_of) | set(pairs.fa) | set(pairs.fb)
        beyond = covered - planted
        tiers = false.truth.value_counts().to_dict()
        unrelated = false[~false.truth.str.startswith("related")]
        res = dict(images=n_images, originals=int((man.role == "original").sum()), copies=len(copies),
                   pairs=len(pairs), true_pairs=int((pairs.truth == "same").sum()),
                   recall=f"{int(copies.found.sum())}/{len(copies)}",
                   recall_incl_group=f"{int((copies.found | copies.in_group).sum())}/{len(copies)}",
                   recall_by_kind={k: f"{int(g.found.sum())}/{len(g)}" for k, g in copies.groupby("kind")},
                   false_pairs=len(false), false_by_truth=tiers,
                   false_unrelated=len(unrelated), false_unrelated_per_1k=round(1000 * len(unrelated) / n_images, 1),
                   false_per_1k=round(1000 * len(false) / n_images, 1),
                   false_by_pair_kind=false.pair_kind.value_counts().to_dict(),
                   covered_share_beyond_planted=round(len(beyond) / n_images, 3),
                   covered_share_all=round(len(covered) / n_images, 3))
        rep = json.loads((out / "report.json").read_text())["summary"]
        res["threshold"] = rep.get("threshold")
        res["threshold_reason"] = rep.get("duplicate_threshold_reason")
        res["notes"] = [x for x in rep.get("notes", []) if "Duplicates" in x]
        runf = out.parent / (out.name + ".run.json")
        res["wall_s"] = round(json.loads(runf.read_text())["wall_s"], 1)
        res["stderr_warnings"] = [l for l in (out.parent / (out.name + ".stderr.txt")).read_text().splitlines()
                                  if re.search(r"warn|error", l, re.I)][:10]
        ev = [c for c in EVIDENCE if c in pairs.columns]
        mrows = []
        if name == "verified":
            store = Store(out)
            cap = replay(store)
            res["replay_pairs"] = cap["pairs_in_report"]
            res["candidates"] = len(cap["a"])
            key = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(cap["a"], cap["b"]))}
            kof = lambda fa, fb: key.get(tuple(sorted((store.idx[fa], store.idx[fb]))))
            ks = [kof(a, b) for a, b in zip(false.fa, false.fb)]
            false["mechanism"] = [_mechanism(cap, k) if k is not None else "?" for k in ks]
            false["candidate_source"] = [("keypoints" if cap["kw"]["keypoint_only"][k] else "layout"
                                          if cap["kw"]["layout_only"][k] else "embedding") if k is not None else "?"
                                         for k in ks]
            false["profile"] = [bool(cap["kw"]["profile"][k]) if k is not None else None for k in ks]
            false["uninformative"] = [bool(cap["kw"]["uninformative"][k]) if k is not None else None for k in ks]
            res["false_by_mechanism"] = false.mechanism.value_counts().to_dict()
            res["false_by_truth_and_mechanism"] = {f"{t} | {m}": int(v) for (t, m), v in
                                                  false.groupby(["truth", "mechanism"]).size().items()}
            tp = pairs[pairs.truth == "same"]
            res["found_by_mechanism"] = pd.Series([_mechanism(cap, kof(a, b)) for a, b in zip(tp.fa, tp.fb)]
                                                  ).value_counts().to_dict()
            for r in copies[~copies.found].itertuples():
                o = file_of_id[r.original]
                k = kof(r.file, o)
                d = dict(copy=r.file, original=o, kind=r.kind, params=r.params, source=r.source,
                         cosine=round(float(store.S[store.idx[r.file], store.idx[o]]), 3),
                         rank_of_original_in_copy_nn=store.rank(r.file, o),
                         rank_of_copy_in_original_nn=store.rank(o, r.file), candidate=k is not None)
                if k is not None:
                    e = cap["ev"]
                    d.update(candidate_source=("keypoints" if cap["kw"]["keypoint_only"][k] else "layout"
                                               if cap["kw"]["layout_only"][k] else "embedding"),
                             agreement=round(float(e.agreement[k]), 3), layout=round(float(e.layout[k]), 3),
                             detail=round(float(e.detail[k]), 3), matched_area=round(float(e.matched_area[k]), 3),
                             mirrored=bool(e.mirrored[k]), inverted=bool(e.inverted[k]),
                             keypoint_inliers=int(e.keypoint_inliers[k]),
                             matched_simplicity=round(float(e.matched_simplicity[k]), 3),
                             matched_blur_px=round(float(e.matched_blur_px[k]), 2),
                             relative_disagreement=round(float(cap["rel"][k]), 3),
                             profile=bool(cap["kw"]["profile"][k]), uninformative=bool(cap["kw"]["uninformative"][k]),
                             dropped_by=_dropped_by(cap, k))
                else:
                    d["dropped_by"] = "not a candidate (stage 1)"
                d["copy_paired_with"] = ";".join(label(x) for x in sorted(
                    set(pairs[pairs.fa == r.file].fb) | set(pairs[pairs.fb == r.file].fa)))
                mrows.append(d)
            res["misses_by_rule"] = pd.Series([m["dropped_by"] for m in mrows]).value_counts().to_dict()
            pd.DataFrame(mrows).to_csv(ROOT / f"misses_{name}.csv", index=False)
            mk = [c for c in ("kind", "params", "cosine", "rank_of_original_in_copy_nn", "candidate_source", "agreement",
                              "layout", "matched_area", "keypoint_inliers", "matched_simplicity",
                              "relative_disagreement", "profile", "uninformative", "dropped_by", "copy_paired_with")]
            save_pair_sheet([(m["copy"], m["original"], "copy | original: " + m["source"] + "\n" + "\n".join(
                f"{c}: {m[c]}" for c in mk if c in m)) for m in mrows],
                ROOT / f"misses_{name}.png", f"{name}: {len(mrows)} missed copies (copy | original)", shown)
        else:
            false["mechanism"] = "raw cosine >= threshold"
            miss = copies[~copies.found]
            pd.DataFrame([dict(copy=r.file, original=file_of_id[r.original], kind=r.kind, source=r.source)
                          for r in miss.itertuples()]).to_csv(ROOT / f"misses_{name}.csv", index=False)
        cols = ["fa", "fb", "src_a", "src_b", "pair_kind", "truth", "mechanism"] + \
               [c for c in ("candidate_source", "profile", "uninformative") if c in false.columns] + ev
        order = {"other distinct": 0, "animation sibling": 1, "tileset sibling": 2}
        false = false.assign(_o=false.truth.map(lambda t: order.get(t, 3))).sort_values(
            ["_o", "cosine"], ascending=[True, False])
        false[cols].to_csv(ROOT / f"false_pairs_{name}.csv", index=False)
        save_pair_sheet([(r["fa"], r["fb"], f"{r['truth']} ({r['pair_kind']})\nA: {r['src_a']}\nB: {r['src_b']}\n"
                        f"passed by: {r['mechanism']}\n" + "\n".join(
                            f"{c}: {round(r[c], 3) if isinstance(r[c], float) else r[c]}" for c in ev))
                       for r in false[cols].to_dict("records")],
                      ROOT / f"false_pairs_{name}.png",
                      f"{name}: {len(false)} false pairs (of {len(pairs)}; {n_images} images), unrelated first",
                      shown, max_rows=60)
        copies.to_csv(ROOT / f"copies_{name}.csv", index=False)
        summary[name] = res
    (ROOT / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(run_steps(sys.argv[1] if len(sys.argv) > 1 else "all", __doc__, build,
                       lambda: (audit(raw=False), audit(raw=True)), score))
