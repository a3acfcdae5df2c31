"""The pipeline for a concurrent server: many callers, one model.

Each image is decoded in the thread pool, then waits in the
``DynamicBatcher`` for company before the model runs, so concurrent requests
share model calls. In-flight images are bounded (backpressure: callers beyond
``max_inflight`` wait rather than growing memory), and the waiting images
are admitted fairly between clients, then their connections
(:class:`FairAdmission`). Each stage is shared by the call's owner,
``owners.current()``: (client, connection).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools

from .batcher import DynamicBatcher
from .decode import DecodeError
from .fair_pool import FairPool
from .owners import Owner, Tally, choose, current, owner_of
from .pipeline import Embedder, ImageEmbedding


class FairAdmission:
    """At most ``limit`` held at once; when every place is held, a freed one
    goes to the waiting client holding the fewest, to its waiting
    connection holding the fewest (``owner``: (client, connection), or a
    string: a connection of client ''), the first come among equals. A
    first-come semaphore here let one client keep every place and a queue
    behind them (120 calls of 8 large images: 512 held, 448 waiting), so
    another client's image waited 22-35 s for its turn before the fair
    decoders and batcher ever saw it (a twenty-seventh probe); by
    connection alone, one address's 16 connections took 16 shares. One
    event loop's (not thread-safe)."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"limit must be >= 1; got {limit}")
        self.limit = limit
        self.held = Tally()
        self.total = 0
        self._waiting: dict[Owner, collections.deque] = {}    # owner -> (arrival, future), first come first
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def place(self, owner: Owner | str):
        owner = owner_of(owner)
        await self._acquire(owner)
        try:
            yield
        finally:
            self._release(owner)

    async def _acquire(self, owner: Owner) -> None:
        if self.total < self.limit and not self._waiting:
            self._grant(owner)
            return
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(owner, collections.deque()).append((next(self._arrivals), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():     # granted as it was cancelled: pass it on
                self._release(owner)
            else:           # leaves the line (the fast path admits only while nobody waits)
                line = self._waiting.get(owner, ())
                for entry in line:
                    if entry[1] is future:
                        line.remove(entry)
                        break
                if owner in self._waiting and not line:
                    del self._waiting[owner]
                self._hand_out()
            raise

    def _grant(self, owner: Owner) -> None:
        self.held.add(owner)
        self.total += 1

    def _release(self, owner: Owner) -> None:
        self.held.remove(owner)
        self.total -= 1
        self._hand_out()

    def _first(self, owner: Owner) -> int:
        return self._waiting[owner][0][0]

    def _hand_out(self) -> None:
        while self.total < self.limit and self._waiting:
            owner = choose(self._waiting,
                           lambda c, owners: (self.held.of_client(c), min(map(self._first, owners))),
                           lambda o: (self.held[o], self._first(o)))
            line = self._waiting[owner]
            _, future = line.popleft()
            if not line:
                del self._waiting[owner]
            if future.cancelled():
                continue
            self._grant(owner)
            future.set_result(None)


class AsyncEmbedder:
    def __init__(self, embedder: Embedder, max_delay_s: float = 0.005, max_queue: int = 1024,
                 max_inflight: int = 512):
        self.embedder = embedder
        self.batcher = DynamicBatcher(embedder.run_model, embedder.max_batch_size, max_delay_s, max_queue)
        self._inflight: FairAdmission | None = None
        self._max_inflight = max_inflight
        # Alone a connection uses every decoder; among others, its share of its client's share.
        self.decoders = FairPool(embedder.decode_workers)

    async def start(self) -> None:
        self._inflight = FairAdmission(self._max_inflight)
        self.batcher.start()

    @property
    def images_in_flight(self) -> int:
        """Images holding a place (being decoded or embedded), 0 before start."""
        return 0 if self._inflight is None else self._inflight.total

    async def stop(self) -> None:
        await self.batcher.stop()
        self.decoders.shutdown(wait=False, cancel_futures=True)     # a long decode must not block the loop
        self.embedder.close()

    def _release_unclaimed(self, decoding) -> None:
        if not decoding.cancelled() and decoding.exception() is None:
            self.embedder.budget.release(decoding.result().charged)

    async def embed(self, data: bytes, with_signature: bool = False, with_properties: bool = False
                    ) -> ImageEmbedding:
        """One image -> ImageEmbedding (with its layout signature when
        ``with_signature``, its properties when ``with_properties``); bad
        input sets ``error``, never raises
        DecodeError. QueueFullError propagates (the caller maps it to
        RESOURCE_EXHAUSTED)."""
        owner = current()
        async with self._inflight.place(owner):
            decoding = self.decoders.submit(owner, self.embedder.prepare, data, with_signature, with_properties)
            try:
                prepared = await asyncio.wrap_future(decoding)
            except DecodeError as e:
                return ImageEmbedding(error=e.detached())
            except asyncio.CancelledError:
                # The caller left while its image decoded: give back what the raster holds.
                decoding.add_done_callback(self._release_unclaimed)
                raise
            try:
                vector, logits = await self.batcher.submit(prepared.tensor, owner)
            finally:
                self.embedder.budget.release(prepared.charged)
            return ImageEmbedding(vector, logits, prepared.width, prepared.height, signature=prepared.signature,
                                  properties=prepared.properties)

