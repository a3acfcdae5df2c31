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
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    main()
