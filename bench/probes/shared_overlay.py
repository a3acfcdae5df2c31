"""Different pictures under one overlay: are they paired by the overlay's keypoints?

    .venv/bin/python bench/probes/shared_overlay.py [--kind-sets benchmark,probe,probe2]

1. The 32 photos of bench/dup_quality.py, each under one overlay (a line of text in a
   white band across the bottom, or a small dark corner logo), 16 of them also stored
   plain (their copies): verified pairs of different photos, with their keypoint inliers
   and agreement.
2. Where a keypoint match lies, as a possible guard: for every pair that only the keypoint
   test confirmed (verified with the inliers, not without them) in dup_quality's photos,
   illustrations and icons with each set of copy kinds, the share of an image's keypoint
   area (the convex hull of all its keypoints) that the inliers' hull covers, the larger
   of the two images', for pairs of one picture (or one design) and for unrelated pairs.

Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dup_quality as dq  # noqa: E402
from photos import encode  # noqa: E402

import imagesieve_server.analysis.duplicates.find as find  # noqa: E402
from imagesieve_server.engine import Embedder  # noqa: E402
from imagesieve_server.engine import keypoints as kp  # noqa: E402
from imagesieve_server.engine.signature import keypoints  # noqa: E402


def overlaid(im: Image.Image, style: str) -> Image.Image:
    im = im.convert("RGB").copy()
    w, h = im.size
    d = ImageDraw.Draw(im)
    if style == "corner_logo":
        d.rectangle((int(w * .55), int(h * .86), w, h), fill=(20, 20, 20))
        d.text((int(w * .57), int(h * .875)), "(c) SieveStock", font=ImageFont.load_default(max(12, w // 16)),
               fill="white")
    else:
        d.rectangle((0, int(h * .8), w, h), fill=(255, 255, 255))
        d.text((int(w * .05), int(h * .83)), "WHEN THE MODEL SAYS 99%", font=ImageFont.load_default(max(12, w // 12)),
               fill="black")
    return im


def _hull_area(points: np.ndarray) -> float:
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32)))) if len(points) >= 3 else 0.0


def inlier_coverage(block_a: np.ndarray, block_b: np.ndarray) -> float:
    """For the keypoints engine.keypoints.matched_points matches, the larger
    of the two images' shares of their keypoints' hull that the inliers'
    hull covers; 0 when nothing matches."""
    matched = kp.matched_points(block_a, block_b)
    if matched is None:
        return 0.0
    src, dst, pa, pb = matched
    return max(_hull_area(src) / max(_hull_area(pa), 1e-6), _hull_area(dst) / max(_hull_area(pb), 1e-6))


def _embedded(emb, blobs):
    out = emb.embed_all(blobs, with_signatures=True)
    return np.stack([o.vector for o in out]), np.stack([o.signature for o in out])


def _find(vectors, signatures, blobs):
    n = len(blobs)
    return find.find_duplicates(vectors, [str(i) for i in range(n)], [""] * n, [""] * n,
                                [hashlib.sha256(b).hexdigest() for b in blobs], signatures=signatures)


def overlays(emb) -> dict:
    photos = [im for im, _ in dq.load("photos", 0)]
    out = {}
    for style in ("caption_band", "corner_logo"):
        blobs = [encode(overlaid(im, style)) for im in photos] + [encode(im) for im in photos[:16]]
        source = np.r_[np.arange(len(photos)), np.arange(16)]
        v, s = _embedded(emb, blobs)
        rep = _find(v, s, blobs)
        same = source[rep.a] == source[rep.b]
        out[style] = {"photos": len(photos), "copies_found": int(same.sum()), "copies": 16,
                      "pairs_of_different_photos": [
                          {"a": int(a), "b": int(b), "keypoint_inliers": int(k), "agreement": round(float(g), 3),
                           "coverage": round(inlier_coverage(keypoints(s[a]), keypoints(s[b])), 3)}
                          for a, b, k, g in zip(rep.a[~same], rep.b[~same], rep.evidence.keypoint_inliers[~same],
                                                rep.evidence.agreement[~same])]}
        print(json.dumps({style: out[style]}), file=sys.stderr, flush=True)
    return out


def keypoint_only_coverage(emb, kind_sets: list[str]) -> dict:
    """Coverage of the pairs only the keypoint test confirmed, per collection and kind set."""
    captured = {}
    verified_pairs = find.verified_pairs

    def capturing(n, a, b, g, c, **kw):
        out = verified_pairs(n, a, b, g, c, **kw)
        without = dict(kw, keypoint_inliers=np.zeros_like(kw["keypoint_inliers"]))
        captured.update(a=np.asarray(a), b=np.asarray(b), only=out[0] & ~verified_pairs(n, a, b, g, c, **without)[0])
        return out

    find.verified_pairs = capturing
    try:
        rows = {}
        for kinds in kind_sets:
            copy_kinds = {"benchmark": None, "probe": dq.PROBE_KINDS, "probe2": dq.PROBE2_KINDS}[kinds]
            for name in ("photos", "illustrations", "icons"):
                originals = dq.load(name, 0)
                blobs, source, family, kind, _ = dq.build(originals, 1.0 if name == "photos" else 0.2,
                                                          copy_kinds=copy_kinds)
                v, s = _embedded(emb, blobs)
                _find(v, s, blobs)
                related, unrelated = [], []
                for x, y in zip(captured["a"][captured["only"]].tolist(), captured["b"][captured["only"]].tolist()):
                    cov = round(inlier_coverage(keypoints(s[x]), keypoints(s[y])), 3)
                    entry = {"coverage": cov, "kinds": f"{kind[x]}/{kind[y]}"}
                    (related if source[x] == source[y] or family[x] == family[y] else unrelated).append(entry)
                rows[f"{name}/{kinds}"] = {"related": sorted(related, key=lambda e: e["coverage"]),
                                           "unrelated": sorted(unrelated, key=lambda e: e["coverage"])}
                print(json.dumps({f"{name}/{kinds}": rows[f"{name}/{kinds}"]}), file=sys.stderr, flush=True)
    finally:
        find.verified_pairs = verified_pairs
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind-sets", default="benchmark,probe,probe2")
    args = ap.parse_args()
    emb = Embedder.from_model("mobilenet_v1")
    try:
        result = {"overlays": overlays(emb), "keypoint_only": keypoint_only_coverage(emb, args.kind_sets.split(","))}
    finally:
        emb.close()
    related = [e["coverage"] for r in result["keypoint_only"].values() for e in r["related"]]
    unrelated = [e["coverage"] for r in result["keypoint_only"].values() for e in r["unrelated"]]
    result["min_related_coverage"] = min(related, default=None)
    result["unrelated_coverages"] = sorted(unrelated)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
