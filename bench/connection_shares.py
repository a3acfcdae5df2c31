"""One client on many connections against another client's Embed latency.

    .venv/bin/python bench/connection_shares.py [--connections 16] [--calls 2] [--seconds 10]

Starts a LocalServer with two tokens (a token names the client; on loopback
every connection has the same address). The flooding client loops Embed
calls of ``--images`` sample photos, ``--calls`` at a time on each of
``--connections`` connections of its own; the victim, on one connection,
loops Embeds of ``--victim-images`` photos one after another for
``--seconds``. Two runs, the same total load each: the flood on one
connection, then on ``--connections``. Fair shares by connection gave the
many-connection flood ``--connections`` shares (the twenty-seventh probe);
by client, then connection (engine/owners.py), one client's share. Last
line: JSON with the victim's p50/p90 (ms) and the flood's images/s per run.
"""
from __future__ import annotations

import argparse
import json
import secrets
import statistics
import threading
import time

import grpc

from imagesieve.local_server import LocalServer
from imagesieve.samples import imagenet_photos
from imagesieve.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc


def _channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def run(address: str, flood_token: str, victim_token: str, photos: list[bytes], connections: int,
        calls: int, images: int, victim_images: int, seconds: float) -> dict:
    flood_request = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=str(i), data=photos[i % len(photos)])
                                                       for i in range(images)])
    victim_request = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=f"v{i}", data=photos[-1 - i])
                                                        for i in range(victim_images)])
    stop, flooded = threading.Event(), []
    channels = [_channel(address) for _ in range(connections + 1)]
    try:
        def flood(channel):
            stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
            while not stop.is_set():
                stub.Embed(flood_request, metadata=[("authorization", f"Bearer {flood_token}")], timeout=120)
                flooded.append(images)
        threads = [threading.Thread(target=flood, args=(ch,), daemon=True)
                   for ch in channels[:connections] for _ in range(calls)]
        victim = embedding_pb2_grpc.EmbeddingServiceStub(channels[-1])
        meta = [("authorization", f"Bearer {victim_token}")]
        victim.Embed(victim_request, metadata=meta, timeout=60)
        for t in threads:
            t.start()
        time.sleep(2)                                       # the flood under way
        flooded.clear()
        times, t_end = [], time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            victim.Embed(victim_request, metadata=meta, timeout=60)
            times.append(time.perf_counter() - t0)
        flood_rate = sum(flooded) / (time.perf_counter() - started)
        stop.set()
        for t in threads:
            t.join(120)
    finally:
        for ch in channels:
            ch.close()
    q = statistics.quantiles(times, n=10)
    return {"victim_p50_ms": round(statistics.median(times) * 1000, 1), "victim_p90_ms": round(q[-1] * 1000, 1),
            "victim_calls": len(times), "flood_images_per_s": round(flood_rate, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--calls", type=int, default=2, help="the flood's calls at a time on each of --connections")
    ap.add_argument("--images", type=int, default=8, help="photos a flood call")
    ap.add_argument("--victim-images", type=int, default=8, help="photos a victim call")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--model", default=None, help="a model manifest (default: the server's)")
    a = ap.parse_args()
    photos = [p.read_bytes() for p, _ in imagenet_photos()]
    flood_token, victim_token = "f-" + secrets.token_hex(16), "v-" + secrets.token_hex(16)
    out = {}
    with LocalServer([], model=a.model,
                     env={"IMAGESIEVE_TOKENS": f"{flood_token} rw flood;{victim_token} rw victim"}) as srv:
        for name, conns in (("one_connection", 1), (f"{a.connections}_connections", a.connections)):
            # The same total load: connections x calls flood calls at a time either way.
            out[name] = run(srv.address, flood_token, victim_token, photos, conns, a.calls * a.connections // conns,
                            a.images, a.victim_images, a.seconds)
            print(name, out[name], flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
