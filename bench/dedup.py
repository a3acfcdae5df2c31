"""Near-duplicate pairs: the seed article's N x N matrix vs this project.

Baseline ("dense"): scikit-learn ``cosine_similarity(X)`` (the full N x N
float32 matrix), then every pair a<b with cosine >= 0.9. This project:
``pairs_above_threshold`` (exact FAISS range search in batches, "exact") and
``knn_graph_pairs`` (approximate kNN graph, re-scored exactly, "approx").

Vectors: synthetic with the structure of real CNN embeddings (see
:func:`synthetic_embeddings`): D=1024, unit norm, a strong shared mean
direction, Zipf-sized clusters, low-rank within-cluster variation with a
decaying spectrum, and planted near duplicates (10% of N) at cosine 0.9-0.99
of random originals (some originals get several copies, whose mutual cosine
is often below 0.9: hard pairs around the threshold).

Threads: ``--threads 1`` by default for every method alike (the dev machine
has 2 cores shared with other jobs; OpenMP/BLAS barriers under contention made
timings erratic by up to 10x).

Each method runs in its own child process (fresh interpreter) on the same
vectors (saved once to a temporary .npy); its time excludes loading, its
peak memory is the child's peak RSS (``resource.getrusage`` ru_maxrss, all C
allocations included), reported in full and above the RSS after loading.
The dense baseline is run only when the matrix fits (MemAvailable and the
``--mem-cap-gb`` cap); otherwise that is said in the output.

    nice -n 10 .venv/bin/python bench/dedup.py [--sizes 10000 50000] [--threshold 0.9]

Last line: one JSON object, top-level keys for the largest size, others under ``rows``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
THREADS = 1  # set by --threads: every method runs with the same thread count


def synthetic_embeddings(n: int, d: int = 1024, dup_frac: float = 0.1, seed: int = 0,
                         rank: int = 64, chunk: int = 100_000, with_sources: bool = False):
    """(n, d) float32 unit vectors shaped like CNN embeddings, with planted
    near duplicates at cosine 0.9-0.99 (``dup_frac`` of the rows).
    ``with_sources``: also (n,) int64, the row each planted copy was made
    from (-1 for the others)."""
    rng = np.random.default_rng(seed)
    n_clusters = max(10, n // 50)
    w = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    w /= w.sum()
    n_base = n - int(n * dup_frac)
    mu = np.abs(rng.standard_normal(d)).astype(np.float32)
    mu /= np.linalg.norm(mu)
    centers = (rng.standard_normal((n_clusters, d)) / np.sqrt(d)).astype(np.float32)
    u = np.linalg.qr(rng.standard_normal((d, rank)))[0].astype(np.float32)
    spec = (1.0 / np.arange(1, rank + 1) ** 0.5).astype(np.float32)
    spec /= np.linalg.norm(spec)
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n_base, chunk):  # chunks keep the generator's memory small
        e = min(s + chunk, n_base)
        c = rng.choice(n_clusters, size=e - s, p=w)
        x = 0.9 * mu + 0.9 * centers[c]
        x += (rng.standard_normal((e - s, rank)).astype(np.float32) * spec) @ u.T * 0.9
        x += rng.standard_normal((e - s, d)).astype(np.float32) * np.float32(0.45 / np.sqrt(d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:e] = x
    sources = np.full(n, -1, np.int64)
    for s in range(n_base, n, chunk):
        e = min(s + chunk, n)
        src = sources[s:e] = rng.integers(0, n_base, e - s)
        t = rng.uniform(0.9, 0.99, e - s).astype(np.float32)
        v = rng.standard_normal((e - s, rank)).astype(np.float32) @ u.T
        v += rng.standard_normal((e - s, d)).astype(np.float32) / np.float32(np.sqrt(d))
        xs = out[src]
        v -= (v * xs).sum(1, keepdims=True) * xs
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        y = t[:, None] * xs + np.sqrt(1 - t ** 2)[:, None] * v
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        out[s:e] = y
    perm = rng.permutation(n)
    if not with_sources:
        return out[perm]
    position = np.empty(n, np.int64)
    position[perm] = np.arange(n)
    moved = sources[perm]
    return out[perm], np.where(moved >= 0, position[np.maximum(moved, 0)], -1)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _mem_available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024 ** 2
    return float("nan")


def child(method: str, path: str, threshold: float, out: str, params: str) -> None:
    sys.path.insert(0, str(ROOT / "service"))
    x = np.load(path)
    if method == "dense":
        from sklearn.metrics.pairwise import cosine_similarity
    else:
        from imagesieve_server.analysis.duplicates import knn_graph_pairs, pairs_above_threshold
    base = _rss_mb()
    t0 = time.perf_counter()
    if method == "dense":
        sim = cosine_similarity(x)  # the seed's N x N matrix
        aa, bb = [], []
        step = 2048
        for s in range(0, x.shape[0], step):  # threshold it without another N x N array
            r, c = np.nonzero(sim[s:s + step] >= threshold)
            r = r + s
            keep = c > r
            aa.append(r[keep])
            bb.append(c[keep])
        a, b = np.concatenate(aa), np.concatenate(bb)
        del sim
    elif method == "exact":
        a, b, _ = pairs_above_threshold(x, threshold)
    else:
        a, b, _ = knn_graph_pairs(x, threshold, **json.loads(params))
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(out, np.stack([a.astype(np.int64), b.astype(np.int64)]))
    print(json.dumps({"seconds": dt, "peak_mb": peak, "base_mb": base, "n_pairs": int(a.size)}))


def run_child(method, path, threshold, tmp, params=None):
    out = os.path.join(tmp, f"{method}.npy")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(THREADS)
    cmd = [sys.executable, __file__, "--child", method, "--data", path, "--threshold",
           str(threshold), "--out", out, "--params", json.dumps(params or {})]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    pairs = np.load(out)
    return res, set(zip(pairs[0].tolist(), pairs[1].tolist()))


def run_size(n, d, threshold, cap_gb, approx_params, tmp):
    x = synthetic_embeddings(n, d)
    path = os.path.join(tmp, f"x{n}.npy")
    np.save(path, x)
    del x
    row = {"n": n, "d": d, "threshold": threshold}
    need_gb = (4 * n * n + 3 * 4 * n * d) / 1024 ** 3 + 0.5
    avail = _mem_available_gb()
    dense = None
    if need_gb <= min(cap_gb, avail - 1.0):
        dense, dense_pairs = run_child("dense", path, threshold, tmp)
        row.update(dense_s=round(dense["seconds"], 2), dense_peak_mb=round(dense["peak_mb"]),
                   dense_peak_over_data_mb=round(dense["peak_mb"] - dense["base_mb"]))
    else:
        row.update(dense_s=None, dense_peak_mb=None,
                   dense_skipped=f"needs ~{need_gb:.1f} GiB; cap {cap_gb} GiB, available {avail:.1f} GiB")
    exact, exact_pairs = run_child("exact", path, threshold, tmp)
    approx, approx_pairs = run_child("approx", path, threshold, tmp, approx_params)
    ref = dense_pairs if dense else exact_pairs
    row.update(exact_s=round(exact["seconds"], 2), ours_peak_mb=round(exact["peak_mb"]),
               ours_peak_over_data_mb=round(exact["peak_mb"] - exact["base_mb"]),
               approx_s=round(approx["seconds"], 2), approx_peak_mb=round(approx["peak_mb"]),
               n_pairs=len(ref), approx_recall=round(len(approx_pairs & ref) / max(1, len(ref)), 5),
               approx_false_pairs=len(approx_pairs - ref), approx_params=approx_params)
    if dense:
        row.update(same_pairs=exact_pairs == dense_pairs,
                   pairs_only_dense=len(dense_pairs - exact_pairs),
                   pairs_only_exact=len(exact_pairs - dense_pairs),
                   approx_speedup=round(dense["seconds"] / approx["seconds"], 1),
                   exact_speedup=round(dense["seconds"] / exact["seconds"], 2),
                   peak_ratio=round(dense["peak_mb"] / exact["peak_mb"], 1))
    else:
        row.update(same_pairs=None, approx_speedup=None)
    os.remove(path)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--mem-cap-gb", type=float, default=12.0,
                    help="never run the dense baseline beyond this (shared machine)")
    ap.add_argument("--approx", default='{"kind": "ivf_flat", "k": 16, "reduce_dim": 64, "nprobe": 8, "candidate_margin": 0.3}',
                    help="JSON keyword arguments of knn_graph_pairs")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS/OpenMP threads for every method (1: the 2 cores are shared)")
    ap.add_argument("--child")
    ap.add_argument("--data")
    ap.add_argument("--out")
    ap.add_argument("--params", default="{}")
    args = ap.parse_args(argv)
    global THREADS
    THREADS = args.threads
    if args.child:
        child(args.child, args.data, args.threshold, args.out, args.params)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="dedup_bench_") as tmp:
        for n in args.sizes:
            row = run_size(n, args.dim, args.threshold, args.mem_cap_gb, json.loads(args.approx), tmp)
            print(json.dumps(row), flush=True)
            rows.append(row)
    top = dict(rows[-1])
    cap_bytes = min(args.mem_cap_gb, _mem_available_gb()) * 1024 ** 3
    top["dense_max_n_estimate"] = int((cap_bytes / 4) ** 0.5)  # N x N float32 in the cap
    top["cpu_count"] = os.cpu_count()
    top["threads"] = args.threads
    top["load_avg_1m"] = os.getloadavg()[0]
    top["rows"] = rows[:-1]
    print(json.dumps(top))


if __name__ == "__main__":
    main()
