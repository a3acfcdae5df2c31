"""Bounds the bytes of requests being received.

gRPC reads a unary request whole before any handler runs, and a client
decides how large it is (up to ``--max-message-mb``) and how slowly it
arrives. Unbounded, 32 Embed calls of 60 MB took a 256 MiB server to 5.2 GB,
and 96 calls sent to all but their last byte held 6.1 GB with nothing in the
access log (an eighth probe). So the interceptor receives such requests
itself (as one-message streams, which gRPC does not read ahead of us) and
only through this gate: a fixed number of *reading slots*, each worth one
message at the size limit, at most half of them one client's, and a read
must finish within ``receive_timeout_s``. A request waits for a slot before
a byte of it is read (HTTP/2 flow control keeps the rest on the client's
side); the slot is freed as soon as the message is in, so small requests
pass in microseconds. Memory of requests being received is at most
``slots x max message``.
"""
from __future__ import annotations

import asyncio
import collections

RECEIVE_SHARE = 0.5      # of the memory budget, for requests being received
MIN_SLOTS = 2


def reading_slots(budget_bytes: int, max_message_bytes: int) -> int:
    """Slots for a server with ``budget_bytes`` in flight (<= 0: unlimited,
    taken as 4 GiB) and messages up to ``max_message_bytes``."""
    budget = budget_bytes if budget_bytes > 0 else 4 << 30
    return max(MIN_SLOTS, int(budget * RECEIVE_SHARE) // max(1, max_message_bytes))


class GateRefused(Exception):
    """No slot in time, or the request did not arrive in time: the message
    says which and what to do."""

    def __init__(self, message: str, code: str = "RESOURCE_EXHAUSTED"):
        super().__init__(message)
        self.code = code


class RequestGate:
    """``slots`` reads at once, at most ``per_client`` of them one
    client's (its token's name, else its address), first come first served
    among clients under their cap. Single event loop (grpc.aio)."""

    def __init__(self, slots: int, receive_timeout_s: float = 30.0, per_client: int = 0):
        if slots < 1:
            raise ValueError(f"slots must be >= 1; got {slots}")
        if not receive_timeout_s > 0:
            raise ValueError(f"receive_timeout_s must be > 0; got {receive_timeout_s}")
        self.slots = slots
        self.per_client = per_client or max(1, slots // 2)
        self.receive_timeout_s = receive_timeout_s
        self.reading = 0
        self.by_client: collections.Counter[str] = collections.Counter()
        self.waiting: collections.deque[tuple[str, asyncio.Future]] = collections.deque()
        self.timed_out = 0           # reads given up (for metrics and tests)

    def _may_start(self, client: str) -> bool:
        return self.reading < self.slots and self.by_client[client] < self.per_client

    def _wake(self) -> None:
        for entry in list(self.waiting):
            client, fut = entry
            if fut.done():
                self.waiting.remove(entry)
            elif self._may_start(client):
                self.waiting.remove(entry)
                self._take(client)
                fut.set_result(None)

    def _take(self, client: str) -> None:
        self.reading += 1
        self.by_client[client] += 1

    def _give(self, client: str) -> None:
        self.reading -= 1
        self.by_client[client] -= 1
        if not self.by_client[client]:
            del self.by_client[client]
        self._wake()

    async def receive(self, client: str, read, wait_s: float):
        """``await read()`` (the call's one message) in a slot of
        ``client``'s: waits up to ``wait_s`` seconds for one, then up to
        ``receive_timeout_s`` for the message. GateRefused when either runs
        out (the read is cancelled: gRPC drops what it had received)."""
        if self._may_start(client):           # no waiter can start now (_wake runs on every release)
            self._take(client)
        else:
            fut = asyncio.get_running_loop().create_future()
            self.waiting.append((client, fut))
            try:
                await asyncio.wait_for(fut, max(0.0, wait_s))
            except asyncio.TimeoutError:
                raise GateRefused(f"the server is receiving as many requests as its memory allows "
                                  f"({self.slots} at once, {self.per_client} a client); retry with backoff") from None
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._give(client)          # granted as we were cancelled
                raise
        # Not wait_for: it waits for the cancelled read to end, and gRPC's
        # read of a stalled message ends only with its call.
        reading = asyncio.ensure_future(read())
        try:
            await asyncio.wait((reading,), timeout=self.receive_timeout_s)
        except BaseException:
            reading.cancel()
            reading.add_done_callback(_retrieved)
            raise
        finally:
            self._give(client)
        if not reading.done():
            reading.cancel()
            reading.add_done_callback(_retrieved)
            self.timed_out += 1
            raise GateRefused(f"the request did not arrive within {self.receive_timeout_s:g} s; send it at once "
                              "(a slow or stalled upload holds memory others need)", "DEADLINE_EXCEEDED")
        return reading.result()


def _retrieved(task: asyncio.Future) -> None:
    """Reads the outcome of an abandoned read (it ends with its call's
    error), so asyncio logs no 'exception was never retrieved'."""
    if not task.cancelled():
        task.exception()
