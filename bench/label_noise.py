"""How many labels are wrong, and how many only ambiguous? The label-noise
estimate against noise planted in real labelled images.

    .venv/bin/python bench/label_noise.py [--datasets mnist_5k,digits,fashion_10k] [--seeds 3]

Each dataset's MobileNetV1 embeddings (cached under bench/out/ by
bench/labelfix_table.py's loader), labels flipped at 0%, 3% and 6%
(stratified, each to a uniformly random other class: errors that land on
any class), flip seeds 100 on; the labels scored with the service's defaults
(``analysis.labels.score_labels``: out-of-fold shrunk LDA with 20% of the
neighbours' labels). Baseline: what the report said before, one undivided
estimate (the calibrated confident joint's off-diagonal share, counted from
the ranking's probabilities); the project: the estimate counted from
probabilities blended half and half with the neighbours' labels, split
into confidently wrong labels and ambiguous class pairs
(``count.split_noise``). Fashion-MNIST's shirt / T-shirt / pullover / coat
classes are ambiguous; its labels also hold their own errors, so there the
wrong share is compared with the planted rate plus the share found at 0%.
Last line: one JSON object; ``max_wrong_error_clear`` (the largest
|wrong - planted| over the datasets that show no ambiguous pair with nothing
planted, every rate, target <= 0.015)."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from labelfix_table import embeddings, flip_labels, load  # noqa: E402

RATES = (0.0, 0.03, 0.06)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="mnist_5k,digits,fashion_10k")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--model", default="mobilenet_v1")
    args = ap.parse_args()
    from imagesieve_server.analysis.labels.count import confident_joint, estimated_noise_rate
    from imagesieve_server.analysis.labels.score import score_labels

    rows = {}
    for name in args.datasets.split(","):
        x, y = load(name)
        X = embeddings(name, x, args.model)
        c = int(y.max()) + 1
        for rate in RATES:
            runs = []
            for seed in range(100, 100 + (args.seeds if rate else 1)):     # nothing to draw at 0%
                noisy = flip_labels(y, rate, seed)[0] if rate else y
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    s = score_labels(X, noisy, num_classes=c)
                before = estimated_noise_rate(confident_joint(noisy, s.pred_probs, calibrate=True))
                runs.append((before, s.noise_split.wrong_rate, s.noise_split.ambiguous_rate,
                             [f"{a}/{b}" for a, b, _ in s.noise_split.pairs]))
            total, wrong, ambiguous = (float(np.mean([r[k] for r in runs])) for k in range(3))
            rows[f"{name}@{rate:.0%}"] = {"planted": rate, "undivided": round(total, 4), "wrong": round(wrong, 4),
                                          "ambiguous": round(ambiguous, 4), "pairs": runs[0][3], "runs": len(runs)}
            print(f"{name:>12} planted {rate:4.0%}: undivided {total:6.2%}  wrong {wrong:6.2%}  "
                  f"ambiguous {ambiguous:6.2%}  pairs {runs[0][3]}", file=sys.stderr, flush=True)
    # Clear datasets: no ambiguous pair with nothing planted. Every rate of theirs counts,
    # pairs found at higher rates included (a wrongly split pair shows as a wrong share too low).
    clear = [k for k in rows if not rows[k.split("@")[0] + "@0%"]["pairs"]]
    amb = [k for k in rows if k not in clear]
    floor = {k.split("@")[0]: rows[k]["wrong"] for k in rows if rows[k]["planted"] == 0}

    def err(k, key, base=0.0):
        return abs(rows[k][key] - base - rows[k]["planted"])
    out = {"rows": rows,
           "max_wrong_error_clear": round(max((err(k, "wrong") for k in clear), default=float("nan")), 4),
           "max_undivided_error_clear": round(max((err(k, "undivided") for k in clear), default=float("nan")), 4),
           "max_wrong_error_ambiguous_over_floor": round(max(
               (err(k, "wrong", floor[k.split("@")[0]]) for k in amb), default=float("nan")), 4),
           "max_undivided_error_ambiguous_over_floor": round(max(
               (err(k, "undivided", rows[k.split("@")[0] + "@0%"]["undivided"]) for k in amb),
               default=float("nan")), 4)}
    out["wrong_over_undivided_error_ambiguous"] = round(
        max((err(k, "wrong") for k in amb), default=float("nan"))
        / max(max((err(k, "undivided") for k in amb), default=float("nan")), 1e-9), 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
