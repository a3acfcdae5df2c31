"""Large requests at once: what the server holds, with and without the
request gates (service/imagesieve_server/request_gate.py), in one run.

``--kind unary``: ``--calls`` Embed calls of ``--mb`` MB each (valid
messages under the 64 MB limit; their one image is over --max-image-mb, so
each answer is a quick item error: what is measured is the request bytes),
all at once on connections of their own. ``--kind stream``: ``--calls``
EmbedStream calls, each sending such messages back to back for
``--seconds``. ``--kind health``: ``--calls`` clients sending health checks
naming a service of ``--mb`` MB (refused) for ``--seconds``: no token is
needed for those. Against a real server with ``--budget-mb`` in flight.
Baseline: the same server with ``--request-gate 0`` (gRPC reads each
request whole before any handler). Per server: the latency of a small
unary call first (``--small-calls`` GetModelInfo one after another, p50 in
ms: what the gate and the streamed answer cost every call), then resident
memory before, the peak (VmHWM) and after the flood, in MiB. Last line: one
JSON object with both and the ratios.

    .venv/bin/python bench/request_flood.py --calls 32 --mb 60 --budget-mb 256
    .venv/bin/python bench/request_flood.py --kind stream --calls 32 --mb 60 --budget-mb 1024
    .venv/bin/python bench/request_flood.py --kind health --calls 48 --mb 60 --budget-mb 1024
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from imagesieve.local_server import LocalServer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imagesieve.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc


def _status_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def small_call_p50_ms(address: str, calls: int) -> float:
    with grpc.insecure_channel(address) as ch:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(ch)
        times = []
        for i in range(calls + 50):                   # the first 50: warm-up
            t = time.perf_counter()
            stub.GetModelInfo(embedding_pb2.GetModelInfoRequest(), timeout=10)
            if i >= 50:
                times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 3)


def _unary(ch, request, seconds: float) -> str:
    answer = embedding_pb2_grpc.EmbeddingServiceStub(ch).Embed(request, timeout=300).embeddings[0]
    return "item error" if answer.HasField("error") else "embedded"


def _stream(ch, request, seconds: float) -> str:
    stop = time.monotonic() + seconds
    for _ in embedding_pb2_grpc.EmbeddingServiceStub(ch).EmbedStream(
            iter(lambda: request if time.monotonic() < stop else None, None), timeout=seconds + 300):
        pass
    return "OK"


def _health(ch, request, seconds: float) -> str:
    stop, codes = time.monotonic() + seconds, set()
    while time.monotonic() < stop:
        try:
            health_pb2_grpc.HealthStub(ch).Check(request, timeout=60)
            codes.add("OK")
        except grpc.RpcError as e:
            codes.add(e.code().name)
    return "+".join(sorted(codes))


KINDS = {"unary": _unary, "stream": _stream, "health": _health}


def flood(gate: int, kind: str, calls: int, mb: int, budget_mb: int, small_calls: int, seconds: float) -> dict:
    if kind == "health":
        request = health_pb2.HealthCheckRequest(service="x" * (mb << 20))
    else:
        request = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="big", data=os.urandom(mb << 20))])
    with LocalServer(["--max-inflight-mb", str(budget_mb), "--request-gate", str(gate)]) as srv:
        pid = srv.proc.pid
        small = small_call_p50_ms(srv.address, small_calls)
        start = _status_mb(pid, "VmRSS")

        def call(_):
            ch = grpc.insecure_channel(srv.address, options=[("grpc.max_send_message_length", 64 << 20),
                                                             ("grpc.use_local_subchannel_pool", 1)])
            try:
                return KINDS[kind](ch, request, seconds)
            except grpc.RpcError as e:
                return e.code().name
            finally:
                ch.close()

        with ThreadPoolExecutor(calls) as pool:
            outcomes = list(pool.map(call, range(calls)))
        return {"small_call_p50_ms": small, "rss_start_mb": round(start), "peak_rise_mb": round(_status_mb(pid, "VmHWM") - start),
                "after_rise_mb": round(_status_mb(pid, "VmRSS") - start),
                "outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=sorted(KINDS), default="unary")
    ap.add_argument("--calls", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0, help="how long each stream or health client sends")
    ap.add_argument("--mb", type=int, default=60, help="MB a request (under the server's 64 MB message limit)")
    ap.add_argument("--budget-mb", type=int, default=256, help="the servers' --max-inflight-mb")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each, alternately (medians reported)")
    ap.add_argument("--small-calls", type=int, default=600, help="GetModelInfo calls timed on each server")
    args = ap.parse_args()
    if not 0 < args.mb < 64:
        ap.error("--mb must be in 1..63 (the server's message limit is 64 MB)")
    runs = {"without_gate": [], "with_gate": []}
    for r in range(args.repeats):
        for name, gate in (("without_gate", 0), ("with_gate", 1)):
            runs[name].append(flood(gate, args.kind, args.calls, args.mb, args.budget_mb, args.small_calls,
                                    args.seconds))
            print(json.dumps({"run": r, name: runs[name][-1]}), flush=True)
    out = {"kind": args.kind, "calls": args.calls, "mb": args.mb, "budget_mb": args.budget_mb, "repeats": args.repeats}
    for name, rs in runs.items():
        for key in ("small_call_p50_ms", "peak_rise_mb", "after_rise_mb"):
            out[f"{name}_{key}"] = statistics.median(r[key] for r in rs)
    out["small_call_p50_ratio"] = round(out["with_gate_small_call_p50_ms"] / out["without_gate_small_call_p50_ms"], 3)
    out["peak_rise_ratio"] = round(out["with_gate_peak_rise_mb"] / max(1, out["without_gate_peak_rise_mb"]), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
