"""The batch audit at growing N: end-to-end throughput against embedding
alone, and peak memory at N and 4N.

    .venv/bin/python bench/audit.py [--n 1500] [--no-sweep]

Images: real photos (bench/photos.py) cut into distinct 640x480 crops, with
altered copies (imagesieve.alterations) mixed in, JPEG q90, in 8 class
folders; generated once under bench/out/audit_images/.
- embed_ips: the in-process embedding pipeline alone on the same files;
- audit_ips: N / wall time of `imagesieve audit` (a fresh process: model
  load, embedding, every analysis, the report);
- peak RSS of that process at N and 4N, against the growth of the vectors
  themselves (4 bytes x 1024 per image).
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from photos import ALTERATIONS, jpeg, real_photos  # noqa: E402

OUT = Path(__file__).parent / "out" / "audit_images"
CLASSES = 8


def make_images(n: int) -> Path:
    folder = OUT / str(n)
    if folder.exists() and sum(1 for _ in folder.rglob("*.jpg")) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rnd = random.Random(n)
    photos = [p.resize((1280, 960)) for p in real_photos()]
    kinds = list(ALTERATIONS)
    for i in range(n):
        src = i % len(photos)
        x, y = rnd.randrange(0, 640), rnd.randrange(0, 480)
        img = photos[src].crop((x, y, x + 640, y + 480))
        if rnd.random() < 0.1:
            img = ALTERATIONS[rnd.choice(kinds)](img).convert("RGB")
        d = folder / f"class{src % CLASSES}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img{i:06d}.jpg").write_bytes(jpeg(img, 90))
    return folder


def embed_only(folder: Path) -> float:
    from imagesieve_server.engine import Embedder
    paths = sorted(folder.rglob("*.jpg"))
    e = Embedder.from_model()
    e.embed_all(p.read_bytes() for p in paths[:64])        # warm up
    t = time.perf_counter()
    for _ in e.embed(p.read_bytes() for p in paths):
        pass
    return len(paths) / (time.perf_counter() - t)


def audit(folder: Path, extra: list[str]) -> tuple[float, float, dict]:
    """(wall seconds, peak RSS MiB, report summary) of one fresh audit process."""
    with tempfile.TemporaryDirectory() as out:
        probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                 "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                 "assert r.returncode == 0, r.stderr[-3000:]; "
                 "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        r = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "imagesieve.cli", "audit",
                            str(folder), "--out", out, *extra], capture_output=True, text=True, check=True)
        wall, rss_kb = r.stdout.split()
        summary = json.loads((Path(out) / "report.json").read_text())["summary"]
        return float(wall), int(rss_kb) / 1024, summary


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--no-sweep", action="store_true")
    args = ap.parse_args()
    extra = ["--no-sweep"] if args.no_sweep else []
    small, large = make_images(args.n), make_images(4 * args.n)
    embed_ips = embed_only(small)
    wall_n, rss_n, sum_n = audit(small, extra)
    wall_4n, rss_4n, sum_4n = audit(large, extra)
    vectors_growth_mb = 3 * args.n * 1024 * 4 / 2**20
    audit_ips = args.n / wall_n
    result = {
        "n": args.n, "embed_ips": round(embed_ips, 1), "audit_ips": round(audit_ips, 1),
        "audit_over_embed": round(audit_ips / embed_ips, 3),
        "audit_ips_4n": round(4 * args.n / wall_4n, 1),
        "audit_over_embed_4n": round(4 * args.n / wall_4n / embed_ips, 3),
        "peak_rss_mb_n": round(rss_n), "peak_rss_mb_4n": round(rss_4n),
        "vectors_growth_mb": round(vectors_growth_mb, 1),
        "rss_growth_mb": round(rss_4n - rss_n, 1),
        "rss_growth": round((rss_4n - rss_n) / vectors_growth_mb, 2),
        # The generated images are crops of only ~32 photos, so near-duplicate
        # pairs grow quadratically with N; their arrays and groups are in the RSS.
        "duplicate_pairs_n": sum_n.get("duplicate_pairs"), "duplicate_pairs_4n": sum_4n.get("duplicate_pairs"),
        "stage_seconds_n": sum_n["seconds"], "stage_seconds_4n": sum_4n["seconds"],
        "stage_peak_rss_mb_4n": sum_4n["peak_rss_mb"], "sweep": not args.no_sweep,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
