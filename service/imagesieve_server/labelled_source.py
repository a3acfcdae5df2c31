"""Read a labelled image set from disk: a folder with one sub-folder per
class (optionally a train/val/test level above), or a CSV manifest with
columns path,label[,split]. Returns records; never copies images."""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from imagesieve.manifest import SPLIT_NAMES, read_csv_rows

from .formats import folders, images_under

__all__ = ["SPLIT_NAMES", "LabelledImage", "load_labelled_source", "read_csv_rows"]


@dataclasses.dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str
    split: str = ""


def load_labelled_source(source: str | Path, skipped: Counter | None = None) -> list[LabelledImage]:
    """Records sorted by path. Raises ValueError when nothing labelled is
    found. Files of a folder in image formats that are not decoded are
    counted by suffix into ``skipped`` (see ``formats.skipped_note``)."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        records = _from_csv(source)
    elif source.is_dir():
        records = _from_folder(source, skipped)
    elif not source.exists():
        raise ValueError(f"{source}: no such file or folder (expected a folder of class folders or a .csv manifest)")
    else:
        raise ValueError(f"{source}: expected a folder of class folders or a .csv manifest")
    if not records:
        loose = source.is_dir() and any(f.parent == source for f in images_under(source))
        raise ValueError(f"{source}: no labelled images found" + (
            ": its images lie loose in the folder; put each class's images in a sub-folder named after the "
            "class, or give a CSV manifest path,label[,split]" if loose else ""))
    return sorted(records, key=lambda r: str(r.path))


def _from_folder(root: Path, skipped: Counter | None) -> list[LabelledImage]:
    subdirs = folders(root)
    if subdirs and all(d.name.lower() in SPLIT_NAMES for d in subdirs):
        return [r for d in subdirs for r in _class_folders(d, d.name.lower(), skipped)]
    return _class_folders(root, "", skipped)


def _class_folders(root: Path, split: str, skipped: Counter | None) -> list[LabelledImage]:
    return [LabelledImage(f, d.name, split)
            for d in folders(root, skipped)
            for f in images_under(d, skipped)]


def _from_csv(path: Path) -> list[LabelledImage]:
    rows = read_csv_rows(path)
    missing = {"path", "label"} - set(rows[0]) if rows else set()
    if missing:
        raise ValueError(f"{path}: CSV needs columns path,label[,split]; missing {sorted(missing)}")
    out = []
    for row in rows:
        p = Path(row["path"])
        out.append(LabelledImage(p if p.is_absolute() else path.parent / p, row["label"],
                                 (row.get("split") or "").lower()))
    return out
