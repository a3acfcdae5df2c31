"""imagesieve: keep image datasets clean.

This package is the light client (grpcio, protobuf, numpy, pillow only):
``Client`` / ``AsyncClient`` send images to an imagesieve server and return
numpy arrays. The server is a separate distribution, ``imagesieve-server``
(package ``imagesieve_server``, with model export in ``imagesieve_models``).

Names are imported on first use (PEP 562): ``imagesieve health``, a
container's health probe, loads grpc and the health stub, not numpy and
every service stub.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:      # type checkers see the real classes; at run time they load on first use
    from .client import (AddResult, AsyncClient, Client, DuplicateCheckResult, EmbeddingResult,  # noqa: F401
                         Embeddings, ItemFailure)

__version__ = "0.2.0"
_CLIENT_NAMES = ("AddResult", "AsyncClient", "Client", "DuplicateCheckResult", "EmbeddingResult", "Embeddings",
                 "ItemFailure")
__all__ = [*_CLIENT_NAMES, "__version__"]


def __getattr__(name: str):
    if name in _CLIENT_NAMES:
        from . import client
        return getattr(client, name)
    raise AttributeError(f"module 'imagesieve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
