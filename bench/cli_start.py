"""Cold start of the light client's CLI against the least a health probe needs.

    .venv/bin/python bench/cli_start.py [--runs 15] [--venv bench/out/client-venv]

A virtual environment with the client distribution alone (client/, made by
scripts/client_venv.sh: no onnxruntime, faiss, OpenCV, scikit-learn or torch)
runs, against a live server on loopback, alternating:
  baseline  python importing grpc and the health stub, one Check call
  health    imagesieve health --server ADDR   (a container's HEALTHCHECK)
  help      imagesieve --help
Each run is a fresh process; wall time and that process's peak RSS (wait4).
Medians. Last line: one JSON object (health_over_baseline target <= 1.3,
health_rss_mb <= 60).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from imagesieve.local_server import LocalServer

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ("import sys, grpc; from grpc_health.v1 import health_pb2, health_pb2_grpc\n"
            "with grpc.insecure_channel(sys.argv[1]) as ch:\n"
            "    r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)\n"
            "print(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))\n")


def timed(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one fresh process; it must succeed."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed ({p.returncode}): {p.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--venv", default=str(ROOT / "bench" / "out" / "client-venv"))
    args = ap.parse_args()
    venv = Path(args.venv)
    subprocess.run(["bash", str(ROOT / "scripts" / "client_venv.sh"), str(venv)], check=True)
    py, cli = str(venv / "bin" / "python"), str(venv / "bin" / "imagesieve")
    with LocalServer() as srv:
        commands = {"baseline": [py, "-c", BASELINE, srv.address],
                    "health": [cli, "health", "--server", srv.address],
                    "help": [cli, "--help"]}
        for cmd in commands.values():            # warm the page cache once
            timed(cmd)
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
        for i in range(args.runs):
            for name, cmd in commands.items():
                runs[name].append(timed(cmd))
            print(f"run {i + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1][0] * 1000:.0f} ms" for k, v in runs.items()),
                  file=sys.stderr)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(m for _, m in v)) for k, v in runs.items()}
    out = {"runs": args.runs}
    for k, (wall, rss) in med.items():
        out[f"{k}_s"] = round(wall, 4)
        out[f"{k}_rss_mb"] = round(rss, 1)
    out["health_over_baseline"] = round(med["health"][0] / med["baseline"][0], 3)
    out["help_over_baseline"] = round(med["help"][0] / med["baseline"][0], 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
