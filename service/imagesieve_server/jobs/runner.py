"""Run blocking analysis work in a thread and stream its progress to an
asyncio caller. Cancelling the caller (the client cancels the RPC) sets the
``cancelled`` event, which the work checks between steps."""
from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any, AsyncIterator, Callable

from imagesieve.v1 import common_pb2

from ..engine.batcher import QueueFullError


class JobCancelled(Exception):
    pass


class JobsBusy(QueueFullError):
    """Every analysis slot is taken (RESOURCE_EXHAUSTED: retry later)."""


class JobSlots:
    """At most ``limit`` analysis jobs at once, server-wide: each holds a
    core for seconds to minutes, so more would only slow every caller. The
    server sets ``SLOTS.limit`` from ``--max-jobs``."""

    def __init__(self, limit: int):
        self.limit = limit
        self.running = 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self.running >= self.limit:
                raise JobsBusy(f"{self.running} analysis jobs are running, the server's limit (--max-jobs)")
            self.running += 1

    def give_back(self) -> None:
        with self._lock:
            self.running -= 1


SLOTS = JobSlots(os.cpu_count() or 1)


class JobSlot:
    """One of ``SLOTS``, taken on creation (JobsBusy when none is free) and
    given back once its last holder lets go. A job that embeds images first
    takes it before the embedding and hands it to ``run_job``, so the job
    holds exactly one slot from its first embedding to its end::

        with JobSlot() as slot:
            ...embed...
            async for kind, value in run_job(work, slot): ...

    ``run_job`` adds its worker thread as a holder: the slot stays taken
    until both the caller's ``with`` has ended and the work has stopped (a
    cancelled call does not free it while its thread still computes)."""

    def __init__(self):
        SLOTS.take()
        self._holders = 1
        self._lock = threading.Lock()

    def share(self) -> None:
        with self._lock:
            if self._holders == 0:
                raise RuntimeError("this job slot was already given back")
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            last = self._holders == 0
        if last:
            SLOTS.give_back()

    def __enter__(self) -> "JobSlot":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ProgressReporter:
    """Given to the work function: ``report(stage, done, total)``; raises
    JobCancelled once the caller is gone."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, cancelled: threading.Event):
        self._loop, self._queue, self.cancelled = loop, queue, cancelled
        self.start = time.perf_counter()

    def check(self) -> None:
        """Raise JobCancelled once the caller is gone (cheap: for inner loops
        that report nothing, e.g. a CNN's mini-batches)."""
        if self.cancelled.is_set():
            raise JobCancelled("cancelled")

    def report(self, stage: str, done: int, total: int = 0, message: str = "") -> None:
        if self.cancelled.is_set():
            raise JobCancelled(stage)
        elapsed = time.perf_counter() - self.start
        eta = (elapsed / done * (total - done)) if done and total else -1.0
        event = common_pb2.JobProgress(stage=stage, done=done, total=total, elapsed_s=elapsed, eta_s=eta,
                                       message=message)
        _post(self._loop, self._queue, ("progress", event))


def _post(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, item) -> None:
    """Hand an item to the caller's loop; a loop already closed (the caller
    went away) gets nothing."""
    try:
        loop.call_soon_threadsafe(queue.put_nowait, item)
    except RuntimeError:  # event loop is closed
        pass


async def run_job(work: Callable[[ProgressReporter], Any],
                  slot: JobSlot | None = None) -> AsyncIterator[tuple[str, Any]]:
    """Yield ("progress", JobProgress) events, then ("result", value). Exceptions
    of ``work`` propagate; closing the iterator cancels the work. The work
    runs under ``slot`` (one the caller already holds, see JobSlot) or a slot
    of its own: JobsBusy when every slot is taken."""
    if slot is None:
        slot = JobSlot()            # the worker is its only holder
    else:
        slot.share()                # the caller's and the worker's
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()
    reporter = ProgressReporter(loop, queue, cancelled)

    def target():
        try:
            result = work(reporter)
            _post(loop, queue, ("result", result))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            _post(loop, queue, ("error", e))
        finally:
            slot.release()          # when the work stops, not when the caller leaves

    thread = threading.Thread(target=target, name="imagesieve-job", daemon=True)
    try:
        thread.start()
    except BaseException:
        slot.release()
        raise
    try:
        while True:
            kind, value = await queue.get()
            if kind == "error":
                raise value
            yield kind, value
            if kind == "result":
                return
    finally:
        cancelled.set()
