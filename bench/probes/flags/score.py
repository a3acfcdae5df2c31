"""Score an `imagesieve audit` of the country-flag probe (make_data.py) against
its manifest: recall per copy kind, pairs of different flags (judged by layout and
colour, see ``judge``), copies paired with a wrong original, the share of images in
a group; ``--sheets`` also writes contact sheets of the false pairs and the missed
copies into OUTDIR/.. .

    .venv/bin/python bench/probes/flags/score.py bench/out/flags/out [--sheets]
"""
import collections
import itertools
import json
import os
import sqlite3
import sys

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

HERE = os.environ.get("FLAGS_PROBE_DIR", "bench/out/flags")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

# Flags that are one design (same picture, another rendering or a tiny emblem change),
# curated by eye from the contact sheet.  Everything else is a different picture.
FAMILIES = [
    {"fr", "bl", "mq"},      # French tricolour, three renderings (nc/pm/re/yt/gf/gp/tf/wf merged as pixel-identical)
    {"mf", "sx"},            # Saint-Martin / Sint Maarten: one rendering
    {"nl", "bq"},            # Caribbean Netherlands: Dutch flag
    {"no", "sj", "bv"},      # Svalbard and Bouvet Island fly the Norwegian flag
    {"au", "hm"},            # Heard & McDonald Islands fly the Australian flag
    {"id", "mc"},            # Indonesia / Monaco: red over white, same picture here
    # not here: Chad/Romania and Netherlands/Luxembourg (another shade): category "shade" below
]

# Judgement of each false pair of different flags, by eye (unordered code pairs).
SHADE = {frozenset(p) for p in [("td", "ro"), ("nl", "lu"), ("bq", "lu")]}
EMBLEM = {frozenset(p) for p in [  # one layout, different emblem / badge / charge
    ("cu", "pr"), ("qa", "bh"), ("tc", "ai"), ("tc", "ms"), ("sh", "tc"), ("my", "lr"),
    ("ni", "sv"), ("eg", "ye"), ("sy", "ye"), ("eg", "sy"), ("ms", "ai"), ("sh", "ai"), ("sh", "ms")]}
OTHER_LAYOUT = {frozenset(p) for p in [  # different layouts, loosely alike
    ("so", "pa"), ("vn", "pa"), ("_basque", "do"), ("eo", "to"), ("az", "tr"), ("cd", "sb"),
    ("tz", "cd"), ("pw", "la"), ("tg", "vn"), ("so", "tg"), ("mf", "dj"), ("sx", "dj"),
    ("az", "ly"), ("ae", "bj"), ("so", "bf"), ("bf", "vn"), ("_scotland", "jm"), ("dk", "do"),
    ("tr", "mv"), ("mu", "am"), ("jp", "kr"), ("la", "gu"), ("mu", "de"), ("bm", "gb")]}


def judge(a, b):
    k = frozenset((a, b))
    if k in SHADE:
        return "shade variant (arguably one design)"
    if k in EMBLEM:
        return "one layout, other emblem"
    if k in OTHER_LAYOUT:
        return "other layout, loosely alike"
    return "one layout, other colours"  # tricolours, bicolours, Nordic crosses, disc/star on a field


def check_families():
    global FAMILY_OK
    FAMILY_OK = FAMILIES


def load(outdir):
    man = pd.read_csv(os.path.join(HERE, "manifest.csv"), keep_default_na=False)
    man["members"] = man["members"].str.split("|")
    info = {r.file: r for r in man.itertuples()}
    pairs = pd.read_parquet(os.path.join(outdir, "duplicate_pairs.parquet"))
    groups = pd.read_parquet(os.path.join(outdir, "duplicate_groups.parquet"))
    for df, cols in ((pairs, ["path_a", "path_b"]), (groups, ["path"])):
        for c in cols:
            df[c] = df[c].astype(str).map(os.path.basename)
    return man, info, pairs, groups


def fam_of(code):
    s = {code}
    for f in FAMILY_OK:
        if code in f:
            s |= f
    return s


def related(a, b, info):
    ma, mb = set(info[a].members), set(info[b].members)
    if ma & mb:
        return True
    return any(fam_of(x) & mb for x in ma)


def embeddings(outdir):
    c = sqlite3.connect(os.path.join(outdir, "embeddings", "index.sqlite"))
    rows = list(c.execute("select path, shard, row from items where shard >= 0"))   # failed: no row
    shards = {}
    vec = {}
    for p, s, r in rows:
        if s not in shards:
            shards[s] = np.load(os.path.join(outdir, "embeddings", "shard-%05d.npy" % s))
        vec[os.path.basename(p)] = shards[s][r]
    return vec


def main():
    outdir = sys.argv[1]
    sheets = "--sheets" in sys.argv
    check_families()
    man, info, pairs, groups = load(outdir)
    orig_file = {r.orig: r.file for r in man.itertuples() if r.kind == "original"}
    gid = dict(zip(groups.path, groups.group))
    paired = collections.defaultdict(set)
    for a, b in zip(pairs.path_a, pairs.path_b):
        paired[a].add(b)
        paired[b].add(a)

    def found(copy_file, code):
        o = orig_file[code]
        return o in paired[copy_file] or (copy_file in gid and gid.get(o) == gid[copy_file])

    print("families counted as one design:", [sorted(f) for f in FAMILY_OK])
    copies = man[man.kind != "original"]
    rec = []
    missed = []
    for kind, df in copies.groupby("kind", sort=False):
        n = len(df)
        hit = sum(found(r.file, r.orig) for r in df.itertuples())
        extra = ""
        if kind == "mosaic4":
            anym = sum(any(found(r.file, m) for m in r.members) for r in df.itertuples())
            members = sum(sum(found(r.file, m) for m in r.members) for r in df.itertuples())
            extra = "any member %d/%d, members found %d/%d" % (anym, n, members, 4 * n)
        rec.append((kind, hit, n, extra))
        missed += [r for r in df.itertuples() if not found(r.file, r.orig)]
    tot = sum(h for _, h, _, _ in rec)
    ntot = sum(n for _, _, n, _ in rec)
    print("\n| kind | found | recall | note |\n|---|---|---|---|")
    for k, h, n, e in rec:
        print("| %s | %d/%d | %.2f | %s |" % (k, h, n, h / n, e))
    print("| **all** | %d/%d | **%.3f** | |" % (tot, ntot, tot / ntot))

    pairs["rel"] = [related(a, b, info) for a, b in zip(pairs.path_a, pairs.path_b)]
    pairs["ka"] = [info[a].kind for a in pairs.path_a]
    pairs["kb"] = [info[b].kind for b in pairs.path_b]
    pairs["oa"] = [info[a].orig for a in pairs.path_a]
    pairs["ob"] = [info[b].orig for b in pairs.path_b]
    false = pairs[~pairs.rel].copy()

    def cls(r):
        o = (r.ka == "original") + (r.kb == "original")
        return {2: "original-original", 1: "copy-original", 0: "copy-copy"}[o]

    false["cls"] = [cls(r) for r in false.itertuples()]
    false["judged"] = [judge(a, b) for a, b in zip(false.oa, false.ob)]
    fam_pairs = pairs[pairs.rel & (pairs.oa != pairs.ob) & (pairs.ka == "original") & (pairs.kb == "original")]
    print("\npairs: %d, related %d (same-design originals %d), FALSE %d (%.1f per 1k images)"
          % (len(pairs), pairs.rel.sum(), len(fam_pairs), len(false), 1000 * len(false) / len(man)))
    print("false by class:", dict(collections.Counter(false.cls)))
    print("false by judgement:", dict(collections.Counter(false.judged)))
    wrong = set()
    for r in false.itertuples():
        for me, other in ((r.path_a, r.path_b), (r.path_b, r.path_a)):
            if info[me].kind != "original" and info[other].kind == "original":
                wrong.add(me)
    print("copies paired with a wrong original: %d of %d" % (len(wrong), ntot))
    print("copies paired with a wrong original, by kind:",
          dict(collections.Counter(info[f].kind for f in wrong)))
    ingroup = set(groups.path)
    print("share of images in any group: %.3f (%d of %d); originals in a group %d of %d"
          % (len(ingroup) / len(man), len(ingroup), len(man),
             sum(info[f].kind == "original" for f in ingroup), (man.kind == "original").sum()))
    # groups mixing unrelated originals
    big = groups.groupby("group").path.apply(list)
    mixed = [g for g in big if len({info[f].orig for f in g}) > 1 and
             any(not related(a, b, info) for a, b in itertools.combinations(g, 2))]
    print("groups: %d, largest %d, groups joining unrelated pictures %d"
          % (len(big), max(map(len, big)), len(mixed)))
    cols = ["cosine", "agreement", "layout", "detail", "matched_area", "keypoint_inliers",
            "matched_simplicity", "relative_disagreement", "mirrored", "turned_degrees"]
    false = false.sort_values("cosine", ascending=False)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_rows", 400)
    print("\nfalse pairs (codes, kinds, evidence):")
    print(false[["oa", "ka", "ob", "kb", "cls", "judged"] + cols].round(3).to_string(index=False))
    false.to_csv(os.path.join(HERE, "false_pairs.csv"), index=False)

    vec = embeddings(outdir)
    allf = list(vec)
    M = np.stack([vec[f] for f in allf])
    print("\nmissed copies:")
    mrows = []
    for r in missed:
        v = vec[r.file]
        cos = float(v @ vec[orig_file[r.orig]])
        sims = M @ v
        rank = int((sims > cos).sum())  # includes itself at 1.0
        partners = ",".join(sorted(info[p].orig + ":" + info[p].kind[:4] for p in paired[r.file]))
        mrows.append(dict(file=r.file, kind=r.kind, orig=r.orig, cos_to_orig=round(cos, 3),
                          orig_rank=rank, paired_with=partners or "-"))
    md = pd.DataFrame(mrows)
    if len(md):
        print(md.to_string(index=False))
    md.to_csv(os.path.join(HERE, "missed.csv"), index=False)
    if sheets:
        sheet(false, info, "false_pairs.png", cols, lambda r: (r.path_a, r.path_b))
        sheet(md, info, "missed.png", None, lambda r: (r.file, orig_file[r.orig]))
    # Last line: the figures, as the benchmarks print theirs.
    print(json.dumps({"recall": round(tot / ntot, 4), "recall_by_kind": {k: round(h / n, 3) for k, h, n, _ in rec},
                      "pairs": len(pairs), "false_pairs": len(false),
                      "false_pairs_per_1k_images": round(1000 * len(false) / len(man), 1),
                      "false_by_judgement": dict(collections.Counter(false.judged)),
                      "wrong_original_pairs": len(wrong), "covered_share": round(len(ingroup) / len(man), 4)}))


def thumb(f, size=150):
    im = Image.open(os.path.join(HERE, "data", f)).convert("RGBA")
    im.thumbnail((size, size))
    bg = Image.new("RGBA", im.size, (200, 200, 200, 255))
    bg.alpha_composite(im)
    return bg.convert("RGB")


def sheet(df, info, fn, cols, files, per_row=2, per_page=24):
    if not len(df):
        return
    if len(df) > per_page:
        for k in range(0, len(df), per_page):
            sheet(df.iloc[k:k + per_page], info, fn.replace(".png", "_%d.png" % (k // per_page + 1)),
                  cols, files, per_row, per_page)
        return
    font = ImageFont.truetype(FONT, 11)
    cw, ch = 640, 170
    rows = (len(df) + per_row - 1) // per_row
    s = Image.new("RGB", (cw * per_row, ch * rows), "white")
    d = ImageDraw.Draw(s)
    for i, r in enumerate(df.itertuples()):
        x, y = (i % per_row) * cw, (i // per_row) * ch
        a, b = files(r)
        s.paste(thumb(a), (x + 4, y + 4))
        s.paste(thumb(b), (x + 158, y + 4))
        lines = ["A %s (%s)" % (info[a].orig, info[a].kind), "B %s (%s)" % (info[b].orig, info[b].kind)]
        if cols:
            lines += ["%s %s" % (c, round(getattr(r, c), 3) if isinstance(getattr(r, c), float) else getattr(r, c))
                      for c in cols]
        else:
            lines += ["cos to orig %.3f" % r.cos_to_orig, "orig rank %d" % r.orig_rank,
                      "paired: %s" % r.paired_with[:40]]
        for j, t in enumerate(lines):
            d.text((x + 314, y + 4 + 13 * j), t, fill="black", font=font)
        d.line([x, y + ch - 1, x + cw, y + ch - 1], fill=(180, 180, 180))
    s.save(os.path.join(HERE, fn))
    print("wrote", os.path.join(HERE, fn))


if __name__ == "__main__":
    main()
