"""``imagesieve samplesize SOURCE [--target 0.95] [--at 20000 ...]``: how many images are enough.

SOURCE is a folder with one sub-folder per class (optionally under
train/val/test) or a CSV manifest path,label[,split]. Images in a "test"
split are the test set; without one, --test-fraction is held out. Embeds
in-process (no server), trains the classifier on growing stratified subsets,
fits learning curves, prints the points, the chosen fit, the images needed
for the target and the accuracy expected at the --at sizes (by default, with
all the training images and with twice as many), each with a bootstrap interval
(repeats and test images resampled), and writes DIR/samplesize.json,
DIR/learning_curve.png and DIR/learning_curve.svg.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from imagesieve.progress import StageProgress

from ..analysis.classifiers import EMBEDDING_CLASSIFIERS
from ..analysis.defaults import LABELS_CLASSIFIER, LARGE_SWEEP, SWEEP_CLASSIFIER
from .common import add_embeddings_argument, parse_fraction



def parse_accuracy(text: str) -> float:
    """"95%" -> 0.95, "0.95" -> 0.95; must lie in (0, 1): 100% is never reached."""
    value = parse_fraction(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"a target accuracy must lie below 100%, got {text!r}")
    return value




def parse_size(text: str) -> int:
    """"20000", "20k", "1.5M" -> images (a whole number >= 1)."""
    t = text.strip().lower().replace(",", "").replace("_", "")
    scale = {"k": 10**3, "m": 10**6}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if scale > 1 else t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of images: {text!r}") from None
    if not 1 <= value <= 1e12 or value != round(value):      # NaN and inf fail the range first
        raise argparse.ArgumentTypeError(f"a number of images must be a whole number from 1 to 1e12; got {text!r}")
    return int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="folder of class folders, or a CSV manifest path,label[,split]")
    parser.add_argument("--target", type=parse_accuracy, default=None,
                        help="images needed for this test accuracy, e.g. 0.95 or 95%%")
    parser.add_argument("--at", type=parse_size, nargs="+", default=[], metavar="N",
                        help="accuracy expected with N training images, e.g. --at 5000 20k 1M "
                             "(default: all the training images and twice as many)")
    parser.add_argument("--out", default="samplesize_out", help="output folder (default ./samplesize_out)")
    parser.add_argument("--fractions", type=parse_fraction, nargs="+", default=None,
                        help="subset sizes as fractions of the training images (default 5%% 10%% 20%% 35%% 50%%)")
    parser.add_argument("--repeats", type=int, default=5, help="subsets per size (default 5)")
    parser.add_argument("--test-fraction", type=parse_fraction, default=0.2,
                        help="held out as the test split when SOURCE has no test split (default 0.2)")
    parser.add_argument("--classifier", choices=EMBEDDING_CLASSIFIERS, default=None,
                        help=f"classifier trained on the embeddings (default {SWEEP_CLASSIFIER}, and "
                             f"{LABELS_CLASSIFIER} above {LARGE_SWEEP:,} training images, as in the audit and the "
                             "SampleSizeSweep job)")
    parser.add_argument("--model", default="mobilenet_v1", help="embedding model name or manifest path")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    add_embeddings_argument(parser)



def run(args: argparse.Namespace) -> int:
    from ..analysis.sample_size.sweep import DEFAULT_FRACTIONS
    from ..checks import sample_size
    from .common import embed_paths, labelled_records, store_dir

    try:
        records = labelled_records(args.source)
    except ValueError as e:
        print(f"imagesieve samplesize: {e}", file=sys.stderr)
        return 2
    if args.repeats < 1 or args.bootstrap < 1:
        print("imagesieve samplesize: --repeats and --bootstrap must be >= 1", file=sys.stderr)
        return 2
    fractions = tuple(sorted(args.fractions)) if args.fractions else DEFAULT_FRACTIONS

    store = store_dir(args.embeddings, args.out)
    try:
        vectors, errors, _ = embed_paths([rec.path for rec in records], args.model, store=store)
    except ValueError as e:
        print(f"imagesieve samplesize: {e}", file=sys.stderr)
        return 2
    ok = np.array([not e for e in errors], dtype=bool)
    for rec, e in zip(records, errors):
        if e:
            print(f"skipped {rec.path}: {e}", file=sys.stderr)
    labels = np.array([rec.label for rec in records])[ok]
    is_test = np.array([rec.split == "test" for rec in records], dtype=bool)[ok]

    progress = StageProgress()
    try:
        params = sample_size.Params(target=args.target, at=tuple(args.at) or None, classifier=args.classifier,
                                    fractions=fractions, repeats=args.repeats, test_fraction=args.test_fraction,
                                    bootstrap=args.bootstrap, seed=args.seed)
        found = sample_size.run(vectors[ok], list(labels), ["test" if t else "" for t in is_test], params,
                                report=progress, title=f"{Path(args.source).name}: {{classifier}} on {args.model}",
                                cache=store)
    except ValueError as e:
        progress.close()
        print(f"imagesieve samplesize: {e}", file=sys.stderr)
        return 2
    for note in found.notes:
        print(f"imagesieve samplesize: {note}", file=sys.stderr)
    if found.details is None:
        progress.close()
        return 2
    rep = found.details
    progress.close()

    a, s = rep.analysis, rep.sweep
    print(f"{len(labels)} images, {len(s.classes)} classes; test split: {s.test_source}; "
          f"classifier {s.classifier} on {args.model} embeddings")
    print(f"{'fraction':>8} {'images':>8} {'mean acc':>9} {'std':>7}")
    for f, n, m, sd in zip(s.fractions, s.sizes, a.means, a.stds):
        print(f"{f:>8.0%} {n:>8} {m:>9.4f} {sd:>7.4f}")
    per_class = sorted(rep.per_class(len(s.sizes) - 1).items(), key=lambda kv: kv[1])
    print(f"per-class accuracy at {s.sizes[-1]} images, weakest first: "
          + ", ".join(f"{c} {v:.2f}" for c, v in per_class[:8]) + (" ..." if len(per_class) > 8 else ""))
    for name, fit in a.fits.items():
        ceiling = "none" if math.isinf(fit.ceiling) else f"{fit.ceiling:.4f}"
        mark = "  <- chosen" if name == a.chosen else ""
        print(f"{name:<18} params {', '.join(f'{p:.6g}' for p in fit.params):<36} ceiling {ceiling:<7} "
              f"hold-out error {a.holdout_errors[name]:.4f}{mark}")
    print(a.answer)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "samplesize.json").write_text(json.dumps(rep.to_dict(), indent=2))
    (out / "learning_curve.png").write_bytes(rep.plot_png)
    (out / "learning_curve.svg").write_text(rep.plot_svg)
    print(f"wrote {out / 'samplesize.json'}, {out / 'learning_curve.png'}, {out / 'learning_curve.svg'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagesieve samplesize", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
