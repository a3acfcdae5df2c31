"""Bounds the bytes of unary requests being received and held.

gRPC reads a unary request whole before any handler runs, and a client
decides how large it is (up to ``--max-message-mb``) and how slowly it
arrives. Unbounded, 32 Embed calls of 60 MB took a 256 MiB server to 5.2 GB,
and 96 calls sent to all but their last byte held 6.1 GB with nothing in the
access log (an eighth probe). So the interceptor receives such requests
itself (as one-message streams, which gRPC does not read ahead of the
handler) and only through this gate, which holds a share of the memory
budget (``capacity_bytes``) twice:

* *reads*: a read in progress may be a message at the size limit, so at
  most ``capacity // max message`` run at once (at least 2), half of them
  one client's (its token's name, else its address). A read waits for its
  turn unread (HTTP/2 flow control keeps the bytes on the client's side),
  at most ``wait_s``; it must end within ``receive_timeout_s``; and while
  others wait, a read that has run ``slow_read_s`` is given up for them (a
  stalled upload holds its turn that long, not the timeout's 30 s);
* *held*: a request received holds its real size until its call ends; new
  reads wait while the requests held reach the capacity (a client's, half
  of it). Small requests pass by the thousand, 60 MB ones a few at a time.
"""
from __future__ import annotations

import asyncio
import collections
import time

RECEIVE_SHARE = 0.5      # of the memory budget: room for reads, and again for requests held
CLIENT_SHARE = 0.5       # of each, one client's
SLOW_READ_S = 5.0        # a read this old is given up when another waits (a 64 MB upload at ~100 Mbit/s)


def gate_capacity(budget_bytes: int) -> int:
    """The gate's bytes for a server with ``budget_bytes`` in flight (<= 0:
    unlimited, taken as 4 GiB)."""
    return int((budget_bytes if budget_bytes > 0 else 4 << 30) * RECEIVE_SHARE)


class GateRefused(Exception):
    """No room in time, or the request did not arrive in time: the message
    says which and what to do; ``code`` is a grpc.StatusCode name."""

    def __init__(self, message: str, code: str = "RESOURCE_EXHAUSTED"):
        super().__init__(message)
        self.code = code


class _Read:
    __slots__ = ("client", "started", "task", "evicted")

    def __init__(self, client: str):
        self.client, self.started, self.task, self.evicted = client, time.monotonic(), None, False


class RequestGate:
    """See the module. Single event loop (grpc.aio)."""

    def __init__(self, capacity_bytes: int, max_message_bytes: int, receive_timeout_s: float = 30.0,
                 slow_read_s: float = SLOW_READ_S):
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be >= 1; got {max_message_bytes}")
        if not (receive_timeout_s > 0 and slow_read_s > 0):
            raise ValueError("receive_timeout_s and slow_read_s must be > 0")
        self.message = int(max_message_bytes)
        self.capacity = max(int(capacity_bytes), 2 * self.message)
        self.reads_at_once = max(2, self.capacity // self.message)
        self.reads_per_client = max(1, self.reads_at_once // 2)
        self.held_per_client = int(self.capacity * CLIENT_SHARE)
        self.receive_timeout_s, self.slow_read_s = receive_timeout_s, slow_read_s
        self.reads: list[_Read] = []
        self.held = 0
        self.held_by_client: collections.Counter[str] = collections.Counter()
        self.waiting: collections.deque[tuple[str, asyncio.Future]] = collections.deque()
        self.timed_out = 0           # reads given up: too slow, alone or while others waited

    def _reading(self, client: str) -> int:
        return sum(r.client == client for r in self.reads)

    def _may_start(self, client: str) -> bool:
        return (len(self.reads) < self.reads_at_once and self._reading(client) < self.reads_per_client
                and self.held < self.capacity and self.held_by_client[client] < self.held_per_client)

    def _wake(self) -> None:
        for entry in list(self.waiting):
            client, fut = entry
            if fut.done():
                self.waiting.remove(entry)
            elif self._may_start(client):
                self.waiting.remove(entry)
                turn = _Read(client)            # its clock starts when the waiter runs it (receive)
                self.reads.append(turn)
                fut.set_result(turn)

    def _evict_slow(self, client: str) -> float:
        """Give up the oldest read past slow_read_s that stands in ``client``'s
        way (its own when its share of reads is what is full); returns the
        seconds until the next read turns slow (inf: none can help)."""
        own = self._reading(client) >= self.reads_per_client
        if not own and len(self.reads) < self.reads_at_once:
            return float("inf")                 # reads are not what is full: held bytes are
        now = time.monotonic()
        candidates = [r for r in self.reads if r.task is not None and not r.task.done() and not r.evicted
                      and (not own or r.client == client)]
        if not candidates:
            return float("inf")
        oldest = min(candidates, key=lambda r: r.started)
        if now - oldest.started < self.slow_read_s:
            return oldest.started + self.slow_read_s - now
        oldest.evicted = True
        oldest.task.cancel()                    # its receive() frees the turn and wakes the waiters
        return float("inf")

    def release(self, client: str, n: int) -> None:
        """The call of a request of ``n`` bytes (``receive``'s) has ended."""
        self.held -= n
        self.held_by_client[client] -= n
        if self.held_by_client[client] <= 0:
            del self.held_by_client[client]
        self._wake()

    async def receive(self, client: str, read, wait_s: float) -> bytes:
        """``await read()`` (the call's one message, bytes) for ``client``:
        waits up to ``wait_s`` seconds for its turn, then up to
        ``receive_timeout_s`` for the message. The message's size stays
        charged until ``release(client, len(message))``. GateRefused when
        either runs out, or when the read is given up for others (the read
        is abandoned: gRPC drops what it had)."""
        if self._may_start(client):
            entry = _Read(client)
            self.reads.append(entry)
        else:
            entry = await self._wait_turn(client, wait_s)
        # Not wait_for: it waits for the cancelled read to end, and gRPC's
        # read of a stalled message ends only with its call.
        entry.started, entry.task = time.monotonic(), asyncio.ensure_future(read())
        try:
            await asyncio.wait((entry.task,), timeout=self.receive_timeout_s)
        except BaseException:
            _abandon(entry.task)
            raise
        finally:
            self.reads.remove(entry)
            self._wake()
        if not entry.task.done() or entry.evicted:
            _abandon(entry.task)
            self.timed_out += 1
            if entry.evicted:
                raise GateRefused(f"the request was still arriving after {self.slow_read_s:g} s while others waited; "
                                  "send it at once, or retry when the server is less busy")
            raise GateRefused(f"the request did not arrive within {self.receive_timeout_s:g} s; send it at once "
                              "(a slow or stalled upload holds memory others need)", "DEADLINE_EXCEEDED")
        raw = entry.task.result()
        self.held += len(raw)
        self.held_by_client[client] += len(raw)
        return raw

    async def _wait_turn(self, client: str, wait_s: float) -> _Read:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.waiting.append((client, fut))
        deadline = loop.time() + max(0.0, wait_s)
        try:
            while not fut.done():
                left = deadline - loop.time()
                if left <= 0:
                    fut.cancel()
                    raise GateRefused(
                        f"the server is receiving as many requests as its memory allows ({self.reads_at_once} "
                        f"reads at once, {self.reads_per_client} a client; {self.capacity >> 20} MiB of requests "
                        f"held, {self.held_per_client >> 20} MiB a client); retry with backoff")
                await asyncio.wait((fut,), timeout=min(left, self._evict_slow(client) + 0.01))
        except BaseException:
            if fut.done() and not fut.cancelled():       # granted as we were cancelled
                self.reads.remove(fut.result())
                self._wake()
            fut.cancel()
            raise
        return fut.result()


def _abandon(task: asyncio.Future) -> None:
    """Cancel an abandoned read and retrieve its outcome (it ends with its
    call's error), so asyncio logs no 'exception was never retrieved'."""
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
