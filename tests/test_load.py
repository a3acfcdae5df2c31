"""32 concurrent streaming clients on loopback for ~15 s: no unexpected
errors, bounded server memory, every call answered in full."""
from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

from imagesieve.local_server import LocalServer

spec = importlib.util.spec_from_file_location("bench_load", Path(__file__).parent.parent / "bench" / "load.py")
bench_load = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_load)


def test_32_streaming_clients_for_15_seconds(manifest_path):
    images = bench_load.sample_images(size=320)
    with LocalServer(["--max-batch-size", "32"], model=str(manifest_path)) as srv:
        # Warm-up at full concurrency: ONNX Runtime's arena grows once to the
        # largest batch; that is a one-off, not a leak.
        asyncio.run(bench_load.run_load(srv.address, images, clients=32, duration_s=3.0))
        rss_start = bench_load.rss_kb(srv.proc.pid)
        sampler = bench_load.RssSampler(srv.proc.pid)
        sampler.start()
        try:
            out = asyncio.run(bench_load.run_load(srv.address, images, clients=32, duration_s=15.0,
                                                  per_call=8, chunk=4))
        finally:
            sampler.stop()
        assert srv.proc.poll() is None, "the server died under load"
    print(out, f"rss start {rss_start / 1024:.0f} MB, peak {max(sampler.samples) / 1024:.0f} MB, "
          f"samples {[s // 1024 for s in sampler.samples[::10]]}")
    assert out["errors"] == {}, out
    assert out["calls"] >= 32 and out["images"] == out["calls"] * 8      # every client got through, in full
    assert out["images_per_s"] > 10
    peak = max(sampler.samples)
    third = len(sampler.samples) // 3
    early, late = max(sampler.samples[:third]), max(sampler.samples[-third:])
    assert peak - rss_start < 200 * 1024, f"server RSS grew from {rss_start} kB to {peak} kB"
    assert late - early < 64 * 1024, f"server RSS still growing: {early} kB early, {late} kB late"
    assert peak < 2 * 1024 * 1024, f"server RSS peaked at {peak} kB"
