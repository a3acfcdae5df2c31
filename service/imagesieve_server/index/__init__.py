"""Vector indexes: FAISS inner-product indexes over L2-normalized embeddings
(cosine similarity), see :mod:`.faiss_index`."""
from .faiss_index import (FLAT_MAX, FLOAT_SHARE, KINDS, RERANK_FACTOR, IndexKind, add, as_ids, as_vectors,
                          bytes_per_vector, choose_kind, default_nlist, deserialize, gpu_available, ids_of,
                          index_kind, is_lossy, make_index, memory_bytes, needs_training, range_search, reconstruct,
                          remove_ids, search, search_reranked, serialize, set_search_params, to_gpu,
                          train_index, training_points, uses_gpu)

__all__ = ["FLAT_MAX", "FLOAT_SHARE", "IndexKind", "KINDS", "RERANK_FACTOR", "add", "as_ids", "as_vectors",
           "bytes_per_vector", "choose_kind", "default_nlist", "deserialize", "gpu_available", "ids_of",
           "index_kind", "is_lossy", "make_index", "memory_bytes", "needs_training", "range_search", "reconstruct",
           "remove_ids", "search", "search_reranked", "serialize", "set_search_params", "to_gpu",
           "train_index", "training_points", "uses_gpu"]
