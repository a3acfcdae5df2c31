"""Validate the sample-size extrapolation on Fashion-MNIST (issue 5).

Sweep with stratified subsets of at most 50% of the 60,000 training images
(default fractions 5/10/20/35/50%, 5 repeats each), scored on one half of
the official 10,000-image test split (stratified, seeded); fit the Keras
power law ``a*x^b`` and this project's selected curve; predict the accuracy
at 100% of the training set (= 2x the largest subset); then train the same
classifier on 100% (several repeats) and compare, on the same half and on
the other half (a different test split). The bootstrap interval (repeats
and test images resampled, selection re-run) of the chosen curve's
prediction is checked for covering both.

Features: PCA of the pixels (fitted on the training images only, no labels)
by default, since embedding 70k images with the ONNX model takes 10+ minutes
on a small CPU machine; ``--features pixels`` uses the raw pixels.

    .venv/bin/python bench/samplesize_validate.py [--classifier logreg|mlp] [--features pca64|pixels]

Last line: one JSON object (actual, pred_powerlaw, pred_ours, err_powerlaw,
err_ours, ci_covers_actual, covers_on_other_split, ci_within_unit, ...).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "service")]

from datasets import fashion_mnist  # noqa: E402

from imagesieve_server.analysis.classifiers import make_classifier  # noqa: E402
from imagesieve_server.analysis.sample_size import (analyse, bootstrap, percentile_interval,  # noqa: E402
                                                    run_sweep)
from imagesieve_server.analysis.sample_size.plot import plot_learning_curve  # noqa: E402


def features(kind: str, x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = x_train.reshape(len(x_train), -1).astype(np.float32) / 255.0
    b = x_test.reshape(len(x_test), -1).astype(np.float32) / 255.0
    if kind == "pixels":
        return a, b
    if kind.startswith("pca"):
        from sklearn.decomposition import PCA
        pca = PCA(int(kind[3:]), random_state=0).fit(a)  # training images only, labels unused
        return pca.transform(a).astype(np.float32), pca.transform(b).astype(np.float32)
    raise ValueError(f"unknown features {kind!r}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classifier", default="logreg", choices=["logreg", "mlp", "lda"])
    ap.add_argument("--features", default="pca64", help="pca<N> (default pca64) or pixels")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.10, 0.20, 0.35, 0.50])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--full-repeats", type=int, default=3, help="repeats of the 100%% training run")
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "out" / "samplesize"))
    args = ap.parse_args(argv)
    if max(args.fractions) > 0.5:
        ap.error("the validation sweeps at most 50% of the training set")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    x_tr, y_tr, x_te_all, y_te_all = fashion_mnist()
    from imagesieve_server.analysis.sample_size.sweep import stratified_subset
    half = np.zeros(len(y_te_all), bool)
    half[stratified_subset(y_te_all, len(y_te_all) // 2, np.random.default_rng(args.seed + 3))] = True
    f_tr, f_te_all = features(args.features, x_tr, x_te_all)
    f_te, y_te = f_te_all[half], y_te_all[half]              # the sweep's test split
    f_other, y_other = f_te_all[~half], y_te_all[~half]      # a different test split, for the check
    print(f"Fashion-MNIST: {len(y_tr)} train, {len(y_te)} test (+{len(y_other)} other split); features "
          f"{args.features} {f_tr.shape[1]}-d; classifier {args.classifier}", flush=True)

    def report(stage, done, total):
        print(f"  {stage} {done}/{total} ({time.perf_counter() - t0:.0f}s)", flush=True)

    sweep = run_sweep(f_tr, y_tr, X_test=f_te, y_test=y_te, fractions=args.fractions,
                      repeats=args.repeats, classifier=args.classifier, seed=args.seed, report=report)
    print(f"{'images':>8} {'mean acc':>9} {'std':>7}")
    for n, m, s in zip(sweep.sizes, sweep.means, sweep.stds):
        print(f"{n:>8} {m:>9.4f} {s:>7.4f}")

    n_full = len(y_tr)
    n_2x = 2 * int(sweep.sizes[-1])
    res = analyse(sweep.sizes, sweep.accuracies, args.target, at=sorted({n_full, n_2x}), n_boot=args.bootstrap,
                  seed=args.seed, test_correct=sweep.test_correct)
    boot = bootstrap(sweep.sizes, sweep.accuracies, x_eval=[n_full, n_2x], n_boot=args.bootstrap,
                     seed=args.seed + 1, test_correct=sweep.test_correct)
    ci = percentile_interval(boot.predictions[:, 0], 0.95)
    boot_pl = bootstrap(sweep.sizes, sweep.accuracies, x_eval=[n_full], n_boot=args.bootstrap,
                        seed=args.seed + 1, family="power_law", test_correct=sweep.test_correct)
    ci_pl = percentile_interval(boot_pl.predictions[:, 0], 0.95)
    pl, ours = res.fits["power_law"], res.fit
    for name, fit in res.fits.items():
        print(f"fit {name:<18} params {tuple(round(p, 6) for p in fit.params)} ceiling {fit.ceiling:.4f} "
              f"hold-out error {res.holdout_errors[name]:.4f} -> at {n_full}: {float(fit.predict(n_full)):.4f}")
    print(f"chosen: {res.chosen}; {res.answer}")

    print(f"training on 100% ({n_full}) x{args.full_repeats} ...", flush=True)
    full, full_other = [], []
    for r in range(args.full_repeats):
        model = make_classifier(args.classifier, seed=10_000 + r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(f_tr, y_tr)
        full.append(float((model.predict(f_te) == y_te).mean()))
        full_other.append(float((model.predict(f_other) == y_other).mean()))
        print(f"  repeat {r + 1}: {full[-1]:.4f} (other split {full_other[-1]:.4f})", flush=True)
    actual = float(np.mean(full))
    actual_other = float(np.mean(full_other))
    actual_2x = None
    if n_2x < n_full:  # fractions below 50%: also measure at 2x the largest subset
        from imagesieve_server.analysis.sample_size.sweep import stratified_subset
        rng = np.random.default_rng(args.seed + 2)
        at_2x = []
        for r in range(args.full_repeats):
            idx = stratified_subset(y_tr, n_2x, rng)
            model = make_classifier(args.classifier, seed=20_000 + r)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(f_tr[idx], y_tr[idx])
            at_2x.append(float((model.predict(f_te) == y_te).mean()))
            print(f"  at {n_2x}, repeat {r + 1}: {at_2x[-1]:.4f}", flush=True)
        actual_2x = float(np.mean(at_2x))

    png, svg = plot_learning_curve(res, title=f"Fashion-MNIST, {args.classifier} on {args.features}",
                                   checks=[(n_full, actual)] + ([(n_2x, actual_2x)] if actual_2x else []))
    (out / "learning_curve.png").write_bytes(png)
    (out / "learning_curve.svg").write_text(svg)
    pred_pl, pred_ours = float(pl.predict(n_full)), float(ours.predict(n_full))
    summary = {
        "dataset": "fashion-mnist", "features": args.features, "classifier": args.classifier,
        "sweep_sizes": [int(s) for s in sweep.sizes], "sweep_means": [round(float(m), 5) for m in sweep.means],
        "predict_at": n_full, "predict_at_2x_largest": n_2x,
        "actual": round(actual, 5), "actual_repeats": [round(a, 5) for a in full],
        "chosen_fit": res.chosen,
        "pred_powerlaw": round(pred_pl, 5), "pred_ours": round(pred_ours, 5),
        "pred_powerlaw_2x": round(float(pl.predict(n_2x)), 5), "pred_ours_2x": round(float(ours.predict(n_2x)), 5),
        "actual_2x": round(actual_2x if actual_2x is not None else actual, 5),
        "err_powerlaw_2x": round(abs(float(pl.predict(n_2x)) - (actual_2x or actual)), 5),
        "err_ours_2x": round(abs(float(ours.predict(n_2x)) - (actual_2x or actual)), 5),
        "ci_ours_2x": [round(v, 5) for v in percentile_interval(boot.predictions[:, 1], 0.95)],
        "err_powerlaw": round(abs(pred_pl - actual), 5), "err_ours": round(abs(pred_ours - actual), 5),
        "ci_ours": [round(ci[0], 5), round(ci[1], 5)], "ci_powerlaw": [round(ci_pl[0], 5), round(ci_pl[1], 5)],
        "ci_covers_actual": bool(ci[0] <= actual <= ci[1]),
        "actual_other_split": round(actual_other, 5),
        "covers_on_other_split": bool(ci[0] <= actual_other <= ci[1]),
        "ci_within_unit": bool(all(0 <= v <= 1 for v in [*ci, *ci_pl, *res.at_low, *res.at_high,
                                                           *percentile_interval(boot.predictions[:, 1], 0.95)])),
        "answer": res.answer,
        "holdout_errors": {k: round(v, 5) for k, v in res.holdout_errors.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "validate.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
