"""``imagesieve audit SOURCE --out DIR``: duplicates, leakage, outliers, label
suspects, class balance and a sample-size sweep for a whole dataset, in one
resumable command with a report people can open in a browser.

SOURCE: an image folder (class folders, optionally under train/val/test), a
CSV or Parquet manifest (path[, label][, split]) or a glob. Images are never
copied. Rerunning with the same --out embeds only new or changed images.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..analysis.classifiers import EMBEDDING_CLASSIFIERS
from ..analysis.defaults import LABELS_CLASSIFIER, LARGE_SWEEP, SWEEP_CLASSIFIER
from ..engine.pipeline import RUNTIMES
from .common import parse_fraction




def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="image folder, .csv/.parquet manifest, or a glob (quote it)")
    p.add_argument("--out", required=True, help="output folder (also holds the resumable embeddings)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--server", help="embed through a running imagesieve server at host:port")
    where.add_argument("--ray", metavar="ADDRESS", help="embed on a Ray cluster ('local' starts one here)")
    p.add_argument("--model", default="mobilenet_v1", help="model for in-process or Ray embedding")
    p.add_argument("--runtime", choices=RUNTIMES, default="onnx",
                   help="in-process model runtime: onnx (ONNX Runtime, CUDA when its GPU build is installed) "
                        "or torch (PyTorch, CUDA when present)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="near-duplicate cosine: the candidates' floor when verifying (default 0.5), the "
                        "duplicates' threshold with --raw-cosine (default: derived from the data)")
    p.add_argument("--raw-cosine", action="store_true",
                   help="duplicates by embedding cosine alone (no stage-2 verification of each pair)")
    p.add_argument("--target", type=parse_fraction, default=0.95, help="target accuracy for the sweep (default 95%%)")
    p.add_argument("--top", type=parse_fraction, default=0.01, help="share of labels to flag (default 1%%)")
    p.add_argument("--no-sweep", action="store_true", help="skip the sample-size sweep")
    p.add_argument("--classifier", choices=EMBEDDING_CLASSIFIERS, default=LABELS_CLASSIFIER,
                   help=f"classifier on the embeddings for label scoring (default {LABELS_CLASSIFIER}, as in "
                        "`labels` and the ScoreLabels job: fitted from sufficient statistics, no copies of the vectors)")
    p.add_argument("--sweep-classifier", choices=EMBEDDING_CLASSIFIERS, default=None,
                   help=f"classifier of the sample-size sweep (default {SWEEP_CLASSIFIER}, as in `samplesize` and "
                        f"the SampleSizeSweep job; lda above {LARGE_SWEEP:,} training images, said in the notes)")
    p.add_argument("--pixels", action="store_true",
                   help="label scoring also trains a small CNN on the images' pixels (their 48x48 gray layout "
                        "thumbnails): for thousands of images; needs the torch extra, else embeddings alone")
    p.add_argument("--max-image-mb", type=int, default=512,
                   help="largest image file to read, MiB (default 512: large wallpapers and scans are data here; "
                        "a server applies its own limit)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest image to decode, pixels from its header (default 100 MP, as serve's; a raster of "
                        "up to 4 bytes a pixel is allowed with it; a server applies its own --max-pixels)")
    p.add_argument("--memory-gb", type=float, default=None,
                   help="memory the analyses' indexes may plan for, GiB (default: IMAGESIEVE_INDEX_MEMORY_MB, else "
                        "half the host's); above 50,000 images, when the vectors as floats would fill more than "
                        "half of it, the neighbour search keeps product-quantized codes and re-ranks exactly")
    p.add_argument("--decode-processes", type=int, default=None, metavar="N",
                   help="in-process embedding decodes in N worker processes (default: one per core when 256 or "
                        "more images are to be embedded; 0: on threads in this process)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any image could not be read or decoded")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=1024,
                   help="images per embeddings shard; at most this many are redone after a crash")


FAILED_SHOWN = 20       # failed images named on the console (all of them: the report and images.parquet)


def run(args) -> int:
    from ..audit.embed import InProcessBackend, ServerBackend, embed_stage, embedded_line
    from ..audit.memory import return_freed_memory_to_os
    from ..audit.sources import load_audit_table
    from ..audit.stages import StageLog
    from ..audit.store import EmbeddingStore

    started = time.perf_counter()
    if args.memory_gb is not None:
        if not 0 < args.memory_gb < float("inf"):
            print(f"imagesieve audit: --memory-gb must be a positive number; got {args.memory_gb}", file=sys.stderr)
            return 2
        os.environ["IMAGESIEVE_INDEX_MEMORY_MB"] = str(args.memory_gb * 1024)   # faiss_index.index_memory_bytes
    # Arrow's default jemalloc pool kept the Parquet writer's buffers: 8.6 MiB
    # more stayed resident at 20,000 images than at 5,000; through malloc
    # (whose thresholds memory.py sets) nothing did. Read when pyarrow loads.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    log = StageLog()
    out = Path(args.out)
    if Path(args.source).is_dir() and out.resolve().is_relative_to(Path(args.source).resolve()):
        # Its thumbnails and pages would be audited as images the next time.
        print(f"imagesieve audit: --out {out} is inside the source folder {args.source}: name a folder outside it",
              file=sys.stderr)
        return 2
    try:
        with log.stage("listing"):
            table = load_audit_table(args.source, exclude=out)
    except ValueError as e:
        print(f"imagesieve audit: {e}", file=sys.stderr)
        return 2
    print(f"audit of {len(table)} images from {args.source} ({table.n_labelled} labelled) -> {out}")
    for n in table.notes:
        print(f"note: {n}", file=sys.stderr)
    def in_process(decode_processes):
        return InProcessBackend(args.model, runtime=args.runtime, max_image_mb=args.max_image_mb,
                                max_pixels=args.max_pixels, decode_processes=decode_processes)

    with log.stage("model load"):
        if args.server:
            backend = ServerBackend(args.server)
        elif args.ray:
            from ..audit.ray_backend import RayBackend
            backend = RayBackend(args.ray, args.model)
        else:
            try:
                backend = in_process(args.decode_processes)
            except ValueError as e:
                print(f"imagesieve audit: {e}", file=sys.stderr)
                return 2
    try:
        store = EmbeddingStore(out / "embeddings", backend.model, backend.dim, args.shard_size)
    except ValueError as e:
        print(f"imagesieve audit: {e}", file=sys.stderr)
        return 2
    paths = table.paths
    try:
        with log.stage("embedding"):
            try:
                counts = embed_stage(store, backend, paths)
            finally:
                backend.close()     # the model is not needed any more: its memory goes back
    except KeyboardInterrupt:
        print("\ninterrupted: embeddings so far are kept; rerun the same command to continue",
              file=sys.stderr)
        return 130
    print(f"embedding: {embedded_line(counts)} from {out / 'embeddings'}")
    # From here on memory must follow the vectors (not before: during
    # embedding, mapping every decode and batch buffer afresh cost 20% speed).
    return_freed_memory_to_os()
    from ..audit.analyse import run_analyses
    with log.stage("loading vectors"):
        vectors, sha, errors, sizes, signatures, properties = store.load(paths)
        store.close()
    if signatures is None and not args.raw_cosine:
        print("note: these embeddings were stored without layout signatures (an older version): duplicates "
              "by raw cosine; use a new --out folder for verified duplicates", file=sys.stderr)
    pixels = None
    if args.pixels:
        from ..analysis.classifiers import pixels_unused_because
        from ..engine.signature import thumbnails
        why = pixels_unused_because(int(sum(not e for e in errors)))
        if why:
            print(f"note: --pixels: {why}; labels scored on embeddings alone", file=sys.stderr)
        elif signatures is None:
            print("note: --pixels: these embeddings were stored without layout thumbnails (an older version); "
                  "labels scored on embeddings alone", file=sys.stderr)
        else:
            pixels = thumbnails(signatures)
    region_models: list = []       # made only if some partial match is tested where it was found

    def region_embedder():
        region_models.append(in_process(0))
        return region_models[-1].embedder
    try:
        results = run_analyses(paths, table.labels, table.splits, sha, errors,
                               vectors, threshold=args.threshold, target=args.target,
                               top_fraction=args.top, sweep=not args.no_sweep, seed=args.seed,
                               classifier=args.classifier, sweep_classifier=args.sweep_classifier, stages=log,
                               signatures=None if args.raw_cosine else signatures, pixels=pixels,
                               sizes=sizes, properties=properties, store=out / "embeddings",
                               region_embedder=region_embedder)
        for model in region_models:
            model.close()           # its memory back before the report
        noise = None if results.label_scores is None else results.label_scores.noise_rate
        # The report says what the listing left out, and what the label findings may not mean.
        results.notes[:0] = table.notes + [c.text for c in table.label_caveats if c.applies(noise)]
        before_report = time.perf_counter()
        from ..audit.report import write_report
        # An absolute source: the report's fix list names it for `imagesieve fix`, from any folder.
        s = write_report(results, out, os.path.abspath(args.source) if os.path.exists(args.source) else args.source)
        report_seconds = time.perf_counter() - before_report
    except KeyboardInterrupt:
        print("\ninterrupted during the analyses: the embeddings are complete and kept; rerun to finish",
              file=sys.stderr)
        return 130
    took = time.perf_counter() - started
    print()
    # "with an embedding": a rerun reuses them (the embedding line says how many were made now)
    print(f"== imagesieve audit: {s['images']} images, {s['embedded']} with an embedding ({embedded_line(counts)}), "
          f"{s['failed']} failed ({took:.0f} s) ==")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in {**s["seconds"], "report": report_seconds}.items()))
    if "duplicate_pairs" in s:
        outside = s["images_paired_outside_groups"]
        from imagesieve.cli import counted
        print(f"duplicate groups ({s['duplicate_method']}): {s['duplicate_groups']} covering "
              f"{s['images_in_groups']} images" + (
                  f", and {counted(outside, 'more image')} paired but in no group (every two images of a group are "
                  "paired; these pair with members of a group they cannot join)" if outside else "")
              + " (the pairs: duplicates, leakage and label conflicts below)")
        print(f"duplicate threshold: {s['duplicate_threshold_reason']}")
        if s.get("near_misses"):
            print(f"near misses: {s['near_misses']} candidate pairs stage 2 rejected that came closest "
                  "(near_misses.parquet and the report's list: where to look for a copy that was not found)")
    if "label_suspects" in s:
        print(f"labels: {s['label_suspects']} suspects flagged; "
              + results.label_scores.noise_split.describe(results.class_names))
    if "sample_size_answer" in s:
        print(f"quantity: {s['sample_size_answer']}")
    from ..checks.base import FlaggedPairs
    for name, counts in s.get("checks", {}).items():
        if len(counts) == 1:          # an answer, not a list of issues (the sample size, printed above)
            continue
        issues = results.checks[name].issues
        found = ", ".join(f"{k.replace('_', ' ')} {v}" + (" pairs" if isinstance(issues[k], FlaggedPairs) else "")
                          for k, v in counts.items() if k != "measured" and v)
        print(f"{name.replace('_', ' ')}: {found or 'nothing flagged'} (of {counts['measured']} images measured)")
    for n in s["notes"]:
        print(f"note: {n}")
    failed = [(p, e) for p, e in zip(paths, errors) if e]
    if backend.name == "in-process":       # every refusal for size ends "above the limit of <max pixels>"
        too_large = sum(1 for _, e in failed if e.endswith(f"above the limit of {backend.max_pixels}"))
        if too_large:
            print(f"note: {too_large} image(s) above the pixel limit of {backend.max_pixels:,}: --max-pixels "
                  "raises it")
    for p, e in failed[:FAILED_SHOWN]:
        print(f"failed: {p}: {e}")
    if len(failed) > FAILED_SHOWN:
        print(f"failed: {len(failed) - FAILED_SHOWN} more: every one in the report's list 'Images that could not "
              "be read or decoded' and in images.parquet (column error)")
    print(f"report: {out / 'report.html'} (with report_data/; also report.json, images.parquet, "
          "duplicate_pairs.parquet, duplicate_groups.parquet"
          + (", near_misses.parquet" if "near_misses" in s else "")
          + (", pred_probs.npy, labels.npy" if "label_suspects" in s else "") + ")")
    return 1 if failed and args.strict else 0
