"""The approximate index vs exact search at 1M vectors, and the streaming
check's per-query search latency.

Database: 1M synthetic unit vectors with the structure of CNN embeddings
(``bench/dedup.py:synthetic_embeddings``: shared mean direction, Zipf-sized
clusters, low-rank variation, 1% planted near duplicates inside the
database). Dimension 256 by default (1M x 1024 float32 is 4 GB per copy and
the machine is shared; ``--dim 1024`` if memory allows). Queries: near
copies (cosine 0.9-0.99) of ``--queries`` random database vectors, i.e. new
images that duplicate an image already in the collection (planted pairs).

Measured, on the same vectors:
- ``recall``: share of planted queries whose original is found among the
  k=5 nearest with cosine >= 0.9 by the approximate index (exact flat search
  finds all of them; ``exact_recall`` checks that);
- ``speedup``: exact batch search time / approximate batch search time for
  the planted queries; build time of each index;
- ``bytes_per_vector``: serialized approximate index size / N;
- the streaming check: one vector at a time, k=5, ``check_p50_ms`` /
  ``check_p99_ms`` for the approximate index (and ``exact_check_*`` for
  flat). Index search time only (the embedding share is added elsewhere).

Threads: ``--threads 1`` by default (the dev machine is 2 cores shared with
other jobs; FAISS' OpenMP barriers turn contention into erratic timings).

    nice -n 10 .venv/bin/python bench/index_scale.py [--n 1000000] [--dim 256] [--kind ivf_flat]

Compressed (``--memory-gb``, when float vectors would fill more than
``faiss_index.FLOAT_SHARE`` of it, as a collection's "auto" decides): the
vectors are generated in chunks straight to a file (the full vectors on
disk, as a collection's store keeps them), an IVF-PQ index is trained on a
sample and filled chunk by chunk, and each check re-ranks its candidates
by exact cosine from the file (``faiss_index.search_reranked``, ``pread``:
no mapping, so the resident size is the index's). Recall of the planted
pairs, and agreement with exact search (a scan of the file) on a sample.

    .venv/bin/python bench/index_scale.py --n 10000000 --dim 1024 --memory-gb 6 --nlist 1024

Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--kind", default=None, help="approximate kind (default: choose_kind(n))")
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--stream", type=int, default=500, help="single-vector checks timed")
    ap.add_argument("--exact-stream", type=int, default=100)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=1, help="search threads")
    ap.add_argument("--memory-gb", type=float, default=None,
                    help="memory for the index: compressed (IVF-PQ + re-ranking from disk) when the "
                         "float vectors would not fit")
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default: faiss_index.default_nlist)")
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--work-dir", default=None, help="where the compressed run writes its vector file")
    ap.add_argument("--exact-sample", type=int, default=200, help="queries checked against an exact scan")
    ap.add_argument("--keep", action="store_true", help="keep the vector file")
    args = ap.parse_args(argv)
    if args.memory_gb is not None:
        sys.path.insert(0, str(ROOT / "service"))
        from imagesieve_server.index import faiss_index as fi
        if fi.choose_kind(args.n, args.dim, int(args.memory_gb * (1 << 30))) == "ivf_pq":
            return compressed(args)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    import numpy as np
    import faiss

    sys.path.insert(0, str(ROOT / "service"))
    sys.path.insert(0, str(ROOT / "bench"))
    from dedup import synthetic_embeddings
    from imagesieve_server import index as fx

    faiss.omp_set_num_threads(args.threads)
    k, t = 5, args.threshold
    t0 = time.perf_counter()
    x = synthetic_embeddings(args.n, args.dim, dup_frac=0.01, seed=1)
    gen_s = time.perf_counter() - t0
    ids = np.arange(args.n, dtype=np.int64)
    rng = np.random.default_rng(2)
    src = rng.choice(args.n, args.queries + args.stream, replace=False)
    cos = rng.uniform(0.9, 0.99, src.size).astype(np.float32)
    noise = rng.standard_normal((src.size, args.dim)).astype(np.float32)
    xs = x[src]
    noise -= (noise * xs).sum(1, keepdims=True) * xs
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = cos[:, None] * xs + np.sqrt(1 - cos ** 2)[:, None] * noise
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q = q.astype(np.float32)
    qb, qs = q[:args.queries], q[args.queries:]
    src_b = src[:args.queries]

    kind = args.kind or fx.choose_kind(args.n)
    if kind == "flat":
        kind = "ivf_flat"  # this benchmark is about the approximate index
    res = {"n": args.n, "dim": args.dim, "kind": kind, "threads": args.threads,
           "threshold": t, "k": k, "queries": args.queries, "gen_s": round(gen_s, 1)}

    t0 = time.perf_counter()
    flat = fx.make_index("flat", args.dim)
    fx.add(flat, x, ids)
    res["exact_build_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    params = {} if args.nprobe is None else {"nprobe": args.nprobe}
    if args.nlist is not None:
        params["nlist"] = args.nlist
    approx = fx.make_index(kind, args.dim, args.n, **params)
    if fx.needs_training(approx):
        nlist = approx.nlist
        fx.train_index(approx, x, max_points=min(args.n, 64 * nlist), seed=0)
    res["train_s"] = round(time.perf_counter() - t0, 1)
    for s in range(0, args.n, 100_000):
        fx.add(approx, x[s:s + 100_000], ids[s:s + 100_000])
    res["approx_build_s"] = round(time.perf_counter() - t0, 1)
    if kind.startswith("ivf"):
        res.update(nlist=approx.nlist, nprobe=approx.nprobe)
    del x

    def planted_recall(sims, got):
        hit = (got == src_b[:, None]) & (sims >= t)
        return float(hit.any(axis=1).mean())

    t0 = time.perf_counter()
    es, ei = fx.search(flat, qb, k)
    exact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    as_, ai = fx.search(approx, qb, k)
    approx_s = time.perf_counter() - t0
    res.update(exact_recall=planted_recall(es, ei), recall=planted_recall(as_, ai),
               exact_batch_s=round(exact_s, 3), approx_batch_s=round(approx_s, 3),
               speedup=round(exact_s / approx_s, 1),
               # Agreement with exact search on every neighbour >= threshold, not only the planted one.
               recall_vs_exact=float(np.mean([
                   set(ei[i][es[i] >= t]) <= set(ai[i][as_[i] >= t]) for i in range(len(qb))])))

    def stream(index, queries):
        lat = []
        for v in queries:
            t1 = time.perf_counter()
            fx.search(index, v[None, :], k)
            lat.append((time.perf_counter() - t1) * 1000)
        return np.percentile(lat, 50), np.percentile(lat, 99)

    p50, p99 = stream(approx, qs)
    ep50, ep99 = stream(flat, qs[:args.exact_stream])
    res.update(check_p50_ms=round(float(p50), 3), check_p99_ms=round(float(p99), 3),
               exact_check_p50_ms=round(float(ep50), 2), exact_check_p99_ms=round(float(ep99), 2))
    res["bytes_per_vector"] = round(fx.bytes_per_vector(approx), 1)
    res["exact_bytes_per_vector"] = round(fx.bytes_per_vector(flat), 1)
    res["load_avg_1m"] = os.getloadavg()[0]
    print(json.dumps(res))


def chunked_embeddings(n: int, d: int, seed: int = 1, chunk: int = 100_000, rank: int = 64):
    """Yield (start, (B, d) float32 unit vectors) for rows 0..n, shaped like
    bench/dedup.py's synthetic embeddings (a shared mean direction, Zipf-sized
    clusters, low-rank variation, 1% near duplicates of earlier rows at cosine
    0.9-0.99) but made a chunk at a time, so n is not bounded by memory."""
    import numpy as np
    rng = np.random.default_rng(seed)
    n_clusters = max(10, n // 50)
    w = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    cdf = np.cumsum(w) / w.sum()
    mu = np.abs(rng.standard_normal(d)).astype(np.float32)
    mu /= np.linalg.norm(mu)
    centres = np.empty((n_clusters, d), np.float32)    # n // 50 of them: 800 MB at 10M x 1024
    for s in range(0, n_clusters, chunk):
        e = min(s + chunk, n_clusters)
        centres[s:e] = rng.standard_normal((e - s, d), dtype=np.float32) / np.float32(np.sqrt(d))
    u = np.linalg.qr(rng.standard_normal((d, rank)))[0].astype(np.float32)
    spec = (1.0 / np.arange(1, rank + 1) ** 0.5).astype(np.float32)
    spec /= np.linalg.norm(spec)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        c = np.minimum(np.searchsorted(cdf, rng.random(e - s)), n_clusters - 1)
        x = 0.9 * mu + 0.9 * centres[c]
        x += (rng.standard_normal((e - s, rank), dtype=np.float32) * spec) @ u.T * np.float32(0.9)
        x += rng.standard_normal((e - s, d), dtype=np.float32) * np.float32(0.45 / np.sqrt(d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        dup = rng.random(e - s) < 0.01
        if dup.any() and s:
            # near copies of rows of this chunk (earlier rows are on disk already)
            src = rng.integers(0, e - s, int(dup.sum()))
            t = rng.uniform(0.9, 0.99, src.size).astype(np.float32)
            v = rng.standard_normal((src.size, d)).astype(np.float32)
            xs = x[src]
            v -= (v * xs).sum(1, keepdims=True) * xs
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            x[dup] = t[:, None] * xs + np.sqrt(1 - t ** 2)[:, None] * v
            x[dup] /= np.linalg.norm(x[dup], axis=1, keepdims=True)
        yield s, x.astype(np.float32, copy=False)


class FileVectors:
    """Rows of a float32 (N, D) file read with ``pread`` (not mapped: the
    page cache holds them, not this process): the full vectors that
    re-rank a compressed index's candidates."""

    def __init__(self, path, dim: int):
        self.fd = os.open(path, os.O_RDONLY)
        self.row = dim * 4
        self.dim = dim

    def __call__(self, ids):
        import numpy as np
        ids = np.asarray(ids, np.int64)
        out = np.empty((ids.size, self.dim), np.float32)
        for i, r in enumerate(ids.tolist()):
            out[i] = np.frombuffer(os.pread(self.fd, self.row, r * self.row), np.float32)
        return out

    def scan(self, chunk: int):
        """Yield (start, (B, D) float32) over the whole file, one buffer reused."""
        import numpy as np
        size = os.fstat(self.fd).st_size // self.row
        buf = np.empty((chunk, self.dim), np.float32)
        for s in range(0, size, chunk):
            e = min(s + chunk, size)
            view = memoryview(buf[:e - s]).cast("B")
            got = os.preadv(self.fd, [view], s * self.row)
            assert got == (e - s) * self.row
            yield s, buf[:e - s]


def compressed(args) -> None:
    """The compressed path (see the module docstring): last line JSON with
    n, dim, rss_gb, build_s, recall, check_p50_ms, check_p99_ms."""
    import tempfile
    import numpy as np
    import faiss
    from imagesieve_server.audit.memory import peak_rss_mb
    from imagesieve_server.index import faiss_index as fi

    sys.path.insert(0, str(ROOT / "bench"))
    from dedup import _rss_mb
    sys.path.insert(0, str(ROOT / "client"))
    from imagesieve.progress import Progress

    def tqdm(it, total, desc, unit):
        with Progress(total, desc, unit=unit) as bar:
            for item in it:
                yield item
                bar.update()
    n, d, k, t = args.n, args.dim, 5, args.threshold
    work = Path(tempfile.mkdtemp(prefix="index-scale-", dir=args.work_dir))
    path = work / "vectors.f32"
    rng = np.random.default_rng(2)
    n_q = args.queries + args.stream
    src = np.sort(rng.choice(n, n_q, replace=False))
    res = {"n": n, "dim": d, "kind": "ivf_pq", "memory_gb": args.memory_gb, "threshold": t, "k": k}
    faiss.omp_set_num_threads(args.build_threads)
    t0 = time.perf_counter()
    sources = np.empty((n_q, d), np.float32)
    params = {"nlist": args.nlist} if args.nlist else {}
    if args.nprobe:
        params["nprobe"] = args.nprobe
    index = fi.make_index("ivf_pq", d, n, **params)
    take = np.sort(rng.choice(n, min(n, fi.training_points(index)), replace=False))
    sample = np.empty((take.size, d), np.float32)
    with open(path, "wb") as f:
        for s, x in tqdm(chunked_embeddings(n, d), total=-(-n // 100_000), desc="vectors", unit="chunk"):
            f.write(x.tobytes())
            e = s + len(x)
            sel = (src >= s) & (src < e)
            sources[sel] = x[src[sel] - s]
            sel = (take >= s) & (take < e)
            sample[sel] = x[take[sel] - s]
    res["gen_s"] = round(time.perf_counter() - t0, 1)
    rss_before = _rss_mb() / 1024
    t0 = time.perf_counter()
    fi.train_index(index, sample)
    del sample
    res["train_s"] = round(time.perf_counter() - t0, 1)
    store = FileVectors(path, d)
    for s, x in tqdm(store.scan(100_000), total=-(-n // 100_000), desc="index", unit="chunk"):
        fi.add(index, x, np.arange(s, s + len(x), dtype=np.int64))
    res["build_s"] = round(time.perf_counter() - t0, 1)
    res.update(nlist=int(index.nlist), nprobe=int(index.nprobe), pq_bytes=int(index.pq.M))
    res["rss_gb"] = round(_rss_mb() / 1024, 2)
    res["rss_before_index_gb"] = round(rss_before, 2)
    res["bytes_per_vector"] = round(fi.bytes_per_vector(index), 1)

    # Queries: near copies (cosine 0.9-0.99) of database rows = new images
    # that duplicate a stored one.
    cos = rng.uniform(0.9, 0.99, n_q).astype(np.float32)
    noise = rng.standard_normal((n_q, d)).astype(np.float32)
    noise -= (noise * sources).sum(1, keepdims=True) * sources
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = cos[:, None] * sources + np.sqrt(1 - cos ** 2)[:, None] * noise
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    qb, qs = q[:args.queries], q[args.queries:]
    faiss.omp_set_num_threads(args.threads)
    sims, got = fi.search_reranked(index, qb, k, store)
    res["recall"] = float(((got == src[:args.queries, None]) & (sims >= t)).any(axis=1).mean())
    sims_raw, got_raw = fi.search(index, qb, k)
    res["recall_without_rerank"] = float(((got_raw == src[:args.queries, None]) & (sims_raw >= t)).any(axis=1).mean())

    # Exact search on a sample of the queries: one scan of the file.
    m = min(args.exact_sample, len(qb))
    best_s = np.full((m, k), -np.inf, np.float32)
    best_i = np.full((m, k), -1, np.int64)
    t0 = time.perf_counter()
    for s, x in tqdm(store.scan(100_000), total=-(-n // 100_000), desc="exact scan", unit="chunk"):
        sc = qb[:m] @ x.T
        top = np.argpartition(-sc, k - 1, axis=1)[:, :k] if sc.shape[1] > k else np.argsort(-sc, axis=1)
        both_s = np.concatenate([best_s, np.take_along_axis(sc, top, 1)], 1)
        both_i = np.concatenate([best_i, top + s], 1)
        order = np.argsort(-both_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(both_s, order, 1), np.take_along_axis(both_i, order, 1)
    res["exact_scan_s"] = round(time.perf_counter() - t0, 1)
    res["exact_recall"] = float(((best_i == src[:m, None]) & (best_s >= t)).any(axis=1).mean())
    res["same_pairs_as_exact_on_sample"] = float(np.mean([
        set(best_i[i][best_s[i] >= t].tolist()) <= set(got[i][sims[i] >= t].tolist()) for i in range(m)]))
    res["exact_sample"] = m

    lat = []
    for v in qs:
        t1 = time.perf_counter()
        fi.search_reranked(index, v[None, :], k, store)
        lat.append((time.perf_counter() - t1) * 1000)
    res.update(check_p50_ms=round(float(np.percentile(lat, 50)), 2),
               check_p99_ms=round(float(np.percentile(lat, 99)), 2), stream=len(lat))
    res["peak_rss_gb"] = round(peak_rss_mb() / 1024, 2)
    res["load_avg_1m"] = os.getloadavg()[0]
    os.close(store.fd)
    if not args.keep:
        path.unlink()
        work.rmdir()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
