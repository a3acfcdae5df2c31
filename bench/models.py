"""Choose the default model by measurement: speed, ImageNet top-1 on real
photos, and near-duplicate quality on real photos with altered copies.

    .venv/bin/python bench/models.py [--models mobilenet_v1 efficientnet_lite0]

For each real photo (foolbox ImageNet + scikit-image colour photos) and each
alteration (bench/photos.py ALTERATIONS), the altered copy is a query against
the index of all originals: recall@1 = its nearest original is its source.
Separation: cosine of each copy to its source vs the best cosine of any
original to a *different* original (unrelated photos).
Last line: one JSON object, a row per model.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from photos import ALTERATIONS, jpeg, real_photos  # noqa: E402

from imagesieve.samples import imagenet_photos  # noqa: E402
from imagesieve_server.engine import Embedder  # noqa: E402


def evaluate(name: str, repeats: int) -> dict:
    emb = Embedder.from_model(name, max_batch_size=32)
    originals = real_photos()
    orig_bytes = [jpeg(im, 95) for im in originals]
    # speed: in-process pipeline on the 512x512 originals, median of repeats
    emb.embed_all(orig_bytes)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        emb.embed_all(orig_bytes)
        rates.append(len(orig_bytes) / (time.perf_counter() - t))
    x = np.random.default_rng(0).standard_normal((32, 3, emb.preprocessor.size, emb.preprocessor.size),
                                                 dtype=np.float32)
    emb.executor.run(x)
    model_rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        emb.executor.run(x)
        model_rates.append(32 / (time.perf_counter() - t))
    # top-1 on the labelled ImageNet photos
    labelled = imagenet_photos()
    outs = emb.embed_all([p.read_bytes() for p, _ in labelled])
    top1 = sum(int(np.argmax(o.logits)) == label for o, (_, label) in zip(outs, labelled))
    # near duplicates: altered copies queried against an IndexFlatIP of originals
    base = np.stack([o.vector for o in emb.embed_all(orig_bytes)])
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    lims, d, ids = index.range_search(base, -1.0)   # all pairs of originals (a small set)
    rows = np.repeat(np.arange(len(base)), np.diff(lims).astype(np.int64))
    unrelated = d[rows < ids]                       # each unordered pair of different photos once
    per_alt, pos_all = {}, []
    for alt, fn in ALTERATIONS.items():
        q = np.stack([o.vector for o in emb.embed_all([jpeg(fn(im), 95) for im in originals])])
        s, nn = index.search(q, 1)
        pos = np.sum(q * base, axis=1)
        pos_all.append(pos)
        per_alt[alt] = {"recall_at_1": float(np.mean(nn[:, 0] == np.arange(len(originals)))),
                        "min_cosine_to_source": round(float(pos.min()), 3)}
    pos_all = np.concatenate(pos_all)
    labels = np.r_[np.ones(len(pos_all)), np.zeros(len(unrelated))]
    return {
        "model": name, "dim": emb.dim, "photos": len(originals),
        "model_alone_ips": round(statistics.median(model_rates), 1),
        "inproc_ips_512px": round(statistics.median(rates), 1),
        "imagenet_top1": f"{top1}/{len(labelled)}",
        "recall_at_1_mean": round(float(np.mean([v["recall_at_1"] for v in per_alt.values()])), 3),
        "copy_cosine_p05": round(float(np.percentile(pos_all, 5)), 3),
        "unrelated_cosine_max": round(float(unrelated.max()), 3),
        # share of altered copies closer to their source than any two unrelated photos are
        "copies_above_unrelated_max": round(float(np.mean(pos_all > unrelated.max())), 3),
        "pair_auroc": round(float(roc_auc_score(labels, np.r_[pos_all, unrelated])), 4),
        "by_alteration": per_alt,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["mobilenet_v1", "efficientnet_lite0"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for m in args.models:
        rows.append(evaluate(m, args.repeats))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "by_alteration"}), file=sys.stderr)
    print(json.dumps({"models": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
