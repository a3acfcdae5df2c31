"""Walking a folder as a dataset's owner means it: folders linked in are
followed (a class folder is often a link to where its images live; a
plain ``Path.rglob`` left them out without a word), each real folder once
(a link to a folder above it would be a loop)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator


def files_under(root: Path) -> Iterator[Path]:
    """Every name under ``root`` that is not a folder (files, pipes,
    dangling links), through linked folders too, each real folder visited
    once; folders in name order."""
    seen: set[tuple[int, int]] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        try:
            st = os.stat(folder)
        except OSError:             # gone meanwhile, or no permission
            subfolders[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            subfolders[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        # A link up to a folder above (or to this one) is a loop: it would walk
        # the folders beside this one again, under this folder's name.
        here = os.path.realpath(folder)
        subfolders[:] = sorted(d for d in subfolders if not _above(os.path.join(folder, d), here))
        for name in names:
            yield Path(folder) / name


def _above(path: str, here: str) -> bool:
    """Whether ``path`` is a link to ``here`` or to a folder above it."""
    if not os.path.islink(path):
        return False
    target = os.path.realpath(path)
    return here == target or here.startswith(target.rstrip(os.sep) + os.sep)
