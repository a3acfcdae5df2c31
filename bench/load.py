"""Load test: many concurrent streaming clients against one server on loopback.

    .venv/bin/python bench/load.py [--clients 32] [--duration 15] [--server HOST:PORT]

Without --server it starts a LocalServer. Each client is an AsyncClient with
its own channel that calls EmbedStream over and over (``--images`` real
photos per call, ``--chunk`` per message) until the time is up. Reports
throughput (images/s), call latency p50/p99 (one call = one EmbedStream of
``--images`` images, request to last answer), errors by code, and the
server's RSS (start, peak) when it runs the server. Baseline in the same
run: one client alone for ``--baseline-duration`` s, so the JSON says what
concurrency costs (p50 latency) and gains (throughput). Last line: JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import threading
import time

import grpc
import numpy as np
from PIL import Image


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append(rss_kb(self.pid))
            except (OSError, StopIteration):
                return
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def sample_images(size: int = 512, count: int = 20) -> list[bytes]:
    """The real ImageNet sample photos, resized (JPEG q90)."""
    from imagesieve.samples import imagenet_photos
    out = []
    for p, _ in imagenet_photos()[:count]:
        img = Image.open(p).convert("RGB")
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


async def run_load(address: str, images: list[bytes], clients: int = 32, duration_s: float = 15.0,
                   per_call: int = 8, chunk: int = 4, client_kw: dict | None = None) -> dict:
    """Returns throughput, latency percentiles and errors; ``errors`` maps a
    status code name to its count (per-item errors count as ``item:CODE``)."""
    from imagesieve import AsyncClient

    latencies: list[float] = []
    errors: dict[str, int] = {}
    done_images = 0
    stop_at = time.perf_counter() + duration_s

    async def one_client(cid: int) -> None:
        nonlocal done_images
        async with AsyncClient(address, timeout=60, **(client_kw or {})) as c:
            i = cid
            while time.perf_counter() < stop_at:
                batch = [images[(i + j) % len(images)] for j in range(per_call)]
                i += per_call
                t0 = time.perf_counter()
                try:
                    n = 0
                    async for r in c.embed_stream(batch, chunk_size=chunk):
                        n += 1
                        if not r.ok:
                            errors[f"item:{r.error.code}"] = errors.get(f"item:{r.error.code}", 0) + 1
                    if n != len(batch):
                        errors["short_stream"] = errors.get("short_stream", 0) + 1
                    latencies.append(time.perf_counter() - t0)
                    done_images += n
                except grpc.RpcError as e:
                    errors[e.code().name] = errors.get(e.code().name, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client(i) for i in range(clients)))
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {"clients": clients, "duration_s": round(wall, 2), "calls": len(latencies),
            "images": done_images, "images_per_s": round(done_images / wall, 1),
            "calls_per_s": round(len(latencies) / wall, 1), "images_per_call": per_call,
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 1),
            "latency_ms_max": round(float(lat.max()), 1), "errors": errors}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="", help="host:port of a running server (default: start one)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--images", type=int, default=8, help="images per EmbedStream call")
    ap.add_argument("--chunk", type=int, default=4, help="images per stream message")
    ap.add_argument("--size", type=int, default=512, help="longer side of the photos sent")
    ap.add_argument("--model", default="mobilenet_v1")
    ap.add_argument("--baseline-duration", type=float, default=5.0, help="seconds of the one-client baseline")
    args = ap.parse_args(argv)

    images = sample_images(args.size)
    srv = None
    if not args.server:
        from imagesieve.local_server import LocalServer
        srv = LocalServer([], model=args.model)
        srv.start()
    address = args.server or srv.address
    try:
        # Warm-up (model, thread pools), then measure.
        asyncio.run(run_load(address, images, clients=2, duration_s=1.0, per_call=args.images, chunk=args.chunk))
        single = asyncio.run(run_load(address, images, 1, args.baseline_duration, args.images, args.chunk))
        sampler = RssSampler(srv.proc.pid) if srv else None
        rss_start = rss_kb(srv.proc.pid) if srv else 0
        if sampler:
            sampler.start()
        out = asyncio.run(run_load(address, images, args.clients, args.duration, args.images, args.chunk))
        if sampler:
            sampler.stop()
            out["server_rss_mb_start"] = round(rss_start / 1024, 1)
            out["server_rss_mb_peak"] = round(max(sampler.samples) / 1024, 1)
        out.update(photo_px=args.size, cpu_count=os.cpu_count(),
                   single_client_images_per_s=single["images_per_s"],
                   single_client_latency_ms_p50=single["latency_ms_p50"],
                   throughput_vs_single_client=round(out["images_per_s"] / max(single["images_per_s"], 1e-9), 2))
    finally:
        if srv:
            srv.stop()
    print(f"{out['clients']} clients, {out['duration_s']} s: {out['images_per_s']} images/s, "
          f"call p50 {out['latency_ms_p50']} ms, p99 {out['latency_ms_p99']} ms, errors {out['errors'] or 'none'}",
          file=sys.stderr)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
