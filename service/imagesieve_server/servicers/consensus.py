"""ConsensusService: annotations on a collection's images, and their consensus."""
from __future__ import annotations

import asyncio


from imagesieve.v1 import consensus_pb2, consensus_pb2_grpc

from ..collections import CollectionError, CollectionManager
from ..engine.batcher import QueueFullError
from ..jobs.consensus import ANNOTATION_IO, MAX_ANNOTATIONS, consensus_events
from .collections import abort_for
from .common import abort_invalid, item_error

# Annotations one AddAnnotations call may carry (all in one transaction);
# more go in further calls.
MAX_ANNOTATIONS_PER_REQUEST = 100_000


def _add_annotations(c, annotations) -> consensus_pb2.AddAnnotationsResponse:
    errors = c.store.add_annotations([(a.key, a.annotator, a.label) for a in annotations], MAX_ANNOTATIONS)
    bad = [(i, code, message) for i, (code, message) in enumerate(errors) if code]
    out = consensus_pb2.AddAnnotationsResponse(stored=len(errors) - len(bad), error_indices=[i for i, _, _ in bad])
    # In chunks: one call adding 100,000 messages holds the GIL (and so the event loop) for ~60 ms.
    for start in range(0, len(bad), 1000):
        out.errors.extend([item_error(code, message) for _, code, message in bad[start:start + 1000]])
    return out


class ConsensusServicer(consensus_pb2_grpc.ConsensusServiceServicer):
    def __init__(self, manager: CollectionManager):
        self.manager = manager
        self.annotation_io = asyncio.Semaphore(ANNOTATION_IO)

    async def AddAnnotations(self, request, context):
        try:
            if len(request.annotations) > MAX_ANNOTATIONS_PER_REQUEST:
                raise CollectionError(
                    f"an AddAnnotations call holds {len(request.annotations)} annotations, above the limit of "
                    f"{MAX_ANNOTATIONS_PER_REQUEST}: send them in several calls", "INVALID_ARGUMENT")
            c = self.manager.get(request.collection)
        except CollectionError as e:
            await abort_for(context, e)
        try:
            async with self.annotation_io:
                # The rows and the answer are made off the event loop: 100,000 empty
                # annotations (200 KB sent) answer 100,000 item errors, 0.3 s of Python
                # that stalled every other call (a twenty-second probe: another
                # client's calls p50 23 -> 606 ms under two such callers).
                return await asyncio.to_thread(lambda: _add_annotations(c, request.annotations))
        except CollectionError as e:
            await abort_for(context, e)

    async def AnalyseConsensus(self, request, context):
        try:
            c = self.manager.get(request.collection)
            async for event in consensus_events(c, request, self.annotation_io):
                yield event
        except (CollectionError, QueueFullError) as e:
            await abort_for(context, e)
        except ValueError as e:
            await abort_invalid(context, e)
