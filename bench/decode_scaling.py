"""Where a many-core host's embedding time goes: decoding and preprocessing
on a thread pool (one thread is the baseline), on a process pool that
pickles tensors back, and in worker processes writing into shared-memory
batch buffers (``engine.process_decode``), against the whole pipeline with
the model's share of its wall time.

    python bench/decode_scaling.py [--threads 1,2] [--procs 2] [--shm 1,2]

Defaults follow the host: 1, 2, 4, ... up to its cores. 1,024 real photos
(32 distinct, 640x480 JPEG q90, cycled). ``prepare_ips_*``: decode +
preprocess alone, images/s; ``shm_speedup_2_workers``: 2 shared-memory
workers against one (the issue's target: >= 1.8); ``shm_scaling``: the most
workers against one, over their number (1.0 = linear). ``pipeline``:
``Embedder.embed_all`` in batches of 256 on each runtime present (torch only
where CUDA is), with threads and with shared-memory workers, and the fraction
of wall time spent in the model call. Medians of 3. Last line: one JSON
object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from photos import photos_at  # noqa: E402

from imagesieve_server.engine import Embedder  # noqa: E402
from imagesieve_server.engine.process_decode import ProcessDecoder  # noqa: E402

_worker: Embedder | None = None


def _init_worker() -> None:
    global _worker
    _worker = Embedder.from_model()


def _prepare_chunk(chunk: list[bytes]) -> list:
    return [_worker.prepare(d).tensor for d in chunk]


def rate(fn, n: int, repeats: int = 3) -> float:
    fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(n / (time.perf_counter() - t))
    return round(statistics.median(runs), 1)


def shm_rate(e: Embedder, workers: int, data: list[bytes]) -> float:
    dec = ProcessDecoder(e.executor.manifest_path, e.executor.input_kind, 256, workers)
    try:
        def decode_all():
            for batch in dec.batches(data):
                assert len(batch.tensors) == len(batch.items)
        return rate(decode_all, len(data))
    finally:
        dec.close()


def pipeline(runtime: str, data: list[bytes], decode_processes: int = 0) -> dict:
    e = Embedder.from_model(runtime=runtime, max_batch_size=256, decode_processes=decode_processes)
    in_model = [0.0]
    run = e.executor.run

    def timed(batch):
        t = time.perf_counter()
        out = run(batch)
        in_model[0] += time.perf_counter() - t
        return out

    e.executor.run = timed
    in_processes = decode_processes > 0
    e.embed_all(data, in_processes=in_processes)                      # warm-up (and the workers' start)
    in_model[0] = 0.0
    t = time.perf_counter()
    e.embed_all(data, in_processes=in_processes)
    wall = time.perf_counter() - t
    e.close()
    return {"ips": round(len(data) / wall, 1), "model_share": round(in_model[0] / wall, 2)}


def main() -> int:
    import os
    ap = argparse.ArgumentParser()
    cores = os.cpu_count() or 1
    counts = ",".join(str(k) for k in (1, 2, 4, 8, 16, 32, 64) if k <= cores)
    ap.add_argument("--threads", default=counts)
    ap.add_argument("--procs", default=",".join(counts.split(",")[1:]) or "1")
    ap.add_argument("--shm", default=counts)
    args = ap.parse_args()
    data = photos_at((640, 480), 32) * 32
    e = Embedder.from_model()
    out = {"cpu_count": cores, "images": len(data), "prepare_ips_threads": {}, "prepare_ips_procs": {},
           "prepare_ips_shm": {}}
    for k in map(int, args.threads.split(",")):
        with ThreadPoolExecutor(k) as ex:
            out["prepare_ips_threads"][k] = rate(lambda: list(ex.map(e.prepare, data)), len(data))
        print("prepare, threads", k, out["prepare_ips_threads"][k], file=sys.stderr, flush=True)
    chunks = [data[i:i + 32] for i in range(0, len(data), 32)]
    for k in map(int, args.procs.split(",")):
        with ProcessPoolExecutor(k, initializer=_init_worker) as ex:
            out["prepare_ips_procs"][k] = rate(lambda: list(ex.map(_prepare_chunk, chunks)), len(data))
        print("prepare, processes", k, out["prepare_ips_procs"][k], file=sys.stderr, flush=True)
    for k in map(int, args.shm.split(",")):
        out["prepare_ips_shm"][k] = shm_rate(e, k, data)
        print("prepare, shared-memory workers", k, out["prepare_ips_shm"][k], file=sys.stderr, flush=True)
    e.close()
    base = out["prepare_ips_threads"].get(1)
    if base:
        out["best_thread_speedup"] = round(max(out["prepare_ips_threads"].values()) / base, 2)
    shm = out["prepare_ips_shm"]
    if 1 in shm:
        if 2 in shm:
            out["shm_speedup_2_workers"] = round(shm[2] / shm[1], 3)
        most = max(shm)
        out["shm_scaling"] = round(shm[most] / shm[1] / most, 3)
        if base:
            out["shm_1_worker_vs_1_thread"] = round(shm[1] / base, 3)
    try:
        import torch
        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    runtimes = ["onnx"] + (["torch"] if cuda else [])
    out["pipeline"] = {rt: pipeline(rt, data) for rt in runtimes}
    out["pipeline_shm"] = {rt: pipeline(rt, data, decode_processes=cores) for rt in runtimes}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
