"""gRPC adapters, one per service in proto/imagesieve/v1: each validates the
request, delegates to the engine, collections or analyses, and translates
the answer. No image, index or analysis logic lives here."""
from .collections import CollectionServicer
from .common import ImageReader
from .duplicates import DuplicateServicer
from .embedding import EmbeddingServicer
from .planned import planned_servicer

__all__ = ["CollectionServicer", "DuplicateServicer", "EmbeddingServicer", "ImageReader", "planned_servicer"]
