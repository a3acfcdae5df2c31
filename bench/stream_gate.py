"""The streaming gate's verdicts, as an ingestion pipeline meets them.

    .venv/bin/python bench/stream_gate.py [--collections photos,illustrations,icons,fashion] [--fashion 1500]
                                          [--order shuffled|given] [--seed 0]

A pipeline sends each new image through CheckDuplicates with
``add_if_unique``: a unique image is stored, a near duplicate turned away.
dup_quality.py scores the batch verdicts (FindDuplicates, the audit); this
scores the gate, whose verdicts a young collection makes with few images to
compare with. Per collection (dup_quality's originals and planted copies of
the same kinds), an empty collection takes the originals one at a time, in
a random order (``--order given``: the collection's own, where variants of
one design follow each other), through ``Collection.check(...,
add_if_unique=True)`` with CheckDuplicates' defaults (the servicer calls
it; no gRPC here), then checks every copy without adding it. Both methods
on the same order: ``stage1`` (raw cosine at the collection's threshold)
and ``verified`` (stage 2).

Figures per collection and method:
  originals_refused_unrelated  distinct originals turned away for an unrelated
                               stored image: lost pictures, the gate's worst fault
  originals_refused_related    ... for a variant of one design (light/dark, colour:
                               related, as dup_quality counts them)
  copies_caught                copies found near duplicates of their own original,
                               among copies whose original was stored
  copies_matched_elsewhere     copies judged near duplicates of unrelated images only
  ms_p50                       one check, verdict included (no decoding or embedding)
Last line: one JSON object (``rows``; top-level ``max_refused_unrelated_share``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from dup_quality import build, load  # noqa: E402

from imagesieve_server.collections.collection import Collection, NewImage, Verdict  # noqa: E402
from imagesieve_server.engine import Embedder  # noqa: E402


def run_gate(vectors, signatures, sha, source, family, n_orig: int, order, verified: bool) -> dict:
    """Stream the originals (in ``order``) into an empty collection with
    add_if_unique, then check the copies; the figures above."""
    keys = [str(i) for i in range(len(source))]

    def image(i: int) -> NewImage:
        return NewImage(key=keys[i], sha256=sha[i], vector=vectors[i], signature=signatures[i] if verified else None)

    with tempfile.TemporaryDirectory() as tmp:
        col = Collection.create(Path(tmp) / "gate", "gate", vectors.shape[1], "bench")
        try:
            took, refused_unrelated, refused_related, stored = [], 0, 0, set()
            for i in tqdm(order, desc=f"gate {'verified' if verified else 'stage1'}", unit="image", leave=False):
                t = time.perf_counter()
                out = col.check(image(i), add_if_unique=True, verify_layout=verified)
                took.append(time.perf_counter() - t)
                if out.added:
                    stored.add(i)
                    continue
                match = next((n for n in out.neighbors if n.verified or not verified), None)   # raw: the nearest
                j = int(match.key) if match is not None else i
                if family[j] == family[i]:
                    refused_related += 1
                else:
                    refused_unrelated += 1
            caught = elsewhere = admitted = 0
            for c in range(n_orig, len(source)):
                if source[c] not in stored:
                    continue
                admitted += 1
                out = col.check(image(c), verify_layout=verified)
                if out.verdict == Verdict.UNIQUE:
                    continue
                # Verified: the neighbours stage 2 confirmed; raw cosine: those at the threshold.
                matched = [int(n.key) for n in out.neighbors
                           if (n.verified if verified else n.cosine >= col.raw_threshold()[0])]
                if any(source[j] == source[c] for j in matched):
                    caught += 1
                elif matched and not any(family[j] == family[c] for j in matched):
                    elsewhere += 1
        finally:
            col.close(snapshot=False)
    n = len(order)
    return {"originals": n, "originals_refused_unrelated": refused_unrelated,
            "originals_refused_related": refused_related,
            "refused_unrelated_share": round(refused_unrelated / max(n, 1), 4),
            "copies_with_original_stored": admitted, "copies_caught": caught,
            "copies_caught_share": round(caught / max(admitted, 1), 4),
            "copies_matched_elsewhere": elsewhere,
            "ms_p50": round(statistics.median(took) * 1000, 2) if took else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--collections", default="photos,illustrations,icons,fashion")
    ap.add_argument("--fashion", type=int, default=1500, help="Fashion-MNIST originals")
    ap.add_argument("--copy-share", type=float, default=0.2, help="originals that get a planted copy")
    ap.add_argument("--order", choices=("shuffled", "given"), default="shuffled")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    emb = Embedder.from_model("mobilenet_v1")
    rows = {}
    try:
        for name in args.collections.split(","):
            originals = load(name, args.fashion)
            share = 1.0 if name == "photos" else args.copy_share      # few photos: copy each (as dup_quality)
            blobs, source, family, _, n_orig = build(originals, share)
            out = emb.embed_all(blobs, with_signatures=True)
            vectors = np.stack([o.vector for o in out])
            signatures = np.stack([o.signature for o in out])
            sha = [hashlib.sha256(b).hexdigest() for b in blobs]
            order = (np.random.default_rng(args.seed).permutation(n_orig) if args.order == "shuffled"
                     else np.arange(n_orig)).tolist()
            for method in ("stage1", "verified"):
                row = run_gate(vectors, signatures, sha, source, family, n_orig, order, method == "verified")
                rows[f"{name}/{method}"] = row
                print(json.dumps({name: method, **row}), file=sys.stderr, flush=True)
    finally:
        emb.close()
    verified = [r for k, r in rows.items() if k.endswith("/verified")]
    print(json.dumps({"rows": rows, "order": args.order, "seed": args.seed,
                      "max_refused_unrelated_share": max((r["refused_unrelated_share"] for r in verified),
                                                         default=None),
                      "min_copies_caught_share": min((r["copies_caught_share"] for r in verified), default=None)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
