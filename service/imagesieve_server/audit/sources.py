"""What an audit reads: an image folder (one folder per class, optionally a
train/val/test level above; or no class folders at all), a CSV or Parquet
manifest (path[, label][, split]), or a glob. Records only: images are
never copied."""
from __future__ import annotations

import dataclasses
import functools
import glob
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from imagesieve.walk import files_under

from ..formats import (BAD_NAME, OWN_OUTPUT, UNREAD_IMAGE_SUFFIXES, folders, images_under, is_image_file,
                       skipped_note, utf8_name)
from ..labelled_source import SPLIT_NAMES, load_labelled_source, read_csv_rows
from .columns import Categorical, PackedStrings


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    path: str
    label: str = ""
    split: str = ""


@dataclasses.dataclass
class AuditTable:
    """The images of an audit as compact columns (see ``columns``), sorted by path."""
    paths: PackedStrings
    labels: Categorical          # '' where unlabelled
    splits: Categorical          # '' where no split
    #: what the listing left out and why (files in formats not decoded), for the user
    notes: list[str] = dataclasses.field(default_factory=list)
    #: what the label findings may not mean (``LabelCaveat``s), for the audit to say when they apply
    label_caveats: list = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_labelled(self) -> int:
        return int(sum(np.count_nonzero(self.labels.codes == c) for c, v in enumerate(self.labels.values) if v))

    @classmethod
    def from_records(cls, records: list[AuditRecord]) -> "AuditTable":
        return cls(PackedStrings(r.path for r in records), Categorical(r.label for r in records),
                   Categorical(r.split for r in records))


def load_audit_table(source: str, exclude: str | os.PathLike | None = None) -> AuditTable:
    """:func:`load_audit_source` as compact columns (the records are
    dropped), with a note naming the files left out. ``exclude``: a folder
    (the audit's own --out) whose files are left out whatever the source
    names: a glob or manifest over a parent would otherwise audit the last
    run's thumbnails as images."""
    skipped: Counter = Counter()
    notes: list[str] = []
    caveats: list = []
    records = load_audit_source(source, skipped, notes, caveats)
    if exclude is not None:
        roots = {os.path.abspath(exclude), os.path.realpath(exclude)}
        # Both spellings of each path: an earlier run's output reached through a linked folder is still its output.
        kept = [r for r in records
                if not any(os.path.commonpath([spelled, root]) == root for root in roots
                           for spelled in (os.path.abspath(r.path), os.path.realpath(r.path)))]
        if len(kept) < len(records):
            skipped[OWN_OUTPUT] += len(records) - len(kept)
            if not kept:
                raise ValueError(f"no images in {source} outside --out {exclude}")
            records = kept
    table = AuditTable.from_records(records)
    table.notes.extend(notes)
    table.label_caveats.extend(caveats)
    note = skipped_note(skipped)
    if note:
        table.notes.append(note)
    return table


#: A folder named for a size or a screen density, not a class: an icon theme's ``16x16`` and
#: ``48x48`` hold one icon drawn at two sizes (read as classes, Adwaita's 4,847 icons made
#: 9,295 "label conflicts"), as do Android's ``drawable-hdpi`` (``-v4`` and other qualifiers
#: after it, ``nodpi``, ``anydpi``) and a wallpaper's ``1920x1080``.
SIZE_FOLDER = re.compile(r"\d+x\d+(@\d+(\.\d+)?x)?|\d+px|@?\d(\.\d+)?x|(.*[-_])?(l|m|tv|x{0,3}h|no|any)dpi([-_].*)?",
                         re.IGNORECASE)


def _class_folders(root: Path) -> list[Path]:
    """``root``'s class folders (below a train/val/test level if it has
    one); [] when its images lie loose in it or it has no folders."""
    dirs = folders(root)
    if dirs and all(d.name.lower() in SPLIT_NAMES for d in dirs):
        dirs = [c for d in dirs for c in folders(d)]
    if not dirs or any(p.is_file() and is_image_file(p) for p in root.iterdir()):
        return []
    return dirs


def _holds_images(folder: Path) -> bool:
    return any(regular and is_image_file(f) for f, regular in files_under(folder, []))


def size_folders(dirs: list[Path]) -> list[str]:
    """The names among ``dirs`` that name a size or a density, when at least
    two do and they are most of the folders that hold images: then the
    folders are renditions of one set of images, not classes (Adwaita: 10
    of 13, beside ``scalable`` and ``cursors``; an Android ``res/``: its
    ``drawable-*dpi`` beside ``values`` folders of XML). [] otherwise: one
    ``4x4`` beside ``sedan``, or MNIST's ``0``-``9``, stay classes."""
    sized = [d for d in dirs if SIZE_FOLDER.fullmatch(d.name)]
    if len(sized) < 2:
        return []
    others = sum(1 for d in dirs if not SIZE_FOLDER.fullmatch(d.name) and _holds_images(d))
    return list(dict.fromkeys(d.name for d in sized)) if len(sized) > others else []


#: Share of the labelled images that must share their path inside their class folder with an
#: image in another class folder before the folders are suspected of being versions of one
#: set (languages, themes, sizes) rather than classes.
MIRRORED_SHARE = 0.5
#: Pairs of same-named images looked at (evenly spaced), other images of the twin's folder
#: each twin must beat as the nearest picture, and in how many of the pairs, for the
#: pictures to confirm it (chance: about 1 in 9 a pair): ``image_0001.jpg`` in every class
#: of Caltech-101 names different pictures.
MIRROR_SAMPLES, MIRROR_RIVALS, MIRROR_WINS = 8, 8, 6
#: Files larger than this are not decoded for that test (a scan of 20 MB takes 0.2 s).
MIRROR_MAX_BYTES = 8 << 20
#: Without the pictures' word, the note on names that say what a picture is (en/x.png beside
#: de/x.png) is shown only when the label check finds at least this share of the labels
#: disagreeing with the images: the folders of real classes named alike inside (letters in
#: one file a font, people in one file a pose) are learnt, and need no caveat.
MIRRORED_NOISE = 0.25


@dataclasses.dataclass(frozen=True)
class LabelCaveat:
    """What the label findings may not mean (``text``), and whether the
    pictures confirm it (``seen``) or it holds only if the labels look
    widely wrong (MIRRORED_NOISE)."""
    text: str
    seen: bool

    def applies(self, noise_rate: float | None) -> bool:
        return self.seen or (noise_rate is not None and noise_rate >= MIRRORED_NOISE)


def _thumbnail(path: str) -> np.ndarray | None:
    """A 32x32 grayscale view, zero-mean and unit-norm; None when unreadable or large."""
    from ..engine.decode import DecodeError, DecodeLimits, decode_image
    try:
        if os.path.getsize(path) > MIRROR_MAX_BYTES:
            return None
        with open(path, "rb") as f:
            data = f.read(MIRROR_MAX_BYTES + 1)
        img = decode_image(data, 32, DecodeLimits(max_bytes=MIRROR_MAX_BYTES))
    except (OSError, DecodeError):
        return None
    a = np.asarray(img.convert("L").resize((32, 32), Image.BILINEAR), np.float32).ravel()
    a = a - a.mean()
    norm = float(np.linalg.norm(a))
    return a / norm if norm > 0 else None


def _twins_look_alike(groups: list[list[str]], folder_of: dict[str, list[str]]) -> bool:
    """Whether same-named images (``groups``: paths) are each other's nearest
    picture: for up to MIRROR_SAMPLES groups (evenly spaced), the second is
    closer to the first than MIRROR_RIVALS others of its folder (``folder_of``:
    a path's folder's paths), in MIRROR_WINS of MIRROR_SAMPLES or more."""
    rng = np.random.default_rng(0)
    thumbnail = functools.cache(_thumbnail)          # each file decoded once
    picked = groups[:: max(1, len(groups) // MIRROR_SAMPLES)][:MIRROR_SAMPLES]
    wins = judged = 0
    for group in picked:
        first, twin = thumbnail(group[0]), thumbnail(group[1])
        if first is None or twin is None:
            continue
        others = [o for o in folder_of[group[1]] if o != group[1]]
        rivals = [thumbnail(o) for o in rng.choice(others, min(MIRROR_RIVALS, len(others)), replace=False)]
        rivals = [r for r in rivals if r is not None]
        if not rivals:
            continue
        judged += 1
        wins += float(first @ twin) > max(float(first @ r) for r in rivals)
    return judged >= max(1, len(picked) // 2) and wins >= MIRROR_WINS * judged / MIRROR_SAMPLES


def mirrored_folders(records, root: Path) -> LabelCaveat | None:
    """A caveat when the class folders may be versions of one set of images
    (a manual's screenshots in one folder per language, a theme's light and
    dark folders, thumbnails beside originals) rather than classes: at least
    MIRRORED_SHARE of the images share their path inside their class folder
    with an image of another class. Seen when same-named images are each
    other's nearest pictures; else, when the names say what the picture is
    (not a counter: ``configure-proxy.png``, not ``0001.png``) and outnumber
    the folders, one for the label check to confirm (``LabelCaveat.applies``);
    else None. Read as classes, marble's manual (one folder per language)
    made "42.9% of the labels look wrong"; the folders stay labels (they may
    be classes), and the caveat says what the label findings then mean."""
    by_place: dict[tuple[str, str], list] = {}
    folder_images: dict[tuple[str, str], list[str]] = {}
    prefix = "" if str(root) in ("", ".") else os.path.join(str(root), "")     # "audit ." lists "en/x.png"
    for r in records:          # string slicing, not Path: a million records in about a second
        if not r.path.startswith(prefix):
            continue
        parts = r.path[len(prefix):].split(os.sep, 2 if r.split else 1)
        if len(parts) < (3 if r.split else 2):
            continue
        by_place.setdefault((r.split, parts[-1]), []).append(r)
        folder_images.setdefault((r.split, r.label), []).append(r.path)
    shared_places = {place: rs for place, rs in by_place.items() if len({r.label for r in rs}) > 1}
    groups, names = list(shared_places.values()), set(shared_places)
    shared = sum(len(rs) for rs in groups)
    if not groups or shared < MIRRORED_SHARE * len(records):
        return None
    # Counters: the names that remain once the digits go ("image_#.jpg") are few. Views named
    # alike in many class folders (front.jpg, back.jpg in each product's) are fewer than the
    # folders: versions of one set are few folders of many names.
    said = (len({re.sub(r"\d+", "#", name) for _, name in names}) >= 0.25 * len(names)
            and len(names) >= len({(r.split, r.label) for rs in groups for r in rs}))
    paths = [[r.path for r in rs] for rs in sorted(groups, key=lambda rs: rs[0].path)]
    owner = {r.path: folder_images[(r.split, r.label)] for rs in groups for r in rs}
    seen = _twins_look_alike(paths, owner)
    if not (seen or said):
        return None
    example = min(groups, key=lambda rs: rs[0].path)[:2]
    shown = " and ".join(os.path.relpath(r.path, root) for r in example)
    return LabelCaveat(
        f"{shared} of the {len(records)} images share their path inside their class folder with an image in "
        f"another class folder (e.g. {shown}): if the folders are versions of one set of images (languages, "
        "themes, sizes, formats) rather than classes, the label findings (suspects, the share that look wrong, "
        "label conflicts) judge those versions, not labels; for labels, give a CSV manifest path,label[,split]",
        seen)


def _text(value) -> str:
    """A manifest cell as text; only a missing value (None, or a float NaN
    as pandas writes one) is empty: an integer label 0 is class "0", not
    unlabelled."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def _from_table(rows: list[dict], base: Path, name: str) -> list[AuditRecord]:
    if rows and "path" not in rows[0]:
        raise ValueError(f"{name}: the manifest needs a 'path' column (and optionally label, split)")
    out = []
    for row in rows:
        raw = _text(row["path"])
        p = Path(raw)
        # A URL (Path would fold its "//") or an empty cell (Path: the folder) is kept as
        # written, to fail alone saying what it is.
        where = raw if "://" in raw or not raw else str(p if p.is_absolute() else base / p)
        out.append(AuditRecord(where, _text(row.get("label")), _text(row.get("split")).lower()))
    return out


def load_audit_source(source: str, skipped: Counter | None = None,
                      notes: list[str] | None = None, caveats: list | None = None) -> list[AuditRecord]:
    """Records sorted by path. ValueError when nothing is found. Files in
    image formats that are not decoded are counted by suffix into ``skipped``;
    why folders were not read as classes is appended to ``notes``; what the
    label findings may not mean (a ``LabelCaveat``: ``mirrored_folders``)
    to ``caveats``."""
    p = Path(source)
    if p.is_file() and p.suffix.lower() == ".csv":
        records = _from_table(read_csv_rows(p), p.parent, source)
    elif p.is_file() and p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq
        records = _from_table(pq.read_table(p).to_pylist(), p.parent, source)
    elif p.is_dir():
        dirs = _class_folders(p)
        sized = size_folders(dirs)
        if dirs and not sized:
            records = [AuditRecord(str(r.path), r.label, r.split) for r in load_labelled_source(p, skipped)]
            if caveats is not None:             # a look at the pictures: only for an audit that reports it
                caveat = mirrored_folders(records, p)
                if caveat:
                    caveats.append(caveat)
        elif sized:
            # Renditions: unlabelled, each under its split where a train/val/test level holds them.
            splits = [d for d in folders(p) if d.name.lower() in SPLIT_NAMES] if dirs[0].parent != p else []
            records = ([AuditRecord(str(f), "", d.name.lower()) for d in splits for f in images_under(d, skipped)]
                       if splits else [AuditRecord(str(f)) for f in images_under(p, skipped)])
            if notes is not None:
                notes.append(f"the folders in {source} are named as image sizes ({', '.join(sized[:3])}"
                             f"{', ...' if len(sized) > 3 else ''}): read as renditions of one set of images, not "
                             "classes, so the images are audited unlabelled"
                             + (" (their train/val/test splits kept)" if splits else "")
                             + "; for labels, give a CSV manifest path,label[,split]")
        else:
            records = [AuditRecord(str(f)) for f in images_under(p, skipped)]
            # From the listing, not a second walk of every folder.
            inside = [Path(r.path).relative_to(p).parts for r in records]
            loose = sum(1 for parts in inside if len(parts) == 1)
            holding = sorted({parts[0] for parts in inside if len(parts) > 1})
            if notes is not None and loose and holding:
                named = ", ".join(holding[:3]) + (", ..." if len(holding) > 3 else "")
                notes.append(f"{loose} image{'s lie' if loose > 1 else ' lies'} loose in {source} beside "
                             f"{len(holding)} folder{'s' if len(holding) > 1 else ''} of images ({named}): "
                             "the folders are not read as classes and "
                             "every image is audited unlabelled; for labels, move the loose images into a "
                             "folder of their own or give a CSV manifest path,label[,split]")
    else:
        matches = [Path(m) for m in sorted(glob.glob(source, recursive=True)) if Path(m).is_file()]
        records = [AuditRecord(str(m.resolve())) for m in matches if is_image_file(m) and utf8_name(m)]
        if skipped is not None:
            skipped.update(m.suffix.lower() for m in matches if m.suffix.lower() in UNREAD_IMAGE_SUFFIXES)
            skipped[BAD_NAME] += sum(is_image_file(m) and not utf8_name(m) for m in matches)
    if not records and not p.exists() and not glob.has_magic(source):
        raise ValueError(f"{source}: no such file or folder")
    if not records:
        note = skipped_note(skipped) if skipped else None
        raise ValueError(f"{source}: no images found (a folder, a .csv/.parquet manifest or a glob)"
                         + (f"; {note}" if note else ""))
    return sorted(records, key=lambda r: r.path)
