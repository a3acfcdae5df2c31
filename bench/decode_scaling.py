"""Where a many-core host's embedding time goes: decoding and preprocessing
on a thread pool (one thread is the baseline) and on a process pool, against
the whole pipeline with the model's share of its wall time.

    python bench/decode_scaling.py [--threads 1,4,8,16] [--procs 8,16]

1,024 real photos (32 distinct, 640x480 JPEG q90, cycled). ``prepare_ips``:
decode + preprocess alone, images/s; ``pipeline``: ``Embedder.embed_all`` in
batches of 256 on each runtime present (torch only where CUDA is), with the
fraction of wall time spent in the model call (stacking the batch included).
Medians of 3. Last line: one JSON object.
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


def pipeline(runtime: str, data: list[bytes]) -> dict:
    e = Embedder.from_model(runtime=runtime, max_batch_size=256)
    in_model = [0.0]
    run_model = e.run_model

    def timed(tensors):
        t = time.perf_counter()
        out = run_model(tensors)
        in_model[0] += time.perf_counter() - t
        return out

    e.run_model = timed
    e.embed_all(data)                      # warm-up
    in_model[0] = 0.0
    t = time.perf_counter()
    e.embed_all(data)
    wall = time.perf_counter() - t
    e.close()
    return {"ips": round(len(data) / wall, 1), "model_share": round(in_model[0] / wall, 2)}


def main() -> int:
    import os
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,4,8,16")
    ap.add_argument("--procs", default="8,16")
    args = ap.parse_args()
    data = photos_at((640, 480), 32) * 32
    e = Embedder.from_model()
    out = {"cpu_count": os.cpu_count(), "images": len(data), "prepare_ips_threads": {}, "prepare_ips_procs": {}}
    for k in map(int, args.threads.split(",")):
        with ThreadPoolExecutor(k) as ex:
            out["prepare_ips_threads"][k] = rate(lambda: list(ex.map(e.prepare, data)), len(data))
        print("prepare, threads", k, out["prepare_ips_threads"][k], file=sys.stderr, flush=True)
    chunks = [data[i:i + 32] for i in range(0, len(data), 32)]
    for k in map(int, args.procs.split(",")):
        with ProcessPoolExecutor(k, initializer=_init_worker) as ex:
            out["prepare_ips_procs"][k] = rate(lambda: list(ex.map(_prepare_chunk, chunks)), len(data))
        print("prepare, processes", k, out["prepare_ips_procs"][k], file=sys.stderr, flush=True)
    e.close()
    base = out["prepare_ips_threads"].get(1)
    if base:
        out["best_thread_speedup"] = round(max(out["prepare_ips_threads"].values()) / base, 2)
    try:
        import torch
        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    runtimes = ["onnx"] + (["torch"] if cuda else [])
    out["pipeline"] = {rt: pipeline(rt, data) for rt in runtimes}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
