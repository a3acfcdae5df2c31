"""EmbeddingService: validate, delegate to the engine, translate."""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from imagesieve.v1 import embedding_pb2, embedding_pb2_grpc

from ..engine.async_embedder import AsyncEmbedder
from ..engine.batcher import QueueFullError
from ..engine.onnx_executor import softmax_top_k
from ..engine.signature import SIGNATURE_BYTES
from .common import BadRequest, ImageReader, abort_invalid, gather_bounded, ordered_concurrent

log = logging.getLogger("imagesieve.server")

MAX_TOP_K = 100

# Identical items of one request are embedded and built once: server_path
# items by their path (the reader shares a file's answer between spellings),
# inline ones up to this size by their bytes (hashing larger ones costs more
# than it saves; they cost their sender as much as their answer).
SAME_DATA_BYTES = 64 << 10

# Answers of more items than this are built on ANSWER_POOL, not on the event
# loop; smaller ones (a single image) inline, without a thread's round trip.
BUILD_INLINE_ITEMS = 8
# One thread: builds hold the GIL, and more threads would only take turns
# with each other and with the loop.
ANSWER_POOL = ThreadPoolExecutor(1, thread_name_prefix="imagesieve-answers")


async def _on_answer_thread(fn, *args):
    """``fn(*args)`` on ANSWER_POOL; a build still queued when its call is
    cancelled is dropped."""
    return await asyncio.get_running_loop().run_in_executor(ANSWER_POOL, fn, *args)


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

    def _source(self, image):
        """What makes two items of one request the same image: the same
        ``server_path`` (or small inline bytes), else None (embedded alone)."""
        which = image.WhichOneof("source")
        if which == "server_path":
            return which, image.server_path
        if which == "data" and image.ByteSize() <= SAME_DATA_BYTES:
            return which, image.data
        return None

    async def _embed_request(self, request) -> embedding_pb2.EmbedResponse:
        top_k, with_signature = request.top_k_classes, request.with_layout_signature
        # An image named many times in one request (a 7.5 KB request naming
        # one file 256 times asks for 3.6 MB) is embedded once...
        firsts: dict[tuple, int] = {}
        distinct, slots = [], []
        for image in request.images:
            source = self._source(image)
            slot = firsts.get(source) if source is not None else None
            if slot is None:
                slot = len(distinct)
                distinct.append(image)
                if source is not None:
                    firsts[source] = slot
            slots.append(slot)
        outcomes = await gather_bounded(self.reader.embed(im, with_signature, with_properties=with_signature)
                                        for im in distinct)
        keys = [im.key for im in request.images]
        if len(keys) <= BUILD_INLINE_ITEMS:
            return self._build(keys, slots, outcomes, top_k, with_signature)
        # ...and a large answer is built on a thread of its own, not on the
        # event loop that serves every call: 256 such calls at once took
        # ~28 s of the loop's time, and other clients' calls waited seconds.
        return await _on_answer_thread(self._build, keys, slots, outcomes, top_k, with_signature)

    def _build(self, keys: list[str], slots: list[int], outcomes: list, top_k: int,
               with_signature: bool) -> embedding_pb2.EmbedResponse:
        """The answer: item i is ``outcomes[slots[i]]`` under ``keys[i]``.
        Each distinct embedding is built once (top classes of all at once)
        and copied for the items that share it: the same file under other
        spellings, or named again, shares the reader's answer."""
        answer = embedding_pb2.EmbedResponse(model=self.model_name)
        firsts: dict[int, embedding_pb2.Embedding] = {}      # id(result) -> its first entry
        tops: dict[int, tuple[list, list]] = {}
        if top_k:
            scored = {id(r): r for r, err, _ in outcomes if err is None and r.logits is not None}
            if scored:
                idx, prob = softmax_top_k(np.stack([r.logits for r in scored.values()]), top_k)
                tops = dict(zip(scored, zip(idx.tolist(), prob.tolist())))
        for key, slot in zip(keys, slots):
            result, err, _ = outcomes[slot]
            out = answer.embeddings.add()
            first = firsts.get(id(result)) if err is None else None
            if first is not None:
                out.CopyFrom(first)
                out.key = key
                continue
            out.key = key
            if err is not None:
                out.error.CopyFrom(err)
                continue
            out.vector.extend(result.vector.tolist())
            out.width, out.height = result.width, result.height
            if with_signature:
                out.layout_signature = result.signature.tobytes()
                out.image_properties.extend(result.properties.tolist())
            top = tops.get(id(result))
            if top is not None:
                names = self.class_names
                out.top_classes.extend(
                    embedding_pb2.ClassScore(index=i, name=names[i] if i < len(names) else str(i), probability=p)
                    for i, p in zip(*top))
            firsts[id(result)] = out
        return answer

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
