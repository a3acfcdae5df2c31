"""The pipeline for a concurrent server: many callers, one model.

Each image is decoded in the thread pool, then waits in the
``DynamicBatcher`` for company before the model runs, so concurrent requests
share model calls. In-flight images are bounded (backpressure: callers beyond
``max_inflight`` wait rather than growing memory).
"""
from __future__ import annotations

import asyncio
import collections
import contextvars

from .batcher import DynamicBatcher
from .decode import DecodeError
from .pipeline import Embedder, ImageEmbedding


# The connection a call came on (set by the server's interceptor): decodes
# are shared fairly between connections (see AsyncEmbedder).
connection: contextvars.ContextVar[str] = contextvars.ContextVar("imagesieve_connection", default="")


class _FairShare:
    """At most ``per_key`` decodes queued or running for one connection: a
    connection sending costly images (256 large PNGs) waits behind its own,
    while each other connection still gets its turn at the decode threads."""

    def __init__(self, per_key: int):
        self.per_key = per_key
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._users: collections.Counter = collections.Counter()

    async def __call__(self, key: str, fn):
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = asyncio.Semaphore(self.per_key)
        self._users[key] += 1
        try:
            async with gate:
                return await fn()
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._gates[key]


class AsyncEmbedder:
    def __init__(self, embedder: Embedder, max_delay_s: float = 0.005, max_queue: int = 1024,
                 max_inflight: int = 512):
        self.embedder = embedder
        self.batcher = DynamicBatcher(embedder.run_model, embedder.max_batch_size, max_delay_s, max_queue)
        self._inflight: asyncio.Semaphore | None = None
        self._max_inflight = max_inflight
        # As many of one connection's decodes at once as there are decoders:
        # alone it uses them all, among others it gets its share.
        self._fair = _FairShare(embedder.decode_workers)

    async def start(self) -> None:
        self._inflight = asyncio.Semaphore(self._max_inflight)
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        self.embedder.close()

    async def embed(self, data: bytes, with_signature: bool = False) -> ImageEmbedding:
        """One image -> ImageEmbedding (with its layout signature when
        ``with_signature``); bad input sets ``error``, never raises
        DecodeError. QueueFullError propagates (the caller maps it to
        RESOURCE_EXHAUSTED)."""
        loop = asyncio.get_running_loop()
        async with self._inflight:
            try:
                prepared = await self._fair(connection.get(), lambda: loop.run_in_executor(
                    self.embedder.pool, self.embedder.prepare, data, with_signature))
            except DecodeError as e:
                return ImageEmbedding(error=e)
            try:
                vector, logits = await self.batcher.submit(prepared.tensor)
            finally:
                self.embedder.budget.release(prepared.charged)
            return ImageEmbedding(vector, logits, prepared.width, prepared.height, signature=prepared.signature)

    async def embed_many(self, images: list[bytes]) -> list[ImageEmbedding]:
        return list(await asyncio.gather(*(self.embed(d) for d in images)))
