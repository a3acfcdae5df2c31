"""FAISS indexes over L2-normalized embeddings (inner product = cosine).

Every index here uses ``METRIC_INNER_PRODUCT``; with unit vectors the score
of a pair is its cosine similarity, a float32 in [-1, 1] (1 = same
direction). Vectors are ``(N, D)`` float32, C-contiguous; ids are int64.

Kinds (:data:`KINDS`):

- ``"flat"``: exact ``IndexFlatIP`` wrapped in ``IndexIDMap2`` (add with ids,
  remove by id, reconstruct by id). 4*D bytes a vector.
- ``"ivf_flat"``: ``IndexIVFFlat`` (coarse k-means, ``nlist`` lists, search
  visits ``nprobe`` of them). Needs :func:`train_index`. Ids are carried by
  the IVF lists themselves with a hash-table direct map (reconstruct and
  remove by id). It is NOT wrapped in ``IndexIDMap2``: FAISS' id map assumes
  the inner index renumbers after a removal as ``IndexFlat`` does, which IVF
  does not, so removal through the wrapper silently maps later results to
  wrong ids (checked on faiss 1.15).
- ``"ivf_pq"``: ``IndexIVFPQ``, product-quantized codes (``pq_m`` bytes a
  vector at 8 bits) for collections too big for RAM as float32; its scores
  are approximate (quantized), so callers re-rank its candidates by exact
  cosine from full vectors kept elsewhere (:func:`search_reranked`). Same
  id handling as ``ivf_flat``.
- ``"hnsw"``: ``IndexHNSWFlat`` graph in ``IndexIDMap2``. No training. FAISS
  HNSW cannot delete: :func:`remove_ids` rebuilds it from the kept vectors
  (O(n log n); batch removals). Range search is emulated, see
  :func:`range_search`.

GPU: :func:`to_gpu` moves an index to FAISS GPU when ``faiss.get_num_gpus()``
is positive (faiss-gpu build). That path is small and UNTESTED here (the
development machine has no GPU and faiss-cpu).
"""
from __future__ import annotations

import functools
import logging
import math
import os
from typing import Literal

# FAISS' OpenMP threads spin while waiting by default; on a machine whose
# cores are shared (servers next to other jobs, CI) that turned a 1 s test
# run into 15 s (IVF-PQ training: many small parallel regions). PASSIVE makes
# idle threads sleep. Only a default, and only effective if this is the first
# import of an OpenMP library in the process; set OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

log = logging.getLogger("imagesieve.index")

#: The index kinds, see the module docstring.
IndexKind = Literal["flat", "ivf_flat", "ivf_pq", "hnsw"]
KINDS: tuple[str, ...] = ("flat", "ivf_flat", "ivf_pq", "hnsw")

#: Below this many vectors :func:`choose_kind` picks exact search. Measured
#: (1 thread, 2 shared CPU cores, D=1024): one exact k=5 query takes 2.8 ms at
#: 20k vectors, 7.4 ms at 50k, 29 ms at 200k (linear in N*D: it scans every
#: vector; batching 16 queries did not help). The issue asks the index search
#: to stay <= 10% of an image's check time, and embedding one image costs a
#: few tens of ms on CPU, so exact stops at 50k. Above it, IVF-Flat answered
#: in 0.36 ms p50 / 4.5 ms p99 at 1M x 256-d with 0.9995 recall of planted
#: near duplicates (bench/index_scale.py), against 53 ms for exact search.
FLAT_MAX = 50_000

DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 128
#: IVF probes: lists visited per query. 16 of 1024+ lists found >= 0.99 of the
#: planted near-duplicate pairs in bench/index_scale.py.
DEFAULT_NPROBE = 16


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {', '.join(KINDS)}")


def as_vectors(x, dim: int | None = None, name: str = "vectors") -> np.ndarray:
    """``x`` as a C-contiguous float32 ``(N, D)`` array; ValueError otherwise."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D); got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name} have dimension {a.shape[1]}, the index has {dim}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name} must be floating point; got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def as_ids(ids, n: int | None = None) -> np.ndarray:
    """``ids`` as a contiguous int64 ``(N,)`` array; ValueError otherwise."""
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"ids must be a 1-D array; got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"ids must be integers; got {a.dtype}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"got {a.shape[0]} ids for {n} vectors")
    return np.ascontiguousarray(a, dtype=np.int64)


@functools.lru_cache(maxsize=None)
def _memory_setting(env: str) -> int:
    host = 8 << 30
    try:
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        pass
    if not env:
        return host
    try:
        mb = float(env)
        if not math.isfinite(mb) or mb <= 0:
            raise ValueError(env)
        return int(mb * (1 << 20))
    except ValueError:
        log.warning("IMAGESIEVE_INDEX_MEMORY_MB=%r is not a positive number of MiB; using half the host's "
                    "memory (%d MiB)", env, host >> 20)
        return host


def index_memory_bytes() -> int:
    """Memory an index may plan for (a collection's, the audit's kNN pass):
    ``IMAGESIEVE_INDEX_MEMORY_MB``, else half of the host's memory (a value
    that is not a positive number is warned about once and ignored). Above
    half of it as float32 vectors, :func:`choose_kind` compresses them."""
    return _memory_setting(os.environ.get("IMAGESIEVE_INDEX_MEMORY_MB", "").strip())


#: Share of a memory budget that float32 vectors may fill before
#: :func:`choose_kind` compresses them (IVF-PQ): the rest is for the IVF
#: lists' ids, the id map, and everything else the process holds.
FLOAT_SHARE = 0.5


def floats_overflow(n_vectors: int, dim: int | None, memory_bytes: int | None) -> bool:
    """True when ``n_vectors`` float32 vectors of ``dim`` would fill more than
    :data:`FLOAT_SHARE` of ``memory_bytes`` (unknown dim or memory: False)."""
    return bool(dim and memory_bytes and n_vectors * dim * 4 > FLOAT_SHARE * memory_bytes)


def choose_kind(n_vectors: int, dim: int | None = None, memory_bytes: int | None = None) -> str:
    """Index kind for a collection of ``n_vectors``: ``"flat"`` (exact) below
    :data:`FLAT_MAX`, ``"ivf_flat"`` above, and ``"ivf_pq"`` (product-quantized
    codes, ``dim`` / 16 bytes a vector, re-ranked exactly: :func:`search_reranked`)
    when ``n_vectors`` float32 vectors of ``dim`` would fill more than
    :data:`FLOAT_SHARE` of ``memory_bytes``: 10M 1024-d vectors are 40 GB
    as floats, 640 MB as 64-byte codes. IVF rather than HNSW because a
    collection removes by key: IVF deletes in place, FAISS HNSW cannot (our
    :func:`remove_ids` has to rebuild it), and IVF builds ~10x faster at 1M on
    a small CPU (k-means on a sample, then one assignment a vector). Pick
    ``"hnsw"`` explicitly for append-only collections wanting the lowest
    latency."""
    if n_vectors < 0:
        raise ValueError(f"n_vectors must be >= 0; got {n_vectors}")
    if n_vectors < FLAT_MAX:
        return "flat"
    if floats_overflow(n_vectors, dim, memory_bytes):
        return "ivf_pq"
    return "ivf_flat"


#: Training vectors per IVF list (FAISS wants at least 39 a centroid) and at
#: most this many bytes of them: at 10M 1024-d vectors (16,384 lists) 64 a
#: list would be 4 GiB of floats and hours of k-means on a small host.
TRAIN_PER_LIST = 64
TRAIN_MAX_BYTES = 1 << 30


def training_points(index: faiss.Index) -> int | None:
    """How many vectors to train ``index`` on: TRAIN_PER_LIST a list for IVF,
    at most TRAIN_MAX_BYTES of float32 (and never fewer than its lists);
    None (all) for other kinds."""
    ivf = _ivf(index)
    if ivf is None:
        return None
    return max(int(ivf.nlist), min(TRAIN_PER_LIST * int(ivf.nlist), TRAIN_MAX_BYTES // (4 * index.d)))


def default_nlist(n_expected: int) -> int:
    """IVF lists for ``n_expected`` vectors: ~4*sqrt(n), a power of two in
    [16, 65536] (the FAISS guideline of 4-16*sqrt(n))."""
    n = max(int(n_expected), 1)
    return int(min(65536, max(16, 2 ** round(math.log2(4 * math.sqrt(n))))))


def make_index(kind: str, dim: int, n_expected: int = 100_000, *, nlist: int | None = None,
               nprobe: int = DEFAULT_NPROBE, pq_m: int | None = None, pq_nbits: int = 8,
               hnsw_m: int = DEFAULT_HNSW_M, ef_construction: int = DEFAULT_EF_CONSTRUCTION,
               ef_search: int = DEFAULT_EF_SEARCH) -> faiss.Index:
    """An empty inner-product index of ``kind`` for ``dim``-d unit vectors that
    accepts int64 ids (:func:`add`).

    ``n_expected`` sizes IVF (``nlist`` defaults to :func:`default_nlist`).
    ``pq_m`` (sub-quantizers, must divide ``dim``) defaults to dim/16 (64 bytes
    a 1024-d vector). IVF kinds must be trained (:func:`train_index`) first.
    """
    _check_kind(kind)
    if dim <= 0:
        raise ValueError(f"dim must be positive; got {dim}")
    if nprobe < 1 or ef_search < 1 or ef_construction < 1 or hnsw_m < 2:
        raise ValueError("nprobe and ef_search, ef_construction must be >= 1, hnsw_m >= 2")
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, hnsw_m, ip)
        inner.hnsw.efConstruction = ef_construction
        inner.hnsw.efSearch = ef_search
        return faiss.IndexIDMap2(inner)
    nlist = default_nlist(n_expected) if nlist is None else int(nlist)
    if nlist < 1:
        raise ValueError(f"nlist must be >= 1; got {nlist}")
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf_flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    else:
        # dim / 16 bytes a vector; the nearest divisor of dim below it when 16 does not divide dim
        m = next(m for m in range(max(1, dim // 16), 0, -1) if dim % m == 0) if pq_m is None else int(pq_m)
        if m < 1 or dim % m:
            raise ValueError(f"pq_m={m} must divide dim={dim}")
        if not 1 <= pq_nbits <= 16:
            raise ValueError(f"pq_nbits must be in [1, 16]; got {pq_nbits}")
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, pq_nbits, ip)
    index.own_fields = True
    quantizer.this.disown()
    index.nprobe = min(nprobe, nlist)
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def index_kind(index: faiss.Index) -> str:
    """The :data:`KINDS` name of an index built by :func:`make_index`."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVFPQ):
        return "ivf_pq"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf_flat"
    if isinstance(inner, faiss.IndexFlat):
        return "flat"
    raise ValueError(f"not an index built by make_index: {type(inner).__name__}")


def _ivf(index: faiss.Index):
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return inner if isinstance(inner, faiss.IndexIVF) else None


def _hnsw(index: faiss.Index):
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def needs_training(index: faiss.Index) -> bool:
    """True for an IVF index not yet trained."""
    return not index.is_trained


def train_index(index: faiss.Index, sample, max_points: int | None = None, seed: int = 0,
                report=None) -> None:
    """Train an IVF index on ``sample`` ((S, D) float32 unit vectors, e.g. a
    random sample of the collection: ~40-256 points per list is enough).
    ``max_points`` subsamples (seeded) before k-means. No-op for flat/HNSW.
    ``report("training", iteration, iterations)`` is called before each
    k-means iteration of the coarse quantizer and may raise to stop there."""
    sample = as_vectors(sample, index.d, "training sample")
    if index.is_trained:
        return
    ivf = _ivf(index)
    if max_points is not None and sample.shape[0] > max_points:
        rng = np.random.default_rng(seed)
        sample = sample[np.sort(rng.choice(sample.shape[0], max_points, replace=False))]
    if ivf is not None and sample.shape[0] < ivf.nlist:
        raise ValueError(f"need at least nlist={ivf.nlist} training vectors; got {sample.shape[0]}")
    if ivf is not None:
        _train_coarse_quantizer(ivf, sample, report)
    index.train(sample)     # an IVF's quantizer holding nlist centroids is not trained again


def _train_coarse_quantizer(ivf, sample: np.ndarray, report=None) -> None:
    """The k-means that ``IndexIVF.train`` runs, one iteration a FAISS call.

    Why: at 100,000 vectors the k-means is ~11 s in one call, and a
    cancelled job would hold its slot through it. Each call resumes from
    the previous centroids with the index's own parameters (same seed, so
    the same subsample and start): the centroids equal one call's exactly
    (tests/test_index_faiss.py)."""
    params = faiss.ClusteringParameters()
    for name in dir(params):       # the index's parameters, whichever this FAISS has
        if not name.startswith("_") and name not in ("this", "thisown") \
                and not callable(getattr(params, name)):
            setattr(params, name, getattr(ivf.cp, name))
    if params.nredo != 1 or getattr(params, "early_stop_threshold", 0):
        return      # restarts or early stops do not resume: IndexIVF.train runs them in one call
    iterations, params.niter = int(ivf.cp.niter), 1
    quantizer, centroids = ivf.quantizer, None
    try:
        for i in range(iterations):
            if report is not None:
                report("training", i, iterations)
            clustering = faiss.Clustering(ivf.d, ivf.nlist, params)
            if centroids is not None:
                faiss.copy_array_to_vector(centroids.ravel(), clustering.centroids)
            quantizer.reset()
            clustering.train(sample, quantizer)
            centroids = faiss.vector_to_array(clustering.centroids).reshape(ivf.nlist, ivf.d)
    except BaseException:
        quantizer.reset()       # half-trained lists would pass for trained ones (nlist centroids)
        raise
    quantizer.reset()
    quantizer.add(centroids)
    quantizer.is_trained = True


def add(index: faiss.Index, vectors, ids) -> None:
    """Add ``vectors`` ((N, D) float32, unit norm) under int64 ``ids`` ((N,)).
    Ids must be unique in the index (not checked: callers own the id space)."""
    vectors = as_vectors(vectors, index.d)
    ids = as_ids(ids, vectors.shape[0])
    if not index.is_trained:
        raise ValueError("index is not trained: call train_index(index, sample) first")
    if vectors.shape[0]:
        index.add_with_ids(vectors, ids)


def set_search_params(index: faiss.Index, *, nprobe: int | None = None,
                      ef_search: int | None = None) -> None:
    """Set ``nprobe`` (IVF) or ``efSearch`` (HNSW); ignored for other kinds."""
    ivf, hnsw = _ivf(index), _hnsw(index)
    if nprobe is not None and ivf is not None:
        ivf.nprobe = int(nprobe)
    if ef_search is not None and hnsw is not None:
        hnsw.hnsw.efSearch = int(ef_search)


#: Hidden nodes of an HNSW graph are still walked and take places in the search's
#: candidate list: it is widened by as many as are hidden, up to this many more.
EXCLUDED_EF_CAP = 1024


class Excluded:
    """Ids that searches of ``index`` leave out: removals from an HNSW
    graph, which FAISS cannot delete from (see :func:`removes_in_place`).
    A bitmap by id, set in place (``add``: the cost of the ids added, not of
    those hidden before), read by FAISS's ``IDSelectorBitmap`` under an
    ``IDSelectorNot``. An HNSW search's candidate list (efSearch) is widened
    by the number hidden (at most EXCLUDED_EF_CAP): hidden nodes still fill
    it, and a cluster of 295 near copies hidden among 3,300 vectors left
    searches near it at recall@20 0.71 (1.00 widened, a review found)."""

    def __init__(self, index: faiss.Index):
        self.index = index            # the one whose ids these are (a rebuilt index starts with none)
        hnsw = _hnsw(index)
        self._ef = int(hnsw.hnsw.efSearch) if hnsw is not None else 0
        self._bits = np.zeros(0, np.uint8)
        self.count = 0
        self._select()

    def _select(self) -> None:
        # The selector points into self._bits: made again whenever the array is.
        self._bitmap = faiss.IDSelectorBitmap(self._bits)
        self._selector = faiss.IDSelectorNot(self._bitmap)
        self.params = (faiss.SearchParametersHNSW(sel=self._selector, efSearch=self._ef + min(self.count,
                                                                                           EXCLUDED_EF_CAP))
                       if self._ef else faiss.SearchParameters(sel=self._selector))

    def contains(self, ids) -> np.ndarray:
        """(K,) bool: which of ``ids`` are excluded."""
        ids = as_ids(ids)
        inside = (ids >= 0) & ((ids >> 3) < self._bits.size)
        out = np.zeros(ids.shape, bool)
        out[inside] = (self._bits[ids[inside] >> 3] >> (ids[inside] & 7).astype(np.uint8)) & 1 == 1
        return out

    def add(self, ids) -> None:
        """Exclude ``ids`` ((K,) int64, >= 0) too."""
        ids = np.unique(as_ids(ids))
        ids = ids[~self.contains(ids)]
        if not ids.size:
            return
        if ids[0] < 0:
            raise ValueError("ids must be >= 0")
        need = int(ids[-1] >> 3) + 1
        grown = need > self._bits.size
        if grown:
            bits = np.zeros(max(need, 2 * self._bits.size), np.uint8)
            bits[:self._bits.size] = self._bits
            self._bits = bits
        np.bitwise_or.at(self._bits, ids >> 3, np.left_shift(1, ids & 7).astype(np.uint8))
        self.count += int(ids.size)
        if grown:
            self._select()
        elif self._ef:
            self.params.efSearch = self._ef + min(self.count, EXCLUDED_EF_CAP)

    @property
    def ids(self) -> np.ndarray:
        """(count,) int64, ascending."""
        return np.flatnonzero(np.unpackbits(self._bits, bitorder="little")).astype(np.int64)

    def __len__(self) -> int:
        return self.count


def removes_in_place(index: faiss.Index) -> bool:
    """Whether :func:`remove_ids` deletes from ``index`` itself (cheap);
    False for HNSW, which it rebuilds: there, keep removed ids
    :class:`Excluded` from searches and rebuild once many have gathered."""
    return _hnsw(index) is None


def search(index: faiss.Index, queries, k: int, excluded: Excluded | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours of each query, leaving out ``excluded``.

    ``queries``: (M, D) float32 unit vectors. Returns ``sims`` (M, k) float32
    cosines, descending per row, and ``ids`` (M, k) int64; missing neighbours
    (fewer than k vectors reachable) have id -1 and sim -inf.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    queries = as_vectors(queries, index.d, "queries")
    if excluded is not None and len(excluded):
        sims, ids = index.search(queries, k, params=excluded.params)
    else:
        sims, ids = index.search(queries, k)
    sims = np.where(ids < 0, np.float32(-np.inf), sims).astype(np.float32, copy=False)
    return sims, ids.astype(np.int64, copy=False)


#: On lossy kinds, candidates re-ranked by exact cosine per neighbour asked
#: for (at least RERANK_MIN): quantized scores are off by ~0.01-0.05, so the
#: true k nearest are among the approximate k * RERANK_FACTOR.
RERANK_FACTOR = 8
RERANK_MIN = 32
RERANK_CHUNK_BYTES = 32 << 20     # full vectors gathered at once while re-ranking


def is_lossy(index: faiss.Index) -> bool:
    """True when the index's scores are approximate (quantized codes): its
    candidates need :func:`search_reranked`."""
    return index_kind(index) == "ivf_pq"


def search_reranked(index: faiss.Index, queries, k: int, vectors_of,
                    factor: int = RERANK_FACTOR) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search` with exact scores: the index's ``max(k * factor,
    RERANK_MIN)`` nearest by its own (approximate) score, re-ranked by the
    exact cosine of their full vectors, best ``k`` kept.

    ``vectors_of(ids)``: (P,) int64 ids -> (P, D) float32 unit vectors (a
    collection's store, a memory-mapped file); ids it cannot find may come
    back as rows of NaN and are dropped. Returns ``sims`` (M, k) float32,
    ``ids`` (M, k) int64 like :func:`search`."""
    if k < 1 or factor < 1:
        raise ValueError(f"k and factor must be >= 1; got {k}, {factor}")
    queries = as_vectors(queries, index.d, "queries")
    m = queries.shape[0]
    out_s = np.full((m, k), -np.inf, np.float32)
    out_i = np.full((m, k), -1, np.int64)
    if index.ntotal == 0:
        return out_s, out_i
    _, cand = search(index, queries, int(min(max(k * factor, RERANK_MIN), index.ntotal)))
    found = np.unique(cand[cand >= 0])
    if found.size == 0:
        return out_s, out_i
    full = np.asarray(vectors_of(found), np.float32).reshape(found.size, index.d)
    rows = np.searchsorted(found, np.where(cand >= 0, cand, found[0]))
    exact = np.empty(cand.shape, np.float32)
    step = max(1, RERANK_CHUNK_BYTES // (cand.shape[1] * index.d * 4))
    for q0 in range(0, m, step):                  # (queries, candidates, D) gathered a chunk at a time
        q1 = min(q0 + step, m)
        exact[q0:q1] = np.einsum("mkd,md->mk", full[rows[q0:q1]], queries[q0:q1])
    exact = np.where((cand >= 0) & np.isfinite(exact), exact, -np.inf).astype(np.float32)
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    top_s = np.take_along_axis(exact, order, axis=1)
    top_i = np.where(np.isfinite(top_s), np.take_along_axis(cand, order, axis=1), -1)
    out_s[:, :top_s.shape[1]], out_i[:, :top_i.shape[1]] = top_s, top_i
    return out_s, out_i


def _strict_radius(threshold: float) -> float:
    # FAISS keeps inner products strictly above the radius; we want >= threshold.
    return float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))


def range_search(index: faiss.Index, queries, threshold: float, *, k0: int = 32,
                 max_k: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All indexed vectors with cosine >= ``threshold`` to each query.

    Returns FAISS' layout: ``lims`` (M+1,) int64, and for query i the results
    ``sims[lims[i]:lims[i+1]]`` (float32) and ``ids[lims[i]:lims[i+1]]``
    (int64), unordered. Exact for ``flat``; IVF kinds only see the
    ``nprobe`` lists visited (and PQ scores are approximate).

    HNSW (and any index whose FAISS class cannot range-search): emulated by a
    k-nearest search filtered by the threshold, doubling k (from ``k0``, up
    to ``max_k``) for the queries whose k-th neighbour is still above the
    threshold, so a query gets all its matches unless it has more than
    ``max_k`` (then the ``max_k`` best). FAISS' own HNSW range search is not
    used: it stops at efSearch candidates without saying so.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine in [-1, 1]; got {threshold}")
    queries = as_vectors(queries, index.d, "queries")
    if _hnsw(index) is None:
        try:
            lims, sims, ids = index.range_search(queries, _strict_radius(threshold))
            return lims.astype(np.int64), sims.astype(np.float32), ids.astype(np.int64)
        except RuntimeError:
            pass
    return _range_by_knn(index, queries, threshold, k0, max_k)


def _range_by_knn(index, queries, threshold, k0, max_k):
    m = queries.shape[0]
    per_sims: list = [None] * m
    per_ids: list = [None] * m
    todo = np.arange(m)
    k = max(1, min(k0, max_k))
    while todo.size:
        k_eff = min(k, max(index.ntotal, 1))
        s, i = search(index, queries[todo], k_eff)
        keep = (s >= threshold) & (i >= 0)
        saturated = keep[:, -1] & (k_eff < min(max_k, index.ntotal))
        for row, q in enumerate(todo):
            if not saturated[row]:
                per_sims[q] = s[row][keep[row]]
                per_ids[q] = i[row][keep[row]]
        todo = todo[saturated]
        k *= 2
    counts = np.array([len(x) for x in per_ids], dtype=np.int64)
    lims = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=lims[1:])
    sims = np.concatenate(per_sims).astype(np.float32) if m else np.zeros(0, np.float32)
    ids = np.concatenate(per_ids).astype(np.int64) if m else np.zeros(0, np.int64)
    return lims, sims, ids


def reconstruct(index: faiss.Index, ids) -> np.ndarray:
    """The stored vectors of ``ids`` ((K,) int64) as (K, D) float32 (decoded,
    hence approximate, for ``ivf_pq``). KeyError-like RuntimeError if absent."""
    ids = as_ids(ids)
    out = np.empty((ids.shape[0], index.d), dtype=np.float32)
    for j, i in enumerate(ids):
        out[j] = index.reconstruct(int(i))
    return out


def remove_ids(index: faiss.Index, ids) -> faiss.Index:
    """Remove the vectors of ``ids`` ((K,) int64; absent ids are ignored).

    Returns the index to use from now on: the same object, except for HNSW,
    which FAISS cannot delete from, so a new HNSW holding the kept vectors
    (same parameters) is built and returned (cost of a rebuild: batch removals).
    """
    ids = as_ids(ids)
    hnsw = _hnsw(index)
    if hnsw is None:
        index.remove_ids(ids)
        return index
    idmap = faiss.downcast_index(index)
    all_ids = faiss.vector_to_array(idmap.id_map).astype(np.int64)
    keep = ~np.isin(all_ids, ids)
    if keep.all():
        return index
    kept_ids = all_ids[keep]
    vecs = hnsw.reconstruct_n(0, hnsw.ntotal)[keep] if hnsw.ntotal else np.zeros((0, index.d), np.float32)
    new = make_index("hnsw", index.d, hnsw_m=hnsw.hnsw.nb_neighbors(1),
                     ef_construction=hnsw.hnsw.efConstruction, ef_search=hnsw.hnsw.efSearch)
    add(new, vecs, kept_ids)
    return new


def ids_of(index: faiss.Index) -> np.ndarray:
    """All ids held by ``index``, (N,) int64 (order unspecified)."""
    idx = faiss.downcast_index(index)
    if isinstance(idx, faiss.IndexIDMap2):
        return faiss.vector_to_array(idx.id_map).astype(np.int64)
    ivf = _ivf(index)
    invlists = ivf.invlists
    out = [faiss.rev_swig_ptr(invlists.get_ids(li), invlists.list_size(li)).copy()
           for li in range(ivf.nlist) if invlists.list_size(li)]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def serialize(index: faiss.Index) -> bytes:
    """The index as bytes (``faiss.serialize_index``); GPU indexes are copied
    to CPU first."""
    if uses_gpu(index):
        index = faiss.index_gpu_to_cpu(index)
    return faiss.serialize_index(index).tobytes()


def deserialize(data: bytes) -> faiss.Index:
    """Inverse of :func:`serialize` (a CPU index, search parameters kept)."""
    if not data:
        raise ValueError("empty index bytes")
    # deserialize_index already returns the concrete (downcast) class; calling
    # downcast_index again would give a non-owning wrapper of a freed object.
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def memory_bytes(index: faiss.Index) -> int:
    """Bytes of the index's arrays (vectors or codes, ids, graph links,
    coarse centroids, codebooks), from its size and parameters alone: no
    copy and no read of its data, so it is cheap at any size and safe
    beside a writer (serializing a 100,000-vector index to measure it took
    1.5-2.8 s and 800 MB, and a metrics scrape doing so while an add grew
    the index read freed memory and crashed the server)."""
    n = int(index.ntotal)
    ids = 8 * n if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)) else 0
    ivf, hnsw = _ivf(index), _hnsw(index)
    if ivf is not None:
        centroids = 4 * int(ivf.quantizer.ntotal) * int(ivf.d)
        pq = getattr(faiss.downcast_index(ivf), "pq", None)
        codebooks = 4 * int(pq.M) * int(pq.ksub) * int(pq.dsub) if pq is not None else 0
        return n * (int(ivf.code_size) + 8) + centroids + codebooks
    if hnsw is not None:
        m = int(hnsw.hnsw.nb_neighbors(1))      # links a node has above level 0 (level 0: twice as many)
        # 2m links at level 0, about one upper level in m nodes, an offset and a level a node
        return ids + n * (4 * int(hnsw.d) + 4 * 2 * m + 4 + 8 + 4)
    return ids + n * 4 * int(index.d)


def bytes_per_vector(index: faiss.Index) -> float:
    """Serialized size divided by the number of vectors (inf when empty)."""
    return len(serialize(index)) / index.ntotal if index.ntotal else math.inf


def gpu_available() -> bool:
    """True when this faiss build sees a GPU (never on faiss-cpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    return bool(get and get() > 0)


def uses_gpu(index: faiss.Index) -> bool:
    """True when ``index`` lives on a FAISS GPU."""
    return "Gpu" in type(index).__name__ or "Gpu" in type(faiss.downcast_index(index)).__name__


def to_gpu(index: faiss.Index, device: int = 0) -> faiss.Index:
    """A GPU copy of ``index`` when a GPU is available, else ``index`` itself.
    UNTESTED: no GPU on the development machine. HNSW stays on CPU (FAISS GPU
    has no HNSW; ``index_cpu_to_gpu`` raises and we keep the CPU index)."""
    if not gpu_available() or index_kind(index) == "hnsw":
        return index
    try:  # pragma: no cover - needs faiss-gpu and a device
        res = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(res, device, index)
    except (RuntimeError, AttributeError):  # pragma: no cover
        return index

