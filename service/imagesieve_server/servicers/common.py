"""What every adapter shares: turning an ``Image`` message into an embedding
(or a per-item error) within the server's memory budget, per-item limits,
and streams answered in order."""
from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import grpc

from imagesieve.v1 import common_pb2

from ..collections import NewImage
from ..collections.store import NO_DESCRIPTORS, clipped
from ..engine.async_embedder import AsyncEmbedder
from ..engine.batcher import QueueFullError
from ..engine.budget import BudgetExceeded, MemoryBudget
from ..engine.owners import Owner, Tally, choose, owner_of
from ..engine.pipeline import ImageEmbedding
from ..observability import stream_room
from ..paths import NotRegularFile, PathPolicy, quoted_path, read_fd


# Status details travel in metadata (16 KiB at most by default): a message
# that quotes a hostile field whole (a million fractions, a 100 KB grouping
# name) would reach the client as RESOURCE_EXHAUSTED "metadata size exceeds
# hard limit", which its retry policy then repeats.
DETAIL_CHARS = 2048


def detail(error: Exception) -> str:
    """``error``'s message as a status detail: clipped to DETAIL_CHARS."""
    return clipped(str(error), DETAIL_CHARS)


async def abort_invalid(context, error: Exception) -> None:
    """Abort INVALID_ARGUMENT with ``error``'s message, clipped."""
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, detail(error))


def item_error(code: grpc.StatusCode | str, message: str) -> common_pb2.ItemError:
    code = grpc.StatusCode[code] if isinstance(code, str) else code
    return common_pb2.ItemError(code=code.value[0], message=message)


def read_error(path: str, e: OSError) -> common_pb2.ItemError:
    """A file that could not be opened or read: RESOURCE_EXHAUSTED when the
    server has no descriptor left (retry later; the file may well exist),
    else NOT_FOUND."""
    if e.errno in NO_DESCRIPTORS:
        return item_error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"cannot read {quoted_path(path)}: the server has no file descriptor left; retry later")
    return item_error(grpc.StatusCode.NOT_FOUND, f"cannot read {quoted_path(path)}: {e.strerror or e}")


FILE_WORKERS = 8          # threads that open and read server_path files
SHARE_S = 2.0             # a file's answer is shared this long after it is ready...
SHARE_MAX = 256           # ...and at most this many answers are kept
READ_TIMEOUT_S = 10.0     # a file that takes longer (a hung network mount) fails alone


class ImageReader:
    """Image message -> embedding, with every byte charged to the server's
    memory budget while it is held.

    Server paths only inside allowed roots and only regular files, opened
    and read on a pool of their own with a timeout: a slow or blocking file
    fails its item and cannot stall decoding or other calls."""

    def __init__(self, engine: AsyncEmbedder, paths: PathPolicy, budget: MemoryBudget | None = None,
                 read_timeout_s: float = READ_TIMEOUT_S):
        self.engine = engine
        self.paths = paths
        self.budget = budget or MemoryBudget(0)
        self.read_timeout_s = read_timeout_s
        self.files = ThreadPoolExecutor(FILE_WORKERS, thread_name_prefix="imagesieve-files")
        # server_path answers shared by their askers (see embed): by file identity
        self._shared: dict[tuple, asyncio.Future] = {}
        self._shared_until: dict[tuple, float] = {}           # finished ones, until when they are kept

    async def _in_file_pool(self, fn, *args):
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self.files, fn, *args), self.read_timeout_s)

    async def embed_for_collection(self, image, sha256: str = "") -> tuple[NewImage | None,
                                                                             common_pb2.ItemError | None]:
        """Image message -> (NewImage with its layout signature, stored for
        stage-2 verification, None), or (None, ItemError). ``sha256``: the
        bytes' hash when the caller already took it (the exact-twin check)."""
        result, err, sha = await self.embed(image, with_signature=True, with_hash=not sha256)
        sha = sha256 or sha
        if err is not None:
            return None, err
        return NewImage(key=image.key, sha256=sha, vector=result.vector, label=image.label, split=image.split,
                        width=result.width, height=result.height, signature=result.signature), None

    async def embed(self, image: common_pb2.Image, with_signature: bool = False, with_hash: bool = False,
                    with_properties: bool = False
                    ) -> tuple[ImageEmbedding | None, common_pb2.ItemError | None, str]:
        """(embedding, None, sha256 hex of the bytes when ``with_hash``, else
        "") or (None, ItemError, ""); the image's properties too with
        ``with_properties`` (collections store none: their calls do not pay
        for them). Never raises for the image's own faults;
        QueueFullError propagates (the call's RESOURCE_EXHAUSTED).

        A ``server_path`` file (one file: same device, inode, size,
        modification and change times, whatever the path's spelling) asked for while it
        is being read or within SHARE_S after, by any item of any call, is
        read and decoded once and every asker gets that answer: a 9 KB
        request naming one large file 256 times costs one decode, not 256."""
        which = image.WhichOneof("source")
        if which is None:
            return None, item_error(grpc.StatusCode.INVALID_ARGUMENT, "image has neither data nor server_path"), ""
        if which == "data":
            return await self._embed_data(image.data, with_signature, with_hash, with_properties)
        opened = await self._open(image.server_path)
        if not isinstance(opened, tuple):
            return None, opened, ""
        fd, st = opened
        # ctime too: a file rewritten in place with its old mtime put back (cp -p, tar, rsync
        # --inplace) kept its key, and got the old picture's answer (a twenty-seventh probe);
        # no one can set a ctime back.
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, with_signature, with_hash,
               with_properties)
        self._forget_shared()
        shared = self._shared.get(key)
        if shared is not None:
            os.close(fd)
        else:
            shared = self._shared[key] = asyncio.ensure_future(
                self._embed_opened(image.server_path, fd, st.st_size, with_signature, with_hash, with_properties))
            shared.add_done_callback(lambda done: self._keep_or_drop(key, done))
        # shield: one asker leaving (a cancelled call) must not cancel the others' answer
        return await asyncio.shield(shared)

    def _keep_or_drop(self, key, done: asyncio.Future) -> None:
        # Answers (not errors: a full budget is no answer for later askers) stay SHARE_S.
        if done.cancelled() or done.exception() is not None or done.result()[1] is not None:
            self._shared.pop(key, None)
        else:
            self._shared_until[key] = time.monotonic() + SHARE_S

    def _forget_shared(self) -> None:
        now = time.monotonic()
        over = len(self._shared_until) - SHARE_MAX
        for key, until in list(self._shared_until.items()):     # oldest first
            if until > now and over <= 0:
                break
            del self._shared_until[key]
            self._shared.pop(key, None)
            over -= 1

    async def _embed_opened(self, path: str, fd: int, size: int, with_signature: bool, with_hash: bool,
                            with_properties: bool):
        data, reserved = await self._read_opened(path, fd, size)
        if not isinstance(data, bytes):
            return None, data, ""
        return await self._embed_data(data, with_signature, with_hash, with_properties, reserved)

    async def _embed_data(self, data: bytes, with_signature: bool, with_hash: bool, with_properties: bool = False,
                          reserved: int = 0):
        """Embed bytes already in memory; ``reserved``: the bytes already
        charged for them (a file read), else (0) they are charged here."""
        try:
            if not reserved:
                reserved = await self.budget.reserve(len(data), "this image")   # its request's charge ended
            result = await self.engine.embed(data, with_signature, with_properties)
            if result.error is not None:
                return None, item_error(result.error.code, str(result.error)), ""
            return result, None, content_hash(data) if with_hash else ""
        except BudgetExceeded as e:
            return None, item_error(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)), ""
        finally:
            self.budget.release(reserved, held=True)

    async def _open(self, path: str):
        """(descriptor, its stat) of a regular file inside a root, or an
        ItemError. Opened on the file pool with a timeout."""
        opening = self.files.submit(self.paths.open_regular, path)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(opening), self.read_timeout_s)
        except PermissionError as e:
            return item_error(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except (ValueError, NotRegularFile) as e:
            return item_error(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except asyncio.TimeoutError:
            opening.add_done_callback(_close_late_descriptor)     # if the open ever returns
            return item_error(grpc.StatusCode.DEADLINE_EXCEEDED,
                              f"opening {quoted_path(path)} took over {self.read_timeout_s:.0f} s")
        except OSError as e:
            return read_error(path, e)

    async def _read_opened(self, path: str, fd: int, size: int) -> tuple[bytes | common_pb2.ItemError, int]:
        """(bytes, bytes reserved) or (ItemError, 0); closes ``fd``. The
        file's size is charged to the budget before it is read."""
        max_bytes = self.engine.embedder.limits.max_bytes
        if size > max_bytes:
            os.close(fd)
            return item_error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"{quoted_path(path)} is {size} bytes, above the limit of {max_bytes}"), 0
        try:
            reserved = await self.budget.reserve(size, f"reading {quoted_path(path)}")
        except BudgetExceeded as e:
            os.close(fd)
            return item_error(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)), 0
        try:
            # The file may have grown since fstat: never read past the limit.
            return await self._in_file_pool(read_fd, fd, min(size, max_bytes) + 1), reserved
        except asyncio.TimeoutError:
            self.budget.release(reserved, held=True)
            return item_error(grpc.StatusCode.DEADLINE_EXCEEDED,
                              f"reading {quoted_path(path)} took over {self.read_timeout_s:.0f} s"), 0
        except OSError as e:
            self.budget.release(reserved, held=True)
            return read_error(path, e), 0

    def close(self) -> None:
        self.files.shutdown(wait=False, cancel_futures=True)


# Per-item text limits (UTF-8 bytes): one client's 2 MB labels must not make
# every ListCollections answer exceed the send limit.
MAX_KEY_BYTES = 1024
MAX_LABEL_BYTES = 256
MAX_SPLIT_BYTES = 64


def text_problem(image) -> str | None:
    """Why an ``Image`` message's key, label or split is too long, or None."""
    for field, limit in (("key", MAX_KEY_BYTES), ("label", MAX_LABEL_BYTES), ("split", MAX_SPLIT_BYTES)):
        size = len(getattr(image, field).encode())
        if size > limit:
            return f"{field} is {size} bytes, above the limit of {limit}"
    return None


def _close_late_descriptor(opening) -> None:
    if not opening.cancelled() and opening.exception() is None:
        os.close(opening.result()[0])


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


IMAGES_AT_ONCE = 8        # images of one request decoded or embedded at once


async def gather_bounded(coros, limit: int = IMAGES_AT_ONCE) -> list:
    """``asyncio.gather`` with at most ``limit`` of one request's images in
    work at once, in order. Fairness: a request of 256 large images no
    longer queues 256 decodes ahead of every other caller's images."""
    gate = asyncio.Semaphore(limit)

    async def one(coro):
        async with gate:
            return await coro
    return list(await asyncio.gather(*(one(c) for c in coros)))


class _FairTurns:
    """``width`` turns, granted as they free up to the waiting client that
    holds the fewest, then to its waiting connection that holds the fewest
    (owners: (client, connection)), among equals at each level the one
    granted a turn longest ago (round robin), in order within an owner: not
    in arrival order, in which one client's queued calls would go before
    everyone else's, nor by connection alone, by which one client's 16
    connections took 16 shares. Event-loop only (no locks)."""

    def __init__(self, width: int):
        self.free = width
        self.holding = Tally()
        self.waiting: dict[Owner, collections.deque] = {}
        # The number of the last grant, per owner and per client holding or waiting.
        self.granted_at: dict[Owner, int] = {}
        self.client_granted_at: dict[str, int] = {}
        self.grants = 0

    async def acquire(self, owner: Owner) -> None:
        if self.free and not self.waiting:
            self._grant_to(owner)
            return
        turn = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(owner, collections.deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():     # granted as it was cancelled: pass it on
                self.release(owner)
            else:
                queue = self.waiting.get(owner)
                if queue is not None and turn in queue:
                    queue.remove(turn)
                    if not queue:
                        del self.waiting[owner]
                        self._forget(owner)
            raise

    def release(self, owner: Owner) -> None:
        self.holding.remove(owner)
        self._forget(owner)
        self.free += 1
        while self.free and self.waiting:
            first = choose(self.waiting,
                           lambda c, _: (self.holding.of_client(c), self.client_granted_at.get(c, -1)),
                           lambda o: (self.holding[o], self.granted_at.get(o, -1)))
            queue = self.waiting[first]
            turn = queue.popleft()
            if not queue:
                del self.waiting[first]
            if not turn.done():
                self._grant_to(first)
                turn.set_result(None)
            elif first not in self.waiting:
                self._forget(first)

    def _forget(self, owner: Owner) -> None:
        """Drop the round robin's records of ``owner`` and its client if they
        neither hold nor wait for a turn."""
        if not self.holding[owner] and owner not in self.waiting:
            self.granted_at.pop(owner, None)
            client = owner[0]
            if not self.holding.of_client(client) and all(o[0] != client for o in self.waiting):
                self.client_granted_at.pop(client, None)

    def _grant_to(self, owner: Owner) -> None:
        self.free -= 1
        self.holding.add(owner)
        self.grants += 1
        self.granted_at[owner] = self.client_granted_at[owner[0]] = self.grants


class CollectionTurns:
    """At most ``width`` threads at once per collection for one kind of
    call; the others wait on the event loop, holding no thread. Calls that
    wait for a collection's lock inside their threads held every thread of
    a shared pool while one collection was busy: one client's snapshots
    and removals (or its checks on one large collection) kept other
    collections' stats and checks waiting for seconds (a twenty-fourth
    probe: a one-image check p50 42 ms -> 842 ms, stats 2 ms -> 922 ms).
    A freed turn goes to the waiting client holding the fewest of that
    collection's turns, to its waiting connection holding the fewest
    (``owner``: (client, connection), or a string: a connection of client
    ''): in arrival order, one client's queued checks on a collection went
    before another client's check of the same collection. A cancelled
    call's work is dropped if it has not started, else it keeps its turn
    until its thread ends (it cannot be stopped)."""

    def __init__(self, width: int):
        if width < 1:
            raise ValueError(f"width must be >= 1; got {width}")
        self.width = width
        self._turns: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def run(self, c, submit, fn, *args, owner: Owner | str = ""):
        """``submit(fn, *args)`` (a pool's: a concurrent Future) in one of
        ``c``'s turns, taken for ``owner``; its result."""
        owner = owner_of(owner)
        turns = self._turns.get(c)
        if turns is None:
            turns = self._turns[c] = _FairTurns(self.width)
        await turns.acquire(owner)
        try:
            work = submit(fn, *args)
            waiting = asyncio.wrap_future(work)
            try:
                return await asyncio.shield(waiting)
            except asyncio.CancelledError:
                if not work.cancel():
                    while not waiting.done():        # cancelled again meanwhile: still its turn (a review)
                        try:
                            await asyncio.wait([waiting])
                        except asyncio.CancelledError:
                            pass
                raise
        finally:
            turns.release(owner)


class BadRequest(ValueError):
    """A request the stream cannot go on with (INVALID_ARGUMENT)."""


STREAM_BUDGET_WAIT_S = 10.0   # a stream pauses this long for memory before it is refused


class _Held:
    """A request's bytes charged to the budget until its work starts (then
    its images are charged one by one, by ImageReader) or it is dropped."""
    __slots__ = ("budget", "n")

    def __init__(self, budget: MemoryBudget, n: int):
        self.budget, self.n = budget, n

    def release(self, *_):
        n, self.n = self.n, 0
        self.budget.release(n, held=True)


# Answers one stream may have in work or waiting to be sent, in bytes (in
# work: the caller's estimate from the request; sent-to-be: their real size):
# the request window alone let a client that never read its answers (8.6 KB
# requests for 3.7 MB answers) hold 16 answers a stream, 3.6 GB over 30
# streams with a 256 MiB budget. One request is always worked on.
STREAM_ANSWER_BYTES = 8 << 20


async def ordered_concurrent(request_iterator, handle, window: int, budget: MemoryBudget | None = None,
                             answer_bytes=None):
    """Yield ``await handle(request)`` for each request of a stream, in order,
    working on up to ``window`` requests at once, and on fewer while their
    answers would pass STREAM_ANSWER_BYTES: ``answer_bytes(request)``, an
    upper estimate of a request's answer (None: 0), counts it while in work,
    its real size once answered and until gRPC takes it. ``handle`` may raise
    BadRequest; the caller turns it into a status. With ``budget``, each
    request read ahead is charged its size while it waits: the stream stops
    reading (backpressure) while the budget is in use, and ends
    RESOURCE_EXHAUSTED (QueueFullError) after STREAM_BUDGET_WAIT_S. Before,
    20 streams of unread 30 MB requests took 3 GB. In a server, a request
    is also started only when its client has room for its answer among all
    of its streams' (``observability.StreamRoom``): it waits, unstarted,
    while the client leaves answers unread."""
    pending: asyncio.Queue = asyncio.Queue(window)
    done = object()
    counted: dict[asyncio.Future, int] = {}   # per request in work or not yet sent: its answer's bytes
    room = asyncio.Event()                    # set whenever an answer is in or sent
    client_room = stream_room.get()
    reserved: dict[asyncio.Future, int] = {}  # per request started: the bytes reserved in client_room

    async def started(request, held: _Held | None):
        if held is not None:
            held.release()
        answer = await handle(request)
        counted[asyncio.current_task()] = answer.ByteSize()
        room.set()
        return answer

    def sent(task) -> None:
        counted.pop(task, None)
        if client_room is not None and task in reserved:
            client_room.release(reserved.pop(task))
        room.set()

    async def read_requests():
        try:
            async for request in request_iterator:
                need = int(answer_bytes(request)) if answer_bytes is not None else 0
                while counted and sum(counted.values()) + need > STREAM_ANSWER_BYTES:
                    room.clear()      # no further request is read: HTTP/2 flow control holds the client
                    await room.wait()
                mine = await client_room.reserve(need) if client_room is not None and need else 0
                held = None
                try:
                    if budget is not None:
                        held = _Held(budget, await budget.reserve(request.ByteSize(), "the next request",
                                                                  STREAM_BUDGET_WAIT_S))
                except BaseException as e:
                    if mine:
                        client_room.release(mine)
                    if isinstance(e, BudgetExceeded):
                        raise QueueFullError(str(e)) from None
                    raise
                task = asyncio.ensure_future(started(request, held))
                counted[task] = need
                if mine:
                    reserved[task] = mine
                if held is not None:
                    task.add_done_callback(held.release)      # also when dropped unstarted
                try:
                    await pending.put(task)
                except asyncio.CancelledError:
                    task.cancel()
                    raise
        except Exception as e:  # noqa: BLE001 - client gone or broken stream
            await pending.put(e)
            return
        await pending.put(done)

    reader = asyncio.ensure_future(read_requests())
    try:
        while True:
            item = await pending.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            try:
                answer = await item
                yield answer          # resumed once gRPC has taken it
            finally:
                sent(item)
    finally:
        reader.cancel()
        while not pending.empty():
            item = pending.get_nowait()
            if isinstance(item, asyncio.Future):
                item.cancel()
        for task in list(reserved):          # started and never sent: their room back
            sent(task)
