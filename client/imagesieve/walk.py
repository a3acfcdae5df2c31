"""Walking a folder as a dataset's owner means it: folders linked in are
followed (a class folder is often a link to where its images live; a
plain ``Path.rglob`` left them out without a word), each real folder once
(a link to a folder above it would be a loop), never into the kernel's
folders (/proc, /sys, /dev: their links lead all over the machine, and a
link to /proc in a folder once listed 1,357 images of other processes'
folders and crashed the CLI on one it could not stat)."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

KERNEL_FOLDERS = ("/proc", "/sys", "/dev")


def files_under(root: Path) -> Iterator[tuple[Path, bool]]:
    """(path, whether it is a regular file) for every name under ``root``
    that is not a folder (files, pipes, devices, dangling links, names that
    cannot be looked at), through linked folders too, each real folder
    visited once; folders in name order. Never raises for one name."""
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
        here = os.path.realpath(folder)
        subfolders[:] = sorted(d for d in subfolders if _followed(os.path.join(folder, d), here))
        for name in names:
            path = os.path.join(folder, name)
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)
            except OSError:         # a link to nothing, no permission
                regular = False
            yield Path(path), regular


def _followed(path: str, here: str) -> bool:
    """Whether the sub-folder ``path`` of ``here`` (its real path) is walked:
    yes unless it is a link to ``here`` or to a folder above it (a loop), or
    into the kernel's folders."""
    if not os.path.islink(path):
        return True
    target = os.path.realpath(path)
    if any(target == k or target.startswith(k + os.sep) for k in KERNEL_FOLDERS):
        return False
    return not (here == target or here.startswith(target.rstrip(os.sep) + os.sep))
