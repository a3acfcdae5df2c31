"""Recompute the README's measured figures and show which ones went stale.

Runs the benchmark commands that README.md's "Measured figures" section names
(each bench once, however many figures it feeds), reads each figure from the
bench's last stdout line (one JSON object), finds the value the README states
with a regex, and prints per figure: README value, value now, ratio now/README,
and a flag when the ratio is off by more than the figure's tolerance, or when
the README no longer states it where the regex looks ("README value not found":
the README changed, update the registry below).

    .venv/bin/python bench/readme_figures.py --list               # the registry; runs nothing
    .venv/bin/python bench/readme_figures.py --quick              # CI-sized runs (minutes)
    .venv/bin/python bench/readme_figures.py --only dedup consensus_ours_acc
    .venv/bin/python bench/readme_figures.py                      # the README's own commands (an hour or more)

``--only`` takes figure or bench names. ``--quick`` runs every bench at small
sizes: its values are not the README's, so drift is not flagged (values are
shown); figures with no quick variant are skipped. ``--timeout`` bounds each
bench (seconds). Progress goes to stderr; the table and, as the last line, one
JSON object ({"quick", "figures": {name: {"readme", "now", "ratio", "stale",
"error"}}, "stale", "errors", "skipped"}) go to stdout. Exit code 0 whatever
the figures say (it is a report); 2 on misuse.

Not covered: the GPU host figures (bench/gpu.py and the GPU host's
bench/decode_scaling.py run need an H200 host) and prose figures that no
single command prints.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NUM = r"(\d[\d,]*(?:\.\d+)?)"   # 5,116 / 0.995 / 22.8: commas are thousands separators


@dataclass(frozen=True)
class Bench:
    name: str
    argv: tuple[str, ...]               # as the README states it, after the interpreter
    quick: tuple[str, ...] | None       # small sizes; None = full-only
    nice: bool = False                  # the README runs it under `nice -n 10`

    def command(self, quick: bool, tmp: str) -> list[str]:
        args = [a.replace("{tmp}", tmp) for a in (self.quick if quick else self.argv)]
        return (["nice", "-n", "10"] if self.nice else []) + [sys.executable, *args]


@dataclass(frozen=True)
class Figure:
    name: str
    bench: Bench
    get: tuple | Callable[[dict], Any]  # key path into the last-line JSON, or a function of it
    pattern: str                        # one capture group: the number the README states
    tol: float = 0.15                   # relative; deterministic verdicts get tighter ones


def lit(text: str) -> str:
    """A literal anchor that survives rewrapping (any whitespace run matches any other)."""
    return re.escape(text).replace(r"\ ", r"\s+")


def cell(row: str, i: int, prefix: str = "") -> str:
    """The first number in the i-th cell after the table row that starts with ``row``."""
    return prefix + re.escape(row) + r"\s*\|" + r"[^|\n]*\|" * (i - 1) + r"[^\d|\n]*" + NUM


def verified(collection: str, i: int) -> str:
    """Cell i of the **verified** row under dup_quality's ``collection`` row."""
    return (re.escape(f"| {collection}") + r"[^\n]*\n\|\s*\|\s*\*\*verified\*\*\s*\|"
            + r"[^|\n]*\|" * (i - 1) + r"[^\d|\n]*" + NUM)


def row_of(key: str, rows: str = "rows", **where) -> Callable[[dict], Any]:
    """From the JSON's list ``rows``: the first row whose fields equal ``where``, then its ``key``."""
    return lambda out: next(r for r in out[rows] if all(r.get(k) == v for k, v in where.items()))[key]


# The benches: README commands (sizes as the README states them) and CI-sized variants.
EMBED = Bench("embed", ("bench/embed.py", "--repeats", "5"), ("bench/embed.py", "--repeats", "1", "--images", "12"))
LOAD = Bench("load", ("bench/load.py", "--clients", "32", "--duration", "15"),
             ("bench/load.py", "--clients", "4", "--duration", "3", "--baseline-duration", "2"))
MODELS = Bench("models", ("bench/models.py",), ("bench/models.py", "--models", "mobilenet_v1", "--repeats", "1"))
DUPQ = Bench("dup_quality", ("bench/dup_quality.py", "--stream", "40"),
             ("bench/dup_quality.py", "--fashion", "200", "--stream", "8"))
DUPQ_PROBE = Bench("dup_quality_probe", ("bench/dup_quality.py", "--stream", "0", "--kinds", "probe"),
                   ("bench/dup_quality.py", "--stream", "0", "--kinds", "probe", "--collections", "illustrations"))
STREAM_GATE = Bench("stream_gate", ("bench/stream_gate.py",),
                    ("bench/stream_gate.py", "--collections", "photos,fashion", "--fashion", "200"))
STRANGER = Bench("stranger_audit", ("bench/stranger_audit.py",), None)
STRANGER_WALLPAPER = Bench("stranger_audit_wallpaper", ("bench/stranger_audit.py", "--kinds", "wallpaper"), None)
STRANGER_AUGMENT = Bench("stranger_audit_augment", ("bench/stranger_audit.py", "--kinds", "augment"), None)
SOAK = Bench("soak", ("bench/soak.py", "--clients", "64", "--duration", "90"),
             ("bench/soak.py", "--clients", "8", "--duration", "6"))
DEDUP = Bench("dedup", ("bench/dedup.py",), ("bench/dedup.py", "--sizes", "5000"), nice=True)
INDEX = Bench("index_scale", ("bench/index_scale.py",),
              ("bench/index_scale.py", "--n", "50000", "--kind", "ivf_flat", "--queries", "200", "--stream", "100",
               "--exact-stream", "20"), nice=True)
INDEX_10M = Bench("index_scale_10m", ("bench/index_scale.py", "--n", "10000000", "--dim", "1024", "--memory-gb", "6",
                                     "--nlist", "1024"),
                  ("bench/index_scale.py", "--n", "300000", "--dim", "256", "--memory-gb", "0.1", "--nlist", "256",
                   "--queries", "300", "--stream", "100"))
LABELFIX_FASHION = Bench(   # 2 epochs of a CNN on 70k images, twice: ~25 min here, no useful quick size
    "labelfix_fashion", ("bench/labelfix_table.py", "--datasets", "fashion_mnist", "--seeds", "1", "--epochs", "2",
                         "--features", "pixels", "--neighbor-weights", "0,0.2"), None, nice=True)
_MNIST = ("bench/labelfix_table.py", "--datasets", "mnist_5k", "--features", "pixels+embeddings",
          "--neighbor-space", "embeddings", "--neighbor-weights", "0,0.2")
LABELFIX_MNIST = Bench("labelfix_mnist", (*_MNIST, "--seeds", "5"), (*_MNIST, "--seeds", "1", "--epochs", "1"),
                       nice=True)
# Quick: 4 sizes (with 3 only the power law can be judged); --out leaves the full run's bench/out alone.
SAMPLESIZE = Bench("samplesize_validate", ("bench/samplesize_validate.py",),
                   ("bench/samplesize_validate.py", "--fractions", "0.02", "0.05", "0.1", "0.2", "--repeats", "2",
                    "--full-repeats", "1", "--bootstrap", "50", "--out", "{tmp}/samplesize"), nice=True)
CONSENSUS = Bench("consensus", ("bench/consensus.py",), ("bench/consensus.py", "--n", "2000", "--seeds", "1"),
                  nice=True)
# The README's remeasured audit row says `--repeats 1` next to its `--n 5000` heading.
LABEL_NOISE = Bench("label_noise", ("bench/label_noise.py",), ("bench/label_noise.py", "--datasets", "digits",
                                                                  "--seeds", "1"))
REUSE = Bench("reuse", ("bench/reuse.py",), ("bench/reuse.py", "--n", "400"))
CLI_START = Bench("cli_start", ("bench/cli_start.py",), ("bench/cli_start.py", "--runs", "3"))
DECODE = Bench("decode_scaling", ("bench/decode_scaling.py",), ("bench/decode_scaling.py", "--threads", "1",
                                                                 "--procs", "2", "--shm", "1,2"))
AUDIT = Bench("audit", ("bench/audit.py", "--n", "5000", "--repeats", "1"),
              ("bench/audit.py", "--n", "100", "--repeats", "1", "--no-sweep"))

_AUDIT = r"Remeasured with verified duplicates[\s\S]{0,1000}?"   # the table under it, not the older one below
_EXACT = 0.005   # verdicts the README calls deterministic: any change is news

FIGURES = [
    Figure("label_noise_max_wrong_error_clear", LABEL_NOISE, lambda out: 100 * out["max_wrong_error_clear"],
           lit("the wrong share is within **") + NUM, tol=0.5),
    Figure("reuse_followup_over_audit", REUSE, ("followup_over_audit",),
           lit("AUDIT_OUT` 3.1 s, **") + NUM, tol=0.5),
    Figure("decode_shm_speedup_2_workers", DECODE, ("shm_speedup_2_workers",),
           cell("| **2 shared-memory workers**", 2, prefix="")),
    Figure("cli_health_over_baseline", CLI_START, ("health_over_baseline",),
           lit("and 36.6 MB for a bare script importing grpc and the health stub and making the same call (**") + NUM,
           tol=0.25),
    Figure("cli_health_rss_mb", CLI_START, ("health_rss_mb",), lit("medians) at 94 ms and ") + NUM + " MB"),
    Figure("embed_grpc_over_inproc_12mp", EMBED, ("grpc_over_inproc",), cell("| 12 MP (4000x3000)", 5)),
    Figure("embed_speedup_vs_naive_12mp", EMBED, ("speedup_vs_naive",), cell("| 12 MP (4000x3000)", 6)),
    Figure("load_throughput_vs_single", LOAD, ("throughput_vs_single_client",),
           lit("one client alone in the same run (") + NUM + "x"),
    Figure("models_mobilenet_v1_pipeline_ips", MODELS, row_of("inproc_ips_512px", model="mobilenet_v1", rows="models"),
           cell("| MobileNetV1 (MIT)", 3)),
    Figure("models_mobilenet_v1_copy_cosine_p05", MODELS,
           row_of("copy_cosine_p05", model="mobilenet_v1", rows="models"), cell("| MobileNetV1 (MIT)", 6), _EXACT),
    Figure("dupq_photos_recall", DUPQ, ("rows", "photos/verified", "recall"), verified("photos (64, 32)", 1), _EXACT),
    Figure("dupq_illustrations_recall", DUPQ, ("rows", "illustrations/verified", "recall"),
           verified("illustrations, Art4Apps", 1), _EXACT),
    Figure("dupq_illustrations_false_per_1k", DUPQ, ("rows", "illustrations/verified", "false_pairs_per_1k_images"),
           verified("illustrations, Art4Apps", 2), 0.05),
    Figure("dupq_icons_recall", DUPQ, ("rows", "icons/verified", "recall"), verified("icons, Oxygen", 1), _EXACT),
    Figure("dupq_fashion_recall", DUPQ, ("rows", "fashion/verified", "recall"), verified("Fashion-MNIST 28x28", 1),
           _EXACT),
    Figure("dupq_fashion_false_per_1k", DUPQ, ("rows", "fashion/verified", "false_pairs_per_1k_images"),
           verified("Fashion-MNIST 28x28", 2), 0.05),
    Figure("dupq_stream_verified_over_stage1", DUPQ, ("streaming_check", "p50_ratio"),
           lit("stage 1 alone (**") + NUM + "x"),
    Figure("dupq_probe_illustrations_recall", DUPQ_PROBE, ("rows", "illustrations/verified", "recall"),
           lit("verified recall photos / illustrations / icons / Fashion-MNIST") + r"\s+\*\*[\d.]+\s*/\s*" + NUM,
           _EXACT),
    Figure("stream_gate_illustrations_refused", STREAM_GATE,
           ("rows", "illustrations/verified", "originals_refused_unrelated"),
           lit("the verified gate loses ") + NUM + lit(" of 354"), _EXACT),
    Figure("stream_gate_icons_refused", STREAM_GATE, ("rows", "icons/verified", "originals_refused_unrelated"),
           lit("of 354, ") + NUM + lit(" of 242"), _EXACT),
    Figure("stream_gate_fashion_refused", STREAM_GATE, ("rows", "fashion/verified", "originals_refused_unrelated"),
           lit(" of 242 and ") + NUM + lit(" of 1,500"), _EXACT),
    Figure("stream_gate_fashion_refused_stage1", STREAM_GATE, ("rows", "fashion/stage1", "originals_refused_unrelated"),
           cell("| Fashion-MNIST (1,500) | stage 1", 1), _EXACT),
    Figure("stranger_recall", STRANGER, ("recall",), lit("with no other flag: recall **") + NUM, _EXACT),
    Figure("stranger_cross_file_pairs", STRANGER, ("cross_file_pairs",),
           lit("so `cross_file_pairs` (") + NUM, _EXACT),
    Figure("stranger_wallpaper_recall", STRANGER_WALLPAPER, ("recall",),
           lit("recall **0.517**, with them **") + NUM, _EXACT),
    Figure("stranger_wallpaper_recall_without_layout", STRANGER_WALLPAPER,
           ("baselines", "embedding_candidates", "recall"), lit("without the layout candidates (the embedding's alone) recall **") + NUM,
           _EXACT),
    Figure("stranger_augment_recall", STRANGER_AUGMENT, ("recall",),
           lit("augment`: recall **") + NUM, _EXACT),
    Figure("stranger_augment_unrelated_pairs", STRANGER_AUGMENT, ("unrelated_pairs",),
           lit("34 cross-file pairs, **") + NUM + " unrelated", _EXACT),
    Figure("soak_good_throughput_ratio", SOAK, ("good_throughput_ratio",), re.escape("| default |") + r"[^\n]*?\(\*\*"
           + NUM + r"\*\*\)"),
    Figure("soak_acked_lost", SOAK, ("acked_lost",), re.escape("| default |") + r"[^|\n]*\|\s*\*\*" + NUM + " of"),
    Figure("dedup_approx_speedup_50k", DEDUP, ("approx_speedup",), cell("| 50k", 4)),
    Figure("dedup_approx_recall_50k", DEDUP, ("approx_recall",), cell("| 50k", 5), 0.01),
    Figure("dedup_pairs_50k", DEDUP, ("n_pairs",), re.escape("| 50k |") + r"[^\n]*?yes \(" + NUM + " pairs", _EXACT),
    Figure("index_recall_1m_percent", INDEX, lambda out: 100 * out["recall"],
           lit("found ") + NUM + lit("% of planted duplicate pairs"), 0.01),
    Figure("index_speedup_1m", INDEX, ("speedup",), NUM + lit("x faster than exact search in batch")),
    Figure("index_10m_rss_gb", INDEX_10M, ("rss_gb",), cell("| 10M x 1024", 1)),
    Figure("index_10m_recall", INDEX_10M, ("recall",), cell("| 10M x 1024", 4), 0.01),
    Figure("index_10m_check_p99_ms", INDEX_10M, ("check_p99_ms",), re.escape("| 10M x 1024 |") + r"[^\n]*?/ \*?\*?" + NUM + " ms"),
    Figure("labelfix_fashion_cnn_knn_p3", LABELFIX_FASHION,
           row_of("precision@3%", dataset="fashion_mnist", method="out_of_fold+knn0.2"),
           re.escape("| Fashion-MNIST, all 70k | small pixel CNN, 2 epochs |") + r"(?:[^|\n]*\|){2}[^\d|\n]*"
           r"[\d.]+\s*/\s*[\d.]+\s*/\s*" + NUM, 0.02),
    Figure("labelfix_mnist_cnn_emb_knn_p3", LABELFIX_MNIST,
           row_of("precision@3%", dataset="mnist_5k", method="out_of_fold+knn0.2"),
           re.escape("| MNIST-5k | pixel CNN + embedding logreg, averaged |") + r"(?:[^|\n]*\|){2}[^\d|\n]*"
           r"[\d.]+\s*/\s*[\d.]+\s*/\s*" + NUM, 0.02),
    Figure("samplesize_err_ours", SAMPLESIZE, ("err_ours",),
           cell("| logistic regression", 4, r"### How many images[\s\S]*?")),
    Figure("consensus_ours_acc", CONSENSUS, ("ours_acc",), cell("| 0.60 / 0.70 / 0.80 / 0.90 / 0.95, 3 seeds", 4),
           _EXACT),
    Figure("consensus_majority_acc", CONSENSUS, ("majority_acc",),
           cell("| 0.60 / 0.70 / 0.80 / 0.90 / 0.95, 3 seeds", 1), _EXACT),
    Figure("consensus_rank_corr", CONSENSUS, ("annotator_rank_corr",),
           cell("| 0.60 / 0.70 / 0.80 / 0.90 / 0.95, 3 seeds", 5), 0.02),
    Figure("audit_over_embed_5k", AUDIT, ("audit_over_embed",), cell("| 5,000", 3, _AUDIT)),
    Figure("audit_over_embed_20k", AUDIT, ("audit_over_embed_4n",), cell("| 20,000", 3, _AUDIT)),
]
BENCHES = {f.bench.name: f.bench for f in FIGURES}


def readme_values(readme_text: str) -> dict[str, float | None]:
    """Each figure's value as README.md states it; None where its regex finds nothing."""
    out = {}
    for f in FIGURES:
        m = re.search(f.pattern, readme_text)
        out[f.name] = float(m.group(1).replace(",", "")) if m else None
    return out


def extract(get, out: dict) -> float:
    if callable(get):
        return float(get(out))
    for k in get:
        out = out[k]
    return float(out)


def shown(cmd: list[str]) -> str:
    return " ".join(".venv/bin/python" if c == sys.executable else c for c in cmd)


def run_bench(bench: Bench, quick: bool, timeout: float, tmp: str, tag: str) -> tuple[dict | None, str | None]:
    """(last-line JSON, None) or (None, why it failed)."""
    cmd = bench.command(quick, tmp)
    print(f"{tag} {bench.name}: started: {shown(cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    # Own process group: on a timeout or ^C the bench's servers and workers go with it.
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    stdout = stderr = None
    try:
        stdout, stderr = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if p.returncode is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    out, err = None, None
    if stdout is None:
        err = f"timed out after {timeout:g} s"
    elif p.returncode != 0:
        err = f"exit {p.returncode}: " + (stderr.strip().splitlines() or ["(no stderr)"])[-1]
    else:
        try:
            out = json.loads((stdout.strip().splitlines() or [""])[-1])
        except json.JSONDecodeError:
            err = "last stdout line is not JSON"
        if out is not None and not isinstance(out, dict):
            out, err = None, "last stdout line is not a JSON object"
    dt = time.perf_counter() - t0
    print(f"{tag} {bench.name}: {'done' if err is None else 'FAILED (' + err[:200] + ')'} after {dt:.1f} s",
          file=sys.stderr, flush=True)
    return out, err


def compare(figures: list[Figure], readme: dict[str, float | None],
            outputs: dict[str, tuple[dict | None, str | None]], quick: bool) -> dict[str, dict]:
    """Per figure: README value, value now, ratio, stale (never under --quick), error."""
    results = {}
    for f in figures:
        out, err = outputs[f.bench.name]
        now = None
        if out is not None:
            try:
                now = extract(f.get, out)
            except (KeyError, IndexError, StopIteration, TypeError, ValueError) as e:
                err = f"figure not in the bench's JSON ({type(e).__name__}: {e})"
        old = readme[f.name]
        if old is None:     # the README changed: the registry's regex no longer finds the figure
            err = "README value not found" + (f"; {err}" if err else "")
        ratio = now / old if now is not None and old else None
        if now is None or old is None:
            drift = False
        else:   # a README zero (e.g. adds lost) has no ratio: any other value is drift
            drift = abs(ratio - 1) > f.tol if old else now != 0
        results[f.name] = {"readme": old, "now": now, "ratio": None if ratio is None else round(ratio, 4),
                           "stale": bool(drift and not quick), "error": err}
    return results


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized runs; values shown, drift not flagged")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="figure or bench names")
    ap.add_argument("--list", action="store_true", help="print the registry and the README values; run nothing")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per bench (default 3600)")
    args = ap.parse_args(argv)

    figures = FIGURES
    if args.only:
        unknown = [n for n in args.only if n not in BENCHES and n not in {f.name for f in FIGURES}]
        if unknown:
            ap.error(f"unknown figure or bench: {', '.join(unknown)} (see --list)")
        figures = [f for f in FIGURES if f.name in args.only or f.bench.name in args.only]
    readme = readme_values(README.read_text(encoding="utf-8"))

    if args.list:
        for f in figures:
            b = f.bench
            print(f"{f.name:38} README {fmt(readme[f.name]):>8}  tol {f.tol:.1%}  bench {b.name}")
            print(f"{'':40}full : {shown(b.command(False, '{tmp}'))}")
            print(f"{'':40}quick: {'full-only' if b.quick is None else shown(b.command(True, '{tmp}'))}")
        return 0

    skipped = [f.name for f in figures if args.quick and f.bench.quick is None]
    figures = [f for f in figures if f.name not in skipped]
    benches = list(dict.fromkeys(f.bench for f in figures))     # each bench once, registry order
    outputs: dict[str, tuple[dict | None, str | None]] = {}
    with tempfile.TemporaryDirectory(prefix="readme_figures_") as tmp:
        for i, b in enumerate(benches, 1):
            outputs[b.name] = run_bench(b, args.quick, args.timeout, tmp, f"[{i}/{len(benches)}]")

    results = compare(figures, readme, outputs, args.quick)

    if args.quick:
        print("QUICK RUN: small sizes, not the README's; values shown, drift not flagged.")
    print(f"{'figure':38} {'README':>9} {'now':>9} {'ratio':>7}  flag")
    for name, r in results.items():
        f = next(x for x in figures if x.name == name)
        flag = r["error"] or (f"STALE (> {f.tol:.1%} off)" if r["stale"] else "")
        print(f"{name:38} {fmt(r['readme']):>9} {fmt(r['now']):>9} {fmt(r['ratio']):>7}  {flag}")
    for name in skipped:
        print(f"{name:38} {fmt(readme[name]):>9} {'-':>9} {'-':>7}  skipped (full-only)")
    print(json.dumps({"quick": args.quick, "figures": results,
                      "stale": [n for n, r in results.items() if r["stale"]],
                      "errors": [n for n, r in results.items() if r["error"]], "skipped": skipped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
