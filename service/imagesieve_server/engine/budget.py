"""One memory budget for everything a server holds per image in flight.

Request bytes, file bytes read for ``server_path`` and decoded rasters are
charged here *before* they are allocated (sizes come from the message, the
file's ``fstat`` and the image header). Beyond the budget a caller waits a
little (a bounded wait: a decoder thread waiting on bytes that wait for a
decoder ends in a refusal, not a deadlock) and then gets ``BudgetExceeded``:
RESOURCE_EXHAUSTED with a retry hint. Without it, one read-only client
naming a large file 256 times raised the server's memory by 2 GB.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time

from .decode import DecodeError

RETRY_HINT = "retry with backoff"
# Bytes merely held (requests, files read, waiting for a decoder) may take
# at most this share of the budget; the rest is kept for decoding. Without
# it, held bytes could fill the budget while the decodes that would free
# them wait for it.
HELD_SHARE = 0.5


class BudgetExceeded(DecodeError):
    def __init__(self, message: str):
        super().__init__(message, "RESOURCE_EXHAUSTED")


def default_budget_mb() -> int:
    """A quarter of the host's memory, at most 4 GiB (at least 256 MiB)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 4 << 30
    return int(max(256, min(4096, total / 4 / (1 << 20))))


class MemoryBudget:
    """Bytes in flight, thread-safe. ``limit_bytes`` <= 0: unlimited."""

    def __init__(self, limit_bytes: int):
        self.limit = int(limit_bytes)
        self.used = 0
        self.held = 0            # of ``used``: bytes waiting for a decoder
        self.peak = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)

    def try_reserve(self, n: int, held: bool = False) -> bool:
        """Reserve ``n`` bytes if they fit; ``held``: bytes that wait for a
        decoder (requests, files), which may use only HELD_SHARE of the budget."""
        n = max(0, int(n))
        with self._lock:
            if self.limit > 0:
                if self.used + n > self.limit:
                    return False
                if held and self.held + n > self.limit * HELD_SHARE and self.held > 0:
                    return False
            self.used += n
            if held:
                self.held += n
            self.peak = max(self.peak, self.used)
            return True

    def release(self, n: int, held: bool = False) -> None:
        with self._lock:
            self.used = max(0, self.used - max(0, int(n)))
            if held:
                self.held = max(0, self.held - max(0, int(n)))
            self._freed.notify_all()

    def _refuse(self, n: int, what: str) -> BudgetExceeded:
        with self._lock:
            self.refused += 1
        if self.limit > 0 and n > self.limit:
            return BudgetExceeded(f"{what} needs {n >> 20} MiB, more than the server's whole memory budget "
                                  f"of {self.limit >> 20} MiB (--max-inflight-mb)")
        return BudgetExceeded(f"the server's memory budget ({self.limit >> 20} MiB) is in use; "
                              f"{what} needs {max(1, n >> 20)} MiB more; {RETRY_HINT}")

    def reserve_now(self, n: int, what: str, wait_s: float = 0.0) -> int:
        """Reserve ``n`` bytes, blocking this thread up to ``wait_s`` for
        others to release; BudgetExceeded after that (threads)."""
        n = max(0, int(n))
        if self.limit > 0 and n <= self.limit and wait_s > 0:
            deadline = time.monotonic() + wait_s
            with self._freed:
                while self.used + n > self.limit:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._freed.wait(left)
        if not self.try_reserve(n):
            raise self._refuse(n, what)
        return n

    async def reserve(self, n: int, what: str, wait_s: float = 1.0) -> int:
        """Reserve ``n`` held bytes (release with ``release(n, held=True)``),
        waiting up to ``wait_s`` for others to release; BudgetExceeded after
        that (or at once when ``n`` alone is above the budget)."""
        if self.try_reserve(n, held=True):
            return n
        if self.limit > 0 and n <= self.limit:
            deadline = time.monotonic() + wait_s
            delay = 0.002
            while time.monotonic() < deadline:
                await asyncio.sleep(delay)
                if self.try_reserve(n, held=True):
                    return n
                delay = min(delay * 2, 0.05)
        raise self._refuse(n, what)
