"""Score an imagesieve audit report against the card probe's manifest.csv (see make_data.py).

Run: .venv/bin/python bench/probes/cards/score.py bench/out/cards/audit [--csv scored.csv]
Prints the score table; writes every reported pair with its class to the CSV.
"""
import argparse, collections, csv, json, os
import pandas as pd

SIBLING_DECKS = [{"nicu-ornamental", "nicu-white"}, {"dondorf", "gm-paris"}]  # one design, other ground/art


def design(deck):
    for s in SIBLING_DECKS:
        if deck in s:
            return "+".join(sorted(s))
    return deck


def relation(dx, kx, ux, dy, ky, uy):
    """How two different originals relate: one design (a deck, or two decks of one design:
    nicu-ornamental/nicu-white, dondorf/gm-paris) or two designs."""
    if dx != dy and kx == ky and ux == uy:
        return "variant: same card, sibling deck" if design(dx) == design(dy) else "other design, same card"
    if design(dx) == design(dy):
        return "one design, same suit" if ux == uy else ("one design, same rank" if kx == ky else "one design, other card")
    return "other design, other card"


def parse(name):
    deck, card = name.split("__")
    rank, suit = card[:-4].split("_")
    return deck, rank, suit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("--manifest", default=os.path.join(os.environ.get("CARDS_PROBE_DIR", "bench/out/cards"), "manifest.csv"))
    ap.add_argument("--csv")
    args = ap.parse_args()
    man = {r["file"]: r for r in csv.DictReader(open(args.manifest))}
    n = len(man)
    pairs = pd.read_parquet(os.path.join(args.report, "duplicate_pairs.parquet"))
    groups = pd.read_parquet(os.path.join(args.report, "duplicate_groups.parquet"))
    rep = json.load(open(os.path.join(args.report, "report.json")))
    base = lambda p: os.path.basename(str(p))

    def cls(x, y):
        rx, ry = man[x], man[y]
        sx, sy = rx["source"], ry["source"]
        if sx == sy:
            return "true"
        kind = "copy-other-original" if "copy" in (rx["role"], ry["role"]) else "original-original"
        if rx["role"] == ry["role"] == "copy":
            kind = "copy-copy"
        (dx, kx, ux), (dy, ky, uy) = parse(sx), parse(sy)
        rel = relation(dx, kx, ux, dy, ky, uy)
        return f"{kind} | {rel}"

    rows = []
    for r in pairs.itertuples():
        a, b = base(r.path_a), base(r.path_b)
        c = cls(a, b)
        kinds = "/".join(sorted(man[x]["kind"] for x in (a, b) if man[x]["kind"]))
        rows.append(dict(a=a, b=b, cls=c, copy_kind=kinds, cosine=r.cosine, agreement=r.agreement,
                         layout=r.layout, detail=r.detail, area=r.matched_area, inliers=r.keypoint_inliers,
                         simplicity=r.matched_simplicity, turned=r.turned_degrees, mirrored=r.mirrored,
                         rel=r.relative_disagreement))
    df = pd.DataFrame(rows)
    if args.csv:
        df.to_csv(args.csv, index=False)

    paired = set()
    for r in rows:
        if r["cls"] == "true":
            paired.add(r["a"] if man[r["a"]]["role"] == "copy" else r["b"])
    group_of = {base(p): g for p, g in zip(groups.path, groups.group)}
    copies = [f for f, r in man.items() if r["role"] == "copy"]
    in_group = {f for f in copies if f in group_of and group_of[f] == group_of.get(man[f]["source"], -1)}
    by_kind = collections.defaultdict(lambda: [0, 0, 0])
    for f in copies:
        k = by_kind[man[f]["kind"]]
        k[0] += 1; k[1] += f in paired; k[2] += f in in_group
    false = df[df.cls != "true"]
    sources = {man[f]["source"] for f in copies}
    clean = [f for f, r in man.items() if r["role"] == "original" and f not in sources]
    covered = sum(f in group_of for f in clean) / len(clean)
    wrong = df[df.cls.str.startswith("copy-other-original")]
    secs = sum(rep["summary"]["seconds"].values())
    mixed = [gid for gid, sub in groups.groupby("group") if len({man[base(p)]["source"] for p in sub.path}) > 1]
    split = [f for f in paired if f not in in_group]
    wk = collections.Counter(man[x]["kind"] for x in set(wrong.a).union(wrong.b) if man[x]["role"] == "copy")

    print(f"report {args.report}: {n} images ({n - len(copies)} originals, {len(copies)} copies), "
          f"{len(df)} pairs reported, threshold field {rep['summary'].get('threshold')}")
    print(f"recall (copy paired with its original): {len(paired)}/{len(copies)} = {len(paired)/len(copies):.3f}; "
          f"in its original's group: {len(in_group)}/{len(copies)}")
    print("recall by kind (paired / in group / copies):")
    for k, (t, p, g) in sorted(by_kind.items()):
        print(f"  {k:18s} {p:3d} {g:3d} /{t:3d}  {p/t:.2f}")
    print(f"false pairs: {len(false)} = {1000*len(false)/n:.1f} per 1,000 images")
    for c, m in false.cls.value_counts().items():
        print(f"  {m:4d}  {c}")
    print(f"wrong-original pairs (copy + another original): {len(wrong)} "
          f"({wrong.a.where(wrong.a.str.startswith('copy')).fillna(wrong.b).nunique()} copies)")
    print(f"  wrong-original copies by kind: {dict(sorted(wk.items()))}")
    print(f"groups: {groups.group.nunique()}, of which {len(mixed)} hold two or more different originals; "
          f"{len(split)} copies paired with their original but grouped apart from it")
    nv = len(false) - int(false.cls.str.contains("variant").sum())
    print(f"false pairs excluding same-card sibling-deck variants: {nv} = {1000*nv/n:.1f} per 1,000 images")
    print(f"covered share (originals with no planted copy, in some group): {covered:.3f} of {len(clean)}; "
          f"all images in groups: {len(group_of)}/{n}")
    print(f"images/s: {n/secs:.2f} (audit total {secs:.1f} s; embedding {rep['summary']['seconds']['embedding']} s, "
          f"duplicates {rep['summary']['seconds']['duplicates']} s)")
    for note in rep["summary"]["notes"]:
        print("note:", note)


if __name__ == "__main__":
    main()
