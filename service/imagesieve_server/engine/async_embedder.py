"""The pipeline for a concurrent server: many callers, one model.

Each image is decoded in the thread pool, then waits in the
``DynamicBatcher`` for company before the model runs, so concurrent requests
share model calls. In-flight images are bounded (backpressure: callers beyond
``max_inflight`` wait rather than growing memory).
"""
from __future__ import annotations

import asyncio
import contextvars

from .batcher import DynamicBatcher
from .decode import DecodeError
from .fair_pool import FairPool
from .pipeline import Embedder, ImageEmbedding


# The connection a call came on (set by the server's interceptor): decoding
# time is shared fairly between connections (see FairPool).
connection: contextvars.ContextVar[str] = contextvars.ContextVar("imagesieve_connection", default="")


class AsyncEmbedder:
    def __init__(self, embedder: Embedder, max_delay_s: float = 0.005, max_queue: int = 1024,
                 max_inflight: int = 512):
        self.embedder = embedder
        self.batcher = DynamicBatcher(embedder.run_model, embedder.max_batch_size, max_delay_s, max_queue)
        self._inflight: asyncio.Semaphore | None = None
        self._max_inflight = max_inflight
        # Alone a connection uses every decoder; among others, its share of the time.
        self.decoders = FairPool(embedder.decode_workers)

    async def start(self) -> None:
        self._inflight = asyncio.Semaphore(self._max_inflight)
        self.batcher.start()

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
        async with self._inflight:
            decoding = self.decoders.submit(connection.get(), self.embedder.prepare, data, with_signature,
                                           with_properties)
            try:
                prepared = await asyncio.wrap_future(decoding)
            except DecodeError as e:
                return ImageEmbedding(error=e.detached())
            except asyncio.CancelledError:
                # The caller left while its image decoded: give back what the raster holds.
                decoding.add_done_callback(self._release_unclaimed)
                raise
            try:
                vector, logits = await self.batcher.submit(prepared.tensor, connection.get())
            finally:
                self.embedder.budget.release(prepared.charged)
            return ImageEmbedding(vector, logits, prepared.width, prepared.height, signature=prepared.signature,
                                  properties=prepared.properties)

