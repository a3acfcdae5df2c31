"""Process memory for long batch jobs: the peak so far (and per stage), and
glibc settings that let each stage's freed temporaries go back to the
operating system.

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
import functools
import resource
import threading

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB (Linux ru_maxrss is KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class PeakRssSince:
    """Peak resident memory from construction until ``stop()``, MiB, sampled
    every ``interval_s`` by a daemon thread (so a spike shorter than that can
    be missed). Sampling, not the kernel's high-water mark: resetting that
    (``/proc/self/clear_refs`` 5) also erases the lifetime peak that
    ``peak_rss_mb`` and a parent's ``wait4`` report, which was tried and
    seen here (the test checks the lifetime peak survives)."""

    def __init__(self, interval_s: float = 0.02):
        self._peak = current_rss_mb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval_s,), name="peak-rss", daemon=True)
        self._thread.start()

    def _sample(self, interval_s: float) -> None:
        while not self._done.wait(interval_s):
            self._peak = max(self._peak, current_rss_mb())

    def stop(self) -> float:
        """End sampling; the peak seen, MiB."""
        self._done.set()
        self._thread.join()
        return max(self._peak, current_rss_mb())


def current_rss_mb() -> float:
    """This process's resident memory now, MiB (Linux /proc; 0.0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return round(resident_pages * resource.getpagesize() / 2**20, 1)


@functools.cache
def _libc():
    # Cached: find_library runs `ldconfig -p` in a child process each call.
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None


def trim_free_heap() -> bool:
    """Give the free pages of every malloc arena back to the OS (glibc's
    ``malloc_trim(0)``). Each decoding thread has its own arena, and their
    free space stayed resident: trimming after 10,000 embedded images took
    RSS from 623 to 580 MiB, and trimming every 1,024 images cost no
    measurable speed. True where applied."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True


def return_freed_memory_to_os(threshold_bytes: int = 128 * 1024) -> bool:
    """Fix glibc's mmap and trim thresholds (see the module docstring) and
    trim the free heap now. True where applied; False on a C library without
    ``mallopt`` (musl, macOS)."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    applied = fix_mmap_threshold(threshold_bytes) and bool(mallopt(M_TRIM_THRESHOLD, threshold_bytes))
    return trim_free_heap() and applied


def fix_mmap_threshold(threshold_bytes: int) -> bool:
    """Allocations of ``threshold_bytes`` or more get mappings of their own,
    returned to the OS when freed. glibc's default threshold moves up (to
    32 MiB) each time such a block is freed, after which image rasters and
    request bytes came from the heap and their pages stayed resident after
    use. True where applied."""
    if threshold_bytes < 1:
        raise ValueError(f"threshold_bytes must be >= 1; got {threshold_bytes}")
    mallopt = getattr(_libc(), "mallopt", None)
    return bool(mallopt(M_MMAP_THRESHOLD, int(threshold_bytes))) if mallopt is not None else False


def limit_malloc_arenas(arenas: int) -> bool:
    """Let glibc create at most ``arenas`` malloc arenas (its default: 8 a
    core). A server's many gRPC and decoding threads each got an arena of
    their own, and each arena keeps its own high-water mark resident. Takes
    effect for threads that allocate afterwards: call it before starting
    them. True where applied."""
    if arenas < 1:
        raise ValueError(f"arenas must be >= 1; got {arenas}")
    mallopt = getattr(_libc(), "mallopt", None)
    return bool(mallopt(M_ARENA_MAX, arenas)) if mallopt is not None else False
