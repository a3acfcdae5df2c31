"""CollectionService: create, list, stats, drop, snapshot, add, remove."""
from __future__ import annotations

import asyncio
import base64
import binascii
from concurrent.futures import ThreadPoolExecutor

import grpc

from imagesieve.v1 import collections_pb2, collections_pb2_grpc

from ..collections import Collection, CollectionError, CollectionManager
from ..engine.async_embedder import AsyncEmbedder
from ..engine.batcher import QueueFullError
from ..engine.fair_pool import FairPool
from ..engine.owners import current as current_owner
from .common import CollectionTurns, ImageReader, content_hash, detail, gather_bounded, item_error, text_problem

KIND_NAMES = {collections_pb2.INDEX_KIND_AUTO: "auto", collections_pb2.INDEX_KIND_FLAT_IP: "flat",
              collections_pb2.INDEX_KIND_IVF_FLAT_IP: "ivf_flat", collections_pb2.INDEX_KIND_IVF_PQ_IP: "ivf_pq",
              collections_pb2.INDEX_KIND_HNSW_IP: "hnsw"}
KIND_VALUES = {v: k for k, v in KIND_NAMES.items()}

# Keys one RemoveImages call may name: each is a lookup in one transaction,
# and 10M short keys (60 MB) took GBs while held.
MAX_REMOVE_KEYS = 10_000

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000
# A ListCollections page also ends once its answer passes this size (at
# least one collection a page): label maps can be large.
PAGE_BYTES = 1 << 20
_TOKEN_PREFIX = "after:"

# Threads for the calls that hold a collection's lock (add, remove, snapshot), one a
# collection at a time: apart from the event loop's default pool, which stats, lists and
# hash lookups use, so a busy collection's writes never take the threads those need.
LOCKED_CALLS = ThreadPoolExecutor(8, thread_name_prefix="imagesieve-collection")
# Threads that make ListCollections pages, shared between clients, then their connections,
# by the time each has used (FairPool), apart from the default pool that stats and hash lookups use: a page
# of 1,000 collections holds the GIL 26-40 ms, and 32 callers looping it through the
# default pool put another client's GetCollectionStats at p50 0.9 s (a twenty-fifth probe).
LIST_THREADS = 2


async def abort_for(context, e: Exception):
    """Translate a domain error into the call's status."""
    if isinstance(e, CollectionError):
        await context.abort(grpc.StatusCode[e.code], detail(e))
    if isinstance(e, QueueFullError):
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{e}; retry with backoff")
    raise e


def info_message(c: Collection) -> collections_pb2.CollectionInfo:
    i = c.info()
    return collections_pb2.CollectionInfo(
        name=i.name, num_images=i.num_images, dim=i.dim, model=i.model,
        index_kind=KIND_VALUES.get(i.index_kind, 0), near_duplicate_threshold=i.threshold,
        images_per_label=i.images_per_label, images_per_split=i.images_per_split,
        index_bytes=i.index_bytes, last_snapshot_unix_s=i.last_snapshot_unix_s,
        distinct_labels=i.distinct_labels, distinct_splits=i.distinct_splits)


def page_size(asked: int) -> int:
    """ListCollections' page size: 0 is the default, above the maximum is
    the maximum (as AIP-158 asks), negative is the caller's mistake."""
    if asked < 0:
        raise CollectionError(f"page_size must be 0 or more, got {asked}", "INVALID_ARGUMENT")
    return min(asked or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def page_token(after: str) -> str:
    """An opaque token: continue after the collection named ``after``. By
    name, not position, so creates and drops between pages skip nothing."""
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + after).encode()).decode()


#: Longest page token this server gives (a name is at most 64 characters):
#: a longer one is refused unread (4 clients sending 48 MB tokens held the
#: event loop decoding them: other calls p50 1.0-1.6 s, a probe).
MAX_PAGE_TOKEN_CHARS = 256


def page_start(token: str) -> str:
    """The name a token continues after ("" for the first page)."""
    if not token:
        return ""
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise CollectionError(f"page_token is not one this server gave ({len(token):,} characters; its tokens "
                              f"have at most {MAX_PAGE_TOKEN_CHARS}): pass next_page_token unchanged",
                              "INVALID_ARGUMENT")
    try:
        text = base64.b64decode(token, altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX) or len(text) == len(_TOKEN_PREFIX):
        raise CollectionError("page_token is not one this server gave: pass next_page_token unchanged",
                              "INVALID_ARGUMENT")
    return text[len(_TOKEN_PREFIX):]


class CollectionServicer(collections_pb2_grpc.CollectionServiceServicer):
    def __init__(self, manager: CollectionManager, engine: AsyncEmbedder, reader: ImageReader,
                 max_images_per_request: int = 256, on_dropped=None):
        self.manager, self.engine, self.reader = manager, engine, reader
        self.max_images_per_request = max_images_per_request
        self.on_dropped = on_dropped        # async (name) -> None: e.g. the server's health entry
        # Calls that hold a collection's lock for their whole run (add, remove, snapshot): one
        # thread a collection at a time, so waiting for a lock holds no thread (CollectionTurns).
        self.turns = CollectionTurns(1)
        self.lists = FairPool(LIST_THREADS, name="imagesieve-lists")

    def close(self) -> None:
        self.lists.shutdown(wait=False, cancel_futures=True)

    async def CreateCollection(self, request, context):
        try:
            if request.index_kind not in KIND_NAMES:       # an enum value this server does not know
                raise CollectionError(
                    f"unknown index_kind {request.index_kind}; choose from "
                    + ", ".join(f"{collections_pb2.IndexKind.Name(v)} ({v})" for v in KIND_NAMES),
                    "INVALID_ARGUMENT")
            return await asyncio.to_thread(lambda: info_message(self.manager.create(
                request.name, KIND_NAMES[request.index_kind], request.near_duplicate_threshold, request.exist_ok)))
        except CollectionError as e:
            await abort_for(context, e)

    async def ListCollections(self, request, context):
        try:
            size, after = page_size(request.page_size), page_start(request.page_token)
            try:
                work = self.lists.submit(current_owner(), self._list_page, size, after)
            except RuntimeError:                    # its pool is shut down: the server is stopping
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is stopping; retry")
            return await asyncio.wrap_future(work)
        except CollectionError as e:
            await abort_for(context, e)

    def _list_page(self, size: int, after: str) -> collections_pb2.ListCollectionsResponse:
        """One page by name. A collection that cannot serve (failed to load,
        another model's vectors) is listed with ``load_error``; one dropped
        while the page is made is left out."""
        failed = self.manager.failed()
        names = sorted(n for n in {*self.manager.names(), *failed} if n > after)
        page, used = collections_pb2.ListCollectionsResponse(), 0
        for i, name in enumerate(names):
            if len(page.collections) == size or used >= PAGE_BYTES:
                page.next_page_token = page_token(names[i - 1])
                break
            if name in failed:
                info = collections_pb2.CollectionInfo(name=name, load_error=failed[name])
            else:
                try:
                    info = info_message(self.manager.get(name))
                except CollectionError as e:
                    if e.code in ("NOT_FOUND", "ABORTED"):
                        continue
                    info = collections_pb2.CollectionInfo(name=name, load_error=str(e))
            page.collections.append(info)
            used += info.ByteSize()
        return page

    async def GetCollectionStats(self, request, context):
        try:
            c = self.manager.get(request.name)
            return await asyncio.to_thread(info_message, c)
        except CollectionError as e:
            await abort_for(context, e)

    async def DropCollection(self, request, context):
        try:
            dropped = await asyncio.to_thread(self.manager.drop, request.name)
        except CollectionError as e:
            await abort_for(context, e)
        if dropped and self.on_dropped is not None:
            await self.on_dropped(request.name)
        return collections_pb2.DropCollectionResponse(dropped=dropped)

    async def SnapshotCollection(self, request, context):
        try:
            c = self.manager.get(request.name)
            # In a worker thread: the snapshot writes the whole index (the event loop
            # waited on it, a probe), in the collection's turn (CollectionTurns).
            path, info = await self.turns.run(c, LOCKED_CALLS.submit, lambda: (c.snapshot(), c.info()),
                                              owner=current_owner())
            return collections_pb2.SnapshotCollectionResponse(path=path.name, num_images=info.num_images)
        except CollectionError as e:
            await abort_for(context, e)

    async def RemoveImages(self, request, context):
        try:
            if len(request.keys) > MAX_REMOVE_KEYS:
                raise CollectionError(f"a RemoveImages call names {len(request.keys)} keys, above the limit of "
                                      f"{MAX_REMOVE_KEYS}: send them in several calls", "INVALID_ARGUMENT")
            c = self.manager.get(request.collection)
            return collections_pb2.RemoveImagesResponse(
                removed=await self.turns.run(c, LOCKED_CALLS.submit, c.remove, list(request.keys),
                                             owner=current_owner()))
        except CollectionError as e:
            await abort_for(context, e)

    async def AddImages(self, request_iterator, context):
        name = ""
        async for request in request_iterator:
            name = request.collection or name
            try:
                if len(request.images) > self.max_images_per_request:
                    raise CollectionError(
                        f"an AddImages request holds {len(request.images)} images, above this server's limit of "
                        f"{self.max_images_per_request} (--max-images-per-request): send smaller chunks",
                        "INVALID_ARGUMENT")
                c = self.manager.get(name)
                yield await self._add(c, request)
            except (CollectionError, QueueFullError) as e:
                await abort_for(context, e)

    async def _add(self, c: Collection, request) -> collections_pb2.AddImagesResponse:
        results = [collections_pb2.AddResult(key=im.key) for im in request.images]
        todo = []
        for res, im in zip(results, request.images):
            problem = text_problem(im)
            if problem is not None:
                res.error.CopyFrom(item_error("INVALID_ARGUMENT", problem))
                continue
            if not im.key:
                res.error.CopyFrom(item_error("INVALID_ARGUMENT", "an image needs a key to be added"))
                continue
            sha = ""
            if request.skip_exact_duplicates and im.WhichOneof("source") == "data":
                sha = content_hash(im.data)
                twin = await asyncio.to_thread(c.store.key_for_sha256, sha)
                if twin is not None:            # caught by hash before any vector work
                    res.exact_duplicate_of = twin
                    continue
            todo.append((res, im, sha))
        embedded = await gather_bounded(self.reader.embed_for_collection(im, sha) for _, im, sha in todo)
        ready = []
        for (res, _, _), (new, err) in zip(todo, embedded):
            if err is not None:
                res.error.CopyFrom(err)
            else:
                ready.append((res, new))
        outcomes = await self.turns.run(c, LOCKED_CALLS.submit, c.add, [n for _, n in ready], request.skip_exact_duplicates,
                                        owner=current_owner())
        for (res, _), out in zip(ready, outcomes):
            res.id, res.added, res.exact_duplicate_of = out.id, out.added, out.exact_duplicate_of
            if out.error:
                res.error.CopyFrom(item_error(out.error.code, str(out.error)))
        return collections_pb2.AddImagesResponse(results=results)
