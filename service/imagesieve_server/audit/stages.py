"""One record of the audit's stages: the seconds each took, the peak resident
memory during it and what stayed resident after it (freed heap trimmed), in
order. The command's stages (listing, model load, embedding, loading the
vectors) and the analyses' write to the same record; report.json carries it."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

from .memory import PeakRssSince, current_rss_mb, trim_free_heap


class StageLog:
    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}   # MiB, sampled during the stage
        self.rss_mb: dict[str, float] = {}        # MiB, after it

    @contextlib.contextmanager
    def stage(self, name: str, announce: bool = False) -> Iterator[None]:
        """Time and measure the ``with`` block as stage ``name`` (recorded
        also when it raises); ``announce`` prints "name ..." first."""
        if announce:
            print(f"{name} ...", flush=True)
        started, peak = time.perf_counter(), PeakRssSince()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 2)
            self.peak_rss_mb[name] = peak.stop()
            trim_free_heap()            # the next stage starts from what is really held
            self.rss_mb[name] = current_rss_mb()
