"""The real CLI as a probe's new user runs it, and the planting every probe in this folder
does the same way (a fresh folder, neutral names, the manifest beside it)."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run_audit(folder: Path, out: Path, *flags: str) -> dict:
    """`nice -n 10 imagesieve audit FOLDER --out OUT --no-sweep FLAGS` (the
    CLI beside this interpreter), ``out`` emptied first. Its console goes
    to OUT.stdout.txt and OUT.stderr.txt beside ``out``; returns what
    OUT.run.json holds: {"cmd", "rc", "wall_s"}."""
    if out.exists():
        shutil.rmtree(out)
    cmd = ["nice", "-n", "10", str(Path(sys.executable).parent / "imagesieve"), "audit", str(folder),
           "--out", str(out), "--no-sweep", *flags]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    result = {"cmd": cmd, "rc": run.returncode, "wall_s": time.perf_counter() - t0}
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / (out.name + ".stdout.txt")).write_text(run.stdout)
    (out.parent / (out.name + ".stderr.txt")).write_text(run.stderr)
    (out.parent / (out.name + ".run.json")).write_text(json.dumps(result, indent=1))
    print(f"audit {' '.join(flags) or '(defaults)'}: rc {run.returncode}, {result['wall_s']:.1f} s -> {out}")
    if run.returncode != 0:
        print(run.stderr[-3000:], file=sys.stderr)
    return result


def audit_verified_and_raw(folder: Path, out: Path, out_raw: Path) -> None:
    """The two runs a probe scores: the defaults (verified) and ``--raw-cosine``."""
    run_audit(folder, out)
    run_audit(folder, out_raw, "--raw-cosine")


def wall_s(out: Path) -> float:
    """The wall time of run_audit's run into ``out``, seconds (one decimal)."""
    return round(json.loads((out.parent / (out.name + ".run.json")).read_text())["wall_s"], 1)


EVIDENCE = ("cosine", "agreement", "matched_area", "keypoint_inliers", "relative_disagreement")


def classified_pairs(out: Path, row: dict, classify):
    """An audit's duplicate_pairs.parquet (a pandas DataFrame) with the two
    file names (fa, fb), each pair's class ``classify(row[fa], row[fb])``
    and each side's source name with its copy kind (src_a, src_b); ``row``:
    file -> its manifest row (source, kind, role, ...)."""
    import pandas as pd
    pairs = pd.read_parquet(out / "duplicate_pairs.parquet")
    pairs["fa"] = pairs.path_a.astype(str).map(lambda s: Path(s).name)
    pairs["fb"] = pairs.path_b.astype(str).map(lambda s: Path(s).name)
    pairs["cls"] = [classify(row[a], row[b]) for a, b in zip(pairs.fa, pairs.fb)]
    pairs["src_a"] = [row[a]["source"] + (f" [{row[a]['kind']}]" if row[a]["kind"] else "") for a in pairs.fa]
    pairs["src_b"] = [row[b]["source"] + (f" [{row[b]['kind']}]" if row[b]["kind"] else "") for b in pairs.fb]
    return pairs


def read_manifest(manifest: Path):
    """(the manifest as a pandas DataFrame, file -> its row, source -> its
    original's file, the copies' rows: a copy of the DataFrame to mark up)."""
    import pandas as pd
    man = pd.read_csv(manifest, keep_default_na=False)
    row = {r["file"]: r for r in man.to_dict("records")}
    orig_file = {r["source"]: f for f, r in row.items() if r["role"] == "original"}
    return man, row, orig_file, man[man.role == "copy"].copy()


def copies_found(pairs, copies):
    """(C,) bool: whether each of ``copies`` (manifest rows) is in a pair
    of class copy_own (a copy with its original) of ``pairs`` (classified_pairs)."""
    own = set(pairs.fa[pairs.cls == "copy_own"]) | set(pairs.fb[pairs.cls == "copy_own"])
    return copies.file.isin(own)


def copy_files(pairs, row: dict) -> set:
    """The copy's file of each pair in ``pairs`` (a copy with an original)."""
    return {a if row[a]["role"] == "copy" else b for a, b in zip(pairs.fa, pairs.fb)}


def evidence_caption(r, head: str, ev) -> str:
    """A pair-sheet caption: ``head``, the two sources, then the ``ev``
    columns of ``r`` (a row of classified_pairs) two a line (a caption line
    is cut at the thumbnail's width)."""
    vals = [f"{c}={getattr(r, c):.3f}" if isinstance(getattr(r, c), float) else f"{c}={getattr(r, c)}" for c in ev]
    return "\n".join([head, f"A: {r.src_a}", f"B: {r.src_b}", *(" ".join(vals[i:i + 2]) for i in range(0, len(vals), 2))])


def fresh_folder(folder: Path) -> None:
    """``folder`` created, or emptied of the files an earlier build planted."""
    if folder.exists():
        for p in folder.iterdir():
            p.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def neutral_ids(rng, bits: int = 32, pattern: str = "img_%08x"):
    """A function giving a new random name each call (``pattern`` % ``bits`` random bits of
    ``rng``, a random.Random), never one it gave before: files a new user cannot read the
    truth from."""
    given = set()

    def new_id() -> str:
        while True:
            i = pattern % rng.getrandbits(bits)
            if i not in given:
                given.add(i)
                return i
    return new_id


def on_white(im):
    """``im`` (a PIL image) as RGB, a transparent one composited on white (as
    an export or a browser shows it)."""
    from PIL import Image
    if im.mode in ("RGBA", "LA", "P", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        bg.alpha_composite(im)
        im = bg
    return im.convert("RGB")


def save_as(im, stem: Path, ext: str) -> Path:
    """``im`` (a PIL image) written as STEM.jpg at quality NN for ``ext``
    "jpgNN", else as STEM.png; returns the path."""
    if ext.startswith("jpg"):
        p = stem.with_suffix(".jpg")
        im.convert("RGB").save(p, quality=int(ext[3:]))
    else:
        p = stem.with_suffix(".png")
        im.save(p)
    return p


def write_manifest(rows: list[dict], manifest: Path) -> None:
    """The planted truth, one row an image, as CSV (beside the audited folder, never in it)."""
    with open(manifest, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)


def save_pair_sheet(rows, out_png: Path, title: str, load, max_rows: int = 40, thumb: int = 256) -> None:
    """A contact sheet of image pairs through the client's renderer
    (``imagesieve.contact_sheet``): ``rows`` of (file a, file b, text), each
    pair on one row, a's name and the text's lines under a, b's name under b;
    ``load(file)`` gives the picture shown (the probe decides how)."""
    from imagesieve.contact_sheet import SheetItem, save_contact_sheet
    items = [item for fa, fb, text in rows[:max_rows]
             for item in (SheetItem(load(fa), [fa, *str(text).split("\n")]), SheetItem(load(fb), [fb]))]
    save_contact_sheet(items, out_png, columns=2, thumb=thumb, title=title)


def ensure_debs(debs: Path, packages: dict[str, str]) -> None:
    """Each ``packages`` name -> pinned version, downloaded (`apt-get download`, no root
    needed) and unpacked into ``debs``/x_NAME unless it is there already."""
    debs.mkdir(parents=True, exist_ok=True)
    for pkg, version in packages.items():
        if (debs / f"x_{pkg}").exists():
            continue
        subprocess.run(["apt-get", "download", f"{pkg}={version}"], cwd=debs, check=True)
        deb = sorted(debs.glob(f"{pkg}_*.deb"))[-1]
        subprocess.run(["dpkg", "-x", str(deb), str(debs / f"x_{pkg}")], check=True)


STEPS = ("all", "build", "audit", "score")


def run_steps(step: str, usage: str, build, audit, score) -> int:
    """A probe's command line: ``step`` one of STEPS (else exit with
    ``usage``); build() the planted folder, audit() it, score() the runs."""
    if step not in STEPS:
        sys.exit(usage)
    if step in ("all", "build"):
        build()
    if step in ("all", "audit"):
        audit()
    if step in ("all", "score"):
        score()
    return 0
