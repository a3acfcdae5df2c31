"""Read a labelled image set from disk: a folder with one sub-folder per
class (optionally a train/val/test level above), or a CSV manifest with
columns path,label[,split]. Returns records; never copies images."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
SPLIT_NAMES = {"train", "val", "valid", "validation", "test"}


@dataclasses.dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str
    split: str = ""


def load_labelled_source(source: str | Path) -> list[LabelledImage]:
    """Records sorted by path. Raises ValueError when nothing labelled is found."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        records = _from_csv(source)
    elif source.is_dir():
        records = _from_folder(source)
    else:
        raise ValueError(f"{source}: expected a folder of class folders or a .csv manifest")
    if not records:
        raise ValueError(f"{source}: no labelled images found")
    return sorted(records, key=lambda r: str(r.path))


def _from_folder(root: Path) -> list[LabelledImage]:
    subdirs = [d for d in root.iterdir() if d.is_dir()]
    if subdirs and all(d.name.lower() in SPLIT_NAMES for d in subdirs):
        return [r for d in subdirs for r in _class_folders(d, d.name.lower())]
    return _class_folders(root, "")


def _class_folders(root: Path, split: str) -> list[LabelledImage]:
    return [LabelledImage(f, d.name, split)
            for d in sorted(root.iterdir()) if d.is_dir()
            for f in sorted(d.rglob("*")) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]


def _from_csv(path: Path) -> list[LabelledImage]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: CSV needs columns path,label[,split]; missing {sorted(missing)}")
        out = []
        for row in reader:
            p = Path(row["path"])
            out.append(LabelledImage(p if p.is_absolute() else path.parent / p, row["label"],
                                     (row.get("split") or "").lower()))
        return out
