"""Follow-up commands after an audit: do they reuse its embeddings?

    .venv/bin/python bench/reuse.py [--n 2000]

Writes N Fashion-MNIST images (Debian's dataset-fashion-mnist; 80% train,
20% test, class folders) as PNG, runs `imagesieve audit` on them, then the
follow-ups a user runs next on the same folder with `--embeddings AUDIT_OUT`:
`labels` and `samplesize`, each with its defaults (the audit's: one default
per parameter, ``analysis.defaults``). Baseline: the audit's own seconds. Each command
is a fresh process, as a user runs it. `same_answers`: the labels command's
suspects (paths and scores) are the audit's, and samplesize's answer is the
audit's. Last line: one JSON object (followup_over_audit target <= 0.1).

Not measured here: `calibrate` embeds altered copies of a sample, which no
audit holds, and `dedup` runs on a server collection.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from datasets import FASHION_CLASSES, fashion_mnist  # noqa: E402


def cli(*args) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "imagesieve.cli", *map(str, args)], capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"imagesieve {args[0]} failed:\n{r.stderr[-3000:]}")
    print(f"{args[0]}: {took:.1f} s", file=sys.stderr)
    return took, r


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    x, y, _, _ = fashion_mnist()
    pick = np.random.default_rng(0).choice(len(x), args.n, replace=False)
    with tempfile.TemporaryDirectory(prefix="imagesieve-reuse-") as tmp:
        root, out = Path(tmp) / "data", Path(tmp) / "audit"
        for k, i in enumerate(pick.tolist()):
            d = root / ("test" if k % 5 == 0 else "train") / FASHION_CLASSES[y[i]].replace("/", "-")
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(d / f"f{i}.png")
        audit_s, _ = cli("audit", root, "--out", out)
        report = json.loads((out / "report.json").read_text())
        labels_s, lr = cli("labels", root, "--embeddings", out, "--out", Path(tmp) / "labels")
        size_s, sr = cli("samplesize", root, "--embeddings", out, "--out", Path(tmp) / "size",
                         *(["--target", str(report["sample_size"]["target_accuracy"])]
                           if report.get("sample_size", {}).get("target_accuracy") else []))
        reused = all(f"embeddings: all {args.n} reused" in r.stderr for r in (lr, sr))
        mine = json.loads((Path(tmp) / "labels" / "label_suspects.json").read_text())["suspects"]
        theirs = report["label_suspects"]
        same_labels = ([s["path"] for s in mine] == [s["path"] for s in theirs]
                       and bool(np.allclose([s["score"] for s in mine], [s["score"] for s in theirs], atol=1e-5)))
        size = json.loads((Path(tmp) / "size" / "samplesize.json").read_text())
        same_size = size["answer"] == report["sample_size"]["answer"]
    followups = labels_s + size_s
    print(json.dumps({"n": args.n, "audit_s": round(audit_s, 2), "labels_s": round(labels_s, 2),
                      "samplesize_s": round(size_s, 2), "followup_s": round(followups, 2),
                      "followup_over_audit": round(followups / audit_s, 3), "all_reused": reused,
                      "same_label_suspects": same_labels, "same_samplesize_answer": same_size,
                      "same_answers": bool(same_labels and same_size)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
