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

from .owners import Owner, owner_of

RunBatch = Callable[[list[np.ndarray]], tuple[np.ndarray, "np.ndarray | None"]]


class QueueFullError(RuntimeError):
    pass


class DynamicBatcher:
    """Batches images from every caller. Images wait per ``owner`` (the
    server passes (client, connection); a string is a connection of client
    '') and batches take them round-robin across clients, and across each
    client's connections in turn: a connection with 128 images waiting no
    longer puts each other caller's image behind all of them (first come,
    first served did: one EmbedStream kept another client's one-image Embed
    at 2.4-2.9 s instead of 34 ms), and a client's 16 connections get one
    client's turns between them (by connection alone, 16 turns: a
    twenty-seventh probe)."""

    def __init__(self, run_batch: RunBatch, max_batch_size: int = 32, max_delay_s: float = 0.005,
                 max_queue: int = 1024):
        if max_batch_size < 1 or max_delay_s < 0 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_delay_s >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        # client -> connection -> its waiting (tensor, future)s; the orders are the round-robins'
        self._waiting: collections.OrderedDict[str, collections.OrderedDict[str, collections.deque]] = \
            collections.OrderedDict()
        self._count = 0
        self._arrived, self._idle = asyncio.Event(), asyncio.Event()     # bound to a loop when first awaited
        self._idle.set()
        self._task: asyncio.Task | None = None
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="imagesieve-model")

    @property
    def queue_depth(self) -> int:
        return self._count

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="dynamic-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        await self._idle.wait()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._model_thread.shutdown(wait=True)

    async def submit(self, tensor: np.ndarray, owner: Owner | str = "") -> tuple[np.ndarray, np.ndarray | None]:
        """Queue one (3, S, S) tensor for ``owner``; return its (embedding
        (D,), logits (C,) | None)."""
        if self._count >= self.max_queue:
            raise QueueFullError(f"model queue is full ({self.max_queue} images waiting)")
        client, conn = owner_of(owner)
        fut = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client, collections.OrderedDict()).setdefault(
            conn, collections.deque()).append((tensor, fut))
        self._count += 1
        self._idle.clear()
        self._arrived.set()
        return await fut

    def _take(self) -> list:
        """Up to max_batch_size waiting images, one per client in turn, of
        that client's connections in turn; a client or connection served
        goes to the back of its order."""
        batch = []
        while self._waiting and len(batch) < self.max_batch_size:
            for client in list(self._waiting):
                if len(batch) == self.max_batch_size:
                    break
                connections = self._waiting[client]
                conn, waiting = next(iter(connections.items()))
                batch.append(waiting.popleft())
                if waiting:
                    connections.move_to_end(conn)
                else:
                    del connections[conn]
                if connections:
                    self._waiting.move_to_end(client)
                else:
                    del self._waiting[client]
        self._count -= len(batch)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._count:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = loop.time() + self.max_delay_s
            while self._count < self.max_batch_size:     # wait a little for company
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
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
                if not self._count:
                    self._idle.set()
