"""``imagesieve labels SOURCE --top 1%``: which labels look wrong.

SOURCE is a folder with one sub-folder per class (optionally under
train/val/test) or a CSV manifest path,label[,split]. Embeds in-process
(no server), scores the labels (``analysis.labels``), prints the suspects,
writes DIR/label_suspects.json and DIR/label_suspects.png (contact sheet).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from imagesieve.progress import StageProgress

from ..analysis.classifiers import EMBEDDING_CLASSIFIERS
from ..analysis.defaults import LABELS_CLASSIFIER
from .common import (add_embeddings_argument, duplicate_pairs, embed_into_store, labelled_records, parse_fraction,
                     store_dir)





def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="folder of class folders, or a CSV manifest path,label[,split]")
    # Defaults None: the label check's own (checks.label_issues.Params), the audit's and the job's too.
    parser.add_argument("--top", type=parse_fraction, default=None,
                        help="fraction to flag, e.g. 1%% or 0.01 (default 1%%)")
    parser.add_argument("--method", choices=["out_of_fold", "labelfix"], default=None,
                        help="out_of_fold (default; K-fold predictions) or labelfix (train on all, "
                             "predict all, as the paper: a classifier that fits every label memorizes the wrong ones)")
    parser.add_argument("--classifier", choices=EMBEDDING_CLASSIFIERS, default=None,
                        help=f"classifier on the embeddings (default {LABELS_CLASSIFIER}: shrunk linear discriminant; "
                             "measured best and fastest, README 'Mislabeled images')")
    parser.add_argument("--pixels", action="store_true",
                        help="also train a small CNN on the images' pixels (48x48 gray thumbnails) and average "
                             "it with the embedding classifier: for thousands of images (it hurt on a few "
                             "hundred); needs the torch extra, without it embeddings alone with a note")
    parser.add_argument("--folds", type=int, default=None,
                        help="out-of-fold folds (default 5; fewer when the largest class is smaller)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--neighbors", type=int, default=None, help="k nearest images as extra evidence (default 10)")
    parser.add_argument("--neighbor-weight", type=float, default=None,
                        help="weight of the neighbours' labels blended into the out-of-fold probabilities "
                             "(0..1, default 0.2)")
    parser.add_argument("--out", default="imagesieve_labels", help="output folder (default ./imagesieve_labels)")
    parser.add_argument("--model", default="mobilenet_v1", help="embedding model (default mobilenet_v1)")
    parser.add_argument("--sheet-columns", type=int, default=6)
    add_embeddings_argument(parser)


def run(args) -> int:
    from imagesieve_server.analysis.labels import count
    from imagesieve_server.checks import label_issues
    from imagesieve_server.engine.signature import thumbnails
    from imagesieve.contact_sheet import SheetItem, save_contact_sheet

    try:
        records = labelled_records(args.source)
    except ValueError as e:
        print(f"imagesieve labels: {e}", file=sys.stderr)
        return 2
    paths = [r.path for r in records]
    store = store_dir(args.embeddings, args.out)
    try:
        loaded = embed_into_store(paths, args.model, store)
    except ValueError as e:
        print(f"imagesieve labels: {e}", file=sys.stderr)
        return 2
    vectors, errors, signatures = loaded.vectors, loaded.errors, loaded.signatures
    failed = [(str(p), e) for p, e in zip(paths, errors) if e]
    for p, e in failed:
        print(f"failed: {p}: {e}", file=sys.stderr)
    ok = np.array([not e for e in errors])
    recs = [r for r, good in zip(records, ok) if good]
    class_names = sorted({r.label for r in recs})
    if len(class_names) < 2:
        print(f"imagesieve labels: need at least 2 classes with readable images, found {len(class_names)}",
              file=sys.stderr)
        return 2
    try:
        asked = {"method": args.method, "classifier": args.classifier, "folds": args.folds, "top_fraction": args.top,
                 "neighbors": args.neighbors, "neighbor_weight": args.neighbor_weight}
        params = label_issues.Params(seed=args.seed, pixels=args.pixels,
                                     **{k: v for k, v in asked.items() if v is not None})
        with StageProgress("scoring: ") as report:
            found = label_issues.run(vectors[ok], [r.label for r in recs], params, report=report,
                                     pixels=thumbnails(signatures[ok]) if args.pixels else None)
    except ValueError as e:
        print(f"imagesieve labels: {e}", file=sys.stderr)
        return 2
    for note in found.notes:
        print(f"imagesieve labels: {note}", file=sys.stderr)
    res, used = found.details.scores, found.details.scorer
    folds = label_issues.folds_for(found.details.label_ids, params.folds)
    # Copies of one picture with different labels: the duplicates check's pairs (one definition).
    with StageProgress("duplicates: ") as report:
        a, b, pairs_from = duplicate_pairs(paths, loaded, store, report)
    given = [r.label for r in records]
    conflicting = [(str(paths[i]), str(paths[j])) for i, j in zip(a.tolist(), b.tolist()) if given[i] != given[j]]

    ambiguous = res.in_ambiguous_pair(found.details.label_ids)
    split = res.noise_split

    def entry(i: int) -> dict:
        agree = res.neighbor_agreement[i]
        return {"path": str(recs[i].path), "given_label": recs[i].label,
                "suggested_label": class_names[res.suggested[i]],
                "suggested_probability": float(res.suggested_probability[i]), "score": float(res.scores[i]),
                "neighbor_agreement": float(agree) if np.isfinite(agree) else None,
                "in_ambiguous_pair": bool(ambiguous[i])}

    suspects = [dict(entry(int(i)), rank=k + 1) for k, i in enumerate(res.suspects)]
    noise = [{"given_label": class_names[g], "true_label": class_names[t], "count": round(c, 1)}
             for g, t, c in count.noise_pairs(res.joint, min_count=0.5)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"source": str(args.source), "method": params.method, "classifier": used, "folds": folds,
           "seed": args.seed, "top_fraction": params.top_fraction, "num_images": len(recs), "classes": class_names,
           "estimated_noise_rate": res.noise_rate, "estimated_wrong_rate": split.wrong_rate,
           "estimated_ambiguous_rate": split.ambiguous_rate,
           "ambiguous_pairs": split.named_pairs(class_names),
           "noise": noise, "suspects": suspects,
           "conflicting_duplicates": [list(p) for p in conflicting], "duplicate_pairs_from": pairs_from,
           "failed": [{"path": p, "error": e} for p, e in failed],
           "scores": [entry(i) for i in range(len(recs))]}
    json_path = out / "label_suspects.json"
    json_path.write_text(json.dumps(doc, indent=1))
    sheet_path = save_contact_sheet(
        [SheetItem(s["path"], [f"#{s['rank']} score {score_text(s['score'])}", f"given: {s['given_label']}",
                               f"suggest: {s['suggested_label']} {s['suggested_probability']:.2f}"])
         for s in suspects], out / "label_suspects.png", columns=args.sheet_columns,
        title=f"{len(suspects)} label suspects of {len(recs)} ({params.method}, {used})")

    print(f"{'rank':>4} {'score':>8} {'given':>14} {'suggested':>14} {'p':>5} {'nbr':>4}  path")
    for s in suspects:
        nbr = f"{s['neighbor_agreement']:.1f}" if s["neighbor_agreement"] is not None else "-"
        print(f"{s['rank']:>4} {score_text(s['score']):>8} {s['given_label'][:14]:>14} {s['suggested_label'][:14]:>14} "
              f"{s['suggested_probability']:5.2f} {nbr:>4}  {s['path']}")
    print(f"{split.describe(class_names)} ({len(recs)} images, {len(class_names)} classes); "
          f"{len(conflicting)} duplicate pairs with different labels ({pairs_from})")
    print(f"wrote {json_path} and {sheet_path}")
    return 0


def score_text(v: float) -> str:
    """A label-quality score as a person reads it: three decimals, or where
    they would all be 0 (a probability of 6e-258 and one of 3e-12 are not
    alike), its order of magnitude: ``6.0e-258``."""
    return f"{v:.3f}" if v >= 1e-3 or v <= 0 else f"{v:.1e}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="imagesieve labels", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
