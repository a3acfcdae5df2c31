"""Stage 2's alignment speed: each candidate pair aligned alone, against
pairs aligned in the chunks ``verify_pairs`` runs (what an image derives --
its views, templates at each share, sheared bands, coarse thumbnails, edge
and polar spectra -- derived once for all its pairs in a chunk).

    .venv/bin/python bench/verify_speed.py [--collections illustrations,icons] [--pairs 1024] [--rounds 3]

Real collections (Art4Apps illustrations, Oxygen icons, from Debian
packages) with dup_quality's planted copies; their stage-1 candidate pairs
(FAISS kNN on the embeddings), in two shapes:

- ``audit``: the first ``--pairs`` candidate pairs in their order, in chunks
  of PROCESS_CHUNK, as an audit's worker aligns them;
- ``check``: one image against its candidates (up to 12, a streaming
  check's count), one call each.

One thread, alternating baseline and project each round; medians. Every
pair's evidence must be the same both ways (``identical``). Last line: JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dup_quality import build, load  # noqa: E402
from imagesieve_server.analysis.duplicates import verify  # noqa: E402
from imagesieve_server.analysis.duplicates.find import candidate_pairs  # noqa: E402
from imagesieve_server.engine import Embedder  # noqa: E402

CHECK_CANDIDATES = 12


def alone(sig, a, b) -> verify.PairEvidence:
    """The baseline: every pair aligned by itself (as before images' derivations were shared)."""
    out = verify.PairEvidence.empty(len(a))
    for i in range(len(a)):
        out.put(i, verify._align_all(sig, a[i:i + 1], b[i:i + 1], verify.ACCEPT))
    return out


def chunked(sig, a, b) -> verify.PairEvidence:
    return verify.verify_pairs(sig, a, b, processes=False)


def same(x: verify.PairEvidence, y: verify.PairEvidence) -> bool:
    return all(np.array_equal(getattr(x, f.name), getattr(y, f.name)) for f in dataclasses.fields(x))


def checks(a, b, n_images: int, count: int, seed: int = 0):
    """(image, its candidates' positions) for ``count`` images with candidates."""
    rng = np.random.default_rng(seed)
    out = []
    for q in rng.permutation(n_images).tolist():
        idx = np.flatnonzero((a == q) | (b == q))[:CHECK_CANDIDATES]
        if len(idx):
            out.append((q, np.where(a[idx] == q, b[idx], a[idx])))
        if len(out) == count:
            break
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--collections", default="illustrations,icons")
    ap.add_argument("--pairs", type=int, default=1024, help="candidate pairs timed a collection (audit shape)")
    ap.add_argument("--checks", type=int, default=30, help="images checked against their candidates (check shape)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    emb = Embedder.from_model("mobilenet_v1")
    rows = {}
    for name in args.collections.split(","):
        blobs, *_ = build(load(name, 0), 0.2)
        out = emb.embed_all(blobs, with_signatures=True)
        vectors = np.stack([o.vector for o in out])
        sig = verify.check_signatures(np.stack([o.signature for o in out]))
        all_a, all_b, _ = candidate_pairs(vectors)
        a, b = all_a[:args.pairs], all_b[:args.pairs]
        per_check = checks(all_a, all_b, len(sig), args.checks)
        timing = {"audit_alone": [], "audit_chunked": [], "check_alone": [], "check_chunked": []}
        identical = True
        for r in range(args.rounds):
            for method, fn in (("alone", alone), ("chunked", chunked))[::1 if r % 2 == 0 else -1]:   # alternating
                t = time.perf_counter()
                ev = fn(sig, a, b)
                timing[f"audit_{method}"].append((time.perf_counter() - t) / len(a) * 1000)
                if method == "alone":
                    ref = ev
                else:
                    got = ev
                per = []
                for q, cands in per_check:
                    rows_ = np.r_[q, cands]
                    qa, qb = np.zeros(len(cands), np.int64), np.arange(1, len(cands) + 1)
                    t = time.perf_counter()
                    fn(sig[rows_], qa, qb)
                    per.append((time.perf_counter() - t) * 1000)
                timing[f"check_{method}"].append(statistics.median(per))
            identical &= same(ref, got)
            print(json.dumps({name: r, **{k: round(v[-1], 2) for k, v in timing.items()}}), file=sys.stderr, flush=True)
        med = {k: statistics.median(v) for k, v in timing.items()}
        rows[name] = {"images": len(sig), "pairs_timed": len(a), "checks_timed": len(per_check),
                      "audit_ms_a_pair_alone": round(med["audit_alone"], 2),
                      "audit_ms_a_pair_chunked": round(med["audit_chunked"], 2),
                      "audit_speedup": round(med["audit_alone"] / med["audit_chunked"], 3),
                      "check_ms_alone": round(med["check_alone"], 2),
                      "check_ms_chunked": round(med["check_chunked"], 2),
                      "check_speedup": round(med["check_alone"] / med["check_chunked"], 3),
                      "identical": bool(identical)}
    emb.close()
    print(json.dumps({"rows": rows, "identical": all(r["identical"] for r in rows.values()),
                      "min_audit_speedup": min(r["audit_speedup"] for r in rows.values())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
