"""gRPC adapters: validate the request, delegate to the engine, translate the
answer. No image or model logic lives here."""
from __future__ import annotations

import asyncio
import logging

import grpc

from imagesieve.v1 import (analysis_pb2_grpc, collections_pb2_grpc, common_pb2,
                           duplicates_pb2_grpc, embedding_pb2, embedding_pb2_grpc)

from .engine.async_embedder import AsyncEmbedder
from .engine.batcher import QueueFullError
from .engine.onnx_executor import softmax_top_k
from .engine.pipeline import ImageEmbedding
from .paths import PathPolicy

log = logging.getLogger("imagesieve.server")

MAX_TOP_K = 100


def item_error(code: grpc.StatusCode, message: str) -> common_pb2.ItemError:
    return common_pb2.ItemError(code=code.value[0], message=message)


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    def __init__(self, engine: AsyncEmbedder, paths: PathPolicy, max_images_per_request: int = 256,
                 stream_window: int = 16):
        self.engine = engine
        self.paths = paths
        self.max_images = max_images_per_request
        self.stream_window = stream_window
        ex = engine.embedder.executor
        self.model_name = ex.manifest.name
        self.class_names = ex.class_names

    # -- validation ---------------------------------------------------------
    def _check(self, request: embedding_pb2.EmbedRequest) -> str | None:
        if len(request.images) > self.max_images:
            return (f"{len(request.images)} images in one request; the limit is {self.max_images} "
                    f"(split the batch or use EmbedStream)")
        if not 0 <= request.top_k_classes <= MAX_TOP_K:
            return f"top_k_classes must be in 0..{MAX_TOP_K}, got {request.top_k_classes}"
        if request.top_k_classes and not self.engine.embedder.executor.has_logits:
            return f"model {self.model_name} has no classifier head; top_k_classes must be 0"
        return None

    # -- one image ----------------------------------------------------------
    async def _embed_image(self, image, top_k: int) -> embedding_pb2.Embedding:
        out = embedding_pb2.Embedding(key=image.key)
        which = image.WhichOneof("source")
        if which is None:
            out.error.CopyFrom(item_error(grpc.StatusCode.INVALID_ARGUMENT, "image has neither data nor server_path"))
            return out
        if which == "server_path":
            try:
                data = await asyncio.get_running_loop().run_in_executor(
                    self.engine.embedder.pool, self.paths.read, image.server_path,
                    self.engine.embedder.limits.max_bytes)
            except PermissionError as e:
                out.error.CopyFrom(item_error(grpc.StatusCode.PERMISSION_DENIED, str(e)))
                return out
            except OSError as e:
                out.error.CopyFrom(item_error(grpc.StatusCode.NOT_FOUND, f"cannot read {image.server_path!r}: {e.strerror}"))
                return out
        else:
            data = image.data
        result: ImageEmbedding = await self.engine.embed(data)
        if result.error is not None:
            out.error.CopyFrom(item_error(grpc.StatusCode[result.error.code], str(result.error)))
            return out
        out.vector.extend(result.vector.tolist())
        out.width, out.height = result.width, result.height
        if top_k and result.logits is not None:
            idx, prob = softmax_top_k(result.logits[None, :], top_k)
            for i, p in zip(idx[0].tolist(), prob[0].tolist()):
                name = self.class_names[i] if i < len(self.class_names) else str(i)
                out.top_classes.add(index=i, name=name, probability=p)
        return out

    async def _embed_request(self, request) -> embedding_pb2.EmbedResponse:
        results = await asyncio.gather(*(self._embed_image(im, request.top_k_classes)
                                         for im in request.images))
        return embedding_pb2.EmbedResponse(embeddings=results, model=self.model_name)

    # -- RPCs ---------------------------------------------------------------
    async def Embed(self, request, context):
        problem = self._check(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        try:
            return await self._embed_request(request)
        except QueueFullError as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{e}; retry with backoff")

    async def EmbedStream(self, request_iterator, context):
        # Requests are worked on concurrently (up to stream_window at once)
        # and answered in order.
        pending: asyncio.Queue = asyncio.Queue(self.stream_window)
        done = object()

        async def read_requests():
            try:
                async for request in request_iterator:
                    problem = self._check(request)
                    if problem:
                        await pending.put(ValueError(problem))
                        return
                    await pending.put(asyncio.ensure_future(self._embed_request(request)))
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
                if isinstance(item, ValueError):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(item))
                if isinstance(item, BaseException):
                    raise item
                try:
                    yield await item
                except QueueFullError as e:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{e}; retry with backoff")
        finally:
            reader.cancel()
            while not pending.empty():
                item = pending.get_nowait()
                if isinstance(item, asyncio.Future):
                    item.cancel()

    async def GetModelInfo(self, request, context):
        ex = self.engine.embedder.executor
        m = ex.manifest
        return embedding_pb2.ModelInfo(
            name=m.name, dim=m.embedding_dim, input_size=m.input_size, layout=m.layout,
            normalization=m.normalization, source=m.source, licence=m.licence, sha256=m.sha256,
            providers=ex.providers, max_batch_size=self.engine.embedder.max_batch_size,
            num_classes=m.num_classes)


# -- services whose engines are not built yet -------------------------------
_PLANNED = {
    collections_pb2_grpc.CollectionServiceServicer: "persistent FAISS collections (issue #3)",
    duplicates_pb2_grpc.DuplicateServiceServicer: "duplicate checks and search (issue #3)",
    analysis_pb2_grpc.AnalysisServiceServicer: "label-noise scoring (issue #4) and sample-size sweeps (issue #5)",
}


def planned_servicer(base: type) -> object:
    """An instance of ``base`` whose every RPC answers UNIMPLEMENTED, naming
    the method and the work that will provide it."""
    what = _PLANNED[base]
    service = base.__name__.removesuffix("Servicer")

    def make(method: str):
        message = f"imagesieve.v1.{service}/{method} is not implemented yet: {what} is planned"

        async def handler(self, request, context):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
        return handler

    methods = {m: make(m) for m in vars(base) if not m.startswith("_")}
    return type(f"Planned{base.__name__}", (base,), methods)()
