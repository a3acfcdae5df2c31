"""Progress of long jobs on stderr: tqdm's bar on a terminal, plain lines
in a log (tqdm rewrites its line with carriage returns, which a log file or
CI output keeps as one unreadable line)."""
from __future__ import annotations

import sys
import time


ETA_AFTER_S = 3.0        # no ETA before this much time: the first images include warm-up
RATE_AFTER_S = 1.0       # no rate before this much time: a stage done in a millisecond read "915913.0 steps/s"
LOG_EVERY_S = 10.0       # a stream that is not a terminal (a log) gets a line this often


class Progress:
    """``with Progress(total, "embedding") as p: p.update(ok=True)``: on a
    terminal a tqdm bar (refreshed at most every ``every_s``, failures in
    its postfix); elsewhere (a log file, CI) a line such as ``embedding
    120/500 (45.3 img/s, ETA 8s), 1 failed`` at most every LOG_EVERY_S, and
    no carriage returns."""

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
        self._bar = None
        if self._tty:
            from tqdm import tqdm        # only where a bar is drawn: `imagesieve health` never loads it
            self._bar = tqdm(total=total, desc=label, unit=unit, file=self.stream, mininterval=every_s,
                             dynamic_ncols=True, smoothing=0.1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
        else:
            self._print(final=True)

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1, ok: bool = True) -> None:
        self.done += n
        self.failed += 0 if ok else n
        if self._bar is not None:
            if not ok:
                self._bar.set_postfix_str(f"{self.failed} failed", refresh=False)
            self._bar.update(n)
            return
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
        elapsed = time.perf_counter() - self.start
        pace = f"{self.rate:.1f} {self.unit}/s" if elapsed >= RATE_AFTER_S else f"{elapsed:.1f} s"
        return f"{self.label} {self.done}{of} ({pace}{eta}){failed}"

    def _print(self, final: bool = False) -> None:
        line = self.line()
        if final and line == self._last_line:
            return
        self._last_line = line
        print(line, file=self.stream, flush=True)


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
