"""A small progress line for long jobs (stderr; no dependency)."""
from __future__ import annotations

import sys
import time


ETA_AFTER_S = 3.0        # no ETA before this much time: the first images include warm-up
LOG_EVERY_S = 10.0       # a stream that is not a terminal (a log) gets a line this often


class Progress:
    """``with Progress(total, "embedding") as p: p.update(ok=True)`` prints
    ``embedding 120/500 (45.3 img/s, ETA 8s), 1 failed``: on a terminal one
    line rewritten at most every ``every_s``; elsewhere (a log file, CI) a
    new line at most every LOG_EVERY_S, and no carriage returns."""

    def __init__(self, total: int | None, label: str, unit: str = "img", every_s: float = 0.5,
                 stream=None):
        self.total, self.label, self.unit = total, label, unit
        self.stream = stream or sys.stderr       # looked up now: sys.stderr may have been replaced
        self.done = self.failed = 0
        self.start = self._last = time.perf_counter()
        isatty = getattr(self.stream, "isatty", None)
        self._tty = bool(isatty()) if callable(isatty) else False
        self.every_s = every_s if self._tty else max(every_s, LOG_EVERY_S)
        self._last_line = ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._print(final=True)

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1, ok: bool = True) -> None:
        self.done += n
        self.failed += 0 if ok else n
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            self._print()

    def line(self) -> str:
        of = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and self.rate > 0 and time.perf_counter() - self.start >= ETA_AFTER_S:
            eta = f", ETA {max(0.0, (self.total - self.done) / self.rate):.0f}s"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.label} {self.done}{of} ({self.rate:.1f} {self.unit}/s{eta}){failed}"

    def _print(self, final: bool = False) -> None:
        line = self.line()
        if final and not self._tty and line == self._last_line:
            return
        self._last_line = line
        end = "\n" if final or not self._tty else ""
        prefix = "\r" if self._tty else ""
        print(prefix + line, end=end, file=self.stream, flush=True)


class StageProgress:
    """A ``report(stage, done, total, message="")`` callback for long
    analyses: one progress line per stage, the previous one closed when the
    stage changes. Use as a context manager (closes the last line)."""

    def __init__(self, prefix: str = "", unit: str = "steps"):
        self.prefix, self.unit = prefix, unit
        self.stage: str | None = None
        self.bar: Progress | None = None

    def __call__(self, stage: str, done: int, total: int = 0, message: str = "") -> None:
        if stage != self.stage:
            self.close()
            self.stage, self.bar = stage, Progress(total or None, f"{self.prefix}{stage}", unit=self.unit)
        self.bar.update(done - self.bar.done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar, self.stage = None, None

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
