"""Seconds-long check of GPU JPEG decoding (``engine.gpu_decode``) on a CUDA
host, to run before ``bench/gpu.py``:

    python bench/gpu_smoke.py [--device cuda]

One batch mixing real baseline photos (0.3 MP, grey, one 12 MP) with images
the GPU must hand to the CPU path (progressive, PNG, CMYK, EXIF-rotated,
truncated, a scan of garbage, not an image), embedded with ``gpu_decode=True``
and on the CPU decoding threads with the same torch runtime. Checks: the same
images fail, with the same errors; the fallbacks' vectors are the CPU path's;
the GPU-decoded ones' cosine against the CPU path's (worst, mean). Also the
shared-memory worker processes feeding the GPU from page-locked buffers
(``register_host_memory``): the same vectors as the threads. ``--device cpu``
runs the same code through torchvision's CPU decoder (a dry run without a
GPU). Last line: one JSON object; ``ok`` is whether every check passed.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from photos import jpeg, photos_at  # noqa: E402

from imagesieve_server.engine import Embedder  # noqa: E402
from imagesieve_server.engine.gpu_decode import gpu_route  # noqa: E402

# Minimum cosine of a GPU-decoded image's vector against the CPU path's:
# nvJPEG's IDCT and chroma upsampling differ from libjpeg's by a level or
# two, and a 12 MP photo decodes at full size rather than DCT-scaled.
MIN_COSINE = 0.995


def mixed_batch() -> list[tuple[str, bytes]]:
    small = photos_at((640, 480), 8)
    img = Image.open(io.BytesIO(small[0])).convert("RGB")

    def enc(im, **kw) -> bytes:
        buf = io.BytesIO()
        im.save(buf, **kw)
        return buf.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6
    garbage = bytearray(small[1])
    mid = len(garbage) // 2
    garbage[mid:mid + 4000] = np.random.default_rng(0).integers(0, 255, 4000, dtype=np.uint8).tobytes()
    return ([(f"photo_{i}", d) for i, d in enumerate(small)]
            + [("grey", enc(img.convert("L"), format="JPEG", quality=90)),
               ("12MP", photos_at((4000, 3000), 1)[0]),
               ("progressive", enc(img, format="JPEG", quality=90, progressive=True)),
               ("png", enc(img, format="PNG")),
               ("cmyk", enc(img.convert("CMYK"), format="JPEG", quality=90)),
               ("exif_rotated", enc(img, format="JPEG", quality=90, exif=exif.tobytes())),
               ("truncated", small[2][:len(small[2]) // 2]),
               ("garbage_scan", bytes(garbage)),
               ("not_an_image", b"not an image"),
               ("photo_again", jpeg(img))])


def check(device: str) -> dict:
    out: dict = {"device": device}
    batch = mixed_batch()
    names, images = [n for n, _ in batch], [d for _, d in batch]
    gpu = Embedder.from_model(runtime="torch", torch_device=device, max_batch_size=32, gpu_decode=True)
    cpu = Embedder.from_model(runtime="torch", torch_device=device, max_batch_size=32, decode_processes=2)
    try:
        routed = [n for n, d in batch if gpu_route(d) is None]
        out["routed_to_gpu"] = routed
        gpu.embed_all(images)                               # warm-up (cuDNN, nvJPEG)
        t = time.perf_counter()
        a = gpu.embed_all(images)
        out["gpu_call_s"] = round(time.perf_counter() - t, 3)
        b = cpu.embed_all(images)
        problems, cosines = [], {}
        for name, data, x, y in zip(names, images, a, b):
            if x.ok != y.ok or (not x.ok and (x.error.code, str(x.error)) != (y.error.code, str(y.error))):
                problems.append(f"{name}: gpu {x.error!r} vs cpu {y.error!r}")
            elif x.ok:
                if (x.width, x.height) != (y.width, y.height):
                    problems.append(f"{name}: size {(x.width, x.height)} vs {(y.width, y.height)}")
                cosines[name] = float(x.vector @ y.vector)
        out["errors"] = {n: f"{y.error.code}: {y.error}"[:120] for n, y in zip(names, b) if not y.ok}
        out["garbage_scan_ok_on_gpu"] = a[names.index("garbage_scan")].ok
        gpu_cos = [c for n, c in cosines.items() if n in routed and n != "garbage_scan"]
        out["gpu_min_cosine"] = round(min(gpu_cos), 6) if gpu_cos else None
        out["gpu_mean_cosine"] = round(float(np.mean(gpu_cos)), 6) if gpu_cos else None
        out["cosine_12MP"] = round(cosines.get("12MP", float("nan")), 6)
        fallback = [c for n, c in cosines.items() if n not in routed]
        out["fallback_min_cosine"] = round(min(fallback), 6) if fallback else None
        if not gpu_cos or min(gpu_cos) < MIN_COSINE:
            problems.append(f"GPU-decoded cosine {out['gpu_min_cosine']} below {MIN_COSINE}")
        if fallback and min(fallback) < 0.99999:
            problems.append(f"a fallback's cosine {min(fallback)} differs from the CPU path")
        # The shared-memory workers, their buffers page-locked for the GPU copy.
        procs = cpu.embed_all(images, in_processes=True)
        out["pinned_buffers"] = cpu._unpin_buffers is not None
        worst = min(float(x.vector @ y.vector) for x, y in zip(procs, b) if x.ok and y.ok)
        out["processes_min_cosine_vs_threads"] = round(worst, 7)
        if worst < 0.99999 or [r.ok for r in procs] != [r.ok for r in b]:
            problems.append(f"shared-memory workers differ from the threads (cosine {worst})")
        out["problems"] = problems
    finally:
        gpu.close()
        cpu.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", help="cpu: the same code through torchvision's CPU decoder")
    args = ap.parse_args()
    try:
        out = check(args.device)
        out["ok"] = not out["problems"]
    except Exception as e:  # noqa: BLE001 - the one JSON line says what failed
        traceback.print_exc()
        out = {"device": args.device, "ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
