"""Near-duplicate quality at the default threshold, on real photos.

    .venv/bin/python bench/dup_quality.py [--threshold 0.85] [--model mobilenet_v1]

For every real photo (bench/photos.py) and every alteration kind, the altered
copy counts as found when its cosine to its source is >= threshold (the
check-before-ingest verdict). False pairs: distinct photos whose cosine is
>= threshold, over all pairs of distinct photos (by FAISS range search).
Baseline in the same run: the seed article's fixed threshold 0.9.
Last line: one JSON object with recall, false_pair_rate, recall_by_kind.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from photos import ALTERATIONS, SEED_KINDS, encode, jpeg, real_photos  # noqa: E402

from imagesieve_server.collections.collection import DEFAULT_THRESHOLD  # noqa: E402
from imagesieve_server.engine import Embedder  # noqa: E402

def vectors(emb: Embedder, images: list[bytes]) -> np.ndarray:
    return np.stack([o.vector for o in emb.embed_all(images)])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilenet_v1")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = ap.parse_args()
    emb = Embedder.from_model(args.model)
    originals = real_photos()
    base = vectors(emb, [jpeg(im, 95) for im in originals])
    copies = {kind: np.sum(vectors(emb, [encode(fn(im)) for im in originals]) * base, axis=1)
              for kind, fn in ALTERATIONS.items()}
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    n = len(base)

    def score(t: float) -> dict:
        lims, _, ids = index.range_search(base, t)
        rows = np.repeat(np.arange(n), np.diff(lims).astype(np.int64))
        false_pairs = int(np.sum(rows < ids))
        by_kind = {k: round(float(np.mean(s >= t)), 3) for k, s in copies.items()}
        all_sims = np.concatenate(list(copies.values()))
        return {"threshold": t, "recall": round(float(np.mean(all_sims >= t)), 4),
                "recall_seed_kinds": round(float(np.mean(np.concatenate([copies[k] for k in SEED_KINDS]) >= t)), 4),
                "false_pairs": false_pairs, "distinct_pairs": n * (n - 1) // 2,
                "false_pair_rate": round(false_pairs / (n * (n - 1) // 2), 4), "recall_by_kind": by_kind}

    table = [score(t) for t in (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)]
    for row in table:
        print(json.dumps({k: v for k, v in row.items() if k != "recall_by_kind"}), file=sys.stderr)
    ours, seed = score(args.threshold), score(0.9)
    ours["min_cosine_by_kind"] = {k: round(float(s.min()), 3) for k, s in copies.items()}
    ours["seed_threshold_0_9"] = {k: seed[k] for k in ("recall", "false_pair_rate", "recall_by_kind")}
    ours["photos"] = n
    print(json.dumps(ours))
    return 0


if __name__ == "__main__":
    sys.exit(main())
