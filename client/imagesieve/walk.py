"""Walking a folder as a dataset's owner means it: folders linked in are
followed (a class folder is often a link to where its images live; a
plain ``Path.rglob`` left them out without a word), each real folder once
(a link to a folder above it would be a loop), never into the kernel's
folders (/proc, /sys, /dev: their links lead all over the machine, and a
link to /proc in a folder once listed 1,357 images of other processes'
folders and crashed the CLI on one it could not stat)."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterator

KERNEL_FOLDERS = ("/proc", "/sys", "/dev")


def files_under(root: Path, unwalked: list[tuple[str, str]] | None = None) -> Iterator[tuple[Path, bool]]:
    """(path, whether it is a regular file) for every name under ``root``
    that is not a folder (files, pipes, devices, dangling links, names that
    cannot be looked at), through linked folders too, each real folder
    visited once; depth first, folders in name order. Never raises for one
    name. Its own stack, not ``os.walk``'s recursion (Python 3.11's): a
    folder 1,200 deep raised RecursionError. A folder that cannot be opened
    (no permission, a path longer than the system allows) is appended to
    ``unwalked`` as (path, reason): its images must not vanish unsaid."""
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(root)]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:        # gone meanwhile, no permission, a path too long
            if unwalked is not None and e.errno != errno.ENOENT:
                unwalked.append((folder, e.strerror or str(e)))
            continue
        subfolders, links = [], set()
        for entry in entries:
            # The entry's type as the listing gave it: no look at a name unless it is a link.
            if _is(entry.is_dir):               # through a link, as os.walk(followlinks=True)
                subfolders.append(entry.name)
                if _is(entry.is_symlink):
                    links.add(entry.name)
                continue
            yield Path(entry.path), _is(entry.is_file)     # a regular file (through a link too)
        here = os.path.realpath(folder) if links else ""      # a real path costs a look at every level
        followed = sorted(d for d in subfolders if d not in links or _followed(os.path.join(folder, d), here))
        stack.extend(os.path.join(folder, d) for d in reversed(followed))


def _is(test) -> bool:
    """A DirEntry test, False where the name cannot be looked at (a link to
    nothing, no permission)."""
    try:
        return test()
    except OSError:
        return False


def _followed(path: str, here: str) -> bool:
    """Whether the linked sub-folder ``path`` of ``here`` (its real path) is
    walked: yes unless it links to ``here`` or to a folder above it (a
    loop), or into the kernel's folders."""
    target = os.path.realpath(path)
    if any(target == k or target.startswith(k + os.sep) for k in KERNEL_FOLDERS):
        return False
    return not (here == target or here.startswith(target.rstrip(os.sep) + os.sep))
