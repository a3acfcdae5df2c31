"""AnalysisService: label-noise scoring and sample-size sweeps, as long jobs
(progress events, then the result; cancelling the call stops the work)."""
from __future__ import annotations


from imagesieve.v1 import analysis_pb2_grpc

from ..collections import CollectionError, CollectionManager
from ..engine.async_embedder import AsyncEmbedder
from ..engine.batcher import QueueFullError
from ..jobs.sample_size import sample_size_events
from ..jobs.score_labels import score_labels_events
from .collections import abort_for
from .common import ImageReader, abort_invalid


class AnalysisServicer(analysis_pb2_grpc.AnalysisServiceServicer):
    def __init__(self, engine: AsyncEmbedder, collections: CollectionManager, reader: ImageReader):
        self.engine, self.collections, self.reader = engine, collections, reader

    async def _stream(self, events, context):
        try:
            async for event in events:
                yield event
        except ValueError as e:
            await abort_invalid(context, e)
        except (CollectionError, QueueFullError) as e:
            await abort_for(context, e)

    async def ScoreLabels(self, request, context):
        events = score_labels_events(request, self.engine, self.collections, self.reader)
        async for event in self._stream(events, context):
            yield event

    async def SampleSizeSweep(self, request, context):
        events = sample_size_events(request, self.engine, self.collections, self.reader)
        async for event in self._stream(events, context):
            yield event
