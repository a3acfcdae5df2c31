"""Bounds the bytes of unary requests being received and held.

gRPC reads a unary request whole before any handler runs, and a client
decides how large it is (up to ``--max-message-mb``) and how slowly it
arrives. Unbounded, 32 Embed calls of 60 MB took a 256 MiB server to 5.2 GB,
and 96 calls sent to all but their last byte held 6.1 GB with nothing in the
access log (an eighth probe). So the interceptor receives such requests
itself (as one-message streams, which gRPC does not read ahead of the
handler) and only through this gate, which holds a share of the memory
budget (``capacity_bytes``):

* a read may begin when a whole message at the size limit still fits, in
  all and in the client's half (its token's name, else its address); until
  then it waits, a byte of it unread (HTTP/2 flow control keeps the rest on
  the client's side), at most ``wait_s``;
* it must end within ``receive_timeout_s``;
* then the request holds its real size until its call ends (``release``),
  so small requests pass by the thousand and large ones a few at a time.
"""
from __future__ import annotations

import asyncio
import collections

RECEIVE_SHARE = 0.5      # of the memory budget, for unary requests being received or worked on
CLIENT_SHARE = 0.5       # of that, one client's


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


class RequestGate:
    """Bytes of requests read or being read: at most ``capacity_bytes`` (at
    least two messages of ``max_message_bytes``), a client's at most
    CLIENT_SHARE of it (at least one message). A read in progress counts as
    a whole message. Single event loop (grpc.aio)."""

    def __init__(self, capacity_bytes: int, max_message_bytes: int, receive_timeout_s: float = 30.0):
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be >= 1; got {max_message_bytes}")
        if not receive_timeout_s > 0:
            raise ValueError(f"receive_timeout_s must be > 0; got {receive_timeout_s}")
        self.message = int(max_message_bytes)
        self.capacity = max(int(capacity_bytes), 2 * self.message)
        self.per_client = max(self.message, int(self.capacity * CLIENT_SHARE))
        self.receive_timeout_s = receive_timeout_s
        self.used = 0
        self.by_client: collections.Counter[str] = collections.Counter()
        self.waiting: collections.deque[tuple[str, asyncio.Future]] = collections.deque()
        self.timed_out = 0           # reads given up

    @property
    def reads_at_once(self) -> int:
        """Messages at the size limit that may be read at once."""
        return self.capacity // self.message

    def _may_start(self, client: str) -> bool:
        return (self.used + self.message <= self.capacity
                and self.by_client[client] + self.message <= self.per_client)

    def _charge(self, client: str, n: int) -> None:
        self.used += n
        self.by_client[client] += n
        if self.by_client[client] <= 0:
            del self.by_client[client]
        if n < 0:
            self._wake()

    def _wake(self) -> None:
        for entry in list(self.waiting):
            client, fut = entry
            if fut.done():
                self.waiting.remove(entry)
            elif self._may_start(client):
                self.waiting.remove(entry)
                self._charge(client, self.message)
                fut.set_result(None)

    def release(self, client: str, n: int) -> None:
        """The call of a request of ``n`` bytes (``receive``'s) has ended."""
        self._charge(client, -n)

    async def receive(self, client: str, read, wait_s: float) -> bytes:
        """``await read()`` (the call's one message, bytes) for ``client``:
        waits up to ``wait_s`` seconds for room, then up to
        ``receive_timeout_s`` for the message. The message's size stays
        charged until ``release(client, len(message))``. GateRefused when
        either runs out (the read is abandoned: gRPC drops what it had)."""
        if self._may_start(client):           # no waiter can start now (_wake runs on every release)
            self._charge(client, self.message)
        else:
            fut = asyncio.get_running_loop().create_future()
            self.waiting.append((client, fut))
            try:
                await asyncio.wait_for(fut, max(0.0, wait_s))
            except asyncio.TimeoutError:
                raise GateRefused(f"the server is receiving as many requests as its memory allows "
                                  f"({self.capacity >> 20} MiB, {self.per_client >> 20} MiB a client, messages of "
                                  f"up to {self.message >> 20} MiB); retry with backoff") from None
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._charge(client, -self.message)          # granted as we were cancelled
                raise
        # Not wait_for: it waits for the cancelled read to end, and gRPC's
        # read of a stalled message ends only with its call.
        reading = asyncio.ensure_future(read())
        try:
            await asyncio.wait((reading,), timeout=self.receive_timeout_s)
        except BaseException:
            self._charge(client, -self.message)
            _abandon(reading)
            raise
        if not reading.done():
            self._charge(client, -self.message)
            _abandon(reading)
            self.timed_out += 1
            raise GateRefused(f"the request did not arrive within {self.receive_timeout_s:g} s; send it at once "
                              "(a slow or stalled upload holds memory others need)", "DEADLINE_EXCEEDED")
        try:
            raw = reading.result()
        except BaseException:
            self._charge(client, -self.message)
            raise
        self._charge(client, len(raw) - self.message)
        return raw


def _abandon(task: asyncio.Future) -> None:
    """Cancel an abandoned read and retrieve its outcome (it ends with its
    call's error), so asyncio logs no 'exception was never retrieved'."""
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
