"""imagesieve: keep image datasets clean.

This package is the light client (grpcio, protobuf, numpy, pillow only):
``Client`` / ``AsyncClient`` send images to an imagesieve server and return
numpy arrays. The server lives in ``imagesieve_server`` (extra ``server``),
model export in ``imagesieve_models`` (extra ``export``).
"""
from .client import (AddResult, AsyncClient, Client, DuplicateCheckResult, EmbeddingResult, Embeddings,
                     ItemFailure)

__version__ = "0.1.0"
__all__ = ["AddResult", "AsyncClient", "Client", "DuplicateCheckResult", "EmbeddingResult", "Embeddings",
           "ItemFailure", "__version__"]
