"""DuplicateService: check images before ingestion; find duplicates in a collection."""
from __future__ import annotations

import asyncio
import functools
import math

from imagesieve.v1 import duplicates_pb2, duplicates_pb2_grpc

from ..analysis.duplicates.verify import aligned_as
from ..collections import CollectionError, CollectionManager, Neighbor, Verdict
from ..engine.async_embedder import AsyncEmbedder
from ..engine.batcher import QueueFullError
from ..engine.fair_pool import FairPool
from ..engine.owners import current as current_owner
from ..jobs.find_duplicates import MAX_PAIRS, find_duplicates_events
from .collections import abort_for
from .common import (MAX_KEY_BYTES, MAX_LABEL_BYTES, MAX_SPLIT_BYTES, BadRequest, CollectionTurns, ImageReader,
                     abort_invalid, content_hash, gather_bounded, item_error, ordered_concurrent, text_problem)

MAX_K = 100
# Neighbours one CheckDuplicates request may ask for (images x k): each carries its key,
# label and split (up to 1.3 KB), so 256 images x k=100 naming one small file (9 KB sent)
# answered 35 MB, and 48 such streams left unread took a server to 5.3 GB (a
# twenty-second probe). 2,560 keep an answer under ~3.5 MB: k=10 for 256 images, k=100 for 25.
MAX_NEIGHBORS_PER_REQUEST = 2560
NEIGHBOR_BYTES = MAX_KEY_BYTES + MAX_LABEL_BYTES + MAX_SPLIT_BYTES + 48     # a Neighbor at most, serialized
# Threads that run checks, one image a task, shared between clients, then
# their connections, by the time each has used (FairPool). A check holds its collection's lock
# while it searches (its candidates are aligned without it). On the event loop's default
# executor (6 threads on 2 cores), one stream's 16 requests of 64 images took
# every thread for minutes, and every collection call on the server waited
# (a probe: GetCollectionStats 27-85 s, on for up to 72 s after the stream
# was cancelled). The threads mostly wait (for a lock, for the alignment
# processes): 8 leave room for other collections' checks while up to half
# wait for one busy collection's lock.
CHECK_THREADS = 8


def neighbor_messages(neighbors: list[Neighbor]) -> list[duplicates_pb2.Neighbor]:
    return [duplicates_pb2.Neighbor(key=n.key, cosine=n.cosine, label=n.label, split=n.split,
                                    agreement=n.agreement, verified=n.verified,
                                    keypoint_inliers=n.keypoint_inliers, matched_blur_px=n.matched_blur_px)
            for n in neighbors]


def _answer_bytes(request) -> int:
    """An upper estimate of a check request's answer: per image its verdict
    and up to k neighbours (keys, labels and splits at their longest)."""
    k = min(max(request.k, 0) or 5, MAX_K)
    return len(request.images) * 256 + min(len(request.images) * k, MAX_NEIGHBORS_PER_REQUEST) * NEIGHBOR_BYTES


class StreamOrder:
    """The order in which one CheckDuplicates stream's requests are checked
    where it matters: a request that adds (add_if_unique) after every
    earlier request, any request after the latest earlier one that adds.
    Embedding still runs ahead for the whole window. Before, a window's
    requests were checked as their embeddings finished, and an image could
    be refused as the same picture as one sent after it (5 of 64 refusals
    in an unseen-data probe of the ingestion gate, different ones each run).
    Once a request fails, no later one is checked: the stream ends with that
    request's error, and an add after it would be stored unacknowledged (a
    tenth probe: 6 of 20 streams)."""

    def __init__(self):
        self._last_add: asyncio.Future | None = None
        self._since_add: list[asyncio.Future] = []
        self._requests = 0
        self._first_failed = math.inf      # the earliest request that failed, by its place in the stream

    def ticket(self, adds: bool) -> "StreamOrder.Ticket":
        """The next request's place in the order; take it in the stream's order."""
        done = asyncio.get_running_loop().create_future()
        last = [self._last_add] if self._last_add is not None and not self._last_add.done() else []
        if adds:
            before = last + [f for f in self._since_add if not f.done()]
            self._last_add, self._since_add = done, []
        else:
            before = last
            self._since_add = [f for f in self._since_add if not f.done()] + [done]
        self._requests += 1
        return StreamOrder.Ticket(self, self._requests - 1, before, done)

    class Ticket:
        def __init__(self, order: "StreamOrder", place: int, before: list, done: asyncio.Future):
            self.order, self.place, self.before, self.done = order, place, before, done

        async def turn(self) -> None:
            """Wait for the requests this one comes after; CancelledError
            when an earlier request of the stream failed (the stream ends with
            that one's error, so this one does nothing)."""
            if self.before:
                await asyncio.wait(self.before)
            if self.order._first_failed < self.place:
                raise asyncio.CancelledError

        def finish(self, failed: bool) -> None:
            """This request is over. One that failed before its turn (a bad
            field, a full queue) counts as done only once those before it are:
            the next may not overtake them."""
            if failed:
                self.order._first_failed = min(self.order._first_failed, self.place)
            pending = [f for f in self.before if not f.done()]
            settle = lambda *_: self.done.done() or self.done.set_result(None)     # noqa: E731
            if pending:
                asyncio.gather(*pending).add_done_callback(settle)
            else:
                settle()


class DuplicateServicer(duplicates_pb2_grpc.DuplicateServiceServicer):
    def __init__(self, manager: CollectionManager, engine: AsyncEmbedder, reader: ImageReader,
                 stream_window: int = 16, max_images_per_request: int = 256, max_pairs: int = MAX_PAIRS,
                 check_threads: int = CHECK_THREADS):
        self.manager, self.engine, self.reader = manager, engine, reader
        self.checks = FairPool(check_threads, name="imagesieve-checks")
        # Half of them at most for one collection's checks: a busy collection's (waiting for
        # its lock through another call's snapshot) leave the rest to the others.
        self.check_turns = CollectionTurns(max(1, check_threads // 2))
        self.stream_window = stream_window
        self.max_images = max_images_per_request
        self.max_pairs = max_pairs

    async def CheckDuplicates(self, request_iterator, context):
        order = StreamOrder()
        try:
            # ordered_concurrent starts the requests' handlers in the stream's order
            async for response in ordered_concurrent(request_iterator,
                                                     lambda r: self._check_request(r, order.ticket(r.add_if_unique)),
                                                     self.stream_window,
                                                     self.reader.budget, _answer_bytes):
                yield response
        except BadRequest as e:
            await abort_invalid(context, e)
        except (CollectionError, QueueFullError) as e:
            await abort_for(context, e)

    async def _check_request(self, request, ticket: StreamOrder.Ticket) -> duplicates_pb2.CheckDuplicatesResponse:
        failed = True
        try:
            answer = await self._check_in_turn(request, ticket)
            failed = False
            return answer
        finally:
            ticket.finish(failed)

    async def _check_in_turn(self, request, ticket: StreamOrder.Ticket) -> duplicates_pb2.CheckDuplicatesResponse:
        if not 0 <= request.k <= MAX_K:
            raise BadRequest(f"k must be in 0..{MAX_K}, got {request.k}")
        if not 0 <= request.threshold <= 1:
            raise BadRequest(f"threshold must be a cosine in [0, 1], got {request.threshold}")
        if len(request.images) > self.max_images:
            raise BadRequest(f"{len(request.images)} images in one request; the limit is {self.max_images} "
                             f"(send more requests on the stream)")
        k = request.k or 5
        if len(request.images) * k > MAX_NEIGHBORS_PER_REQUEST:
            raise BadRequest(f"{len(request.images)} images x k={k} neighbours in one request; at most "
                             f"{MAX_NEIGHBORS_PER_REQUEST} neighbours a request (send fewer images a request, "
                             "or ask for fewer neighbours)")
        c = self.manager.get(request.collection)
        embedded = await gather_bounded(self._prepare(c, im) for im in request.images)
        await ticket.turn()

        owner = current_owner()
        results = []
        # One image a task, awaited in order: a cancelled call stops after the
        # image in progress (before, its thread checked, and with
        # add_if_unique added, the rest of its request).
        for im, (new, err, twin) in zip(request.images, embedded):
            r = duplicates_pb2.DuplicateCheck(key=im.key)
            if err is not None:
                r.verdict = duplicates_pb2.VERDICT_ERROR
                r.error.CopyFrom(err)
            elif twin is not None:
                r.verdict = duplicates_pb2.VERDICT_EXACT_DUPLICATE
                r.neighbors.extend(neighbor_messages([twin]))
                c.count_verdict(Verdict.EXACT_DUPLICATE, not request.raw_cosine)
            else:
                res = await self.check_turns.run(c, functools.partial(self.checks.submit, owner), aligned_as, owner,
                                                 c.check, new, k, request.threshold, request.add_if_unique,
                                                 not request.raw_cosine, owner=owner)
                r.verdict, r.added = int(res.verdict), res.added
                r.neighbors.extend(neighbor_messages(res.neighbors))
                if res.error:
                    r.error.CopyFrom(item_error(res.error.code, str(res.error)))
            results.append(r)
        return duplicates_pb2.CheckDuplicatesResponse(results=results)

    async def _prepare(self, c, image):
        """(NewImage, None, None), (None, ItemError, None) or, for bytes
        already stored, (None, None, twin Neighbor): exact duplicates are
        caught by content hash before any vector work."""
        problem = text_problem(image)
        if problem:
            return None, item_error("INVALID_ARGUMENT", problem), None
        sha = ""
        if image.WhichOneof("source") == "data":
            sha = content_hash(image.data)
            twin = await asyncio.to_thread(c.twin, sha)
            if twin is not None:
                return None, None, twin
        new, err = await self.reader.embed_for_collection(image, sha)
        return new, err, None

    async def FindDuplicates(self, request, context):
        try:
            collection = self.manager.get(request.collection)
            async for event in find_duplicates_events(collection, request, self.max_pairs):
                yield event
        except (CollectionError, QueueFullError) as e:
            await abort_for(context, e)



    def close(self) -> None:
        self.checks.shutdown(wait=False, cancel_futures=True)
