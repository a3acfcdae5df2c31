"""Run blocking analysis work in a thread and stream its progress to an
asyncio caller. Cancelling the caller (the client cancels the RPC) sets the
``cancelled`` event, which the work checks between steps."""
from __future__ import annotations

import asyncio
import collections
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


#: How long a client that was refused a job, holding none, is owed a slot: while it is, a
#: freed slot is kept for it (for its retry) instead of going to whoever asks first. One
#: client resubmitting the moment its jobs end held every slot for as long as it liked (a
#: twenty-fifth probe): refused, another client's retries never found one free.
OWED_S = 10.0


class JobSlots:
    """At most ``limit`` analysis jobs at once, server-wide: each holds a
    core for seconds to minutes, so more would only slow every caller. The
    server sets ``SLOTS.limit`` from ``--max-jobs``.

    A job is refused (JobsBusy) rather than queued. Clients refused while
    every slot is in use, holding none, are owed one for OWED_S after their
    last refusal, oldest debt first: a client may take a slot only while
    more are free than clients owed before it (one that is not owed comes
    after every owed one). Clients that give up leave a slot idle for at
    most OWED_S after the last refusal while all were in use (the light
    client asks again for about 8 s). Clients are named by
    ``observability.caller``: a token's name, else an address."""

    def __init__(self, limit: int):
        self.limit = limit
        self.running = 0
        self.held: collections.Counter = collections.Counter()
        self.owed: dict[str, float] = {}      # client -> its last refusal, in order of their first
        self._lock = threading.Lock()

    def take(self, client: str = "") -> None:
        now = time.monotonic()
        with self._lock:
            self.owed = {c: last for c, last in self.owed.items() if now - last < OWED_S and not self.held[c]}
            # In order of debt (a dict keeps its insertion order); one not owed comes after all.
            owed = list(self.owed)
            ahead = owed.index(client) if client in self.owed else len(owed)
            if self.running + ahead >= self.limit:
                # Owed only when every slot is in use: a client refused for a slot kept for
                # another, then gone, would keep the next one idle in turn, and so on (a review:
                # one-shot clients 6 s apart, none served for 100 s).
                # One already owed keeps its place while it still asks.
                if client in self.owed or (self.running >= self.limit and not self.held[client]):
                    self.owed[client] = now
                raise JobsBusy(f"{self.running} of the server's {self.limit} analysis job slots are in use (--max-jobs)"
                               + (f", and {ahead} kept for clients refused before you" if ahead else ""))
            self.running += 1
            self.held[client] += 1
            self.owed.pop(client, None)

    def give_back(self, client: str = "") -> None:
        with self._lock:
            self.running -= 1
            self.held[client] -= 1
            if self.held[client] <= 0:
                del self.held[client]


SLOTS = JobSlots(os.cpu_count() or 1)


class JobSlot:
    """One of ``SLOTS``, taken on creation (JobsBusy when none is free) and
    given back once its holder lets go. A job that embeds images first
    takes it before the embedding and hands it to ``run_job``, so the job
    holds exactly one slot from its first embedding to the end of its work::

        with JobSlot() as slot:
            ...embed...
            async for kind, value in run_job(work, slot): ...

    ``run_job`` takes the caller's hold over (``hand_over``) for its worker
    thread: the slot is free once the work has stopped, whether or not the
    caller is still sending the answer (a client that never read its answer
    held a slot for as long as it kept the call open, a fifteenth probe),
    and not before (a cancelled call does not free it while its thread still
    computes). The ``with`` gives it back itself only if it was never handed
    over (the embedding failed, or the call ended first)."""

    def __init__(self, client: str | None = None):
        """``client``: who holds it (default: the calling gRPC client, see ``observability.caller``)."""
        if client is None:
            from ..observability import caller
            client = caller()
        self.client = client
        SLOTS.take(client)
        self._held = True
        self._handed = False
        self._lock = threading.Lock()

    def hand_over(self) -> None:
        """The caller's hold now belongs to whoever calls ``release`` next
        (the job's worker); the caller's ``with`` no longer gives it back."""
        with self._lock:
            if not self._held or self._handed:
                raise RuntimeError("this job slot was already given back or handed over")
            self._handed = True

    def release(self) -> None:
        with self._lock:
            last, self._held = self._held, False
        if last:
            SLOTS.give_back(self.client)

    def __enter__(self) -> "JobSlot":
        return self

    def __exit__(self, *exc) -> None:
        if not self._handed:
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


def _without_frames(item):
    """``item`` with an error's traceback (and what it chains) cleared: its
    frames hold the work's data."""
    kind, value = item
    if kind == "error":
        seen = set()
        while value is not None and id(value) not in seen:
            seen.add(id(value))
            value.__traceback__ = None
            value = value.__cause__ or value.__context__
        return kind, item[1]
    return item


async def run_job(work: Callable[[ProgressReporter], Any],
                  slot: JobSlot | None = None) -> AsyncIterator[tuple[str, Any]]:
    """Yield ("progress", JobProgress) events, then ("result", value). Exceptions
    of ``work`` propagate; closing the iterator cancels the work. The work
    runs under ``slot`` (one the caller holds and hands over, see JobSlot)
    or a slot of its own: JobsBusy when every slot is taken. Either way the
    slot is given back when the work stops."""
    if slot is None:
        slot = JobSlot()
    slot.hand_over()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()
    reporter = ProgressReporter(loop, queue, cancelled)

    def target():
        try:
            result = work(reporter)
            item = ("result", result)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            item = ("error", e)
        finally:
            slot.release()          # when the work stops, not when the caller leaves
        if cancelled.is_set():
            # The caller is gone: nobody reads the queue. An error kept there held
            # its traceback, whose frames held the reporter, which holds the queue:
            # a cycle keeping the job's arrays until a full collection (two
            # ScoreLabels on 100,000 images cancelled: 4.8 GB resident, idle).
            item = _without_frames(item)
        _post(loop, queue, item)
        del item

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
        # An answer or error the work posted after the caller left is nobody's.
        while not queue.empty():
            _without_frames(queue.get_nowait())
