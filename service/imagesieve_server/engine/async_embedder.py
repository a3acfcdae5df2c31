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
    """Decodes shared fairly between connections, without idling decoders: a
    connection may have ``workers // connections with images waiting`` (at
    least 1) decodes queued or running, so alone it uses every decoder and
    among 64 others its turn comes as often as theirs. Without it, one
    connection sending costly images (256 large PNGs a request) kept its
    share of the pool's FIFO queue full and took half the CPU."""

    def __init__(self, workers: int):
        self.workers = workers
        self._running: collections.Counter = collections.Counter()
        self._users: collections.Counter = collections.Counter()    # images wanting a decode, per key
        self._turns: dict[str, asyncio.Condition] = {}

    def _share(self) -> int:
        return max(1, self.workers // max(1, len(self._users)))

    async def __call__(self, key: str, fn):
        self._users[key] += 1
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = asyncio.Condition()
        try:
            async with turn:
                await turn.wait_for(lambda: self._running[key] < self._share())
                self._running[key] += 1
            try:
                return await fn()
            finally:
                async with turn:
                    self._running[key] -= 1
                    turn.notify()
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                # One connection fewer: everyone's share may grow.
                del self._users[key], self._running[key], self._turns[key]
                for other in self._turns.values():
                    async with other:
                        other.notify_all()


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

