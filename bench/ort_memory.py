"""ONNX Runtime's memory with batches of every size: memory patterns on vs off.

    .venv/bin/python bench/ort_memory.py [--model mobilenet_v1] [--batches 200] [--repeats 3]

The dynamic batcher hands the model batches of any size from 1 to the batch
limit (32). ONNX Runtime's default plans memory per input shape
(``enable_mem_pattern``) and keeps what each plan allocated; imagesieve turns
it off (``OnnxExecutor(memory_pattern=False)``). Each setting runs in a fresh
process: 20 full batches (a warm server), then ``--batches`` batches of random
sizes 1..32 (the same sizes for both), then timings of batches of 1, 8 and 32.

Figures (last line, JSON), medians over ``--repeats`` processes a setting:
resident MiB after the full batches (``warm_mb``) and at the peak of the
random sizes (``peak_mb``), milliseconds a batch, and the ratios
project / baseline (baseline = ONNX Runtime's default, memory patterns on).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one_process(model: str, memory_pattern: bool, batches: int, seed: int) -> dict:
    import numpy as np

    from imagesieve_models.manifest import find_model
    from imagesieve_server.engine.onnx_executor import OnnxExecutor

    ex = OnnxExecutor(find_model(model), memory_pattern=memory_pattern)
    rng = np.random.default_rng(seed)
    full = rng.random((32, 3, 224, 224), dtype=np.float32)
    for _ in range(20):
        ex.run(full)
    warm = rss_mb()
    peak = warm
    sizes = random.Random(seed).choices(range(1, 33), k=batches)
    for n in sizes:
        ex.run(full[:n])
        peak = max(peak, rss_mb())
    out = {"warm_mb": warm, "peak_mb": peak}
    for n in (1, 8, 32):
        for _ in range(2):
            ex.run(full[:n])
        ts = []
        for _ in range(12 if n < 32 else 6):
            t0 = time.perf_counter()
            ex.run(full[:n])
            ts.append(time.perf_counter() - t0)
        out[f"batch{n}_ms"] = 1000 * statistics.median(ts)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v1")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one_process(args.model, args.child == "on", args.batches, args.seed)))
        return 0
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    for r in range(args.repeats):
        for setting in ("on", "off"):
            out = subprocess.run([sys.executable, __file__, "--child", setting, "--model", args.model,
                                  "--batches", str(args.batches), "--seed", str(r)],
                                 check=True, capture_output=True, text=True).stdout
            runs[setting].append(json.loads(out.strip().splitlines()[-1]))
            print(f"repeat {r + 1}/{args.repeats} memory patterns {setting}: {runs[setting][-1]}",
                  file=sys.stderr, flush=True)
    med = {s: {k: round(statistics.median(run[k] for run in rs), 1) for k in rs[0]} for s, rs in runs.items()}
    ratios = {f"{k}_ratio": round(med["off"][k] / med["on"][k], 3) for k in med["on"]}
    print(json.dumps({"model": args.model, "batches": args.batches, "repeats": args.repeats,
                      "baseline_memory_patterns_on": med["on"], "project_memory_patterns_off": med["off"],
                      **ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
