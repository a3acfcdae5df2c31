"""What every adapter shares: turning an ``Image`` message into bytes (or a
per-item error), and error translation."""
from __future__ import annotations

import asyncio
import hashlib

import grpc

from imagesieve.v1 import common_pb2

from ..engine.async_embedder import AsyncEmbedder
from ..paths import PathPolicy


def item_error(code: grpc.StatusCode | str, message: str) -> common_pb2.ItemError:
    code = grpc.StatusCode[code] if isinstance(code, str) else code
    return common_pb2.ItemError(code=code.value[0], message=message)


class ImageReader:
    """Image message -> encoded bytes; server paths only inside allowed roots."""

    def __init__(self, engine: AsyncEmbedder, paths: PathPolicy):
        self.engine = engine
        self.paths = paths

    async def read(self, image: common_pb2.Image) -> bytes | common_pb2.ItemError:
        which = image.WhichOneof("source")
        if which is None:
            return item_error(grpc.StatusCode.INVALID_ARGUMENT, "image has neither data nor server_path")
        if which == "data":
            return image.data
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.engine.embedder.pool, self.paths.read, image.server_path,
                self.engine.embedder.limits.max_bytes)
        except PermissionError as e:
            return item_error(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except OSError as e:
            return item_error(grpc.StatusCode.NOT_FOUND, f"cannot read {image.server_path!r}: {e.strerror}")


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BadRequest(ValueError):
    """A request the stream cannot go on with (INVALID_ARGUMENT)."""


async def ordered_concurrent(request_iterator, handle, window: int):
    """Yield ``await handle(request)`` for each request of a stream, in order,
    working on up to ``window`` requests at once. ``handle`` may raise
    BadRequest; the caller turns it into a status."""
    pending: asyncio.Queue = asyncio.Queue(window)
    done = object()

    async def read_requests():
        try:
            async for request in request_iterator:
                await pending.put(asyncio.ensure_future(handle(request)))
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
            yield await item
    finally:
        reader.cancel()
        while not pending.empty():
            item = pending.get_nowait()
            if isinstance(item, asyncio.Future):
                item.cancel()
