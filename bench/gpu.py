"""Embedding on one GPU host: the PyTorch runtime on CUDA against ONNX Runtime
on all the host's CPU cores, in the same run; plus the torchvision export path.

    python bench/gpu.py [--repeats 3] [--out FILE]

(a) model alone on preprocessed real photos (batches of --batch): ONNX Runtime
    CPU (baseline) and TorchExecutor on CUDA in float32, float16 and bfloat16,
    each with its worst cosine and top-1 agreement against ONNX Runtime; fed
    normalized float32 (``ips``) or uint8 pixels that it normalizes on the GPU
    (``ips_from_pixels``, what the pipeline sends it); ``gpu_kernel_ips`` times
    the module alone on device-resident tensors;
(b) the whole in-process pipeline on real-photo JPEGs at 0.3 and 12 MP, the
    model on the GPU (float32), for each decoder: ``threads`` (the decoding
    thread pool), ``processes`` (shared-memory workers, one a core, their
    buffers page-locked), ``gpu_decode`` (nvJPEG + the resize on the GPU,
    ``engine.gpu_decode``; with the worst and mean cosine of its vectors
    against the threads' on the same photos, and the share of the photos it
    decoded); each over the model alone fed uint8 pixels on this host
    (``over_model_alone``); and the same pipeline on ONNX Runtime CPU
    (``cpu_ips``). Every row reports its own failure (``error``) and the
    others still run;
(c) the torchvision MobileNetV2/V3 export (random weights: no hub here),
    verified against ONNX Runtime by the exporter itself.
Images/s, medians of --repeats. ``--quick``: a smoke-sized run (float32
only, one repeat, few images, no export). Needs a CUDA GPU; last line: one
JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from photos import photos_at  # noqa: E402

from imagesieve_models.manifest import find_model  # noqa: E402
from imagesieve_server.engine import Embedder, decode_image  # noqa: E402
from imagesieve_server.engine.onnx_executor import OnnxExecutor  # noqa: E402
from imagesieve_server.engine.torch_executor import TorchExecutor  # noqa: E402


def rate(fn, n_images: int, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up: cuDNN autotuning, ORT arena growth
    sync()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        rates.append(n_images / (time.perf_counter() - t))
    return round(statistics.median(rates), 1)


def model_alone(manifest_path: Path, tensors: np.ndarray, pixels: np.ndarray, batch: int, repeats: int,
                device: str, dtypes: tuple[str, ...]) -> dict:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run_all(ex, inputs=tensors):
        return [ex.run(inputs[i:i + batch]) for i in range(0, len(inputs), batch)]

    onnx = OnnxExecutor(manifest_path)
    ref_emb, ref_logits = (np.concatenate(x) for x in zip(*run_all(onnx)))
    out = {"onnx_cpu": {"providers": onnx.providers, "ips": rate(lambda: run_all(onnx), len(tensors), repeats)}}
    print("model alone, onnx cpu", out["onnx_cpu"], file=sys.stderr, flush=True)
    for dtype in dtypes:
        ex = TorchExecutor(manifest_path, device=device, dtype=dtype)
        emb, logits = (np.concatenate(x) for x in zip(*run_all(ex)))
        x = torch.from_numpy(tensors[:batch]).to(device).to(ex._dtype, memory_format=torch.channels_last)
        with torch.inference_mode():
            kernel = rate(lambda: [ex.module(x) for _ in range(10)], 10 * batch, repeats, sync)
        out[f"torch_{device}_{dtype}"] = {
            "ips": rate(lambda: run_all(ex), len(tensors), repeats),
            "ips_from_pixels": rate(lambda: run_all(ex, pixels), len(tensors), repeats),
            "gpu_kernel_ips": kernel,
            "min_cosine_vs_onnx": round(float((emb * ref_emb).sum(1).min()), 6),
            "top1_agreement_vs_onnx": float((logits.argmax(1) == ref_logits.argmax(1)).mean()),
        }
        print("model alone", dtype, out[f"torch_{device}_{dtype}"], file=sys.stderr, flush=True)
    return out


def guarded(fn) -> dict:
    """fn() -> dict, or {"error": type and message}: one failing row must not lose the others."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - reported in the JSON
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def pipeline(manifest_path: Path, device: str, dtype: str, batch: int, repeats: int, n_small: int,
             model_alone_ips: float | None) -> dict:
    out = {}
    cores = os.cpu_count() or 1
    make = {
        "threads": lambda: Embedder.from_model(str(manifest_path), runtime="torch", torch_device=device,
                                               torch_dtype=dtype, max_batch_size=batch),
        "processes": lambda: Embedder.from_model(str(manifest_path), runtime="torch", torch_device=device,
                                                 torch_dtype=dtype, max_batch_size=batch, decode_processes=cores),
        "gpu_decode": lambda: Embedder.from_model(str(manifest_path), runtime="torch", torch_device=device,
                                                  torch_dtype=dtype, max_batch_size=batch, gpu_decode=True),
    }
    for label, size, n in (("0.3MP", (640, 480), n_small), ("12MP", (4000, 3000), max(64, n_small // 4))):
        t = time.perf_counter()
        distinct = photos_at(size, 32)  # decoding cost is per image; cycling 32 real photos is fair
        data = [distinct[i % len(distinct)] for i in range(n)]
        row: dict = {"images": n, "photos_s": round(time.perf_counter() - t, 1)}
        reference = {}
        for name, build in make.items():
            def measure(name=name, build=build):
                e = build()
                try:
                    r = {"ips": rate(lambda: e.embed_all(data, in_processes=name == "processes"), n, repeats)}
                    if model_alone_ips:
                        r["over_model_alone"] = round(r["ips"] / model_alone_ips, 3)
                    if name == "processes":
                        r["pinned_buffers"] = e._unpin_buffers is not None
                    vectors = e.embed_all(distinct, in_processes=name == "processes")
                    if name == "threads":
                        reference["v"] = np.stack([v.vector for v in vectors])
                    elif "v" in reference:
                        cos = (np.stack([v.vector for v in vectors]) * reference["v"]).sum(1)
                        r["min_cosine_vs_threads"] = round(float(cos.min()), 6)
                        r["mean_cosine_vs_threads"] = round(float(cos.mean()), 6)
                    if name == "gpu_decode":
                        from imagesieve_server.engine.gpu_decode import gpu_route
                        r["share_decoded_on_gpu"] = round(sum(gpu_route(d) is None for d in distinct) / len(distinct), 3)
                    return r
                finally:
                    e.close()
            row[name] = guarded(measure)
            print("pipeline", label, name, row[name], file=sys.stderr, flush=True)
        if label == "0.3MP" or repeats > 1:
            def onnx_cpu():
                e = Embedder.from_model(str(manifest_path), max_batch_size=batch)
                try:
                    return {"ips": rate(lambda: e.embed_all(data), n, repeats)}
                finally:
                    e.close()
            row["onnx_cpu"] = guarded(onnx_cpu)
        out[label] = row
        print("pipeline", label, row, file=sys.stderr, flush=True)
    return out


def torchvision_export() -> dict:
    from imagesieve_models.export import export_model
    from imagesieve_models.manifest import ModelManifest

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("mobilenet_v2", "mobilenet_v3_large"):
            try:
                m = ModelManifest.load(export_model(name, tmp, weights="none"))
                out[name] = {"ok": True, "embedding_dim": m.embedding_dim, **m.verification}
            except Exception as e:  # report, do not lose the other figures
                out[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
            print("torchvision export", name, out[name], file=sys.stderr, flush=True)
    return out


def main() -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilenet_v1")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--images", type=int, default=2048, help="pipeline images at 0.3 MP (12 MP: 1/4, at least 64)")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--device", default="cuda", help="cpu: a quick dry run of this script, float32 only")
    ap.add_argument("--quick", action="store_true", help="smoke-sized: float32, 1 repeat, 256 images, no export")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.images = 1, min(args.images, 256)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py needs a CUDA GPU (--device cpu for a dry run)", file=sys.stderr)
        return 2
    dtypes = ("float32", "float16", "bfloat16") if args.device == "cuda" and not args.quick else ("float32",)
    manifest_path = find_model(args.model)
    prep = Embedder.from_model(str(manifest_path))
    decoded = [decode_image(d, prep.preprocessor.decode_min_size) for d in photos_at((640, 480), 32)]
    pixels = np.stack([prep.preprocessor.pixels(img) for img in decoded])
    tensors = np.stack([prep.preprocessor.normalize(p) for p in pixels])
    prep.close()
    copies = 4 * args.batch // len(tensors)                # 4 batches of real photos
    tensors, pixels = np.concatenate([tensors] * copies), np.concatenate([pixels] * copies)
    gpu_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    summary = {"device": gpu_name, "cpu_count": os.cpu_count(),
               "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
               "model": Path(manifest_path).stem, "batch": args.batch}
    t0 = time.perf_counter()
    summary["model_alone"] = guarded(lambda: model_alone(manifest_path, tensors, pixels, args.batch, args.repeats,
                                                         args.device, dtypes))
    m = summary["model_alone"]
    alone = m.get(f"torch_{args.device}_float32", {}).get("ips_from_pixels")
    # The pipeline runs float32, the default: its vectors match stored ONNX ones (bfloat16's did not).
    summary["pipeline"] = guarded(lambda: pipeline(manifest_path, args.device, "float32", args.batch, args.repeats,
                                                   args.images, alone))
    if not args.quick:
        summary["torchvision_export"] = torchvision_export()
    if "error" not in m:
        summary["model_gpu_over_cpu"] = round(m[f"torch_{args.device}_float32"]["ips"] / m["onnx_cpu"]["ips"], 2)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    line = json.dumps(summary)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
