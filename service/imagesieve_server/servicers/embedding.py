"""EmbeddingService: validate, delegate to the engine, translate."""
from __future__ import annotations

import logging

import grpc

from imagesieve.v1 import embedding_pb2, embedding_pb2_grpc

from ..engine.async_embedder import AsyncEmbedder
from ..engine.batcher import QueueFullError
from ..engine.onnx_executor import softmax_top_k
from ..engine.signature import SIGNATURE_BYTES
from .common import BadRequest, ImageReader, abort_invalid, gather_bounded, ordered_concurrent

log = logging.getLogger("imagesieve.server")

MAX_TOP_K = 100


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    def __init__(self, engine: AsyncEmbedder, reader: ImageReader, max_images_per_request: int = 256,
                 stream_window: int = 16):
        self.engine = engine
        self.reader = reader
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
    def _answer_bytes(self, request) -> int:
        """An upper estimate of ``request``'s answer (what a stream may hold unsent)."""
        per_image = (4 * self.engine.embedder.dim + 64 * max(0, request.top_k_classes) + 256
                     + (SIGNATURE_BYTES if request.with_layout_signature else 0))
        return len(request.images) * per_image + sum(len(im.key) for im in request.images)

    async def _embed_image(self, image, top_k: int, with_signature: bool = False) -> embedding_pb2.Embedding:
        out = embedding_pb2.Embedding(key=image.key)
        result, err, _ = await self.reader.embed(image, with_signature, with_properties=with_signature)
        if err is not None:
            out.error.CopyFrom(err)
            return out
        out.vector.extend(result.vector.tolist())
        out.width, out.height = result.width, result.height
        if with_signature:
            out.layout_signature = result.signature.tobytes()
            out.image_properties.extend(result.properties.tolist())
        if top_k and result.logits is not None:
            idx, prob = softmax_top_k(result.logits[None, :], top_k)
            for i, p in zip(idx[0].tolist(), prob[0].tolist()):
                name = self.class_names[i] if i < len(self.class_names) else str(i)
                out.top_classes.add(index=i, name=name, probability=p)
        return out

    async def _embed_request(self, request) -> embedding_pb2.EmbedResponse:
        results = await gather_bounded(self._embed_image(im, request.top_k_classes, request.with_layout_signature)
                                       for im in request.images)
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
        # Requests are worked on concurrently (up to stream_window) and answered in order.
        async def handle(request):
            problem = self._check(request)
            if problem:
                raise BadRequest(problem)
            return await self._embed_request(request)

        try:
            async for response in ordered_concurrent(request_iterator, handle, self.stream_window,
                                                     self.reader.budget, self._answer_bytes):
                yield response
        except BadRequest as e:
            await abort_invalid(context, e)
        except QueueFullError as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{e}; retry with backoff")

    async def GetModelInfo(self, request, context):
        ex = self.engine.embedder.executor
        m = ex.manifest
        return embedding_pb2.ModelInfo(
            name=m.name, dim=m.embedding_dim, input_size=m.input_size, layout=m.layout,
            normalization=m.normalization, source=m.source, licence=m.licence, sha256=m.sha256,
            providers=ex.providers, max_batch_size=self.engine.embedder.max_batch_size,
            num_classes=m.num_classes)
