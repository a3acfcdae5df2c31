"""Process memory for long batch jobs: the peak so far, and a glibc setting
that lets each stage's freed temporaries go back to the operating system.

Why: glibc raises its mmap threshold every time a large block is freed
(up to 32 MiB), so after the first big temporary the next ones come from
the heap, where free space is reused but rarely returned; the resident size
then carries every stage's high-water mark. Fixing the mmap and trim
thresholds at 128 KiB (their starting values) keeps large temporaries in
their own mappings, unmapped when freed: the audit's peak memory then
follows the vectors it holds (bench/audit.py measures it).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import resource

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB (Linux ru_maxrss is KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def return_freed_memory_to_os(threshold_bytes: int = 128 * 1024) -> bool:
    """Fix glibc's mmap and trim thresholds (see the module docstring).
    True where applied; False on a C library without ``mallopt`` (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes)) and bool(mallopt(M_TRIM_THRESHOLD, threshold_bytes))
