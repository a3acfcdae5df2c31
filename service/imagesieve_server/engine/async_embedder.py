"""The pipeline for a concurrent server: many callers, one model.

Each image is decoded in the thread pool, then waits in the
``DynamicBatcher`` for company before the model runs, so concurrent requests
share model calls. In-flight images are bounded (backpressure: callers beyond
``max_inflight`` wait rather than growing memory).
"""
from __future__ import annotations

import asyncio

from .batcher import DynamicBatcher
from .decode import DecodeError
from .pipeline import Embedder, ImageEmbedding


class AsyncEmbedder:
    def __init__(self, embedder: Embedder, max_delay_s: float = 0.005, max_queue: int = 1024,
                 max_inflight: int = 512):
        self.embedder = embedder
        self.batcher = DynamicBatcher(embedder.run_model, embedder.max_batch_size, max_delay_s, max_queue)
        self._inflight: asyncio.Semaphore | None = None
        self._max_inflight = max_inflight

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
                prepared = await loop.run_in_executor(self.embedder.pool, self.embedder.prepare, data,
                                                      with_signature)
            except DecodeError as e:
                return ImageEmbedding(error=e)
            vector, logits = await self.batcher.submit(prepared.tensor)
            return ImageEmbedding(vector, logits, prepared.width, prepared.height, signature=prepared.signature)

    async def embed_many(self, images: list[bytes]) -> list[ImageEmbedding]:
        return list(await asyncio.gather(*(self.embed(d) for d in images)))
