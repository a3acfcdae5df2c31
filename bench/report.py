"""The audit report at 100k images: how long it takes to write, how large it
is, and how fast it is to use in a real browser.

    .venv/bin/python bench/report.py [--n 100000] [--pairs 50000]

The findings are generated (writing the report is what is measured, not
the analyses): N images whose paths are hard links to 200 real photos (the
sample ImageNet photos at 256 px, so every thumbnail is a real decode),
``--pairs`` near-duplicate pairs (every tenth across splits: the leakage
list), 1% exact pairs, label conflicts, outliers, 1% label suspects and the
duplicate groups, all through the same ``audit.report.write_report`` the
audit calls. Then Debian's headless Chromium opens ``report.html``:
``first_usable_s`` is the page's own clock from navigation to the first
list drawn (the duplicate pairs' first page), ``page_ms`` the median time
to turn a page of the 50k-pair list (load its page file and draw it), ten
turns. The baseline is the same page with every list inline (no paging, one
file: what showing every finding in a single HTML costs):
``baseline_first_usable_s`` and ``baseline_html_mb``.

Last line: one JSON object (targets: first_usable_s <= 2, page_ms <= 200,
report_json_mb <= 1).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_files(root: Path, n: int) -> list[str]:
    """N paths, hard links to 200 real photos at 256 px (a few MB in all)."""
    from imagesieve.samples import imagenet_photos
    src = root / "src"
    src.mkdir(parents=True)
    photos = [p for p, _ in imagenet_photos()]
    bases = []
    for k in range(200):
        im = Image.open(photos[k % len(photos)]).convert("RGB")
        im = im.rotate(7 * (k // len(photos)), expand=False).resize((256, 256))
        b = src / f"base{k}.jpg"
        im.save(b, quality=85)
        bases.append(b)
    paths = []
    for i in range(n):
        d = root / f"class{i % 10}" / ("test" if i % 5 == 0 else "train")
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"img{i:06d}.jpg"
        os.link(bases[i % 200], p)
        paths.append(str(p))
    return paths


def findings(paths: list[str], n_pairs: int, seed: int = 0):
    """An AuditResults with generated findings over these images."""
    from imagesieve_server.analysis.duplicates.find import DuplicateReport
    from imagesieve_server.analysis.duplicates.groups import connected_components, groups_from_labels
    from imagesieve_server.analysis.labels.count import estimated_noise_rate, split_noise
    from imagesieve_server.analysis.labels.score import LabelScores
    from imagesieve_server.audit.analyse import AuditResults
    from imagesieve_server.checks import label_conflicts, leakage
    from imagesieve_server.checks.base import CheckResult, FlaggedImages
    from imagesieve_server.checks.duplicates import NAME, TITLE, Found, flagged_pairs

    rng = np.random.default_rng(seed)
    n = len(paths)
    labels = [f"class{i % 10}" for i in range(n)]
    splits = ["test" if i % 5 == 0 else "train" for i in range(n)]
    a = rng.choice(n, n_pairs, replace=False)
    b = (a + 1 + rng.integers(0, 9, n_pairs) * 10) % n          # mostly the same class
    a, b = np.minimum(a, b), np.maximum(a, b)
    keep = a != b
    a, b = a[keep], b[keep]
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    p = len(a)
    exact = rng.random(p) < 0.01
    cosine = np.where(exact, 1.0, rng.uniform(0.6, 0.99, p)).astype(np.float32)
    lab, spl = np.array(labels, dtype=object), np.array(splits, dtype=object)
    groups = groups_from_labels(connected_components(n, a, b))
    d = DuplicateReport(keys=paths, threshold=0.9, a=a, b=b, cosine=cosine, exact=exact,
                        cross_split=spl[a] != spl[b], labels_disagree=(lab[a] != lab[b]) & (rng.random(p) < 0.05),
                        groups=groups, group_min_cosine=rng.uniform(0.6, 0.99, len(groups)).astype(np.float32),
                        method="raw cosine", threshold_reason="0.900, generated")
    dup = CheckResult(NAME, TITLE, n, {"exact": flagged_pairs(d, d.exact, "exact", "identical bytes"),
                                       "near": flagged_pairs(d, ~d.exact, "near", "altered copies")},
                      details=Found(d))
    out_pos = rng.choice(n, n // 100, replace=False)
    outliers = CheckResult("outliers", "Outliers", n, {"isolated": FlaggedImages(
        "isolated", "far from all other images", "robust z of isolation", out_pos,
        np.sort(rng.uniform(3.5, 9, len(out_pos)).astype(np.float32))[::-1], 3.5, "generated")})
    c = 10
    probs = rng.dirichlet(np.ones(c), n).astype(np.float32)
    label_ids = np.arange(n) % c
    scores = probs[np.arange(n), label_ids]
    suspects = np.argsort(scores)[: n // 100]
    joint = rng.uniform(0, 50, (c, c)) + np.eye(c) * n / c
    ls = LabelScores(method="out_of_fold", pred_probs=probs, scores=scores, suggested=probs.argmax(1),
                     suggested_probability=probs.max(1), neighbor_agreement=np.full(n, np.nan), suspects=suspects,
                     joint=joint, noise_rate=estimated_noise_rate(joint), noise_split=split_noise(joint))
    r = AuditResults(paths, labels, splits, np.array([f"{i:064x}" for i in range(n)], dtype="S64"), [""] * n,
                     np.zeros((n, 1), np.float32), np.ones(n, bool), 0.9,
                     {"train": {f"class{k}": n * 4 // 50 for k in range(c)},
                      "test": {f"class{k}": n // 50 for k in range(c)}},
                     duplicates=d, class_names=[f"class{k}" for k in range(c)], label_ids=label_ids, label_scores=ls)
    sus = suspects
    label_check = CheckResult("label_issues", "Label issues", n, {"suspects": FlaggedImages(
        "suspects", "likely wrong labels", "label quality (probability of the given label)", sus,
        scores[sus].astype(np.float32), float(scores[sus].max()), "generated", {
            "given": np.array([f"class{k}" for k in label_ids[sus]], dtype=object),
            "suggested": np.array([f"class{k}" for k in probs.argmax(1)[sus]], dtype=object),
            "suggested_probability": probs.max(1)[sus], "rank_percentile": np.linspace(0.001, 1, len(sus))})})
    r.checks = {NAME: dup, "leakage": leakage.run(dup), "label_conflicts": label_conflicts.run(dup),
                "outliers": outliers, "label_issues": label_check}
    r.knn_similarity = np.ones(n, np.float32)
    r.outlier_score = np.zeros(n, np.float32)
    return r


def chromium(url: str, profile: Path, wait_ms: int) -> tuple[dict, float]:
    """The body's data- attributes of ``url`` after ``wait_ms`` of real time, and the wall seconds."""
    exe = shutil.which("chromium")
    if not exe:
        raise SystemExit("Debian's chromium is needed (apt-get install -y chromium)")
    t = time.perf_counter()
    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", f"--user-data-dir={profile}", f"--timeout={wait_ms}",
                        "--dump-dom", url], capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - t
    body = re.search(r"<body([^>]*)>", r.stdout)
    return (dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1))) if body else {}), took


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--pairs", type=int, default=50_000)
    args = ap.parse_args()
    from imagesieve_server.audit.report import write_report
    with tempfile.TemporaryDirectory(prefix="imagesieve-report-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        paths = make_files(tmp / "images", args.n)
        print(f"{args.n} files in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        r = findings(paths, args.pairs)
        out = tmp / "audit"
        t = time.perf_counter()
        write_report(r, out, str(tmp / "images"))
        write_s = time.perf_counter() - t
        data_mb = sum(f.stat().st_size for f in (out / "report_data").rglob("*") if f.is_file()) / 2**20
        json_mb = (out / "report.json").stat().st_size / 2**20
        html_mb = (out / "report.html").stat().st_size / 2**20
        # Baseline: every page inline in one HTML, before the app's script.
        page = (out / "report.html").read_text()
        inline = "".join(p.read_text() for p in sorted((out / "report_data").rglob("*.js")))
        at = page.index('<script type="application/json" id="report-meta">')
        (out / "baseline.html").write_text(page[:at] + "<script>window.reportPage=function(l,k,r){"
                                           "(window.__pre=window.__pre||[]).push([l,k,r]);};" + inline + "</script>"
                                           + page[at:].replace('var DATA = "report_data";', 'var DATA = "report_data";'
                                                               ' var PRE = window.__pre || [];', 1)
                                           .replace("  function loadPage(list, k) {", "  PRE.forEach(function (x) "
                                                    "{ window.reportPage(x[0], x[1], x[2]); });\n"
                                                    "  function loadPage(list, k) {", 1))
        inline_mb = (out / "baseline.html").stat().st_size / 2**20
        print(f"written in {write_s:.1f} s: report.html {html_mb:.2f} MB, report_data {data_mb:.1f} MB, "
              f"report.json {json_mb:.2f} MB", file=sys.stderr)
        near = r.checks["duplicates"].issues["near"].count
        firsts, page_ms, base = [], [], []
        for k in range(3):
            attrs, _ = chromium((out / "baseline.html").as_uri(), tmp / f"b{k}", 15000)
            base.append(float(attrs.get("first-usable-ms", "nan")) / 1000)
            attrs, _ = chromium((out / "report.html").as_uri(), tmp / f"p{k}", 4000)
            firsts.append(float(attrs.get("first-usable-ms", "nan")) / 1000)
            attrs, _ = chromium((out / "report.html").as_uri() + "#list=duplicates.near&bench=page&n=10",
                                tmp / f"q{k}", 8000)
            page_ms.append(float(attrs.get("page-ms", "nan")))
            print(f"run {k}: first usable {firsts[-1]:.2f} s (all inline {base[-1]:.2f} s), page {page_ms[-1]:.1f} ms "
                  f"(js errors {attrs.get('js-errors')})", file=sys.stderr)
    print(json.dumps({"n": args.n, "near_pairs": near, "write_s": round(write_s, 2),
                      "report_json_mb": round(json_mb, 3), "report_html_mb": round(html_mb, 3),
                      "report_data_mb": round(data_mb, 1), "baseline_html_mb": round(inline_mb, 1),
                      "first_usable_s": round(float(np.median(firsts)), 3),
                      "baseline_first_usable_s": round(float(np.median(base)), 3),
                      "first_usable_ratio": round(float(np.median(firsts) / np.median(base)), 3),
                      "page_ms": round(float(np.median(page_ms)), 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
