"""imagesieve fix: apply a report's fix list to a dataset's manifest.

    imagesieve fix fixes.csv --out manifest.csv [--source SOURCE]

``fixes.csv`` is what the audit report exports (columns ``source, path,
action, new_label, reason``; actions ``drop``, ``relabel`` (to
``new_label``) and ``review``). The dataset is the fix list's ``source`` (a
folder, a .csv/.parquet manifest or a glob, as ``audit`` reads it) unless
``--source`` names it. The output is a manifest (``path,label,split``) of
every image of the source minus the dropped ones, with new labels, that
``audit``, ``labels``, ``samplesize`` and ``add`` read; its paths are
absolute (a manifest's relative paths are read from its own folder, which
need not be where the source was named from). No file of the
dataset is moved, changed or deleted (``--out`` must be a new or existing
``.csv`` that is not one of the dataset's files). ``review`` rows change
nothing; they are counted, and listed with ``--list-reviews``. Exit code 1
when some paths of the fix list are not in the source (the rest is
applied), 2 for a bad fix list, source or ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

from imagesieve.manifest import read_csv_rows, spreadsheet_cell

ACTIONS = ("drop", "relabel", "review")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plan", help="the fix list a report exported (CSV: source, path, action, new_label, reason)")
    parser.add_argument("--out", required=True, help="the cleaned manifest to write (CSV: path, label, split)")
    parser.add_argument("--source", default=None,
                        help="the dataset (folder, manifest or glob; default: the fix list's source column)")
    parser.add_argument("--list-reviews", action="store_true", help="print the paths marked for review")


def read_plan(path: Path) -> tuple[list[dict], set[str]]:
    """(rows, sources named). ValueError naming the line of a bad row."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file (the fix list a report exported)")
    rows = read_csv_rows(path)
    if rows and not {"path", "action"} <= set(rows[0]):
        raise ValueError(f"{path}: a fix list needs the columns path and action (and new_label for relabel)")
    for n, row in enumerate(rows, start=2):
        action = (row.get("action") or "").strip().lower()
        if action not in ACTIONS:
            raise ValueError(f"{path}, line {n}: action {row.get('action')!r} is not one of {', '.join(ACTIONS)}")
        if action == "relabel" and not (row.get("new_label") or "").strip():
            raise ValueError(f"{path}, line {n}: relabel needs a new_label")
        if not (row.get("path") or "").strip():
            raise ValueError(f"{path}, line {n}: no path")
        row["action"] = action
    return rows, {r["source"] for r in rows if r.get("source")}


def apply_plan(records, rows: list[dict]) -> tuple[list[tuple[str, str, str]], dict]:
    """The source's records (absolute path, label, split) with the plan applied, and
    counts: dropped, relabelled, reviews, not_in_source (plan paths the
    source does not hold), conflicting (a path both dropped and relabelled:
    dropped), relabelled_twice (to two labels: the last row wins)."""
    by_path = {os.path.abspath(r.path): r for r in records}
    drop, relabel, reviews, missing, conflicting_labels = set(), {}, [], [], set()
    for row in rows:
        p = os.path.abspath(row["path"])
        if p not in by_path:
            missing.append(row["path"])
        elif row["action"] == "drop":
            drop.add(p)
        elif row["action"] == "relabel":
            if p in relabel and relabel[p] != row["new_label"]:
                conflicting_labels.add(p)
            relabel[p] = row["new_label"]            # as written: a class may end in a space
        else:
            reviews.append(row["path"])
    out, changed = [], 0
    for r in records:
        p = os.path.abspath(r.path)
        if p in drop:
            continue
        label = relabel.get(p, r.label)
        changed += label != r.label
        out.append((p, label, r.split))     # absolute: a manifest's relative paths are read from its own folder
    return out, {"images_in": len(records), "images_out": len(out), "dropped": len(drop), "relabelled": changed,
                 "reviews": reviews, "not_in_source": missing, "conflicting": len(drop & set(relabel)),
                 "relabelled_twice": len(conflicting_labels)}


def run(args) -> int:
    from ..audit.sources import load_audit_source

    prog = "imagesieve fix"
    plan, out = Path(args.plan), Path(args.out)
    try:
        rows, sources = read_plan(plan)
    except (ValueError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    source = args.source
    if source is None:
        if len(sources) != 1:
            print(f"{prog}: the fix list names {len(sources)} sources; say which with --source", file=sys.stderr)
            return 2
        source = sources.pop()
    try:
        records = load_audit_source(source)
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    dataset = {os.path.abspath(r.path) for r in records}
    if (out.suffix.lower() != ".csv" or out.is_dir() or out.resolve() in {plan.resolve(), Path(source).resolve()}
            or os.path.abspath(out) in dataset or str(out.resolve()) in dataset):
        print(f"{prog}: --out {out} must be a .csv file that is not the fix list, the source or one of its "
              "images; name another file", file=sys.stderr)
        return 2
    kept, counts = apply_plan(records, rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows([spreadsheet_cell(c) for c in row] for row in kept)
    os.replace(tmp, out)               # a reader never sees half a manifest
    print(f"{counts['images_in']} images in {source}: {counts['dropped']} dropped, {counts['relabelled']} relabelled, "
          f"{len(counts['reviews'])} marked for review (unchanged) -> {counts['images_out']} in {out}")
    if counts["conflicting"]:
        print(f"note: {counts['conflicting']} images were both dropped and relabelled: dropped", file=sys.stderr)
    if counts["relabelled_twice"]:
        print(f"note: {counts['relabelled_twice']} images were relabelled to two labels: the last row's kept",
              file=sys.stderr)
    if counts["not_in_source"]:
        shown = ", ".join(counts["not_in_source"][:3])
        print(f"note: {len(counts['not_in_source'])} paths of the fix list are not in {source} (e.g. {shown}): "
              "ignored, the rest applied (exit code 1)", file=sys.stderr)
    if args.list_reviews:
        for p in counts["reviews"]:
            print(f"review: {p}")
    return 1 if counts["not_in_source"] else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="imagesieve fix", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
