"""A thread pool shared between owners by the time each has used.

A server decodes its callers' images on a few threads (one per core). Shared
first come first served, or one thread per connection at a time, a
connection sending costly images (256 large PNGs a request, each ~20x a
photo's decode) takes a whole thread while 64 others wait for the rest: the
soak benchmark's good clients fell to 0.6 of their throughput. Here a free
thread takes the next task of the owner that has used the least thread time
(start-time fair queueing, as a CPU scheduler shares cores), so among 64
busy connections a costly one gets about 1/65 of the time, and alone it
still uses every thread. The threads choose their next task themselves: no
thread idles while an event loop gets round to handing it work.
"""
from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future


#: An owner back from idle keeps at most this much of its debt (seconds of
#: thread time beyond the least-served busy owner's).
MAX_DEBT_S = 10.0


class FairPool:
    """``submit(owner, fn, *args)`` -> concurrent Future, like an Executor.

    An owner new, or back from idle, starts level with the least-served
    busy owner: waiting banks no credit, and time used beyond a fair share
    (a debt, up to MAX_DEBT_S) counts against an owner until the others
    have caught up; time used while no one else wanted the threads is no
    debt. A task is charged its owner's typical task time when it starts
    (so one owner cannot take every idle thread at once on a tie) and
    its real time when it ends. ``workers``: threads (>= 1)."""

    def __init__(self, workers: int, name: str = "imagesieve-decode"):
        if workers < 1:
            raise ValueError(f"workers must be >= 1; got {workers}")
        self.workers = workers
        self._cond = threading.Condition()
        self._queues: dict[str, collections.deque] = {}      # per owner, its tasks in order
        self._used: dict[str, float] = {}                    # thread seconds charged, per owner
        self._active: collections.Counter = collections.Counter()   # tasks queued or running
        self._typical: dict[str, float] = {}                 # seconds a task, per owner (moving average)
        self._level = 0.0          # least time used by an active owner (never falls)
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def _floor(self) -> float:
        if self._active:
            self._level = max(self._level, min(self._used[k] for k in self._active))
        return self._level

    def submit(self, owner: str, fn, *args) -> Future:
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            if not self._active[owner]:
                floor = self._floor()
                self._used[owner] = min(max(self._used.get(owner, 0.0), floor), floor + MAX_DEBT_S)
            self._active[owner] += 1
            self._queues.setdefault(owner, collections.deque()).append((future, fn, args))
            self._cond.notify()
        return future

    def _next(self):
        """(owner, future, fn, args) of the least-served owner's oldest task;
        None once shut down and drained."""
        with self._cond:
            while not self._queues:
                if self._closed:
                    return None
                self._cond.wait()
            owner = min(self._queues, key=self._used.__getitem__)
            tasks = self._queues[owner]
            future, fn, args = tasks.popleft()
            if not tasks:
                del self._queues[owner]
            charged = self._typical.get(owner, 0.0)
            self._used[owner] += charged
            return owner, future, fn, args, charged

    def _work(self) -> None:
        while (task := self._next()) is not None:
            owner, future, fn, args, charged = task
            elapsed = 0.0
            if future.set_running_or_notify_cancel():       # False: cancelled while it waited
                started = time.perf_counter()
                try:
                    result = fn(*args)
                except BaseException as e:  # noqa: BLE001 - the caller gets it from the future
                    future.set_exception(e)
                else:
                    future.set_result(result)
                elapsed = time.perf_counter() - started
            # An idle thread keeps nothing of its last task (its bytes, its future's answer).
            task = future = fn = args = result = None
            with self._cond:
                self._used[owner] += elapsed - charged
                if elapsed:
                    self._typical[owner] = 0.8 * self._typical.get(owner, elapsed) + 0.2 * elapsed
                self._floor()                    # the level while this owner still counts as busy
                self._active[owner] -= 1
                if not self._active[owner]:
                    del self._active[owner]
                    self._forget_idle()

    def _forget_idle(self) -> None:
        # An idle owner's record matters only while it is in debt.
        if len(self._used) > 2 * len(self._active) + 64:
            floor = self._floor()
            for k in [k for k, used in self._used.items() if k not in self._active and used <= floor]:
                del self._used[k]
                self._typical.pop(k, None)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        with self._cond:
            self._closed = True
            if cancel_futures:
                for tasks in self._queues.values():
                    for future, _, _ in tasks:
                        future.cancel()
            self._cond.notify_all()
        if wait:
            for t in self._threads:
                t.join()
