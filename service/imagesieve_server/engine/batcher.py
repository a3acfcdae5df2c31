"""Dynamic micro-batching across concurrent requests (as Triton's dynamic
batcher): requests wait at most ``max_delay_s`` for company, a batch never
exceeds ``max_batch_size``, and the queue is bounded so overload is refused
(RESOURCE_EXHAUSTED upstream) instead of growing memory.

The model runs on one dedicated thread: ONNX Runtime already uses every core
inside one call, and while it runs the next batch gathers in the queue.
"""
from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

RunBatch = Callable[[list[np.ndarray]], tuple[np.ndarray, "np.ndarray | None"]]


class QueueFullError(RuntimeError):
    pass


class DynamicBatcher:
    def __init__(self, run_batch: RunBatch, max_batch_size: int = 32, max_delay_s: float = 0.005,
                 max_queue: int = 1024):
        if max_batch_size < 1 or max_delay_s < 0 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_delay_s >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="imagesieve-model")

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    def start(self) -> None:
        self._queue = asyncio.Queue(self.max_queue)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="dynamic-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._model_thread.shutdown(wait=True)

    async def submit(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Queue one (3, S, S) tensor; return its (embedding (D,), logits (C,) | None)."""
        fut = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((tensor, fut))
        except asyncio.QueueFull:
            raise QueueFullError(f"model queue is full ({self.max_queue} images waiting)") from None
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_delay_s
            while len(batch) < self.max_batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            live = [(t, f) for t, f in batch if not f.done()]  # cancelled callers cost nothing
            try:
                if live:
                    self.batch_sizes[len(live)] += 1
                    emb, logits = await loop.run_in_executor(
                        self._model_thread, self.run_batch, [t for t, _ in live])
                    for row, (_, fut) in enumerate(live):
                        if not fut.done():
                            fut.set_result((emb[row], None if logits is None else logits[row]))
            except Exception as e:  # noqa: BLE001 - a model failure fails this batch, not the server
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
            finally:
                for _ in batch:
                    self._queue.task_done()

