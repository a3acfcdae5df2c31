"""The audit report as a small offline web app: ``report.html`` (one page,
its script and styles inline) plus ``report_data/`` beside it: every list a
person may want to go through (each check's flagged images or pairs, the
duplicate groups, the label suspects) cut into pages of PAGE_ROWS rows, one
``.js`` file a page, and thumbnails of the images those lists show.

Opened from disk, no server: a browser refuses ``fetch`` of ``file://``
URLs but runs ``<script>`` files beside the page, so each page file calls
``reportPage(list, page, rows)``. The app loads one page to show a list and
all of a list's pages only when a filter or a search asks for them;
thumbnails load lazily as they scroll into view. Lists are written worst
first (identical bytes before near copies, then by evidence), so the first
page is what to look at.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from imagesieve.files import read_regular

from ..checks.base import FlaggedPairs
from ..checks.duplicates import near_miss_pairs
from ..engine.decode import DecodeLimits, decode_image
from ..engine.preflight import LOSSY_HEAD, lossy
from .embed import MAX_FILE_MB
from .analyse import AuditResults

DATA = "report_data"
PAGE_ROWS = 50
THUMB = 112
#: The action a report suggests for each list's findings (the fix list,
#: ``commands.fix``): drop the copies of a pair or a group but one (the one
#: to keep chosen by one rule everywhere: a training image first, a test
#: image last), relabel to the suggested class; any other list: review.
ACTIONS = {"duplicates.exact": "drop_copy", "duplicates.near": "drop_copy", "leakage.cross_split": "drop_copy",
           "groups": "drop_rest", "label_issues.suspects": "relabel"}
#: Thumbnails written (the images of the lists' first rows first); the
#: images of rows beyond show their own file (``file://``), lazily.
MAX_THUMBS = 20_000


class Lists:
    """The report's lists, written page by page as they are added; the
    images they show collected for thumbnails, in the order first shown."""

    def __init__(self, root: Path, r: AuditResults):
        self.root, self.r = root, r
        self.meta: dict[str, dict] = {}
        self.shown: dict[int, bool] = {}        # image position -> gets a thumbnail, in the order first shown
        self.files: dict[int, tuple[int, float, int]] = {}    # image position -> _file's, read once

    def image(self, i: int, thumb: bool = True) -> dict:
        """An image as a row shows it: position, path, label, split, its
        thumbnail's URL ("" beyond MAX_THUMBS, or without ``thumb``: the app
        shows the file), and what the fix list's rule for the copy to keep
        weighs (the report's ``better``): its pixels (as stored; 0 unknown),
        its file's bytes (-1: unreadable now), modification time (Unix
        seconds, 0 unknown) and whether its format is lossy (1, 0)."""
        thumb = thumb and self.shown.setdefault(i, len(self.shown) < MAX_THUMBS)
        # Absolute: a fix list exported from the page must name the files from any folder.
        path = os.path.abspath(self.r.paths[i])
        size, mtime, lossy = self._file(i, path)
        return {"i": i, "p": path, "l": self.r.labels[i], "s": self.r.splits[i],
                "t": f"{DATA}/{_thumb_name(i)}" if thumb else "", "px": self._pixels(i), "b": size,
                "m": mtime, "z": lossy}

    def _pixels(self, i: int) -> int:
        sizes = self.r.sizes
        return 0 if sizes is None else int(sizes[i][0]) * int(sizes[i][1])

    def _file(self, i: int, path: str) -> tuple[int, float, int]:
        """(bytes, modification time, lossy) of an image's file; (-1, 0, 0)
        unreadable or not a regular file (opened without blocking: a FIFO
        the audit failed on must not hold the report)."""
        if i not in self.files:
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
                with os.fdopen(fd, "rb") as f:
                    st = os.fstat(f.fileno())
                    if not stat.S_ISREG(st.st_mode):
                        raise OSError("not a regular file")
                    head = f.read(32)
                    if head[:4] == b"RIFF":                 # a WebP's image chunk may follow others
                        head += f.read(LOSSY_HEAD - len(head))
                    self.files[i] = (st.st_size, round(st.st_mtime, 3), int(lossy(head)))
            except OSError:
                self.files[i] = (-1, 0.0, 0)
        return self.files[i]

    def add(self, name: str, title: str, rows: Iterable[dict], count: int, kind: str, **meta) -> None:
        """Write ``rows`` (``count`` of them) as pages of list ``name``;
        ``kind``: "images", "pairs" or "groups" (how the app draws a row)."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        page: list[dict] = []
        pages = 0
        labels, splits = set(), set()
        for row in rows:
            for im in _images_of(row):
                labels.add(im["l"])
                splits.add(im["s"])
            page.append(row)
            if len(page) == PAGE_ROWS:
                self._write(folder, name, pages, page)
                pages, page = pages + 1, []
        if page or not pages:
            self._write(folder, name, pages, page)
            pages += 1
        self.meta[name] = {"title": title, "count": count, "pages": pages, "kind": kind,
                           "action": ACTIONS.get(name, "review"),
                           "labels": sorted(x for x in labels if x), "splits": sorted(x for x in splits if x), **meta}

    def _write(self, folder: Path, name: str, k: int, rows: list[dict]) -> None:
        # "<" escaped: a path holding "</script>" cannot end anything early
        body = json.dumps(rows, separators=(",", ":"), default=_plain).replace("<", "\\u003c")
        (folder / f"{k}.js").write_text(f"reportPage({json.dumps(name)},{k},{body});\n")


def _images_of(row: dict) -> list[dict]:
    return row.get("m") or [row[k] for k in ("a", "b", "im") if k in row]


def _plain(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


def _thumb_name(i: int) -> str:
    return f"thumbs/{i // 1000:04d}/{i}.jpg"


def thumb_limits(width: int, height: int) -> DecodeLimits:
    """A thumbnail's decode is bounded as the audit's is by default, or by
    the size the audit read the file at where that is larger (a user may
    have raised --max-pixels for it): a file swapped for a decompression
    bomb after the audit is refused, not decoded unbounded. Not the file's
    own size alone: the bound also caps a TIFF's tile, and a 200x150 TIFF in
    one 256x256 tile was refused."""
    pixels = max(int(width) * int(height), DecodeLimits.max_pixels)
    return DecodeLimits(max_bytes=MAX_FILE_MB << 20, max_pixels=pixels,
                        max_raster_bytes=max(DecodeLimits.max_raster_bytes, 4 * pixels))


def _write_thumb(path: str, dest: Path, limits: DecodeLimits) -> bool:
    """A thumbnail of the picture as the audit compared it: decoded as the
    audit decodes (turned as displayed, transparency composited, 16-bit
    levels mapped, drafted or read in bands), then reduced. Reduced first
    (as before 2026-12-07), a file showed the colour it keeps under its
    transparent pixels and a 16-bit scan came out white; palette and 1-bit
    images reduce by nearest neighbour, and Pillow cannot reduce I;16."""
    try:
        data, _ = read_regular(path, limits.max_bytes)   # a FIFO named in a manifest must not block
        im = decode_image(data, 2 * THUMB, limits)
        im.thumbnail((THUMB, THUMB))
        dest.parent.mkdir(parents=True, exist_ok=True)
        im.save(dest, format="JPEG", quality=80)
        return True
    except Exception:  # noqa: BLE001 - an unreadable image shows a grey tile; the report still renders
        return False


def _pair_rows(lists: Lists, f: FlaggedPairs) -> Iterator[dict]:
    names = list(f.evidence)
    for k in range(f.count):
        yield {"a": lists.image(int(f.a[k])), "b": lists.image(int(f.b[k])), "v": float(f.scores[k]),
               "e": {n: f.evidence[n][k].item() for n in names}}


def _image_rows(lists: Lists, f) -> Iterator[dict]:
    names = list(f.evidence)
    for k, (i, v) in enumerate(zip(f.positions.tolist(), f.scores.tolist())):
        row = {"im": lists.image(i), "v": float(v)}
        if names:
            row["e"] = {n: f.evidence[n][k] for n in names}      # numpy scalars: _plain, when written
        yield row


def _group_rows(lists: Lists, d, ok_index: np.ndarray) -> tuple[Iterator[dict], int]:
    """Duplicate groups, those of identical files first, then by their
    lowest internal cosine (most alike first); every member listed."""
    exact_members = set(np.r_[d.a[d.exact], d.b[d.exact]].tolist())
    order = sorted(range(len(d.groups)), key=lambda g: (not all(m in exact_members for m in d.groups[g].tolist()),
                                                         -float(d.group_min_cosine[g])))

    def rows():
        for g in order:
            members = d.groups[g].tolist()
            yield {"m": [lists.image(int(ok_index[m])) for m in members], "v": float(d.group_min_cosine[g]),
                   "n": len(members)}
    return rows(), len(order)


def class_table(r: AuditResults) -> list[dict]:
    """Per class: images per split, label suspects, images in a duplicate
    pair, outliers."""
    n = len(r.paths)
    in_pair = np.zeros(n, bool)
    if r.duplicates is not None and len(r.duplicates.a):
        in_pair[r.ok_index[np.r_[r.duplicates.a, r.duplicates.b]]] = True
    suspect = np.zeros(n, bool)
    if r.label_scores is not None:
        suspect[r.ok_index[r.label_scores.suspects]] = True
    outlier = np.zeros(n, bool)
    if "outliers" in r.checks:
        outlier[r.checks["outliers"].issues["isolated"].positions] = True
    rows: dict[str, dict] = {}
    for i in np.flatnonzero(r.ok).tolist():
        label = r.labels[i] or "(unlabelled)"
        row = rows.setdefault(label, {"label": label, "splits": {}, "suspects": 0, "duplicates": 0, "outliers": 0})
        split = r.splits[i] or "all"
        row["splits"][split] = row["splits"].get(split, 0) + 1
        row["suspects"] += int(suspect[i])
        row["duplicates"] += int(in_pair[i])
        row["outliers"] += int(outlier[i])
    return sorted(rows.values(), key=lambda x: x["label"])


def confusion(r: AuditResults, top: int = 12) -> dict | None:
    """The estimated joint of given and true labels (the label scores'
    calibrated confident joint) for the ``top`` classes with the most
    suspected noise: {"classes", "counts" [given][true]}."""
    if r.label_scores is None:
        return None
    joint = np.asarray(r.label_scores.joint, np.float64)
    off = joint - np.diag(np.diag(joint))
    keep = np.argsort(-(off.sum(axis=0) + off.sum(axis=1)), kind="stable")[:top]
    keep = np.sort(keep)
    return {"classes": [r.class_names[k] for k in keep.tolist()],
            "counts": np.round(joint[np.ix_(keep, keep)], 1).tolist()}


def write_data(r: AuditResults, out: Path, workers: int = 0) -> dict:
    """Write ``out/report_data/`` (list pages and thumbnails) and return the
    lists' metadata for the page: {list name: {title, count, pages, kind,
    labels, splits, ...}} in the order the page shows them."""
    root = out / DATA
    if root.exists():
        shutil.rmtree(root)               # pages of an earlier run would outlive their list
    root.mkdir(parents=True)
    lists = Lists(root, r)
    for name, c in r.checks.items():
        for kind, f in c.issues.items():
            pairs = isinstance(f, FlaggedPairs)
            rows = _pair_rows(lists, f) if pairs else _image_rows(lists, f)
            lists.add(f"{name}.{kind}", f"{c.title}: {f.description}", rows, f.count, "pairs" if pairs else "images",
                      check=name, unit=f.unit, reason=f.reason)
    if r.duplicates is not None:
        rows, count = _group_rows(lists, r.duplicates, r.ok_index)
        lists.add("groups", "Duplicate groups", rows, count, "groups", check="duplicates",
                  unit="lowest cosine in the group", reason=r.duplicates.threshold_reason)
        missed = near_miss_pairs(r.duplicates, r.ok_index)
        if missed is not None:
            lists.add("near_misses", f"Near misses: {missed.description}", _pair_rows(lists, missed), missed.count,
                      "pairs", check="duplicates", unit=missed.unit, reason=missed.reason)
    failed = [i for i, e in enumerate(r.errors) if e]
    if failed:
        # No thumbnail of its own (it could not be decoded; one may be a bomb): the page shows the file.
        rows = ({"im": lists.image(i, thumb=False), "v": 0.0, "e": {"error": r.errors[i]}} for i in failed)
        lists.add("failed", "Images that could not be read or decoded", rows, len(failed), "images",
                  unit="", reason="each file's own error; the rest of the audit went on without it")
    _write_thumbs(lists, root, workers)
    return lists.meta


def _write_thumbs(lists: Lists, root: Path, workers: int) -> None:
    """Thumbnails of the first MAX_THUMBS images the lists show (an image
    that cannot be read gets none: the app shows a grey tile)."""
    wanted = [i for i, thumb in lists.shown.items() if thumb]
    sizes = lists.r.sizes

    def write(i: int) -> bool:
        limits = thumb_limits(*sizes[i]) if sizes is not None else thumb_limits(0, 0)
        return _write_thumb(lists.r.paths[i], root / _thumb_name(i), limits)
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(write, wanted))
