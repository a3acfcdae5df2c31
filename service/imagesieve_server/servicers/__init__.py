"""gRPC adapters, one per service in proto/imagesieve/v1: each validates the
request, delegates to the engine, collections or analyses, and translates
the answer. No image, index or analysis logic lives here."""
from .analysis import AnalysisServicer
from .collections import CollectionServicer
from .consensus import ConsensusServicer
from .common import ImageReader
from .duplicates import DuplicateServicer
from .embedding import EmbeddingServicer

__all__ = ["AnalysisServicer", "CollectionServicer", "ConsensusServicer", "DuplicateServicer", "EmbeddingServicer", "ImageReader"]
