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

Owners are (client, connection) pairs (``owners``), served in two levels:
the client that has used the least time, then its connection that has used
the least. One address's 16 connections share one client's time: by
connection alone they took 16 shares (a twenty-seventh probe).
"""
from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future

from .owners import Owner, choose, owner_of


#: An owner back from idle keeps at most this much of its debt (seconds of
#: thread time beyond the least-served busy owner's).
MAX_DEBT_S = 10.0


class _Shares:
    """One level's accounts: thread seconds charged per key (a client, or
    one client's connections) and its tasks queued or running. A key turning
    busy starts level with the least-served busy key, keeping at most
    MAX_DEBT_S of its debt; an idle key's record is kept only while in debt."""

    def __init__(self):
        self.used: dict[str, float] = {}
        self.active: collections.Counter = collections.Counter()
        self._level = 0.0          # least time used by an active key (never falls)

    def floor(self) -> float:
        if self.active:
            self._level = max(self._level, min(self.used[k] for k in self.active))
        return self._level

    def busy(self, key: str) -> None:
        """A task of ``key``'s queued."""
        if not self.active[key]:
            floor = self.floor()
            self.used[key] = min(max(self.used.get(key, 0.0), floor), floor + MAX_DEBT_S)
        self.active[key] += 1

    def done(self, key: str) -> list[str]:
        """A task of ``key``'s ended (its time already charged); the idle
        keys whose records were dropped."""
        self.floor()                     # the level while this key still counts as busy
        self.active[key] -= 1
        if self.active[key]:
            return []
        del self.active[key]
        if len(self.used) <= 2 * len(self.active) + 64:
            return []
        floor = self.floor()
        gone = [k for k, used in self.used.items() if k not in self.active and used <= floor]
        for k in gone:
            del self.used[k]
        return gone


class FairPool:
    """``submit(owner, fn, *args)`` -> concurrent Future, like an Executor.

    ``owner``: (client, connection), or a string (a connection of client
    ''). A free thread takes the oldest task of the client that has used
    the least thread time, of that client's connection that has used the
    least. At each level, an owner new, or back from idle, starts level
    with the least-served busy one: waiting banks no credit, and time used
    beyond a fair share (a debt, up to MAX_DEBT_S) counts against it until
    the others have caught up; time used while no one else wanted the
    threads is no debt. A task is charged its connection's typical task
    time when it starts (so one owner cannot take every idle thread at once
    on a tie) and its real time when it ends. ``workers``: threads (>= 1)."""

    def __init__(self, workers: int, name: str = "imagesieve-decode"):
        if workers < 1:
            raise ValueError(f"workers must be >= 1; got {workers}")
        self.workers = workers
        self._cond = threading.Condition()
        self._queues: dict[Owner, collections.deque] = {}    # per owner, its tasks in order
        self._clients = _Shares()                              # clients' time
        self._connections: dict[str, _Shares] = {}             # per client remembered, its connections' time
        self._typical: dict[Owner, float] = {}                 # seconds a task, per owner (moving average)
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, owner: Owner | str, fn, *args) -> Future:
        owner = owner_of(owner)
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            self._clients.busy(owner[0])
            self._connections.setdefault(owner[0], _Shares()).busy(owner[1])
            self._queues.setdefault(owner, collections.deque()).append((future, fn, args))
            self._cond.notify()
        return future

    def _charge(self, owner: Owner, seconds: float) -> None:
        self._clients.used[owner[0]] += seconds
        self._connections[owner[0]].used[owner[1]] += seconds

    def _next(self):
        """(owner, future, fn, args) of the least-served owner's oldest task;
        None once shut down and drained."""
        with self._cond:
            while not self._queues:
                if self._closed:
                    return None
                self._cond.wait()
            owner = choose(self._queues, lambda c, _: self._clients.used[c],
                           lambda o: self._connections[o[0]].used[o[1]])
            tasks = self._queues[owner]
            future, fn, args = tasks.popleft()
            if not tasks:
                del self._queues[owner]
            charged = self._typical.get(owner, 0.0)
            self._charge(owner, charged)
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
                self._charge(owner, elapsed - charged)
                if elapsed:
                    self._typical[owner] = 0.8 * self._typical.get(owner, elapsed) + 0.2 * elapsed
                self._ended(owner)

    def _ended(self, owner: Owner) -> None:
        # An idle owner's records matter only while it is in debt: those of a
        # connection within its client, a client's (all its connections') among clients.
        client, conn = owner
        for gone in self._connections[client].done(conn):
            self._typical.pop((client, gone), None)
        for gone in self._clients.done(client):
            for k in self._connections.pop(gone).used:
                self._typical.pop((gone, k), None)

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
