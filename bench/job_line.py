"""Many clients looping analysis jobs: does another client still get its turn?

A real server with ``--max-jobs 2`` (its job slots: ``jobs/runner.JobSlots``)
and a collection of 100 labelled digits. ``--attackers`` clients, each on its
own source address (a TCP forwarder in this process connects to the server
from 127.0.0.X, so the server tells them apart as it would hosts), loop
ScoreLabels jobs on it back to back, one at a time, without the client's
retries. A victim (the stock light client: it asks a refused job again for
~8 s) runs the same job every ``--every`` seconds, first alone, then during
the attack. Baseline: the same server with ``--job-wait-s 0`` (a job finding
every slot in use refused at once, as before the line). Last line: one JSON
object with, per server, the victim's latencies (p50, max), how many of its
jobs were served, the attackers' served and refused jobs, and the ratio of
the victim's p50 during the attack to alone. Linux (the whole 127/8 is
loopback).

    .venv/bin/python bench/job_line.py --attackers 48 --seconds 40
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import threading
import time

import grpc
import numpy as np
from imagesieve import Client
from imagesieve.local_server import LocalServer
from imagesieve.v1 import analysis_pb2, analysis_pb2_grpc
from sklearn.datasets import load_digits

BASE_PORT = 52000


def _digit_pngs(n: int) -> tuple[list[bytes], list[str]]:
    import io

    from PIL import Image
    x, y = load_digits(return_X_y=True)
    out = []
    for a in x[:n]:
        buf = io.BytesIO()
        Image.fromarray((a.reshape(8, 8) * 255 / 16).astype(np.uint8)).resize((64, 64), Image.NEAREST).save(buf, "PNG")
        out.append(buf.getvalue())
    return out, [str(v) for v in y[:n]]


def _forwarder(server_port: int, count: int) -> asyncio.AbstractEventLoop:
    """Ports BASE_PORT + i forward to the server from source address 127.0.X.Y, one each."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def handler(i):
        async def forward(client_reader, client_writer):
            source = f"127.0.{(10 + i) // 250}.{(10 + i) % 250 + 2}"
            reader, writer = await asyncio.open_connection("127.0.0.1", server_port, local_addr=(source, 0))
            try:
                await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))
            except asyncio.CancelledError:       # _close: the run is over
                writer.close()
                client_writer.close()
        return forward

    async def main():
        for i in range(count):
            await asyncio.start_server(handler(i), "127.0.0.1", BASE_PORT + i)
        ready.set()

    threading.Thread(target=lambda: (loop.run_until_complete(main()), loop.run_forever()), daemon=True).start()
    ready.wait(30)
    return loop


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """The forwarder's connections cancelled and its loop stopped (no pending tasks at exit)."""
    async def cancel_all():
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)


def _victim(address: str, seconds: float, every: float) -> list[tuple[bool, float]]:
    out = []
    with Client(address, timeout=120) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            try:
                c.score_labels(collection="lab")
                out.append((True, time.perf_counter() - t))
            except grpc.RpcError:
                out.append((False, time.perf_counter() - t))
            time.sleep(every)
    return out


def _summary(runs: list[tuple[bool, float]]) -> dict:
    served = [s for ok, s in runs if ok]
    return {"asked": len(runs), "served": len(served),
            "p50_s": round(statistics.median(served), 3) if served else None,
            "max_s": round(max(served), 3) if served else None}


def _run(server_args: list[str], attackers: int, seconds: float, every: float) -> dict:
    with LocalServer(["--max-jobs", "2", *server_args]) as srv:
        port = int(srv.address.rsplit(":", 1)[1])
        images, labels = _digit_pngs(100)
        with Client(srv.address) as c:
            c.create_collection("lab")
            list(c.add("lab", images, labels=labels))
            c.score_labels(collection="lab")        # warm-up: the first job imports its classifiers
        alone = _victim(srv.address, min(seconds, 20.0), every)
        forwarder = _forwarder(port, attackers)
        stop, outcomes = threading.Event(), collections.Counter()

        def attack(i):
            with grpc.insecure_channel(f"127.0.0.1:{BASE_PORT + i}", options=[("grpc.enable_retries", 0)]) as ch:
                stub = analysis_pb2_grpc.AnalysisServiceStub(ch)
                request = analysis_pb2.ScoreLabelsRequest(source=analysis_pb2.LabelledSource(collection="lab"))
                while not stop.is_set():
                    try:
                        for _ in stub.ScoreLabels(request, timeout=120):
                            pass
                        outcomes["served"] += 1
                    except grpc.RpcError as e:
                        outcomes[e.code().name] += 1
                        time.sleep(0.01)

        threads = [threading.Thread(target=attack, args=(i,), daemon=True) for i in range(attackers)]
        for t in threads:
            t.start()
        time.sleep(3)
        attacked = _victim(srv.address, seconds, every)
        stop.set()
        for t in threads:
            t.join(150)
        _close(forwarder)
    before, during = _summary(alone), _summary(attacked)
    row = {"victim_alone": before, "victim_attacked": during, "attackers_jobs": dict(outcomes),
           "p50_ratio": (round(during["p50_s"] / before["p50_s"], 1) if during["p50_s"] and before["p50_s"] else None)}
    print(server_args or "default", row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attackers", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--every", type=float, default=2.0, help="seconds between the victim's jobs")
    args = ap.parse_args()
    global BASE_PORT
    rows = {}
    for name, server_args in (("refused_at_once", ["--job-wait-s", "0"]), ("line", [])):
        rows[name] = _run(server_args, args.attackers, args.seconds, args.every)
        BASE_PORT += args.attackers            # fresh ports: the first forwarder's may linger
    line, baseline = rows["line"]["victim_attacked"], rows["refused_at_once"]["victim_attacked"]
    print(json.dumps({"attackers": args.attackers, "max_jobs": 2, "rows": rows,
                      "victim_served_share": {name: round(r["served"] / max(r["asked"], 1), 2)
                                              for name, r in (("refused_at_once", baseline), ("line", line))}}))


if __name__ == "__main__":
    main()
