"""Probe imagesieve's duplicate finder on emoji (flat transparent artwork, 64 px).

Rerunnable and deterministic (seeds below). Steps:
  build  : `npm pack` two pinned npm packages (below) into $PROBE_DIR/pkg when missing; pick
           ~500 Google emoji (440 base emoji, stratified by category, and 3 skin tones of 20
           of them), plant 121 altered copies (11 kinds x 11, kinds fixed before any run) in
           $PROBE_DIR/data, manifest beside it (data.manifest.csv); with --twitter N (the
           step "build2") also N of the same emoji drawn by Twitter, in data2.
  audit  : imagesieve audit FOLDER --out OUT --no-sweep (verified, default settings)
  score  : recall (a copy paired with its own original; with its family), recall by kind,
           false pairs (and gender/direction variants counted apart), copies paired with a
           wrong original, covered share, groups; CSVs of pairs and misses with --dump.

Usage: .venv/bin/python bench/probes/emoji.py [all|build|audit|score|twitter]   (default all)
Files under $PROBE_DIR (default /tmp/imagesieve-probe-emoji). Pinned:
  emoji-datasource-google@16.0.0   img/google/64/*.png, emoji.json (names, categories, skin tones)
  emoji-datasource-twitter@16.0.0  img/twitter/64/*.png (the "twitter" step only)

Ground truth: a pair is related when its two files are of one family (one base emoji: its
skin tones count as variants of one design) or byte-identical in the package; every other
pair is false, gender and direction variants of one emoji (a man and a woman cook) counted
apart; another vendor's drawing of one emoji is a different picture.
Written by a helper's probe (2026-12-06), see docs/verified-duplicates.md, "Emoji".
"""
import csv
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).parent))
from cli_audit import run_audit  # noqa: E402

ROOT = Path(os.environ.get("PROBE_DIR", "/tmp/imagesieve-probe-emoji"))
PKG = ROOT / "pkg"
PACKAGES = {"google": "emoji-datasource-google@16.0.0", "twitter": "emoji-datasource-twitter@16.0.0"}
G = f"{PKG}/google/package"
T = f"{PKG}/twitter/package"
N_BASE = 440          # distinct base emoji
N_SKIN_FAM = 20       # bases that also get 3 skin-tone variants
KINDS = ["flat_white", "flat_black", "nearest4x", "lanczos2x", "jpeg30", "drop_shadow", "offcentre", "stroke",
         "gray", "quant16_gif", "overlay"]
PER_KIND = 11
JUNK = {"200d", "fe0f", "2640", "2642", "1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff", "20e3"}
PEOPLE = {"1f9d1", "1f468", "1f469", "1f466", "1f467", "1f476", "1f9d2"}
GENDER = {"2640", "2642", "27a1"}


def fetch() -> None:
    for vendor, spec in PACKAGES.items():
        dest = PKG / vendor
        if (dest / "package").exists():
            continue
        dest.mkdir(parents=True, exist_ok=True)
        tgz = subprocess.run(["npm", "pack", spec, "--silent"], cwd=dest, check=True, capture_output=True,
                             text=True).stdout.strip().splitlines()[-1]
        subprocess.run(["tar", "xzf", tgz], cwd=dest, check=True)


def parts(fam):
    return set(fam.split("-")) - JUNK


def design_key(fam):
    """family code with gender signs, facing-right arrow and person kinds (man/woman/person) folded."""
    ps = [x for x in fam.split("-") if x not in {"200d", "fe0f"} | GENDER]
    return tuple("P" if x in {"1f468", "1f469", "1f9d1"} else ("C" if x in {"1f466", "1f467", "1f9d2"} else x) for x in ps)


def rgba(path):
    return Image.open(path).convert("RGBA")


def flatten(im, colour):
    bg = Image.new("RGBA", im.size, colour + (255,))
    return Image.alpha_composite(bg, im).convert("RGB")


def build(twitter_n: int = 0) -> None:
    fetch()
    OUT = f"{ROOT}/data2" if twitter_n else f"{ROOT}/data"
    rng = random.Random(0)
    emo = json.load(open(f"{G}/emoji.json"))
    emo = [e for e in emo if e.get("has_img_google") and os.path.exists(f"{G}/img/google/64/{e['image']}")]
    emo.sort(key=lambda e: e["sort_order"])
    bycat = defaultdict(list)
    for e in emo:
        bycat[e["category"]].append(e)
    # proportional stratified sample across categories
    total = len(emo)
    chosen = []
    for cat in sorted(bycat):
        k = max(1, round(N_BASE * len(bycat[cat]) / total))
        chosen += rng.sample(bycat[cat], min(k, len(bycat[cat])))
    chosen = chosen[:N_BASE] if len(chosen) > N_BASE else chosen
    with_skin = [e for e in chosen if e.get("skin_variations") and len(e["skin_variations"]) == 5]
    skin_fams = rng.sample(with_skin, min(N_SKIN_FAM, len(with_skin)))

    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    rows = []
    originals = []  # (file, family, image path)
    for e in chosen:
        fam = e["unified"].lower()
        name = f"g_{e['image']}"
        shutil.copy(f"{G}/img/google/64/{e['image']}", f"{OUT}/{name}")
        rows.append(dict(file=name, role="original", source="", family=fam, kind="", vendor="google",
                         category=e["category"], name=e.get("short_name") or e["name"]))
        originals.append((name, fam))
        if e in skin_fams:
            for tone in rng.sample(sorted(e["skin_variations"]), 3):
                v = e["skin_variations"][tone]
                p = f"{G}/img/google/64/{v['image']}"
                if not os.path.exists(p):
                    continue
                vn = f"g_{v['image']}"
                shutil.copy(p, f"{OUT}/{vn}")
                rows.append(dict(file=vn, role="original", source="", family=fam, kind="skin_variant",
                                 vendor="google", category=e["category"], name=(e.get("short_name") or "") + "_" + tone))
                originals.append((vn, fam))

    fam_of = {f: fam for f, fam in originals}
    cur_src = [None]
    crng = random.Random(1000)
    srcs = crng.sample(sorted(fam_of), len(KINDS) * PER_KIND)


    def alter(kind, im, r):
        if kind == "flat_white":
            return flatten(im, (255, 255, 255)), "png"
        if kind == "flat_black":
            return flatten(im, (0, 0, 0)), "png"
        if kind == "nearest4x":
            return im.resize((im.width * 4, im.height * 4), Image.NEAREST), "png"
        if kind == "lanczos2x":
            return im.resize((im.width * 2, im.height * 2), Image.LANCZOS), "png"
        if kind == "jpeg30":
            return flatten(im, (255, 255, 255)), "jpg"
        if kind == "drop_shadow":
            pad = 10
            canvas = Image.new("RGBA", (im.width + 2 * pad, im.height + 2 * pad), (0, 0, 0, 0))
            alpha = im.split()[3]
            shadow = Image.new("RGBA", im.size, (0, 0, 0, 255))
            shadow.putalpha(alpha.point(lambda a: a * 0.6))
            sh = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
            sh.paste(shadow, (pad + 5, pad + 5), shadow)
            sh = sh.filter(ImageFilter.GaussianBlur(3))
            canvas = Image.alpha_composite(canvas, sh)
            layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
            layer.paste(im, (pad, pad))
            return Image.alpha_composite(canvas, layer), "png"
        if kind == "offcentre":
            canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
            x, y = r.choice([(6, 8), (90, 10), (12, 92), (88, 90), (20, 50)])
            canvas.paste(im, (x, y))
            return canvas, "png"
        if kind == "stroke":
            pad = 5
            canvas = Image.new("RGBA", (im.width + 2 * pad, im.height + 2 * pad), (0, 0, 0, 0))
            layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
            layer.paste(im, (pad, pad))
            a = layer.split()[3].point(lambda v: 255 if v > 40 else 0).filter(ImageFilter.MaxFilter(7))
            white = Image.new("RGBA", canvas.size, (255, 255, 255, 255))
            white.putalpha(a)
            return Image.alpha_composite(white, layer), "png"
        if kind == "gray":
            la = im.convert("LA")
            return la, "png"
        if kind == "quant16_gif":
            return im, "gif"
        if kind == "overlay":
            other = r.choice(sorted(set(fam_of) - {cur_src[0]}))
            o = rgba(f"{OUT}/{other}").resize((26, 26), Image.LANCZOS)
            out = im.copy()
            out.alpha_composite(o, (im.width - 27, im.height - 27))
            return out, "png"
        raise ValueError(kind)


    for i, src in enumerate(srcs):
        kind = KINDS[i // PER_KIND]
        cur_src[0] = src
        im = rgba(f"{OUT}/{src}")
        out, ext = alter(kind, im, crng)
        name = f"c_{kind}_{os.path.splitext(src)[0][2:]}.{ext}"
        path = f"{OUT}/{name}"
        if ext == "jpg":
            out.save(path, quality=30)
        elif ext == "gif":
            # 16-colour palette with one transparent index, as a GIF exporter would write
            a = out.split()[3]
            rgb = flatten(out, (255, 255, 255))
            p = rgb.quantize(colors=15, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
            mask = a.point(lambda v: 255 if v < 128 else 0)
            p.paste(15, mask=mask)
            p.save(path, transparency=15)
        else:
            out.save(path)
        rows.append(dict(file=name, role="copy", source=src, family=fam_of[src], kind=kind, vendor="google",
                         category="", name=""))

    if twitter_n:
        tw_src = [r for r in rows if r["role"] == "original" and r["kind"] == ""]
        trng = random.Random(7)
        for r in trng.sample(tw_src, twitter_n):
            img = r["file"][2:]
            p = f"{T}/img/twitter/64/{img}"
            if not os.path.exists(p):
                continue
            shutil.copy(p, f"{OUT}/t_{img}")
            rows.append(dict(file=f"t_{img}", role="other_vendor", source=r["file"], family=r["family"],
                             kind="twitter", vendor="twitter", category=r["category"], name=r["name"]))

    with open(f"{OUT}.manifest.csv", "w", newline="") as f:  # beside the folder, never in it
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(OUT, len(rows), "files;", sum(r["role"] == "copy" for r in rows), "copies", file=sys.stderr)


def score(folder: str, out: Path, prefix: str | None = None) -> None:
    manifest = f"{ROOT}/{folder}.manifest.csv"
    m = pd.read_csv(manifest, dtype=str).fillna("")
    info = {r.file: r for r in m.itertuples()}
    p = pd.read_parquet(f"{out}/duplicate_pairs.parquet")
    g = pd.read_parquet(f"{out}/duplicate_groups.parquet")
    p["a"] = p.path_a.astype(str).map(os.path.basename)
    p["b"] = p.path_b.astype(str).map(os.path.basename)
    g["f"] = g.path.astype(str).map(os.path.basename)
    n_img = len(m)
    _sha = {}

    def sha(f):
        if f not in _sha:
            _sha[f] = hashlib.sha256(open(f"{ROOT}/{folder}/{f}", "rb").read()).hexdigest()
        return _sha[f]

    def relation(a, b):
        ra, rb = info[a], info[b]
        if sha(a) == sha(b):
            return "identical_in_package"
        if ra.family == rb.family:
            if "other_vendor" in (ra.role, rb.role):
                return "cross_vendor_same_emoji"
            if ra.role == "copy" and rb.role == "copy":
                return "copy_copy_same_family"
            if ra.role == "copy" or rb.role == "copy":
                src = ra.source if ra.role == "copy" else rb.source
                other = b if ra.role == "copy" else a
                return "copy_source" if src == other else "copy_family"
            return "skin_variant"
        # unrelated by the probe's rule; sub-classify for the report
        if design_key(ra.family) == design_key(rb.family):
            return "design_variant:gender_or_direction"
        fa, fb = parts(ra.family), parts(rb.family)
        if ra.family.startswith("1f1") and rb.family.startswith("1f1") and len(ra.family.split("-")) == 2 \
                and len(rb.family.split("-")) == 2 and all(x.startswith("1f1") for x in fa | fb):
            return "false:two_flags"
        if (fa & fb) - PEOPLE:
            return "false:shared_component"  # e.g. man cook / woman cook, or same object with another person
        if fa & fb & PEOPLE or (fa & PEOPLE and fb & PEOPLE):
            return "false:people_different_role"
        return "false:unrelated"


    p["rel"] = [relation(a, b) for a, b in zip(p.a, p.b)]
    p["is_false"] = p.rel.str.startswith("false")
    p["is_variant"] = p.rel.str.startswith("design_variant")
    copies = m[m.role == "copy"]
    fam_of = dict(zip(m.file, m.family))

    partners = defaultdict(set)
    for a, b in zip(p.a, p.b):
        partners[a].add(b)
        partners[b].add(a)
    group_of = dict(zip(g.f, g.group))
    members = g.groupby("group").f.apply(set).to_dict()

    found_src = [r.source in partners[r.file] for r in copies.itertuples()]
    found_fam = [any(fam_of[x] == r.family for x in partners[r.file]) for r in copies.itertuples()]
    found_grp = [group_of.get(r.file) is not None and group_of.get(r.file) == group_of.get(r.source) for r in copies.itertuples()]
    copies = copies.assign(found_src=found_src, found_fam=found_fam, found_grp=found_grp)
    wrong = [any(fam_of[x] != r.family and info[x].role != "other_vendor" and design_key(fam_of[x]) != design_key(r.family)
                   for x in partners[r.file])
             for r in copies.itertuples()]
    copies = copies.assign(wrong_partner=wrong)

    print(f"images {n_img}; pairs {len(p)}; groups {g.group.nunique()} covering {g.f.nunique()}")
    print(f"recall (copy paired with its own source): {sum(found_src)}/{len(copies)} = {sum(found_src)/len(copies):.3f}")
    print(f"recall (paired with source or family):    {sum(found_fam)}/{len(copies)} = {sum(found_fam)/len(copies):.3f}")
    print(f"recall (in the same group as its source): {sum(found_grp)}/{len(copies)}")
    print("pairs by relation:", dict(Counter(p.rel)))
    nf = int(p.is_false.sum())
    nv = int(p.is_variant.sum())
    print(f"false pairs: {nf}  ({1000*nf/n_img:.1f} per 1,000 images); plus {nv} gender/direction variants of one emoji "
          f"(strict count {nf+nv}, {1000*(nf+nv)/n_img:.1f} per 1,000)")
    print(f"copies paired with a wrong original: {sum(wrong)}")
    print("recall by kind (source|family / n, wrong-partner):")
    for k, d in copies.groupby("kind"):
        print(f"  {k:12s} {d.found_src.sum():2d}|{d.found_fam.sum():2d} / {len(d)}   wrong {d.wrong_partner.sum()}")
    srcs = set(copies.source)
    plain = m[(m.role == "original") & ~m.file.isin(srcs)]
    in_any = plain.file.map(lambda f: f in group_of)
    in_foreign = plain.file.map(lambda f: f in group_of and any(design_key(fam_of[x]) != design_key(fam_of[f]) for x in members[group_of[f]]))
    print(f"covered share: non-source originals in any group {in_any.sum()}/{len(plain)} = {in_any.mean():.3f}; "
          f"in a group holding another family {in_foreign.sum()} = {in_foreign.mean():.3f}")
    srco = m[(m.role == "original") & m.file.isin(srcs)]
    beyond = srco.file.map(lambda f: f in group_of and any(design_key(fam_of[x]) != design_key(fam_of[f]) for x in members[group_of[f]]))
    print(f"source originals whose group holds another family: {beyond.sum()}/{len(srco)}")
    big = g.groupby("group").f.apply(list)
    print("largest groups:", sorted((len(v) for v in big), reverse=True)[:8])
    if (m.role == "other_vendor").any():
        tv = m[m.role == "other_vendor"]
        tpair = p[p.a.str.startswith("t_") | p.b.str.startswith("t_")]
        print(f"twitter files {len(tv)}; pairs touching them {len(tpair)}: {dict(Counter(tpair.rel))}")
        print(f"twitter files paired with their google twin: "
              f"{sum(any(fam_of[x]==r.family and x.startswith('g_') for x in partners[r.file]) for r in tv.itertuples())}")
    if prefix:
        cols = ["a", "b", "rel", "cosine", "agreement", "layout", "detail", "matched_area", "keypoint_inliers",
                "matched_simplicity", "relative_disagreement", "mirrored", "turned_degrees", "inverted"]
        p[cols].sort_values(["rel", "cosine"]).to_csv(f"{prefix}_pairs.csv", index=False, float_format="%.3f")
        copies[~copies.found_fam].to_csv(f"{prefix}_missed.csv", index=False)


if __name__ == "__main__":
    step = sys.argv[1] if len(sys.argv) > 1 else "all"
    if step not in ("all", "build", "audit", "score", "twitter"):
        sys.exit(__doc__)
    if step in ("all", "build"):
        build()
    if step in ("all", "audit"):
        run_audit(ROOT / "data", ROOT / "audit_verified")
    if step in ("all", "score"):
        score("data", ROOT / "audit_verified", str(ROOT / "scored"))
    if step == "twitter":
        build(100)
        run_audit(ROOT / "data2", ROOT / "audit_twitter")
        score("data2", ROOT / "audit_twitter", str(ROOT / "scored_twitter"))
