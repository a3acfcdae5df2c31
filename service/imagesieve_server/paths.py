"""Server-side paths: an image may name a file on the server only inside the
configured roots, and only a regular file.

Paths are resolved before checking, so ``..`` and symlinks cannot escape,
and the file actually opened is checked again through its descriptor: a
folder swapped for a symlink between the check and the open (a race anyone
who can write inside a root could run) is refused. Files are opened
non-blocking and checked on the opened descriptor: a FIFO, a device or a
directory is refused without ever blocking a thread (two requests naming a
FIFO used to hang every image RPC)."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .collections.store import quoted

# Client paths quoted in error messages up to this many characters: whole
# for any real path, clipped for a hostile one (forty 200 KB paths made an
# 8 MB answer of item errors).
PATH_CHARS = 256
# Longest server path accepted, in UTF-8 bytes: Linux's PATH_MAX, so no real
# file is refused. Resolving costs Python time per component, and a 48 MB
# request of 3,000,000-part paths held every file thread for 93 s.
PATH_MAX_BYTES = 4096


def quoted_path(path: str) -> str:
    return quoted(path, PATH_CHARS)


class NotRegularFile(OSError):
    """The path names something other than a regular file."""


def check_roots(roots: list[str | os.PathLike]) -> list[Path]:
    """The allowed roots, resolved; ValueError for an empty entry (it would
    mean the working directory) or a folder that does not exist."""
    out = []
    for r in roots:
        if not str(r).strip():
            raise ValueError("an allowed root is empty (it would expose the working directory); "
                             "name each folder explicitly")
        p = Path(r).expanduser().resolve()
        if not p.is_dir():
            raise ValueError(f"allowed root {str(r)!r} is not an existing folder")
        out.append(p)
    return out


class PathPolicy:
    def __init__(self, roots: list[str | os.PathLike] | None = None):
        self.roots = check_roots(roots or [])

    def resolve(self, path: str) -> Path:
        """The real path if it lies inside a root; PermissionError otherwise,
        ValueError for a malformed path (a NUL byte)."""
        if not self.roots:
            raise PermissionError("server paths are disabled (start the server with --allow-root DIR)")
        if "\x00" in path:
            raise ValueError("server_path contains a NUL byte")
        if len(path) > PATH_MAX_BYTES or len(path.encode("utf-8", "surrogatepass")) > PATH_MAX_BYTES:
            raise ValueError(f"server_path is longer than {PATH_MAX_BYTES} bytes (PATH_MAX): {quoted_path(path)}")
        try:
            real = Path(path).resolve()
        except RuntimeError:        # Python 3.11: a symlink loop (3.13 raises OSError ELOOP)
            raise ValueError(f"{quoted_path(path)} is a symlink loop") from None
        except OSError:
            # A link on the way that cannot be read (/proc/1/fd/0): its error named the target
            # outside the roots, and told "there but denied" from "not there" (a twenty-sixth probe).
            raise PermissionError(f"{quoted_path(path)} cannot be resolved inside the server's allowed "
                                  "roots") from None
        self._check_inside(real, path)
        return real

    def _check_inside(self, real: Path, path: str) -> None:
        if not any(real.is_relative_to(root) for root in self.roots):
            raise PermissionError(f"{quoted_path(path)} is outside the server's allowed roots")

    def _check_opened(self, fd: int, real: Path, path: str) -> None:
        """The descriptor's own file lies inside a root: the kernel's name
        for it (``/proc/self/fd``), else the same inode as the checked path."""
        try:
            opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            st, now = os.fstat(fd), os.stat(real, follow_symlinks=False)
            if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino):
                raise PermissionError(f"{quoted_path(path)} changed while it was opened") from None
            return
        self._check_inside(opened, path)

    def open_regular(self, path: str) -> tuple[int, os.stat_result]:
        """(file descriptor, its stat) of a regular file inside a root.
        Opened with O_NONBLOCK so a FIFO cannot block; NotRegularFile for
        anything but a regular file. The caller closes the descriptor."""
        if path.endswith(("/", "/.")):        # resolve() would drop it and open the file a folder's name names
            raise NotRegularFile(f"{quoted_path(path)} names a folder, not a regular file")
        real = self.resolve(path)
        # O_NOFOLLOW: the resolved name's last part must not have become a link since.
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
                         | getattr(os, "O_NOCTTY", 0))
        except OSError as e:
            if e.errno == errno.ENXIO:            # a UNIX socket: open says "no such device or address"
                raise NotRegularFile(f"{quoted_path(path)} is not a regular file") from None
            if e.errno == errno.ENAMETOOLONG:
                raise ValueError(f"{quoted_path(path)} has a name longer than the file system allows") from None
            raise
        try:
            self._check_opened(fd, real, path)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFile(f"{quoted_path(path)} is not a regular file")
            return fd, st
        except BaseException:
            os.close(fd)
            raise


def read_fd(fd: int, limit: int) -> bytes:
    """Read up to ``limit`` bytes from ``fd``, then close it."""
    try:
        chunks, left = [], limit
        while left > 0:
            b = os.read(fd, min(left, 1 << 24))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)
