"""``imagesieve calibrate PATHS``: choose the near-duplicate threshold for
your own images.

Makes altered copies of a sample of your images (every kind in
imagesieve.alterations), embeds originals and copies (through ``--server``,
or in-process), and measures at each threshold the recall of copies (cosine
to their source >= t) and the false-pair rate among your distinct images.
Suggests the lowest threshold whose expected false pairs per 1,000 images
(in a collection of ``--collection-size``, default the images given) stay
under ``--max-false-pairs-per-1k``: a bound per image, as users count
mistakes, not per pair (1% of the pairs of 1,860 images is ~17,000 pairs).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
PAIR_FLOOR = 0.3   # distinct pairs below this cosine are counted, not listed
COPY_COSINE = 0.98   # distinct pairs of the sample at or above this are named: likely copies, counted as false
COPY_MIN_SIDE = 448   # px: originals are altered as decoded at least this on their shorter side (where they allow)


def pictures(originals: list[bytes]) -> tuple[list[Image.Image | None], np.ndarray]:
    """(each original as the server decodes it before embedding: turned as
    displayed, transparency composited, within the decode limits, at least
    COPY_MIN_SIDE px on its shorter side where the file allows; or None, (N,)
    bool decoded). The altered copies are made from these: made from a
    file's raw raster, a photo stored on its side with an EXIF orientation
    was altered turned against its upright original, and a transparent
    picture on the colour its file keeps under the transparent pixels."""
    from imagesieve_server.engine.decode import DecodeError, decode_image
    out = []
    for b in originals:
        try:
            out.append(decode_image(b, COPY_MIN_SIDE))
        except DecodeError:
            out.append(None)
    return out, np.array([p is not None for p in out], bool)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--server", default=None, help="host:port; default: embed in-process")
    p.add_argument("--model", default="mobilenet_v1", help="model for in-process embedding")
    p.add_argument("--sample", type=int, default=200, help="images to sample (default 200)")
    p.add_argument("--max-false-pairs-per-1k", type=float, default=0.5,
                   help="expected false pairs per 1,000 images at the suggested threshold (default 0.5)")
    p.add_argument("--collection-size", type=int, default=0,
                   help="images the threshold will serve (false pairs grow with it); default: the images given")
    p.add_argument("--max-false-pair-rate", type=float, default=None,
                   help="a per-pair bound instead (share of distinct pairs); overrides the per-1k bound")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the table as JSON here")


def _embedder(args):
    """A function list[bytes] -> (vectors (N, D), ok (N,))."""
    if args.server:
        from imagesieve import Client
        client = Client(args.server)

        def embed(images):
            res = client.embed(images)
            return res.vectors, res.ok
        return embed
    from imagesieve_server.engine import Embedder
    emb = Embedder.from_model(args.model)

    def embed(images):
        out = emb.embed_all(images)
        dim = emb.dim
        return (np.stack([o.vector if o.ok else np.zeros(dim, np.float32) for o in out]),
                np.array([o.ok for o in out]))
    return embed


def calibrate(originals: list[bytes], embed, max_false_pairs_per_1k: float = 0.5, collection_size: int = 0,
              max_false_pair_rate: float | None = None) -> dict:
    """Table of recall, false-pair rate and false pairs per 1k images (in a
    collection of ``collection_size``, default the sample's size) per
    threshold, and a suggestion under the per-1k bound (or, given,
    ``max_false_pair_rate`` per pair)."""
    from imagesieve.alterations import ALTERATIONS, encode
    from imagesieve.progress import Progress
    from imagesieve_server.analysis.duplicates.calibrate import rate_for_per_1k, suggest_threshold, threshold_table
    from imagesieve_server.analysis.duplicates.pairs import pairs_above_threshold

    sampled = len(originals)
    base, ok = embed(originals)
    pil, decoded = pictures(originals)
    ok = np.asarray(ok, bool) & decoded
    base, originals, pil = base[ok], [o for o, k in zip(originals, ok) if k], [p for p, k in zip(pil, ok) if k]
    if len(originals) < 3:
        raise ValueError("calibration needs at least 3 readable images")
    pos, by_kind = [], {}
    with Progress(len(ALTERATIONS), "altered copies", unit="kinds") as bar:
        for kind, fn in ALTERATIONS.items():
            vec, vok = embed([encode(fn(im)) for im in pil])
            sims = np.sum(vec * base, axis=1)[vok]
            by_kind[kind] = sims
            pos.append(sims)
            bar.update()
    pos = np.concatenate(pos)
    _, _, listed = pairs_above_threshold(base, PAIR_FLOOR)
    n_pairs = len(base) * (len(base) - 1) // 2
    neg = np.concatenate([listed, np.full(n_pairs - len(listed), -1.0, np.float32)])
    size = max(collection_size or len(base), 2)
    rate = max_false_pair_rate if max_false_pair_rate is not None else rate_for_per_1k(max_false_pairs_per_1k, size)
    table = threshold_table(pos, neg, THRESHOLDS, size)
    best = suggest_threshold(pos, neg, rate, size)
    return {
        "images": len(originals), "copies": int(len(pos)), "distinct_pairs": n_pairs,
        "collection_size": size, "max_false_pair_rate": rate,
        # The sample cannot see rates below one pair in n_pairs: such a bound
        # is met by the sample, not shown to hold for the collection.
        "bound_resolvable": bool(rate * n_pairs >= 1),
        "table": [r._asdict() for r in table],
        "suggested": best._asdict(),
        "recall_by_kind_at_suggested": {k: round(float(np.mean(s >= best.threshold)), 3)
                                        for k, s in by_kind.items()},
        "median_cosine_by_kind": {k: round(float(np.median(s)), 4) for k, s in by_kind.items() if len(s)},
        # The sample is taken as distinct pictures: pairs this close are most likely copies.
        "sample_pairs_at_copy_cosine": int(np.sum(listed >= COPY_COSINE)),
        "unreadable": sampled - len(originals),
    }


def run(args) -> int:
    from imagesieve.cli import iter_image_paths
    paths = iter_image_paths(args.paths)
    if len(paths) < 3:
        print("imagesieve calibrate: need at least 3 images", file=sys.stderr)
        return 2
    random.Random(args.seed).shuffle(paths)
    originals = [p.read_bytes() for p in paths[: args.sample]]
    try:
        result = calibrate(originals, _embedder(args), args.max_false_pairs_per_1k,
                           args.collection_size or len(paths), args.max_false_pair_rate)
    except ValueError as e:
        print(f"imagesieve calibrate: {e}", file=sys.stderr)
        return 2
    print(f"{result['images']} images, {result['copies']} altered copies, "
          f"{result['distinct_pairs']} distinct pairs")
    size = result["collection_size"]
    print(f"{'threshold':>9}  {'recall':>7}  {'false-pair rate':>15}  {f'false pairs per 1k of {size}':>26}")
    for r in result["table"]:
        print(f"{r['threshold']:9.2f}  {r['recall']:7.3f}  {r['false_pair_rate']:15.5f}  "
              f"{r['false_pairs_per_1k']:26.2f}")
    s = result["suggested"]
    bound = (f"bound {args.max_false_pair_rate} per pair" if args.max_false_pair_rate is not None
             else f"bound {args.max_false_pairs_per_1k} per 1k images")
    print(f"suggested threshold {s['threshold']:.3f}: recall {s['recall']:.3f}, "
          f"{s['false_pairs_per_1k']:.2f} false pairs per 1,000 images in a collection of {size} ({bound})")
    if not result["bound_resolvable"]:
        print(f"note: {result['distinct_pairs']} distinct pairs in the sample cannot measure a rate as low as "
              f"{result['max_false_pair_rate']:.2g} a pair; the threshold is above every distinct pair seen "
              f"(a larger --sample measures it)")
    if result["sample_pairs_at_copy_cosine"]:
        print(f"note: {result['sample_pairs_at_copy_cosine']} pair(s) of the sampled images are at cosine >= "
              f"{COPY_COSINE}: most likely copies of each other, counted above as false pairs (calibration takes "
              "the sample as distinct pictures; `imagesieve audit` finds the copies to remove first)")
    if result["unreadable"]:
        print(f"note: {result['unreadable']} of the sampled images could not be read or embedded: left out")
    weak = {k: v for k, v in result["recall_by_kind_at_suggested"].items() if v < 0.95}
    if weak:
        print("copies often missed at that threshold: " + ", ".join(f"{k} {v:.2f}" for k, v in weak.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0
