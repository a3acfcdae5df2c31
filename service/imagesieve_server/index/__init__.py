"""Vector indexes: FAISS inner-product indexes over L2-normalized embeddings
(cosine similarity), see :mod:`.faiss_index`."""
from .faiss_index import (FLAT_MAX, KINDS, IndexKind, add, as_ids, as_vectors, bytes_per_vector, choose_kind,
                          default_nlist, deserialize, gpu_available, ids_of, index_kind,
                          make_index, needs_training, range_search, reconstruct, remove_ids,
                          search, serialize, set_search_params, to_gpu, train_index, uses_gpu)

__all__ = ["FLAT_MAX", "IndexKind", "KINDS", "add", "as_ids", "as_vectors", "bytes_per_vector",
           "choose_kind", "default_nlist", "deserialize", "gpu_available", "ids_of", "index_kind",
           "make_index", "needs_training", "range_search", "reconstruct", "remove_ids", "search",
           "serialize", "set_search_params", "to_gpu", "train_index", "uses_gpu"]
