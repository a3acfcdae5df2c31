"""Embedding throughput: the model alone, the in-process pipeline, end to end
through gRPC, and a naive baseline, on real photos at 0.3, 1 and 12 MP.

    .venv/bin/python bench/embed.py [--repeats 3] [--model mobilenet_v1]

(a) ceiling: the ONNX model alone on preprocessed tensors, batches of 32;
(b) inproc: decode (JPEG draft) + preprocess + model, ``Embedder``;
(c) grpc: a streaming client against ``imagesieve serve`` on loopback;
(d) naive: full Pillow decode, resize, one image per inference call.
Images/s, median of --repeats runs. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from photos import SIZES_MP, photos_at  # noqa: E402

from imagesieve import Client  # noqa: E402
from imagesieve.local_server import LocalServer  # noqa: E402
from imagesieve_models.manifest import ModelManifest, find_model  # noqa: E402
from imagesieve_server.engine import Embedder  # noqa: E402


def timed(fn, n_images: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        rates.append(n_images / (time.perf_counter() - t))
    return statistics.median(rates)


def naive_embed(session, manifest, data: list[bytes]) -> None:
    """What a first version would do: full decode, resize, one call per image."""
    mean = np.asarray(manifest.mean, np.float32)[:, None, None]
    std = np.asarray(manifest.std, np.float32)[:, None, None]
    s = manifest.input_size
    for d in data:
        img = Image.open(io.BytesIO(d)).convert("RGB")
        w, h = img.size
        scale = (s / manifest.crop_fraction) / min(w, h)
        img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
        left, top = (img.width - s) // 2, (img.height - s) // 2
        x = (np.asarray(img.crop((left, top, left + s, top + s)), np.float32).transpose(2, 0, 1) - mean) / std
        session.run(None, {"input": x[None]})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilenet_v1")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=48, help="images per size (12 MP: a third)")
    args = ap.parse_args()

    manifest_path = find_model(args.model)
    manifest = ModelManifest.load(manifest_path)
    embedder = Embedder.from_model(str(manifest_path), max_batch_size=32)
    naive_session = ort.InferenceSession(str(manifest.onnx_path(manifest_path)),
                                         providers=["CPUExecutionProvider"])
    results: dict[str, dict] = {}
    tensors = np.random.default_rng(0).standard_normal((64, 3, manifest.input_size, manifest.input_size),
                                                       dtype=np.float32)
    ceiling = timed(lambda: [embedder.executor.run(tensors[i:i + 32]) for i in range(0, 64, 32)],
                    64, args.repeats)
    print(f"ceiling (model alone, batch 32): {ceiling:.1f} img/s", file=sys.stderr)

    with LocalServer(["--max-batch-size", "32", "--max-delay-ms", "5"], model=str(manifest_path)) as srv, \
            Client(srv.address) as client:
        client.wait_ready()
        for label, size in SIZES_MP.items():
            n = args.images if label != "12MP" else max(8, args.images // 3)
            data = photos_at(size, n)
            # Warm up: the server's first calls at each new batch size are slow.
            list(client.embed_stream(data, chunk_size=4))
            embedder.embed_all(data)
            row = {
                "mb_per_image": round(sum(map(len, data)) / n / 1e6, 2),
                "inproc_ips": timed(lambda: embedder.embed_all(data), n, args.repeats),
                "grpc_ips": timed(lambda: list(client.embed_stream(data, chunk_size=4)), n, args.repeats),
                "naive_ips": timed(lambda: naive_embed(naive_session, manifest, data), n, args.repeats),
            }
            row["grpc_over_inproc"] = row["grpc_ips"] / row["inproc_ips"]
            row["speedup_vs_naive"] = row["grpc_ips"] / row["naive_ips"]
            results[label] = {k: round(v, 3) for k, v in row.items()}
            print(label, results[label], file=sys.stderr)

    top = results["12MP"]
    summary = {"model": manifest.name, "cpu_count": __import__("os").cpu_count(),
               "providers": embedder.executor.providers, "ceiling_ips": round(ceiling, 1),
               "inproc_ips": top["inproc_ips"], "grpc_ips": top["grpc_ips"], "naive_ips": top["naive_ips"],
               "grpc_over_inproc": top["grpc_over_inproc"], "speedup_vs_naive": top["speedup_vs_naive"],
               "headline_size": "12MP", "by_size": results}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
