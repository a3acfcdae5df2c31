"""``imagesieve consensus SOURCE --out DIR``: several annotators per image.

SOURCE is a CSV manifest with one row per (image, annotator): columns
path,annotator,label (relative paths are relative to the CSV's folder).
Embeds in-process (no server), trains an out-of-fold classifier on the
majority-vote labels (``analysis.labels.predict``), combines the votes and
the model (``analysis.consensus``; Dawid-Skene with the model as each
image's prior by default), and writes:

- DIR/consensus.json: per image consensus, agreement, quality and every
  annotator's label; per annotator agreement and estimated accuracy;
  Krippendorff's alpha; ambiguous class pairs with a suggestion; the review queue.
- DIR/review_queue.png: the images to review, worst first, with every label.
- DIR/ambiguous_pairs.png: example images for each confused class pair.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from ..analysis.consensus.aggregate import AGGREGATORS
from ..analysis.classifiers import EMBEDDING_CLASSIFIERS
from ..analysis.defaults import CONSENSUS_CLASSIFIER
from ..labelled_source import read_csv_rows
from .common import add_embeddings_argument, embed_paths, store_dir



def load_annotations(source: str | Path) -> tuple[list[Path], list[str], list[str], np.ndarray]:
    """Read the manifest: (image paths sorted, annotators sorted, classes sorted,
    labels (N, M) int with -1 where an annotator did not label an image).
    ValueError for a bad file, or one annotator giving one image two labels."""
    source = Path(source)
    if not (source.is_file() and source.suffix.lower() == ".csv"):
        raise ValueError(f"{source}: expected a .csv manifest with columns path,annotator,label")
    rows = read_csv_rows(source)
    missing = {"path", "annotator", "label"} - set(rows[0]) if rows else set()
    if missing:
        raise ValueError(f"{source}: CSV needs columns path,annotator,label; missing {sorted(missing)}")
    given: dict[tuple[Path, str], str] = {}
    for line, row in enumerate(rows, start=2):
        raw, ann, lab = row["path"].strip(), row["annotator"].strip(), row["label"].strip()
        if not raw or not ann:
            raise ValueError(f"{source}:{line}: empty path or annotator")
        if not lab:
            continue  # an empty label = this annotator skipped the image
        p = Path(raw)
        p = p if p.is_absolute() else source.parent / p
        old = given.setdefault((p, ann), lab)
        if old != lab:
            raise ValueError(f"{source}:{line}: annotator {ann!r} gave {raw} two labels ({old!r}, {lab!r})")
    if not given:
        raise ValueError(f"{source}: no labels found")
    paths = sorted({p for p, _ in given}, key=str)
    annotators = sorted({a for _, a in given})
    classes = sorted(set(given.values()))
    pi = {p: i for i, p in enumerate(paths)}
    ai = {a: j for j, a in enumerate(annotators)}
    ci = {c: k for k, c in enumerate(classes)}
    labels = np.full((len(paths), len(annotators)), -1, dtype=np.int64)
    for (p, a), lab in given.items():
        labels[pi[p], ai[a]] = ci[lab]
    return paths, annotators, classes, labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="CSV manifest with columns path,annotator,label (a row per image and annotator)")
    parser.add_argument("--out", default="imagesieve_consensus", help="output folder (default ./imagesieve_consensus)")
    parser.add_argument("--method", choices=AGGREGATORS, default="dawid_skene",
                        help="dawid_skene (default: EM with per-annotator confusion, the model as prior), "
                             "crowdlab, or majority")
    parser.add_argument("--no-model", action="store_true", help="do not embed or train a classifier (votes only)")
    parser.add_argument("--classifier", choices=EMBEDDING_CLASSIFIERS, default=CONSENSUS_CLASSIFIER,
                        help=f"the model trained on the embeddings (default {CONSENSUS_CLASSIFIER}, as the "
                             "Consensus job)")
    parser.add_argument("--folds", type=int, default=5,
                        help="out-of-fold folds for the model, fewer when the largest class is smaller (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-weight", type=float, default=1.0,
                        help="temperature of the model's probabilities as Dawid-Skene prior (0 ignores the model)")
    parser.add_argument("--weak", type=float, default=0.7,
                        help="consensus quality below this puts an image in the review queue (default 0.7)")
    parser.add_argument("--review", type=int, default=48, help="images on the review contact sheet (default 48)")
    parser.add_argument("--examples", type=int, default=6, help="example images per ambiguous pair (default 6)")
    parser.add_argument("--model", default="mobilenet_v1", help="embedding model (default mobilenet_v1)")
    parser.add_argument("--sheet-columns", type=int, default=6)
    add_embeddings_argument(parser)


def _num(x) -> float | None:
    x = float(x)
    return round(x, 4) if math.isfinite(x) else None


def _pair_examples(labels: np.ndarray, consensus: np.ndarray, model_label: np.ndarray | None, a: int, b: int,
                   limit: int) -> list[int]:
    """Images whose annotators split between a and b (most even split first),
    then images whose consensus is one and the model's label the other."""
    na, nb = (labels == a).sum(axis=1), (labels == b).sum(axis=1)
    split = np.flatnonzero((na > 0) & (nb > 0))
    split = split[np.lexsort((-(na + nb)[split], np.abs(na - nb)[split]))]
    out = list(split[:limit])
    if model_label is not None and len(out) < limit:
        cross = np.flatnonzero(((consensus == a) & (model_label == b)) | ((consensus == b) & (model_label == a)))
        out += [int(i) for i in cross if i not in set(out)][: limit - len(out)]
    return [int(i) for i in out]


def run(args) -> int:
    from imagesieve.contact_sheet import SheetItem, save_contact_sheet
    from PIL import Image

    from ..checks import consensus

    prog = "imagesieve consensus"
    try:
        params = consensus.Params(method=args.method, model=not args.no_model, classifier=args.classifier,
                                  folds=args.folds, weak=args.weak, model_weight=args.model_weight, seed=args.seed)
    except ValueError as e:     # as the Consensus job says it
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    try:
        paths, annotators, classes, labels = load_annotations(args.source)
    except (ValueError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    if len(classes) < 2:
        print(f"{prog}: need at least 2 classes, found {len(classes)}", file=sys.stderr)
        return 2
    k = len(classes)
    failed: list[tuple[str, str]] = []
    vectors = None
    if params.model:
        try:
            vectors, errors, _ = embed_paths(paths, args.model, store=store_dir(args.embeddings, args.out))
        except ValueError as e:
            print(f"{prog}: {e}", file=sys.stderr)
            return 2
        failed = [(str(p), e) for p, e in zip(paths, errors) if e]
        for p, e in failed:
            print(f"failed: {p}: {e}", file=sys.stderr)
        ok = np.array([not e for e in errors])
        paths = [p for p, good in zip(paths, ok) if good]
        labels, vectors = labels[ok], vectors[ok]
        if len(paths) == 0:
            print(f"{prog}: no readable images", file=sys.stderr)
            return 2
    try:
        # A model asked for and impossible is an error, not a silent fallback (as the job).
        found = consensus.run(labels, k, vectors, params, class_names=classes,
                              model_name=f"{args.model} embeddings", without_model="pass --no-model")
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    res, probs, model_label = found.details.result, found.details.probs, found.details.model_label
    model_note = found.details.model_note if params.model else "not used (--no-model)"

    def image_entry(i: int) -> dict:
        d = {"path": str(paths[i]), "consensus": classes[res.consensus[i]], "quality": _num(res.quality[i]),
             "agreement": _num(res.agreement[i]), "num_labels": int(res.num_labels[i]),
             "majority": classes[res.majority[i]],
             "labels": {annotators[j]: classes[labels[i, j]] for j in range(len(annotators)) if labels[i, j] >= 0}}
        if probs is not None:
            d["model_label"] = classes[model_label[i]]
            d["model_probability"] = _num(probs[i, model_label[i]])
        return d

    images = [image_entry(i) for i in range(len(paths))]
    review = [dict(images[int(i)], rank=r + 1,
                   review_score=_num((res.quality[i] + res.agreement[i]) / 2)) for r, i in enumerate(res.review)]
    st = res.annotators
    ann = [{"annotator": a, "num_labels": int(st.num_labels[j]),
            "agreement_with_consensus": _num(st.agreement_with_consensus[j]),
            "agreement_with_others": _num(st.agreement_with_others[j]),
            "estimated_accuracy": _num(st.estimated_accuracy[j])} for j, a in enumerate(annotators)]
    pairs = []
    for pr in res.pairs:
        ex = _pair_examples(labels, res.consensus, model_label, pr.a, pr.b, args.examples)
        pairs.append({"class_a": classes[pr.a], "class_b": classes[pr.b], "score": _num(pr.score),
                      "annotator_rate": _num(pr.annotator_rate), "model_rate": _num(pr.model_rate),
                      "annotator_label_pairs": _num(pr.annotator_pairs), "model_count": _num(pr.model_count),
                      "suggestion": pr.suggestion, "examples": [str(paths[i]) for i in ex], "_ex": ex})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"source": str(args.source), "method": res.method, "model": model_note, "num_images": len(paths),
           "num_annotators": len(annotators), "classes": classes,
           "dataset": {"krippendorff_alpha": _num(res.alpha), "agreement_measure": "Krippendorff's alpha (nominal)",
                       "fleiss_kappa": _num(res.fleiss_kappa),
                       "mean_labels_per_image": _num(res.num_labels.mean()),
                       "images_with_disagreement": int(np.sum(res.agreement < 1.0)),
                       "consensus_differs_from_majority": int(np.sum(res.consensus != res.majority)),
                       "review_queue_size": len(review)},
           "annotators": ann,
           "ambiguous_pairs": [{k2: v for k2, v in p.items() if k2 != "_ex"} for p in pairs],
           "review_queue": review, "images": images,
           "failed": [{"path": p, "error": e} for p, e in failed]}
    json_path = out / "consensus.json"
    json_path.write_text(json.dumps(doc, indent=1))

    def caption(d: dict, head: str) -> list[str]:
        lines = [head, f"consensus: {d['consensus']}"]
        if "model_label" in d:
            lines.append(f"model: {d['model_label']} {d['model_probability']:.2f}")
        items = list(d["labels"].items())
        lines += [f"{a}: {lab}" for a, lab in items[:6]]
        if len(items) > 6:
            lines.append(f"+{len(items) - 6} more labels")
        return lines

    shown = review[: max(args.review, 0)]
    review_png = save_contact_sheet(
        [SheetItem(d["path"], caption(d, f"#{d['rank']} q {d['quality']:.2f} agree {d['agreement']:.0%}"))
         for d in shown], out / "review_queue.png", columns=args.sheet_columns,
        title=f"review queue: {len(review)} of {len(paths)} images (showing {len(shown)}), {res.method}")
    cols = max(1, args.examples)
    blank = Image.new("RGB", (8, 8), (255, 255, 255))
    cells = []
    for p in pairs[:8]:
        head = f"{p['class_a']} vs {p['class_b']}"
        row = [SheetItem(str(paths[i]), [head] + caption(images[i], "")[1:]) for i in p["_ex"][:cols]]
        if not row:
            row = [SheetItem(blank, [head, "no example images"])]
        cells += row + [SheetItem(blank, [])] * (cols - len(row))
    pairs_png = save_contact_sheet(cells, out / "ambiguous_pairs.png", columns=cols,
                                   title=f"{len(pairs)} ambiguous class pairs, one row each" if pairs
                                   else "no ambiguous class pairs")

    print(f"{len(paths)} images, {len(annotators)} annotators, {k} classes, "
          f"{res.num_labels.mean():.2f} labels per image; method {res.method}; model: {model_note}")
    alpha = "undefined" if not math.isfinite(res.alpha) else f"{res.alpha:.3f}"
    print(f"Krippendorff's alpha (nominal): {alpha}; annotators disagree on "
          f"{int(np.sum(res.agreement < 1))} images; consensus differs from majority vote on "
          f"{int(np.sum(res.consensus != res.majority))}")
    print(f"\n{'annotator':>14} {'labels':>6} {'agree w/ consensus':>18} {'est. accuracy':>13}")
    for a in sorted(ann, key=lambda d: -(d["estimated_accuracy"] or 0)):
        ag = "-" if a["agreement_with_consensus"] is None else f"{a['agreement_with_consensus']:.3f}"
        ea = "-" if a["estimated_accuracy"] is None else f"{a['estimated_accuracy']:.3f}"
        print(f"{a['annotator'][:14]:>14} {a['num_labels']:6d} {ag:>18} {ea:>13}")
    print(f"\nreview queue: {len(review)} images (worst first)")
    for d in review[:10]:
        labs = ", ".join(f"{a}={lab}" for a, lab in d["labels"].items())
        print(f"{d['rank']:>4} q {d['quality']:.2f} agree {d['agreement']:.0%} -> {d['consensus']:<12} "
              f"[{labs}]  {d['path']}")
    if len(review) > 10:
        print(f"     ... {len(review) - 10} more in {json_path}")
    print(f"\nambiguous class pairs: {len(pairs)}")
    for p in pairs:
        print(f"  {p['class_a']} / {p['class_b']}: score {p['score']:.2f}. {p['suggestion']}")
    print(f"\nwrote {json_path}, {review_png} and {pairs_png}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="imagesieve consensus", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
