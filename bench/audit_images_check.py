"""Checks the benchmark set of bench/audit.py: near-duplicate pairs (cosine
>= 0.75 between embeddings) at two sizes, how many of them are the planted
altered copies, and how learnable the class folders are (5-fold
cross-validated shrinkage LDA on the embeddings of the first size).

    .venv/bin/python bench/audit_images_check.py [--n 1500 6000] [--threshold 0.75]

Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import audit  # noqa: E402


def embed(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit vectors, image indices, labels) of every image in the folder."""
    from imagesieve_server.engine import Embedder
    paths = sorted(folder.rglob("*.jpg"))
    e = Embedder.from_model()
    vecs = np.stack([r.vector for r in e.embed(p.read_bytes() for p in paths)]).astype(np.float32)
    index = np.array([int(p.stem[3:]) for p in paths])
    labels = np.array([int(p.parent.name[5:]) for p in paths])
    return vecs, index, labels


def pairs(vecs: np.ndarray, threshold: float, block: int = 2048) -> np.ndarray:
    """(i, j) rows, i < j, of every pair with cosine >= threshold (blocked)."""
    out = []
    for s in range(0, len(vecs), block):
        sim = vecs[s:s + block] @ vecs.T
        i, j = np.nonzero(sim >= threshold)
        i = i + s
        keep = i < j
        out.append(np.stack([i[keep], j[keep]], 1))
    return np.concatenate(out) if out else np.zeros((0, 2), int)


def check(n: int, threshold: float, lda: bool) -> dict:
    t = time.perf_counter()
    folder = audit.make_images(n)
    gen_s = time.perf_counter() - t
    vecs, index, labels = embed(folder)
    plan = audit.plan(n)
    root = np.array([i if src is None else src for i, src, _ in plan])[index]
    specs = {i: audit.layout(n, i) for i in set(root.tolist())}
    dom = np.array([specs[r]["pieces"][0]["photo"] for r in root])
    bg = np.array([specs[r]["background"]["photo"] for r in root])
    p = pairs(vecs, threshold)
    planted = root[p[:, 0]] == root[p[:, 1]]
    other = p[~planted]
    copies = sum(1 for _, src, _ in plan if src is not None)
    # planted pairs that fall under the threshold, per alteration kind
    missed: dict[str, int] = {}
    pos = {int(i): k for k, i in enumerate(index)}
    for i, src, k in plan:
        if src is not None and float(vecs[pos[i]] @ vecs[pos[src]]) < threshold:
            missed[k] = missed.get(k, 0) + 1
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(vecs), (2, 40000))
    keep = root[a] != root[b]                      # leave out planted pairs
    a, b = a[keep], b[keep]
    rand_cos = np.sum(vecs[a] * vecs[b], 1)
    same = dom[a] == dom[b]
    res = {
        "n": n, "generate_s": round(gen_s, 1), "copies": copies,
        "pairs": int(len(p)), "planted_pairs": int(planted.sum()), "other_pairs": int(len(other)),
        "other_same_dominant": int(np.sum(dom[other[:, 0]] == dom[other[:, 1]])),
        "other_same_background": int(np.sum(bg[other[:, 0]] == bg[other[:, 1]])),
        "copies_under_threshold": dict(sorted(missed.items())),
        "cos_random_mean": round(float(rand_cos.mean()), 3),
        "cos_random_p999": round(float(np.quantile(rand_cos, 0.999)), 3),
        "cos_same_dominant_mean": round(float(rand_cos[same].mean()), 3),
        "cos_same_dominant_p99": round(float(np.quantile(rand_cos[same], 0.99)), 3),
        "class_counts": np.bincount(labels, minlength=audit.CLASSES).tolist(),
    }
    if lda:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        clf = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.1)
        cv = StratifiedKFold(5, shuffle=True, random_state=0)
        res["lda_cv_accuracy"] = round(float(cross_val_score(clf, vecs, labels, cv=cv).mean()), 3)
        orig = root == index                       # without the copies (no copy of a test image in training)
        res["lda_cv_accuracy_originals"] = round(float(cross_val_score(clf, vecs[orig], labels[orig], cv=cv).mean()), 3)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[1500, 6000])
    ap.add_argument("--threshold", type=float, default=0.75)
    args = ap.parse_args()
    results = []
    for k, n in enumerate(args.n):
        results.append(check(n, args.threshold, lda=k == 0))
        print(json.dumps(results[-1]), flush=True)
    if len(results) > 1 and results[0]["pairs"]:
        print(json.dumps({"pairs_ratio": round(results[-1]["pairs"] / results[0]["pairs"], 2), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
