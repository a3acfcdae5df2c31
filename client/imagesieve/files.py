"""Reading a file named as an image, as both the client and the audit must:
opened without blocking and judged by what was opened, not by its name (a
FIFO or a device named as an image, or a file swapped for one between a
look and an open, blocked the read for ever), and read no further than a
limit (a file may grow while it is read)."""
from __future__ import annotations

import errno
import os
import stat


class UnreadFile(OSError):
    """A file refused before or while reading: ``errno`` EINVAL (not a
    regular file) or EFBIG (more than the limit); ``stat``: what was
    opened, ``size``: its bytes as far as they were counted."""

    def __init__(self, code: int, message: str, st: os.stat_result, size: int):
        super().__init__(code, message)
        self.stat, self.size = st, size


def read_regular(path: str, max_bytes: int | None = None) -> tuple[bytes, os.stat_result]:
    """(the bytes, the stat of what was opened) of a regular file of at most
    ``max_bytes`` (None: any size). UnreadFile for a file that is not
    regular or larger (read no further than the limit and a byte); other
    OSErrors as the system gives them."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnreadFile(errno.EINVAL, "not a regular file", st, 0)
        if max_bytes is not None and st.st_size > max_bytes:
            raise UnreadFile(errno.EFBIG, "larger than the limit", st, st.st_size)
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:         # grown since its size was read
        raise UnreadFile(errno.EFBIG, "larger than the limit", st, len(data))
    return data, st
