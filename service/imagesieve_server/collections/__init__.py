"""Named, persistent collections of embedded images: a FAISS index over unit
vectors (inner product = cosine) plus a SQLite store of keys, labels,
splits, content hashes and the vectors themselves. Plain Python, no gRPC."""
from .collection import (AddOutcome, CheckOutcome, Collection, CollectionError, CollectionInfo,
                         NewImage, Neighbor, StoredImages, Verdict)
from .manager import CollectionManager

__all__ = ["AddOutcome", "CheckOutcome", "Collection", "CollectionError", "CollectionInfo",
           "CollectionManager", "NewImage", "Neighbor", "StoredImages", "Verdict"]
