"""Soak: many clients, some of them hostile, then kill -9 and restart.

    .venv/bin/python bench/soak.py [--clients 64] [--duration 120] [--abusive-share 0.02]

A real server on loopback (``--max-inflight-mb`` budget, ``--allow-root``).
Well-behaved clients loop over a mix of calls: Embed (4 inline photos),
CheckDuplicates with add_if_unique, AddImages of fresh images, and now and
then FindDuplicates and a small ScoreLabels job; 5% of their images are
corrupt. Two runs of ``--duration`` each, in one server, each on a
collection of its own that starts empty: the good clients
alone (baseline), then the same clients where ``--abusive-share`` of the
calls are abusive instead: one large ``server_path`` file named 256 times,
a 16-bit 10000x10000 PNG, a FIFO, a message over the size limit, a stream
abandoned half-way. Then the server is killed with SIGKILL and restarted on
the same data folder, and every add it acknowledged is looked for.

Figures (last line, JSON): ``unexpected_codes`` (calls or items answered
with a code outside the documented set, by code), ``peak_rss_mb`` of the
server, ``rss_budget_mb`` (the configured budget plus the
warm server's resident size before the load, once each kind of call has run
once), ``acked_lost`` (acknowledged adds
missing after the restart), ``healthy_after``, and
``good_throughput_ratio`` (good clients' successful images per second with
abusive clients / without), and ``good_calls_by_kind`` (each phase's good
calls by kind: how many, their p50 and total seconds, whatever their
outcome: where the clients' time went).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from load import RssSampler, rss_kb, sample_images  # noqa: E402

from imagesieve.v1 import (analysis_pb2, analysis_pb2_grpc, collections_pb2, collections_pb2_grpc,  # noqa: E402
                           common_pb2, duplicates_pb2, duplicates_pb2_grpc, embedding_pb2, embedding_pb2_grpc)

# Codes the API documents for calls and items; anything else is a defect.
DOCUMENTED = {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "NOT_FOUND", "PERMISSION_DENIED",
              "DEADLINE_EXCEEDED", "CANCELLED", "ALREADY_EXISTS", "ABORTED", "FAILED_PRECONDITION"}
CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def fresh_image(rng: random.Random, base: bytes) -> bytes:
    """A distinct picture: a real photo with a random coloured block drawn in."""
    img = Image.open(io.BytesIO(base)).convert("RGB")
    w, h = img.size
    x, y = rng.randrange(w // 2), rng.randrange(h // 2)
    img.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, x + w // 3, y + h // 3))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def abusive_files(root: Path) -> dict[str, Path]:
    noise = np.random.default_rng(0).integers(0, 256, (1400, 1400, 3), dtype=np.uint8)
    big = root / "big.png"
    Image.fromarray(noise).save(big, compress_level=0)
    deep = root / "deep16.png"
    Image.fromarray(np.tile(np.arange(10000, dtype=np.uint16) * 6, (10000, 1))).save(deep)   # 16-bit gray
    fifo = root / "pipe.jpg"
    if not fifo.exists():
        os.mkfifo(fifo)
    return {"big": big, "deep": deep, "fifo": fifo}


class Tally:
    def __init__(self, phase: str):
        self.phase = phase
        self.codes: dict[str, int] = {}
        self.good_images = 0
        self.acked: list[str] = []
        self.seconds: dict[str, list[float]] = {}    # kind of good call -> each one's seconds (any outcome)

    def timed(self, kind: str, seconds: float) -> None:
        self.seconds.setdefault(kind, []).append(seconds)

    def by_kind(self) -> dict:
        """Each kind of good call: how many, their p50 and their total seconds
        (where the clients' time went: a job waiting in line for a slot holds its client)."""
        return {k: {"calls": len(v), "p50_s": round(statistics.median(v), 3), "total_s": round(sum(v), 1)}
                for k, v in sorted(self.seconds.items())}

    def code(self, name: str) -> None:
        self.codes[name] = self.codes.get(name, 0) + 1

    def items(self, errors) -> None:
        for e in errors:
            self.code(CODE_NAMES.get(e.code, f"code{e.code}") if e.code else "OK")

    def answers(self, results) -> None:
        """Per-image answers of CheckDuplicates or AddImages (``added``: acknowledged)."""
        for x in results:
            self.code(CODE_NAMES[x.error.code] if x.HasField("error") else "OK")
            if x.added:
                self.acked.append(x.key)
            if not x.HasField("error"):
                self.good_images += 1


GOOD_KINDS = ((0.45, "embed"), (0.7, "check"), (0.95, "add"), (0.98, "find_duplicates"), (1.0, "score_labels"))


async def good_call(stubs, rng: random.Random, photos: list[bytes], bad: list[bytes], tally: Tally, cid: int,
                    n: list[int]) -> None:
    """One well-behaved call, of a kind drawn by GOOD_KINDS' shares; its seconds are tallied whatever its outcome."""
    r = rng.random()
    kind = next(k for share, k in GOOD_KINDS if r < share)
    t0 = time.perf_counter()
    try:
        await _good_call(stubs, rng, photos, bad, tally, cid, n, kind)
    finally:
        tally.timed(kind, time.perf_counter() - t0)


async def _good_call(stubs, rng: random.Random, photos: list[bytes], bad: list[bytes], tally: Tally, cid: int,
                     n: list[int], kind: str) -> None:
    emb, col, dup, ana = stubs

    def images(k: int, fresh: bool = False):
        out = []
        for _ in range(k):
            n[0] += 1
            if rng.random() < 0.05:
                data = rng.choice(bad)
            else:
                data = fresh_image(rng, rng.choice(photos)) if fresh else rng.choice(photos)
            out.append(common_pb2.Image(key=f"{tally.phase}-c{cid}-{n[0]}", data=data, label=rng.choice("ab")))
        return out

    if kind == "embed":
        resp = await emb.Embed(embedding_pb2.EmbedRequest(images=images(4)), timeout=60)
        tally.items([e.error for e in resp.embeddings])
        tally.good_images += sum(1 for e in resp.embeddings if not e.HasField("error"))
    elif kind == "check":
        req = duplicates_pb2.CheckDuplicatesRequest(collection=f"soak-{tally.phase}",
                                                    images=images(2, fresh=True), add_if_unique=True)
        async for resp in dup.CheckDuplicates(iter([req]), timeout=60):
            tally.answers(resp.results)
    elif kind == "add":
        req = collections_pb2.AddImagesRequest(collection=f"soak-{tally.phase}", images=images(3, fresh=True))
        async for resp in col.AddImages(iter([req]), timeout=60):
            tally.answers(resp.results)
    elif kind == "find_duplicates":
        find = duplicates_pb2.FindDuplicatesRequest(collection=f"soak-{tally.phase}")
        async for _ in dup.FindDuplicates(find, timeout=120):
            pass
    else:
        src = analysis_pb2.LabelledSource(inline=analysis_pb2.InlineImages(
            images=[common_pb2.Image(key=f"l{i}", data=photos[i % len(photos)], label="ab"[i % 2])
                    for i in range(12)]))
        async for _ in ana.ScoreLabels(analysis_pb2.ScoreLabelsRequest(source=src, folds=3), timeout=120):
            pass
    tally.code("OK")


ABUSIVE_KINDS = ("big", "deep", "fifo", "oversize", "abandon")


async def abusive_call(stubs, rng: random.Random, files: dict[str, Path], tally: Tally, max_message: int,
                       kinds=ABUSIVE_KINDS) -> None:
    emb = stubs[0]
    kind = rng.choice(list(kinds))
    if kind in ("big", "deep", "fifo"):
        times = 256 if kind == "big" else 2
        req = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=f"x{i}", server_path=str(files[kind]))
                                                 for i in range(times)])
        resp = await emb.Embed(req, timeout=60)
        tally.items([e.error for e in resp.embeddings])
    elif kind == "oversize":
        req = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="huge", data=b"\0" * (max_message + 1024))])
        await emb.Embed(req, timeout=60)
    else:
        async def requests():
            for i in range(50):
                yield embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=f"s{i}", data=b"\xff\xd8junk")])
                await asyncio.sleep(0.01)
        call = emb.EmbedStream(requests(), timeout=60)
        async for _ in call:
            call.cancel()               # walk away mid-stream
            break
        tally.code("CANCELLED")
        return
    tally.code("OK")


async def run_phase(address: str, clients: int, duration: float, abusive_share: float, photos, bad, files,
                    max_message: int, seed: int, phase: str, kinds=ABUSIVE_KINDS) -> Tally:
    tally = Tally(phase)
    stop_at = time.perf_counter() + duration

    async def client(cid: int):
        rng = random.Random(seed * 1000 + cid)
        n = [0]
        async with grpc.aio.insecure_channel(address, options=[
                ("grpc.max_send_message_length", max_message * 2)]) as ch:
            stubs = (embedding_pb2_grpc.EmbeddingServiceStub(ch), collections_pb2_grpc.CollectionServiceStub(ch),
                     duplicates_pb2_grpc.DuplicateServiceStub(ch), analysis_pb2_grpc.AnalysisServiceStub(ch))
            while time.perf_counter() < stop_at:
                try:
                    if rng.random() < abusive_share:
                        await abusive_call(stubs, rng, files, tally, max_message, kinds)
                    else:
                        await good_call(stubs, rng, photos, bad, tally, cid, n)
                except grpc.RpcError as e:
                    tally.code(e.code().name)
                    if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        await asyncio.sleep(0.05 + rng.random() * 0.1)     # the documented backoff

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    tally.wall = time.perf_counter() - t0
    return tally


async def lost_after_restart(address: str, acked: dict[str, list[str]]) -> tuple[bool, int]:
    """(healthy, acknowledged adds missing): ``acked`` = {collection: keys}."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    async with grpc.aio.insecure_channel(address) as ch:
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        col = collections_pb2_grpc.CollectionServiceStub(ch)
        removed = 0
        for name, keys in acked.items():
            for i in range(0, len(keys), 500):
                r = await col.RemoveImages(collections_pb2.RemoveImagesRequest(collection=name, keys=keys[i:i + 500]),
                                           timeout=60)
                removed += r.removed
    return (health.status == health_pb2.HealthCheckResponse.SERVING,
            sum(len(keys) for keys in acked.values()) - removed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of each phase")
    ap.add_argument("--abusive-share", type=float, default=0.02)
    ap.add_argument("--abusive-kinds", default=",".join(ABUSIVE_KINDS),
                    help="which abusive calls, comma-separated (to measure what each costs apart)")
    ap.add_argument("--budget-mb", type=int, default=512, help="the server's --max-inflight-mb")
    ap.add_argument("--model", default="mobilenet_v1")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra server flag, repeatable (e.g. --server-arg=--trim-memory --server-arg=1)")
    args = ap.parse_args()
    kinds = tuple(k for k in args.abusive_kinds.split(",") if k)
    if not kinds or set(kinds) - set(ABUSIVE_KINDS):
        ap.error(f"--abusive-kinds: some of {', '.join(ABUSIVE_KINDS)}")
    from imagesieve.local_server import LocalServer

    work = Path(tempfile.mkdtemp(prefix="imagesieve-soak-"))
    root, data = work / "root", work / "data"
    root.mkdir()
    files = abusive_files(root)
    photos = sample_images(384)
    bad = [photos[0][: len(photos[0]) // 3], b"not an image at all", b"\x89PNG\r\n\x1a\n" + os.urandom(300)]
    max_message_mb = 16
    server_args = ["--allow-root", str(root), "--max-inflight-mb", str(args.budget_mb),
                   "--max-message-mb", str(max_message_mb), "--snapshot-every", "200", *args.server_arg]
    srv = LocalServer(server_args, model=args.model, data_dir=str(data))
    srv.start()
    # "The model" in the budget: the server's fixed footprint, i.e. its
    # resident size once every kind of call has run once, before any load.
    # ONNX Runtime's arenas grow with the first full batches, and the first
    # ScoreLabels job imports scikit-learn (and with it pandas and pyarrow:
    # ~100 MiB of code that stays loaded); neither is memory in flight.
    from imagesieve import Client
    with Client(srv.address) as warm:
        warm.embed(photos * 4)
        warm.create_collection("soak-warm-up")
        keys = [f"w{i}" for i in range(24)]
        list(warm.add("soak-warm-up", photos[:24], keys=keys, labels=["ab"[i % 2] for i in range(24)]))
        list(warm.check("soak-warm-up", photos[24:32]))
        warm.find_duplicates("soak-warm-up")
        warm.score_labels(collection="soak-warm-up", folds=3)
        warm.drop_collection("soak-warm-up")
    base_rss = rss_kb(srv.proc.pid) / 1024
    sampler = RssSampler(srv.proc.pid)
    sampler.start()

    async def setup():
        # One collection a phase, both empty at the start: checks and
        # FindDuplicates cost more as a collection grows, so the phases must
        # not share one (the second would work on the first's images too).
        async with grpc.aio.insecure_channel(srv.address) as ch:
            for phase in ("baseline", "abusive"):
                await collections_pb2_grpc.CollectionServiceStub(ch).CreateCollection(
                    collections_pb2.CreateCollectionRequest(name=f"soak-{phase}"), timeout=30)
    asyncio.run(setup())
    phases = {}
    phase_peaks = {}
    for name, share in (("baseline", 0.0), ("abusive", args.abusive_share)):
        first = len(sampler.samples)
        t = asyncio.run(run_phase(srv.address, args.clients, args.duration, share, photos, bad, files,
                                  max_message_mb << 20, seed=1 if share else 0, phase=name, kinds=kinds))
        phases[name] = t
        phase_peaks[name] = round(max(sampler.samples[first:] or [0]) / 1024, 1)
        print(json.dumps({"phase": name, "good_images_per_s": round(t.good_images / t.wall, 1),
                          "codes": t.codes, "acked": len(t.acked), "peak_rss_mb": phase_peaks[name],
                          "good_calls_by_kind": t.by_kind()}),
              file=sys.stderr, flush=True)
    sampler.stop()
    peak = max(sampler.samples) / 1024
    # kill -9, restart on the same data, look for every acknowledged add.
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv2 = LocalServer(server_args, model=args.model, data_dir=str(data))
    srv2.start()
    acked = {f"soak-{name}": t.acked for name, t in phases.items()}
    try:
        healthy, lost = asyncio.run(lost_after_restart(srv2.address, acked))
    finally:
        srv2.stop()
    codes: dict[str, int] = {}
    for t in phases.values():
        for k, v in t.codes.items():
            codes[k] = codes.get(k, 0) + v
    unexpected = {k: v for k, v in codes.items() if k not in DOCUMENTED}
    good = {k: t.good_images / t.wall for k, t in phases.items()}
    print(json.dumps({
        "clients": args.clients, "duration_s": args.duration, "abusive_share": args.abusive_share,
        "abusive_kinds": list(kinds),
        "codes": codes, "unexpected_codes": unexpected, "peak_rss_mb": round(peak, 1),
        "peak_rss_mb_by_phase": phase_peaks,
        "rss_budget_mb": round(args.budget_mb + base_rss, 1), "server_rss_warm_mb": round(base_rss, 1),
        "acked": sum(len(keys) for keys in acked.values()), "acked_lost": lost, "healthy_after": healthy,
        "good_images_per_s_baseline": round(good["baseline"], 1),
        "good_images_per_s_abusive": round(good["abusive"], 1),
        "good_throughput_ratio": round(good["abusive"] / max(good["baseline"], 1e-9), 3),
        "good_calls_by_kind": {name: t.by_kind() for name, t in phases.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
