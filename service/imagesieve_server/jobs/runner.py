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


#: Seconds a job waits for a slot before it is refused (the call's deadline may end it sooner);
#: the server sets ``SLOTS.wait_s`` from ``--job-wait-s``.
JOB_WAIT_S = 20.0
#: Jobs waiting for a slot at once, server-wide; each client may have one waiting.
MAX_WAITING = 64
#: Clients whose last grant is remembered (for the round robin), the latest kept.
GRANTS_REMEMBERED = 4096


class _Waiter:
    """A job waiting for a slot: its loop, the future its fate is handed over by (a result:
    GRANTED or DISPLACED, never an exception nobody may read), and, under the slots' lock,
    whether a slot was counted for it and whether that slot was passed on for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.handed = loop, loop.create_future()
        self.granted = self.passed_on = False


GRANTED, DISPLACED = "granted", "displaced"


class JobSlots:
    """At most ``limit`` analysis jobs at once, server-wide: each holds a
    core for seconds to minutes, so more would only slow every caller. The
    server sets it from ``--max-jobs`` (``set_limit``).

    A job that finds every slot in use waits for one (``wait``), at most
    ``wait_s`` (``--job-wait-s``), one waiting job a client and MAX_WAITING
    in all. A freed slot goes straight to the waiting client that ranks
    first: holding the
    fewest, among equals granted a slot longest ago (never: first; round
    robin), then waiting longest. When the line is full, a client ranking
    before its last takes that one's place (which is refused); else it is
    refused at once. Refused at once, a client resubmitting the moment its
    jobs ended took every freed slot before another's retries came (a
    twenty-fifth probe's open limit); slots kept for refused clients were
    held idle by many addresses each refused once (a twenty-sixth: every
    other client's job refused for 110 s); 48 addresses looping real jobs
    kept a line of 32 full (this one's first try). Clients are named by
    ``observability.caller``: a token's name, else an address; many fresh
    identities, each never served, still rank before a client served once."""

    def __init__(self, limit: int, wait_s: float = JOB_WAIT_S):
        self.limit = limit
        self.wait_s = wait_s
        self.running = 0
        self.held: collections.Counter = collections.Counter()
        self.waiting: dict[str, _Waiter] = {}              # in arrival order
        self.granted_at: dict[str, int] = {}               # client -> the number of its last grant
        self.grants = 0
        self._lock = threading.Lock()

    async def wait(self, client: str = "", timeout: float | None = None) -> None:
        """A slot, waiting up to ``timeout`` (``wait_s``) for one; JobsBusy
        when none came, or at once when this client already has a job
        waiting or the line is full of clients ranking before it."""
        timeout = self.wait_s if timeout is None else timeout
        waiter = _Waiter(asyncio.get_running_loop())
        displaced = None
        with self._lock:
            if self.running < self.limit and not self.waiting:
                self._grant(client)
                return
            if timeout <= 0 or client in self.waiting:
                raise JobsBusy(self._busy() + (", and this client already has a job waiting for one"
                                               if client in self.waiting else ""))
            if len(self.waiting) >= MAX_WAITING:
                last = max(self.waiting, key=self._rank())
                if self._rank()(last) <= self._rank(newcomer=True)(client):
                    raise JobsBusy(self._busy())
                displaced = self.waiting.pop(last)
            self.waiting[client] = waiter
        if displaced is not None:
            _call(displaced, DISPLACED)
        try:
            # asyncio.wait, not wait_for: Python 3.11's wait_for returns a result that came in
            # the tick the call was cancelled, and the cancel is lost (a review: 409 of 479).
            done, _ = await asyncio.wait({waiter.handed}, timeout=timeout)
        except BaseException:
            self._leave(client, waiter)
            raise
        if done and waiter.handed.result() == GRANTED:
            return
        self._leave(client, waiter)
        if done:
            raise JobsBusy(self._busy() + "; a client served less took this job's place in line")
        raise JobsBusy(self._busy() + f"; this job waited {timeout:g} s in line without a slot")

    def give_back(self, client: str = "") -> None:
        """From any thread: the slot goes to the first-ranked waiting client, if any."""
        with self._lock:
            self.running -= 1
            self.held[client] -= 1
            if self.held[client] <= 0:
                del self.held[client]
            handed = self._fill()
        self._hand(handed)

    def set_limit(self, limit: int) -> None:
        """A new ``limit``; jobs waiting get the slots it adds."""
        with self._lock:
            self.limit = limit
            handed = self._fill()
        self._hand(handed)

    def _fill(self) -> list[tuple[str, _Waiter]]:
        """Under the lock: free slots granted to the first-ranked waiting clients."""
        out = []
        while self.running < self.limit and self.waiting:
            chosen = min(self.waiting, key=self._rank())
            waiter = self.waiting.pop(chosen)
            waiter.granted = True
            self._grant(chosen)
            out.append((chosen, waiter))
        return out

    def _hand(self, handed: list[tuple[str, _Waiter]]) -> None:
        for client, waiter in handed:
            if not _call(waiter, GRANTED):      # its loop is closed: nobody to hand it to
                self._pass_on(client, waiter)

    def _leave(self, client: str, waiter: _Waiter) -> None:
        """A waiter that will not use a slot: out of the line, and a slot granted to it passed on."""
        with self._lock:
            if self.waiting.get(client) is waiter:
                del self.waiting[client]
                handed = self._fill()           # a slot may have waited on this one's place (a limit raised)
            else:
                handed = []
        self._hand(handed)
        self._pass_on(client, waiter)

    def _pass_on(self, client: str, waiter: _Waiter) -> None:
        """The slot granted to ``waiter`` goes back, once, whoever finds it unused first."""
        with self._lock:
            unused = waiter.granted and not waiter.passed_on
            waiter.passed_on = waiter.passed_on or unused
        if unused:
            self.give_back(client)

    def _rank(self, newcomer: bool = False):
        """A client's place in line (lower first): held, last grant (never: -1), arrival."""
        order = {c: k for k, c in enumerate(self.waiting)}
        return lambda c: (self.held[c], self.granted_at.get(c, -1), len(order) if newcomer else order[c])

    def _grant(self, client: str) -> None:
        self.running += 1
        self.held[client] += 1
        self.grants += 1
        self.granted_at.pop(client, None)
        self.granted_at[client] = self.grants              # latest last
        if len(self.granted_at) > GRANTS_REMEMBERED:
            del self.granted_at[next(iter(self.granted_at))]

    def _busy(self) -> str:
        return (f"{self.running} of the server's {self.limit} analysis job slots are in use (--max-jobs)"
                + (f", {len(self.waiting)} job(s) waiting for one" if self.waiting else ""))


def _call(waiter: _Waiter, fate: str) -> bool:
    """Hand ``fate`` to the waiter on its loop; False when that loop is closed."""
    try:
        waiter.loop.call_soon_threadsafe(_settle, waiter.handed, fate)
        return True
    except RuntimeError:
        return False


def _settle(handed: asyncio.Future, fate: str) -> None:
    if not handed.done():
        handed.set_result(fate)


SLOTS = JobSlots(os.cpu_count() or 1)


class JobSlot:
    """One of ``SLOTS``, taken on creation (``await JobSlot.wait()``: when
    one is free) and given back once its holder lets go. A job that embeds
    images first takes it before the embedding and hands it to ``run_job``,
    so the job holds exactly one slot from its first embedding to the end of
    its work::

        with await JobSlot.wait() as slot:
            ...embed...
            async for kind, value in run_job(work, slot): ...

    ``run_job`` takes the caller's hold over (``hand_over``) for its worker
    thread: the slot is free once the work has stopped, whether or not the
    caller is still sending the answer (a client that never read its answer
    held a slot for as long as it kept the call open, a fifteenth probe),
    and not before (a cancelled call does not free it while its thread still
    computes). The ``with`` gives it back itself only if it was never handed
    over (the embedding failed, or the call ended first)."""

    def __init__(self, client: str):
        """A slot already taken for ``client`` (see :meth:`wait`)."""
        self.client = client
        self._held = True
        self._handed = False
        self._lock = threading.Lock()

    @classmethod
    async def wait(cls, client: str | None = None, timeout: float | None = None) -> JobSlot:
        """A slot, waiting for one up to ``timeout`` (JobSlots.wait); ``client``:
        who holds it (default: the calling gRPC client, ``observability.caller``)."""
        if client is None:
            from ..observability import caller
            client = caller()
        await SLOTS.wait(client, timeout)
        return cls(client)

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
    or a slot of its own, waited for (JobsBusy when none comes). Either way the
    slot is given back when the work stops."""
    if slot is None:
        slot = await JobSlot.wait()
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
