"""Consensus of several simulated annotators on real labelled images.

Data: Fashion-MNIST (Debian's dataset-fashion-mnist), the first --n images of
the 10k test set; features = --pca principal components of the pixels (not
MobileNet embeddings: none are cached for Fashion-MNIST and embedding 10k
images costs minutes on 2 cores).

Annotators: --accuracies (default 5 at 0.60/0.70/0.80/0.90/0.95), each labels
a random 40-60% of the images (an image nobody drew gets one random
annotator: every image has >= 1 label, as in a real manifest). A wrong label
is drawn from the row of the true class in the confusion matrix a logistic
regression (trained on 10k separate Fashion-MNIST training images) makes on
these images: annotators confuse Shirt with T-shirt, not Shirt with Bag.

Model: 5-fold out-of-fold logistic regression on the features, trained on the
majority-vote labels (``analysis.labels.predict``), as the CLI does.

Methods compared: majority vote (ties by overall class frequency; the
baseline), majority with ties by the model, Dawid-Skene without and with the
model as prior, CROWDLAB. Estimated annotator accuracy: mean posterior of
the annotator's label (``analysis.consensus.annotator_stats``).

    nice -n 10 .venv/bin/python bench/consensus.py               # 3 seeds
    nice -n 10 .venv/bin/python bench/consensus.py --random-accuracies --seeds 5

Last printed line: one JSON object with majority_acc, ours_acc (the default
method, dawid_skene + model), annotator_rank_corr (Spearman), means over seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from sklearn.metrics import confusion_matrix

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "service"))
sys.path.insert(0, str(ROOT / "bench"))

import datasets  # noqa: E402
from imagesieve_server.analysis.classifiers import make_classifier  # noqa: E402
from imagesieve_server.analysis.consensus import (analyse_consensus, annotator_stats, crowdlab,  # noqa: E402
                                                  dawid_skene, krippendorff_alpha, majority_vote)
from imagesieve_server.analysis.labels.predict import out_of_fold_probabilities  # noqa: E402


def simulate(y: np.ndarray, confusion: np.ndarray, accuracies, rng, cover=(0.4, 0.6)) -> np.ndarray:
    """(N, M) labels, -1 missing: annotator j right with prob accuracies[j],
    else a wrong class drawn from the off-diagonal of confusion[y]."""
    n, k, m = len(y), confusion.shape[0], len(accuracies)
    err = confusion.astype(np.float64).copy()
    np.fill_diagonal(err, 0.0)
    err += 1e-3 * (1 - np.eye(k))               # every wrong class possible, rarely
    err /= err.sum(axis=1, keepdims=True)
    labels = np.full((n, m), -1, dtype=np.int64)
    for j, acc in enumerate(accuracies):
        take = rng.random(n) < rng.uniform(*cover)
        labels[take, j] = y[take]
        wrong = take & (rng.random(n) >= acc)
        cum = err[y[wrong]].cumsum(axis=1)
        labels[wrong, j] = (rng.random((wrong.sum(), 1)) > cum).sum(axis=1)
    empty = (labels < 0).all(axis=1)
    for i in np.flatnonzero(empty):
        j = rng.integers(m)
        labels[i, j] = y[i] if rng.random() < accuracies[j] else \
            (rng.random() > err[y[i]].cumsum()).sum()
    return labels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--pca", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--accuracies", default="0.60,0.70,0.80,0.90,0.95")
    ap.add_argument("--random-accuracies", action="store_true",
                    help="draw each seed's 5 accuracies uniformly from [0.60, 0.95] (harder to rank)")
    ap.add_argument("--model-weights", default="0.5,1.0", help="DS model-prior temperatures to report")
    args = ap.parse_args(argv)
    accuracies = [float(s) for s in args.accuracies.split(",")]
    weights = [float(s) for s in args.model_weights.split(",")]
    t0 = time.perf_counter()
    x_tr, y_tr, x_te, y_te = datasets.fashion_mnist()
    x, y = x_te[: args.n].reshape(args.n, -1).astype(np.float32) / 255.0, y_te[: args.n]
    feats = PCA(args.pca, random_state=0).fit_transform(x)
    # the error model: confusion of a classifier trained on separate images
    pca_tr = PCA(args.pca, random_state=0).fit(x_tr[:10000].reshape(10000, -1) / 255.0)
    clf = make_classifier("logreg", 0).fit(pca_tr.transform(x_tr[:10000].reshape(10000, -1) / 255.0), y_tr[:10000])
    confusion = confusion_matrix(y, clf.predict(pca_tr.transform(x)), labels=np.arange(10))
    print(f"error model: logreg accuracy {np.trace(confusion) / confusion.sum():.3f} on these images; "
          f"most confused: " + ", ".join(
              f"{datasets.FASHION_CLASSES[a]}->{datasets.FASHION_CLASSES[b]} {confusion[a, b]}"
              for a, b in sorted(((a, b) for a in range(10) for b in range(10) if a != b),
                                 key=lambda t: -confusion[t])[:4]), flush=True)
    rows = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        if args.random_accuracies:
            accuracies = np.sort(rng.uniform(0.60, 0.95, 5)).round(3).tolist()
        labels = simulate(y, confusion, accuracies, rng)
        true_acc = np.array([np.mean(labels[labels[:, j] >= 0, j] == y[labels[:, j] >= 0])
                             for j in range(len(accuracies))])
        mv_plain = majority_vote(labels, 10)
        t1 = time.perf_counter()
        mv_labels = mv_plain.consensus
        probs = out_of_fold_probabilities(feats, mv_labels, "logreg", folds=args.folds, seed=seed, num_classes=10)
        t_model = time.perf_counter() - t1
        res = {"majority": mv_plain, "majority_model_ties": majority_vote(labels, 10, probs),
               "dawid_skene_no_model": dawid_skene(labels, 10)}
        for w in weights:
            res[f"dawid_skene_model_w{w:g}"] = dawid_skene(labels, 10, probs, model_weight=w)
        res["crowdlab"] = crowdlab(labels, probs, 10)
        row = {"seed": seed, "labels_per_image": float((labels >= 0).sum(1).mean()),
               "alpha": krippendorff_alpha(labels, 10), "model_acc": float(np.mean(probs.argmax(1) == y)),
               "model_s": t_model, "true_annotator_acc": true_acc.round(3).tolist()}
        for name, agg in res.items():
            est = annotator_stats(labels, agg.posterior, agg.consensus, 10).estimated_accuracy
            row[name] = {"acc": float(np.mean(agg.consensus == y)),
                         "rank_corr": float(spearmanr(est, true_acc).statistic),
                         "est_annotator_acc": est.round(3).tolist()}
        if seed == 0:
            full = analyse_consensus(labels, 10, probs, class_names=datasets.FASHION_CLASSES, top_pairs=4)
            row["ambiguous_pairs"] = [f"{datasets.FASHION_CLASSES[p.a]} / {datasets.FASHION_CLASSES[p.b]} "
                                      f"{p.score:.2f}" for p in full.pairs]
            print("ambiguous pairs (seed 0): " + "; ".join(
                f"{datasets.FASHION_CLASSES[p.a]} / {datasets.FASHION_CLASSES[p.b]}: {p.suggestion}"
                for p in full.pairs), flush=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    names = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    print(f"\n{'method':<28} {'consensus acc':>13} {'annot. rank corr':>16}   (mean of {len(rows)} seeds, "
          f"{args.n} images, {rows[0]['labels_per_image']:.2f} labels/image, "
          f"alpha {np.mean([r['alpha'] for r in rows]):.3f}, "
          f"model acc {np.mean([r['model_acc'] for r in rows]):.3f})")
    summary = {}
    for name in names:
        acc = float(np.mean([r[name]["acc"] for r in rows]))
        rc = float(np.mean([r[name]["rank_corr"] for r in rows]))
        summary[name] = {"acc": round(acc, 4), "rank_corr": round(rc, 3)}
        print(f"{name:<28} {acc:13.4f} {rc:16.3f}")
    ours = "dawid_skene_model_w1" if "dawid_skene_model_w1" in summary else names[-2]
    out = {"majority_acc": summary["majority"]["acc"], "ours_acc": summary[ours]["acc"],
           "annotator_rank_corr": summary[ours]["rank_corr"], "ours": ours,
           "gain": round(summary[ours]["acc"] - summary["majority"]["acc"], 4),
           "min_rank_corr_over_seeds": round(min(r[ours]["rank_corr"] for r in rows), 3),
           "n": args.n, "seeds": args.seeds, "features": f"PCA{args.pca} of pixels",
           "majority_model_ties_acc": summary["majority_model_ties"]["acc"],
           "crowdlab_acc": summary["crowdlab"]["acc"], "ambiguous_pairs": rows[0].get("ambiguous_pairs"),
           "accuracies": "random in [0.60, 0.95]" if args.random_accuracies else accuracies,
           "methods": summary, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
