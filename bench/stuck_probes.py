"""Health checks whose answers can never be sent: what do they cost a server?

    .venv/bin/python bench/stuck_probes.py [--connections 20] [--calls 500]

One address opens ``--connections`` raw HTTP/2 connections (h2) with a
stream window of 0, each sending ``--calls`` Health/Check calls, and never
reads: the answers can never be sent, and gRPC core keeps such a call until
its client leaves (a twenty-seventh probe). Measured on a real server, with
its default ``--max-probes-per-connection`` and ``--keepalive-s 5``, and
with both lifted (the baseline: how it was before, gRPC's 2-hour keepalive):
the server's RSS growth after the calls were sent, what a well-behaved check
from another connection of that address gets while they are held, how many
of the connections the server has closed after three times its keepalive (a ping
they never answered: a connection holding open calls is pinged), a check
then, and a check once the address has left. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagesieve.local_server import LocalServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from h2_raw import zero_window_calls  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server ended this connection (its end of stream read)."""
    sock.settimeout(0.5)
    try:
        while chunk := sock.recv(1 << 16):
            del chunk
        return True
    except OSError:         # a timeout: still open
        return False


def check(health) -> str:
    try:
        return health_pb2.HealthCheckResponse.ServingStatus.Name(
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)
    except grpc.RpcError as e:
        return e.code().name


def run(args, extra: list[str]) -> dict:
    with LocalServer(extra) as srv:
        ch = grpc.insecure_channel(srv.address)
        health = health_pb2_grpc.HealthStub(ch)
        check(health)
        time.sleep(1)
        before = rss_mib(srv.proc.pid)
        socks = [zero_window_calls(srv.address, "Check", args.calls)[0] for _ in range(args.connections)]
        time.sleep(args.settle)
        after = rss_mib(srv.proc.pid)
        during = check(health)
        time.sleep(3 * args.keepalive_s + 2)          # a ping, twice as long unanswered, slack
        closed = sum(_closed_by_server(s) for s in socks)
        after_keepalive = check(health)
        for s in socks:
            s.close()
        time.sleep(2)
        left = check(health)
        ch.close()
    return {"rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
            "rss_growth_mib": round(after - before, 1), "check_while_held": during,
            "connections_closed_by_the_server": closed, "check_after_keepalive": after_keepalive,
            "check_after_leaving": left}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--calls", type=int, default=500, help="Checks a connection (gRPC's streams a connection bound them)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds for the server to take the calls")
    ap.add_argument("--keepalive-s", type=float, default=5.0,
                    help="the bounded server's --keepalive-s (the baseline: 7200, gRPC's default)")
    args = ap.parse_args()
    unbounded = run(args, ["--max-probes-per-connection", str(10 ** 9), "--keepalive-s", "7200"])
    print(json.dumps({"unbounded": unbounded}), file=sys.stderr, flush=True)
    bounded = run(args, ["--keepalive-s", str(args.keepalive_s)])
    print(json.dumps({"connections": args.connections, "calls_each": args.calls, "unbounded": unbounded,
                      "bounded": bounded,
                      "growth_ratio": round(bounded["rss_growth_mib"] / unbounded["rss_growth_mib"], 3)
                      if unbounded["rss_growth_mib"] > 0 else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
