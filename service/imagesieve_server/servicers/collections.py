"""CollectionService: create, list, stats, drop, snapshot, add, remove."""
from __future__ import annotations

import asyncio

import grpc

from imagesieve.v1 import collections_pb2, collections_pb2_grpc

from ..collections import Collection, CollectionError, CollectionManager, NewImage
from ..engine.async_embedder import AsyncEmbedder
from ..engine.batcher import QueueFullError
from .common import ImageReader, content_hash, item_error

KIND_NAMES = {collections_pb2.INDEX_KIND_AUTO: "auto", collections_pb2.INDEX_KIND_FLAT_IP: "flat",
              collections_pb2.INDEX_KIND_IVF_FLAT_IP: "ivf_flat", collections_pb2.INDEX_KIND_IVF_PQ_IP: "ivf_pq",
              collections_pb2.INDEX_KIND_HNSW_IP: "hnsw"}
KIND_VALUES = {v: k for k, v in KIND_NAMES.items()}


async def abort_for(context, e: Exception):
    """Translate a domain error into the call's status."""
    if isinstance(e, CollectionError):
        await context.abort(grpc.StatusCode[e.code], str(e))
    if isinstance(e, QueueFullError):
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{e}; retry with backoff")
    raise e


def info_message(c: Collection) -> collections_pb2.CollectionInfo:
    i = c.info()
    return collections_pb2.CollectionInfo(
        name=i.name, num_images=i.num_images, dim=i.dim, model=i.model,
        index_kind=KIND_VALUES.get(i.index_kind, 0), near_duplicate_threshold=i.threshold,
        images_per_label=i.images_per_label, images_per_split=i.images_per_split,
        index_bytes=i.index_bytes, last_snapshot_unix_s=i.last_snapshot_unix_s)


async def embed_for_collection(engine: AsyncEmbedder, reader: ImageReader, image
                               ) -> tuple[NewImage | None, object]:
    """Image message -> (NewImage, None), or (None, ItemError)."""
    data = await reader.read(image)
    if not isinstance(data, bytes):
        return None, data
    result = await engine.embed(data, with_signature=True)     # stored for stage-2 verification
    if result.error is not None:
        return None, item_error(result.error.code, str(result.error))
    return NewImage(key=image.key, sha256=content_hash(data), vector=result.vector, label=image.label,
                    split=image.split, width=result.width, height=result.height,
                    signature=result.signature), None


class CollectionServicer(collections_pb2_grpc.CollectionServiceServicer):
    def __init__(self, manager: CollectionManager, engine: AsyncEmbedder, reader: ImageReader):
        self.manager, self.engine, self.reader = manager, engine, reader

    async def CreateCollection(self, request, context):
        try:
            c = await asyncio.to_thread(self.manager.create, request.name,
                                        KIND_NAMES.get(request.index_kind, "auto"),
                                        request.near_duplicate_threshold, request.exist_ok)
            return info_message(c)
        except CollectionError as e:
            await abort_for(context, e)

    async def ListCollections(self, request, context):
        infos = [info_message(self.manager.get(n)) for n in self.manager.names()]
        return collections_pb2.ListCollectionsResponse(collections=infos)

    async def GetCollectionStats(self, request, context):
        try:
            return info_message(self.manager.get(request.name))
        except CollectionError as e:
            await abort_for(context, e)

    async def DropCollection(self, request, context):
        return collections_pb2.DropCollectionResponse(
            dropped=await asyncio.to_thread(self.manager.drop, request.name))

    async def SnapshotCollection(self, request, context):
        try:
            c = self.manager.get(request.name)
            path = await asyncio.to_thread(c.snapshot)
            return collections_pb2.SnapshotCollectionResponse(path=path.name, num_images=c.info().num_images)
        except CollectionError as e:
            await abort_for(context, e)

    async def RemoveImages(self, request, context):
        try:
            c = self.manager.get(request.collection)
            return collections_pb2.RemoveImagesResponse(
                removed=await asyncio.to_thread(c.remove, list(request.keys)))
        except CollectionError as e:
            await abort_for(context, e)

    async def AddImages(self, request_iterator, context):
        name = ""
        async for request in request_iterator:
            name = request.collection or name
            try:
                c = self.manager.get(name)
                yield await self._add(c, request)
            except (CollectionError, QueueFullError) as e:
                await abort_for(context, e)

    async def _add(self, c: Collection, request) -> collections_pb2.AddImagesResponse:
        results = [collections_pb2.AddResult(key=im.key) for im in request.images]
        todo = []
        for res, im in zip(results, request.images):
            if not im.key:
                res.error.CopyFrom(item_error("INVALID_ARGUMENT", "an image needs a key to be added"))
                continue
            if request.skip_exact_duplicates and im.WhichOneof("source") == "data":
                twin = await asyncio.to_thread(c.store.key_for_sha256, content_hash(im.data))
                if twin is not None:            # caught by hash before any vector work
                    res.exact_duplicate_of = twin
                    continue
            todo.append((res, im))
        embedded = await asyncio.gather(*(embed_for_collection(self.engine, self.reader, im) for _, im in todo))
        ready = []
        for (res, _), (new, err) in zip(todo, embedded):
            if err is not None:
                res.error.CopyFrom(err)
            else:
                ready.append((res, new))
        outcomes = await asyncio.to_thread(c.add, [n for _, n in ready], request.skip_exact_duplicates)
        for (res, _), out in zip(ready, outcomes):
            res.id, res.added, res.exact_duplicate_of = out.id, out.added, out.exact_duplicate_of
            if out.error:
                res.error.CopyFrom(item_error(out.error.code, str(out.error)))
        return collections_pb2.AddImagesResponse(results=results)
