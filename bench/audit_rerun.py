"""An audit run again over the same folder: does stage 2 align its pairs again?

    .venv/bin/python bench/audit_rerun.py [--collection illustrations] [--added 0.05] [--pool-pairs 256,512,1024,2048]

A real collection (Art4Apps clip art, Debian pysiogame, with dup_quality's
planted copies) written to a folder; then `imagesieve audit --no-sweep` as a
user runs it, each a fresh process:

- ``fresh``: the first audit (embeds, aligns every candidate pair);
- ``rerun_aligned``: the baseline, the rerun as it was before stage 2's
  evidence was kept: the same folder, the kept evidence deleted first (the
  embeddings are reused either way);
- ``rerun``: the same folder, the evidence kept by the run before read
  (``analysis.duplicates.pair_memo``);
- ``rerun_added``: ``--added`` more images (copies of other kinds, of
  originals not copied yet) put in the folder first.

``same_pairs``: the rerun's duplicate pairs (and every evidence column) are
the aligned rerun's; ``same_pairs_added``: the grown folder's are those of
an audit of it that aligned every pair again. Also, stage 2's worker processes against the calling
thread for the audit's first ``--pool-pairs`` candidate pairs
(``verify.verify_pairs``: processes from PROCESS_MIN_PAIRS on; both ways
in the same run, alternating, medians of 3). Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dup_quality import COPY_KINDS, PROBE_KINDS, build, encode, load  # noqa: E402


def audit(folder: Path, out: Path) -> tuple[float, float, str]:
    """(seconds in all, the duplicates stage's seconds, the console)."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "imagesieve.cli", "audit", str(folder), "--out", str(out),
                        "--no-sweep"], capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"audit failed:\n{r.stderr[-3000:]}")
    stage = re.search(r"^seconds:.*?\bduplicates ([\d.]+)", r.stdout, re.M)
    print(f"audit: {took:.1f} s", file=sys.stderr, flush=True)
    return took, float(stage.group(1)) if stage else float("nan"), r.stdout


def pairs(out: Path):
    return pq.read_table(out / "duplicate_pairs.parquet").to_pandas().sort_values(["path_a", "path_b"]).reset_index(drop=True)


def pool_timings(folder: Path, sizes: list[int], rounds: int = 3) -> dict:
    from imagesieve_server.analysis.duplicates import verify
    from imagesieve_server.analysis.duplicates.find import candidate_pairs
    from imagesieve_server.engine import Embedder
    emb = Embedder.from_model("mobilenet_v1")
    files = sorted(folder.iterdir())
    got = emb.embed_all([f.read_bytes() for f in files], with_signatures=True)
    emb.close()
    vectors = np.stack([o.vector for o in got])
    sig = verify.check_signatures(np.stack([o.signature for o in got]))
    a, b, _ = candidate_pairs(vectors)
    out = {}
    for p in sizes:
        if p > len(a):
            continue
        t = {"thread": [], "processes": []}
        for r in range(rounds):
            for way in ("thread", "processes")[::1 if r % 2 == 0 else -1]:
                start = time.perf_counter()
                verify.verify_pairs(sig, a[:p], b[:p], processes=way == "processes")
                t[way].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in t.items()}
        out[str(p)] = {"thread_s": round(med["thread"], 2), "processes_s": round(med["processes"], 2),
                       "speedup": round(med["thread"] / med["processes"], 3)}
        print(json.dumps({"pairs": p, **out[str(p)]}), file=sys.stderr, flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--collection", default="illustrations")
    ap.add_argument("--added", type=float, default=0.05, help="share of images added before the last rerun")
    ap.add_argument("--pool-pairs", default="256,512,1024,2048")
    args = ap.parse_args()
    originals = load(args.collection, 1500)
    blobs, source, *_ = build(originals, 0.2)
    copied = set(np.asarray(source)[len(originals):].tolist())
    spare = [i for i in range(len(originals)) if i not in copied]
    rng = np.random.default_rng(1)
    later = rng.choice(spare, max(1, int(round(args.added * len(blobs)))), replace=False)
    kinds = list(PROBE_KINDS.values()) + list(COPY_KINDS.values())
    added = [encode(kinds[j % len(kinds)](originals[i][0])) for j, i in enumerate(later.tolist())]
    with tempfile.TemporaryDirectory(prefix="imagesieve-rerun-") as tmp:
        folder, out = Path(tmp) / "images", Path(tmp) / "audit"
        folder.mkdir()
        for i, data in enumerate(blobs):
            (folder / f"{i:05d}.png").write_bytes(data)
        fresh = audit(folder, out)
        kept = list((out / "embeddings" / "results").glob("pair_evidence-*.npz"))
        kept_bytes = sum(f.stat().st_size for f in kept)
        for f in kept:
            f.unlink()
        aligned = audit(folder, out)
        reference = pairs(out)
        rerun = audit(folder, out)
        same = reference.equals(pairs(out))
        read_note = [line for line in rerun[2].splitlines() if "earlier run" in line]
        for j, data in enumerate(added):
            (folder / f"added-{j:04d}.png").write_bytes(data)
        grown = audit(folder, out)
        grown_note = [line for line in grown[2].splitlines() if "earlier run" in line]
        grown_pairs = pairs(out)
        for f in (out / "embeddings" / "results").glob("pair_evidence-*.npz"):
            f.unlink()
        audit(folder, out)                   # the grown folder with every pair aligned again
        same_added = grown_pairs.equals(pairs(out))
        pool = pool_timings(folder, [int(x) for x in args.pool_pairs.split(",")])
    n_pairs = len(reference)
    print(json.dumps({
        "collection": args.collection, "images": len(blobs), "added": len(added), "duplicate_pairs": n_pairs,
        "fresh_s": round(fresh[0], 1), "fresh_duplicates_s": fresh[1],
        "rerun_aligned_s": round(aligned[0], 1), "rerun_aligned_duplicates_s": aligned[1],
        "rerun_s": round(rerun[0], 1), "rerun_duplicates_s": rerun[1],
        "rerun_added_s": round(grown[0], 1), "rerun_added_duplicates_s": grown[1],
        "rerun_over_aligned": round(rerun[0] / aligned[0], 3),
        "duplicates_stage_rerun_over_aligned": round(rerun[1] / aligned[1], 3),
        "rerun_added_over_aligned": round(grown[0] / aligned[0], 3),
        "same_pairs": bool(same), "same_pairs_added": bool(same_added), "kept_evidence_bytes": kept_bytes,
        "rerun_note": read_note[0].strip() if read_note else "", "rerun_added_note": grown_note[0].strip()
        if grown_note else "", "pool": pool}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
