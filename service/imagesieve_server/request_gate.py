"""Bounds the bytes of requests being received and held.

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
  stalled upload holds its turn that long, not the timeout's 30 s). A freed
  turn goes to the waiting client reading least (``_wake``), and the time
  of a read given up or timed out while others waited is charged to its
  client's account as a stream's idle time is (below; a read that delivers
  its message is refunded): a client that keeps stalling has its reads
  given up after UNARY_YIELD_S once it owes two graces;
* *held*: a request received holds its real size until its call ends; new
  reads wait while the requests held reach the capacity (a client's, half
  of it). Small requests pass by the thousand, 60 MB ones a few at a time.

Stream messages take turns too, one a message (``turn``/``done``/``hold``),
on a gate of their own (the server's ``stream_gate``), and hold bytes
twice: each message until the next is asked for, and, for the stream's
life, its largest message so far -- once a stream has read a message, gRPC
reads about as much of the next into its own buffers before the handler
asks (measured: ~100 MB a stream of 60 MB messages, ~3 MB of 8 MB ones),
so 32 EmbedStream calls of 60 MB messages took a server with a 1 GiB
budget to 4.7 GB (10 GB with gRPC's BDP probing, which widens that
read-ahead: off). A stream's later message skips the wait for bytes held
(``held_ok``) only when its room holds a whole message already. A stream
waiting for its client's next message holds its turn; it is given up for
a waiting read once the stream has been idle (every request answered) for
``stream_idle_s`` since its last request or answer, and ends
RESOURCE_EXHAUSTED, as CallLimiter closes idle streams. Idle time while
others wait also adds up over all of a client's streams (``StreamAccount``,
halving every minute): once a client has kept waiting reads out that long
in all, its stream gives its turn up whenever it has been idle
STREAM_YIELD_S while others wait (a quarter of ``stream_idle_s`` if that is
shorter), and a stream it reopens starts with no fresh credit. Without it,
streams that sent an empty message every 8 s (under ``stream_idle_s``) held
every turn, and another client's stream waited 13-16 s a message (a
fourteenth probe).
"""
from __future__ import annotations

import asyncio
import collections
import heapq
import time

RECEIVE_SHARE = 0.5      # of the memory budget: room for reads, and again for requests held
CLIENT_SHARE = 0.5       # of each, one client's
SLOW_READ_S = 5.0        # a read this old is given up when another waits (a 64 MB upload at ~100 Mbit/s;
                         # sooner for a client owing that much: StreamAccount)
PROBE_SLOW_READ_S = 0.5  # a health check's, likewise: probes need no token and time out in ~1 s
IDLE_RECHECK_S = 0.5
STREAM_IDLE_S = 10.0     # an idle stream's wait for its next message, likewise (CallLimiter's evict_idle_s)
STREAM_YIELD_S = 1.0     # ... and, once it kept others waiting that long in all, a pause this long (or a quarter)
UNARY_YIELD_S = 0.25     # a unary read's, once its client owes twice its grace (reads given up or timed out;
                         # delivered ones are refunded): every other client's small call waited this long for a turn
ACCOUNT_HALF_LIFE_S = 60.0   # a client's record of idle turns fades by half in this time
MAX_ACCOUNTS = 4096          # clients' records kept; beyond, the faded ones are dropped


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


class StreamAccount:
    """One client's seconds of idle stream turns while other reads waited
    (``owed_s``), over all its streams and messages, and of its unary reads
    that were given up or timed out while others waited (RequestGate.account_for:
    a stream reopened after being given up starts with no fresh credit),
    halving every ACCOUNT_HALF_LIFE_S."""
    __slots__ = ("_owed", "_at")

    def __init__(self):
        self._owed, self._at = 0.0, time.monotonic()

    @property
    def owed_s(self) -> float:
        return self._owed * 0.5 ** ((time.monotonic() - self._at) / ACCOUNT_HALF_LIFE_S)

    @owed_s.setter
    def owed_s(self, value: float) -> None:
        self._owed, self._at = max(0.0, value), time.monotonic()


class _Read:
    """A read turn. ``grace``: seconds its read may run before it is given
    up for a waiting one; ``idle``: None, or a callable giving since when
    (time.monotonic) it may be given up, None while it may not (a stream:
    idle since its last request or answer, never with a request in work);
    ``account``: its client's StreamAccount (None: no account), up to
    when (``counted``) its idle time is in it, and how much this turn added
    (``charged``)."""
    __slots__ = ("client", "started", "task", "evicted", "grace", "idle", "account", "counted", "charged")

    def __init__(self, client: str, grace: float, idle=None, account: StreamAccount | None = None):
        self.client, self.started, self.task, self.evicted = client, time.monotonic(), None, False
        self.grace, self.idle, self.account, self.counted, self.charged = grace, idle, account, 0.0, 0.0

    def since(self) -> float | None:
        """From when its grace counts, None while it may not be given up."""
        if self.idle is None:
            return self.started
        idle_since = self.idle()
        return None if idle_since is None else max(self.started, idle_since)

    def count_idle(self, now: float, contended_since: float | None, share: float = 1.0) -> None:
        """Add its idle time since ``contended_since`` (others have waited
        since then; None: nobody waits) to its client's account."""
        if self.account is None or contended_since is None or self.task is None:
            return
        since = self.since()
        if since is not None:
            start = max(since, contended_since, self.counted)
            if now > start:
                self.account.owed_s += (now - start) * share
                self.charged += (now - start) * share
        self.counted = now

    def given_up_at(self, now: float) -> float | None:
        """When (time.monotonic) it may be given up if others keep waiting
        (its account grows meanwhile); None while it may not (busy)."""
        since = self.since()
        if since is None:
            return None
        if self.account is None:
            return since + self.grace
        # A unary read is cut short only once its client owes two graces: one
        # stalled upload (a network's hiccup) must not lock a client out.
        owes_at = now + max(0.0, (self.grace if self.idle is not None else 2 * self.grace) - self.account.owed_s)
        pause = STREAM_YIELD_S if self.idle is not None else UNARY_YIELD_S
        return min(since + self.grace, max(since + min(pause, self.grace / 4), owes_at))

    def may_be_given_up(self, now: float) -> bool:
        if self.task is None or self.task.done() or self.evicted:
            return False
        at = self.given_up_at(now)
        return at is not None and now >= at


class RequestGate:
    """See the module. Single event loop (grpc.aio)."""

    def __init__(self, capacity_bytes: int, max_message_bytes: int, receive_timeout_s: float = 30.0,
                 slow_read_s: float = SLOW_READ_S, stream_idle_s: float = STREAM_IDLE_S):
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be >= 1; got {max_message_bytes}")
        if not (receive_timeout_s > 0 and slow_read_s > 0 and stream_idle_s > 0):
            raise ValueError("receive_timeout_s, slow_read_s and stream_idle_s must be > 0")
        self.message = int(max_message_bytes)
        self.capacity = max(int(capacity_bytes), 2 * self.message)
        self.reads_at_once = max(2, self.capacity // self.message)
        self.reads_per_client = max(1, self.reads_at_once // 2)
        self.held_per_client = int(self.capacity * CLIENT_SHARE)
        self.receive_timeout_s, self.slow_read_s, self.stream_idle_s = receive_timeout_s, slow_read_s, stream_idle_s
        self.reads: list[_Read] = []
        self.held = 0
        self.held_by_client: collections.Counter[str] = collections.Counter()
        # (client, future, grace, idle, held_ok, account) of each read waiting for its turn
        self.waiting: collections.deque[tuple] = collections.deque()
        # Since when reads have waited while the gate was full (None: not now): a waiter held back
        # only by its own client's share charges no one else's stream.
        self.contended_since: float | None = None
        self.accounts: dict[str, StreamAccount] = {}
        self.last_grant: dict[str, int] = {}
        self.grants = 0
        self.timed_out = 0           # reads given up: too slow, alone or while others waited

    def account_for(self, client: str) -> StreamAccount:
        """``client``'s StreamAccount, shared by all its streams."""
        account = self.accounts.get(client)
        if account is None:
            if len(self.accounts) >= MAX_ACCOUNTS:
                # The faded records go; if too many clients still owe, those owing most are kept.
                owing = sorted(((a.owed_s, k) for k, a in self.accounts.items() if a.owed_s >= 0.01), reverse=True)
                self.accounts = {k: self.accounts[k] for _, k in owing[:MAX_ACCOUNTS // 2]}
                self._forget_grants()
            account = self.accounts[client] = StreamAccount()
        return account

    def _forget_grants(self) -> None:
        """When clients were last granted a turn (``_wake``'s round robin), kept
        for those with an account or a read or wait in progress."""
        if len(self.last_grant) > MAX_ACCOUNTS:
            live = set(self.accounts) | {r.client for r in self.reads} | {e[0] for e in self.waiting}
            self.last_grant = {k: v for k, v in self.last_grant.items() if k in live}

    def _share(self, turn: _Read) -> float:
        """A read's share of its client's clock: a stream turn's whole; a unary
        read's 1/k with k of its client's unary reads in progress, so k uploads
        at once owe no faster than one (a review: 16 concurrent uploads ran up
        5 s in 0.3 s and were all given up)."""
        if turn.idle is not None:
            return 1.0
        return 1.0 / max(1, sum(r.client == turn.client and r.idle is None and r.task is not None for r in self.reads))

    def _reading(self, client: str) -> int:
        return sum(r.client == client for r in self.reads)

    def _held_full(self, client: str) -> bool:
        return self.held >= self.capacity or self.held_by_client[client] >= self.held_per_client

    def _may_start(self, client: str, held_ok: bool = False) -> bool:
        return (len(self.reads) < self.reads_at_once and self._reading(client) < self.reads_per_client
                and (held_ok or not self._held_full(client)))

    def _wake(self) -> None:
        """Give free turns to waiting reads: first to the clients reading
        least now, then to those that kept nobody waiting (StreamAccount),
        then to the one granted a turn least recently (round robin), then in
        order of arrival; a client's own reads in the order they came. In
        arrival order alone, two clients whose calls sent their headers and
        no message held every turn: each read given up as slow went to the
        same client's next call, queued ahead of everyone else's (a
        twenty-third probe: another client's GetModelInfo waited 20-30 s, as
        long as the attack lasted)."""
        self.waiting = collections.deque(e for e in self.waiting if not e[1].done())
        if not self.waiting or len(self.reads) >= self.reads_at_once:
            self._contention_changed()
            return
        by_client: dict[str, list[tuple[int, tuple]]] = {}
        for pos, entry in enumerate(self.waiting):
            by_client.setdefault(entry[0], []).append((pos, entry))
        reading = collections.Counter(r.client for r in self.reads)
        owes: dict[str, bool] = {}
        # Each client's next read that may start: (reading, owes, last granted, arrival, client, index).
        heap: list[tuple] = []

        def offer(client: str) -> None:
            if reading[client] >= self.reads_per_client:
                return
            entries, full = by_client[client], self._held_full(client)
            first = next((i for i, (_, e) in enumerate(entries) if e[4] or not full), None)   # e[4]: held_ok
            if first is not None:
                if client not in owes:
                    account = self.accounts.get(client)
                    # A unary read that delivered its message is refunded whole: owing
                    # means reads given up, timed out or cancelled, or streams idle, while others waited.
                    owes[client] = account is not None and account.owed_s >= IDLE_RECHECK_S
                heapq.heappush(heap, (reading[client], owes[client], self.last_grant.get(client, -1),
                                      entries[first][0], client, first))

        for client in by_client:
            offer(client)
        granted = set()
        while heap and len(self.reads) < self.reads_at_once:
            _, _, _, _, client, first = heapq.heappop(heap)
            self.grants += 1
            self.last_grant[client] = self.grants
            _, entry = by_client[client].pop(first)
            _, fut, grace, idle, _, account = entry
            granted.add(id(entry))
            turn = _Read(client, grace, idle, account)   # its clock starts when the waiter runs its read
            self.reads.append(turn)
            reading[client] += 1
            fut.set_result(turn)
            offer(client)
        if granted:
            self.waiting = collections.deque(e for e in self.waiting if id(e) not in granted)
        self._contention_changed()

    def _contention_changed(self) -> None:
        """Start or end the stretch in which idle stream turns are charged:
        reads wait while every turn, or every byte held, is taken."""
        full = len(self.reads) >= self.reads_at_once or self.held >= self.capacity
        contended = full and any(not entry[1].done() for entry in self.waiting)
        if contended and self.contended_since is None:
            self.contended_since = time.monotonic()
        elif not contended and self.contended_since is not None:
            self._count_idle()
            self.contended_since = None

    def _count_idle(self) -> None:
        now = time.monotonic()
        for r in self.reads:
            r.count_idle(now, self.contended_since, self._share(r))

    def _evict_slow(self, client: str, held_ok: bool = False) -> float:
        """Give up the oldest read past its grace (slow_read_s; a stream's:
        stream_idle_s and idle) that stands in ``client``'s way (its own when
        its share of reads or bytes is what is full; when bytes held are,
        only a stream's, which frees what it holds); returns the seconds
        until one may be (inf: none can help)."""
        own = self._reading(client) >= self.reads_per_client
        held_full = not held_ok and self._held_full(client)
        if not own and len(self.reads) < self.reads_at_once and not held_full:
            return float("inf")
        own = own or (held_full and self.held_by_client[client] >= self.held_per_client)
        self._count_idle()
        now = time.monotonic()
        mine = [r for r in self.reads if (not own or r.client == client) and (r.idle is not None or not held_full)]
        ready = [r for r in mine if r.may_be_given_up(now)]
        if not ready:
            # Not yet: look again when the next read passes its grace (a
            # stream may turn idle any time, and a turn granted but not yet
            # started has no clock: look every IDLE_RECHECK_S for those).
            waits = []
            for r in mine:
                if r.task is None:
                    waits.append(IDLE_RECHECK_S)
                elif not r.task.done() and not r.evicted:
                    at = r.given_up_at(now)
                    waits.append(IDLE_RECHECK_S if at is None else
                                 max(at - now, IDLE_RECHECK_S if r.idle is not None and r.account is None else 0.01))
            return min(waits, default=float("inf"))
        oldest = min(ready, key=lambda r: r.started)
        oldest.evicted = True
        oldest.task.cancel()                    # its reader frees the turn and wakes the waiters
        return float("inf")

    def release(self, client: str, n: int) -> None:
        """The call of a request of ``n`` bytes (``receive``'s) has ended."""
        self.held -= n
        self.held_by_client[client] -= n
        if self.held_by_client[client] <= 0:
            del self.held_by_client[client]
        self._wake()

    async def receive(self, client: str, read, wait_s: float, on_turn=None) -> bytes:
        """``await read()`` (the call's one message, bytes) for ``client``:
        waits up to ``wait_s`` seconds for its turn, then up to
        ``receive_timeout_s`` for the message. The message's size stays
        charged until ``release(client, len(message))``. GateRefused when
        either runs out, or when the read is given up for others (the read
        is abandoned: gRPC drops what it had). ``on_turn()``, if given, is
        called when the read's turn comes, before it starts."""
        entry = await self.turn(client, wait_s, account=self.account_for(client))
        if on_turn is not None:
            on_turn()
        # Not wait_for: it waits for the cancelled read to end, and gRPC's
        # read of a stalled message ends only with its call.
        entry.started, entry.task = time.monotonic(), asyncio.ensure_future(read())
        interrupted = False
        try:
            await asyncio.wait((entry.task,), timeout=self.receive_timeout_s)
        except BaseException:
            interrupted = True
            _abandon(entry.task)
            raise
        finally:
            # Held before the turn is free: the next read is admitted on a
            # count that includes it (a review: 5 reads, not 4, fitted 4).
            received, delivered = 0, False
            if (not interrupted and not entry.evicted and entry.task.done() and not entry.task.cancelled()
                    and entry.task.exception() is None):
                received, delivered = len(entry.task.result()), True
                self.hold(client, received)
            self.done(entry, received, whole=delivered)
        if not entry.task.done() or entry.evicted:
            _abandon(entry.task)
            self.timed_out += 1
            if entry.evicted:
                raise GateRefused(f"the request was still arriving after {time.monotonic() - entry.started:.1f} s "
                                  "while others waited; send it at once, or retry when the server is less busy")
            raise GateRefused(f"the request did not arrive within {self.receive_timeout_s:g} s; send it at once "
                              "(a slow or stalled upload holds memory others need)", "DEADLINE_EXCEEDED")
        return entry.task.result()      # or its error (nothing held then)

    async def turn(self, client: str, wait_s: float, grace: float | None = None, idle=None,
                   held_ok: bool = False, account: StreamAccount | None = None) -> _Read:
        """A turn to read one message for ``client``, waiting up to ``wait_s``
        (GateRefused after). The reader sets ``turn.task`` to its read when it
        starts it, which the gate cancels (setting ``turn.evicted``) to give
        the turn to a waiting read once it has run ``grace`` seconds (default
        slow_read_s) and ``idle()`` (if given) is true; ``done(turn)`` ends it.
        ``held_ok``: the turn does not wait for bytes held (a stream's next
        message, whose room the stream holds already). ``account``: the
        client's (``account_for``: its streams' idle turns while others wait
        add up there, and once they reach ``grace`` an idle pause of
        STREAM_YIELD_S gives the turn up; a unary read's, its time when given
        up, timed out or cancelled, and past twice its grace UNARY_YIELD_S)."""
        grace = self.slow_read_s if grace is None else grace
        if self._may_start(client, held_ok):
            turn = _Read(client, grace, idle, account)
            self.reads.append(turn)
            self.grants += 1
            self.last_grant[client] = self.grants
            self._contention_changed()
            return turn
        return await self._wait_turn(client, wait_s, grace, idle, held_ok, account)

    def done(self, turn: _Read, received: int = 0, whole: bool = False) -> None:
        """``turn``'s read has ended (or will never start); ``received``:
        the bytes of the message it read. Its stream gets back the time such
        a message takes to arrive (slow_read_s for the largest one): a stream
        counts as idle while a message arrives, and one uploading large
        messages back to back must not run up an account. ``whole``: all its
        time is given back (a unary read that delivered its message, empty or
        not: only reads given up, timed out or cancelled leave their client
        owing, and a client on a slow link is not held back for uploading
        slowly)."""
        if self.contended_since is not None and turn.task is not None:
            turn.count_idle(time.monotonic(), self.contended_since, self._share(turn))
        if (received > 0 or whole) and turn.account is not None and turn.charged > 0:
            turn.account.owed_s -= (turn.charged if whole else
                                    min(turn.charged, self.slow_read_s * received / self.message))
        self.reads.remove(turn)
        self._wake()

    def hold(self, client: str, n: int) -> None:
        """``n`` bytes received for ``client`` are held until ``release``."""
        self.held += n
        self.held_by_client[client] += n
        self._contention_changed()

    async def _wait_turn(self, client: str, wait_s: float, grace: float, idle, held_ok: bool,
                         account: StreamAccount | None) -> _Read:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.waiting.append((client, fut, grace, idle, held_ok, account))
        self._contention_changed()
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
                await asyncio.wait((fut,), timeout=min(left, self._evict_slow(client, held_ok) + 0.01))
        except BaseException:
            if fut.done() and not fut.cancelled():       # granted as we were cancelled
                self.done(fut.result())
            fut.cancel()
            self._wake()                                 # forgets it (and the contention, if it was the last)
            raise
        return fut.result()


def _abandon(task: asyncio.Future) -> None:
    """Cancel an abandoned read and retrieve its outcome (it ends with its
    call's error), so asyncio logs no 'exception was never retrieved'."""
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
