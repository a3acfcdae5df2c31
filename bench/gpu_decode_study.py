"""Where GPU JPEG decoding's time goes at 12 MP (issue 17): each stage alone.

    python bench/gpu_decode_study.py [--device cuda] [--quick] [--out FILE] [--sections a,b] [--rows x,y]

On the H200 the pipeline with GPU decoding ran 5,926 img/s at 0.3 MP but 663
at 12 MP (README, "Decoding on the GPU"). This measures, on the same kind of
real-photo JPEGs as ``bench/gpu.py`` (``photos_at``, q90, 32 distinct photos
cycled), images/s, medians of --repeats:

  props      the files: size, dims, chroma subsampling, progressive, restart
             markers; the GPU, versions; nvJPEG hardware-engine use
             (``nvidia-smi dmon`` "jpg" column, sampled during a decode loop)
             and the process's CPU seconds per wall second meanwhile (host
             Huffman decoding shows as ~1 or more);
  a_batched  torchvision ``decode_jpeg(list, device)`` alone, batches of 16/64;
  b_threads  the same from N host threads, each on its own CUDA stream
             (torchvision holds one process-wide lock: does it serialise?);
  c_single   one image a call;
  d_h2d      the file bytes copied to the device alone (pageable, pinned);
  e_resize   ``GpuJpegDecoder``'s resize alone on decoded tensors: "matmul"
             (the default) against "banded";
  e_decoder  ``GpuJpegDecoder.decode`` (decode + resize) per option set;
  f_cpu      the CPU path (Pillow with draft: DCT scaling) on one process a
             core, for reference;
  i_nvimgcodec  nvImageCodec's decoder alone per backend (hardware engines,
             CUDA Huffman, hybrid host Huffman), full and ROI (the crop box)
             decode, when ``nvidia.nvimgcodec`` imports;
  g_pipeline the whole pipeline: ``Embedder(gpu_decode=True)`` as
             ``bench/gpu.py`` runs it, the CPU threads for reference, and
  h_variants the same with the decoder's options and nvImageCodec (best of i),
             and the GPU decoder and the shared-memory worker processes
             together (``gpu_decode_share``: "hybrid_auto", "hybrid_0.6":
             the GPU's share of each batch's JPEGs, the rest decoded in the
             workers at the same time; each row says the share it ended on
             and both sides' images/s).

``--sections g_h_pipeline`` runs only the sections named (keys as in the
JSON, both sizes), ``--rows`` only the pipeline rows named.

Every section is guarded (its error is reported, the others run) and
time-boxed (repeats are cut when its budget is spent); the JSON so far is
rewritten to --out after each section. Progress on stderr; last line of
stdout: one JSON object. ``--device cpu`` runs the same code through
torchvision's CPU decoder (a dry run); ``--quick`` uses small images.
"""
from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from photos import photos_at  # noqa: E402

from imagesieve_server.engine import Embedder, decode_image  # noqa: E402
from imagesieve_server.engine.gpu_decode import GpuJpegDecoder, routed_size  # noqa: E402

T0 = time.perf_counter()
SUMMARY: dict = {}
ARGS = None



def nvimgcodec_decode_fn(backends: Sequence[str] | None = None, cpu_threads: int = 0, options: str = "") -> Callable:
    """A ``decode_fn`` for ``GpuJpegDecoder`` on NVIDIA's nvImageCodec
    (``nvidia-nvimgcodec-cu13``, not a dependency: an experiment of this
    study; in the whole 12 MP pipeline on an H200 it gave 826.5 img/s against
    torchvision's 851.6). Unlike torchvision's decoder (one
    decoder, one lock, one host thread for what the hardware engines do not
    take) it picks among the hardware JPEG engines ("HW_GPU_ONLY"), CUDA
    Huffman decoding ("GPU_ONLY"), host Huffman on ``cpu_threads`` threads
    with the GPU for the rest ("HYBRID_CPU_GPU") and libjpeg-turbo
    ("CPU_ONLY", a host without a GPU); ``backends`` names those allowed
    (None: all). EXIF orientation is not applied (routing sends only upright
    files). Raises when an image does not decode, as ``decode_fn`` must."""
    import torch
    from nvidia import nvimgcodec

    kinds = None if backends is None else [nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, b)) for b in backends]
    cpu_only = backends is not None and list(backends) == ["CPU_ONLY"]
    decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY if cpu_only else -1,
                                 max_num_cpu_threads=cpu_threads, backends=kinds, options=options)
    params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=nvimgcodec.SRGB)

    def decode(tensors, device):
        device = torch.device(device)
        streams = [nvimgcodec.CodeStream(t.numpy()) for t in tensors]
        stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
        images = decoder.decode(streams, params=params, cuda_stream=stream)
        if any(im is None for im in images):
            raise RuntimeError("nvImageCodec could not decode an image of the batch")
        out = []
        for im in images:
            # (H, W, 3): on the GPU through DLPack, ordered on our stream; a host image through numpy
            t = torch.from_dlpack(im) if device.type == "cuda" else torch.from_numpy(np.asarray(im.cpu()))
            if t.ndim != 3 or t.shape[2] != 3:
                raise RuntimeError(f"nvImageCodec gave shape {tuple(t.shape)}, expected (H, W, 3)")
            out.append(t.to(device).permute(2, 0, 1))                              # (3, H, W), a view
        return out
    return decode

def log(*a) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s]", *a, file=sys.stderr, flush=True)


def left() -> float:
    return ARGS.budget - (time.perf_counter() - T0)


def save() -> None:
    if ARGS.out:
        Path(ARGS.out).write_text(json.dumps(SUMMARY) + "\n")


def section(key: str, fn, share: float) -> None:
    """Run fn(deadline) -> dict into SUMMARY[key]; errors reported; at most
    ``share`` of the time left (and never when under 5 s is left)."""
    if left() < 5:
        SUMMARY[key] = {"skipped": "out of time"}
        log(key, "skipped: out of time")
        return
    deadline = time.perf_counter() + max(3.0, left() * share)
    log("start", key)
    try:
        SUMMARY[key] = fn(deadline)
    except Exception as e:  # noqa: BLE001 - reported in the JSON, the other sections still run
        traceback.print_exc()
        SUMMARY[key] = {"error": f"{type(e).__name__}: {e}"[:400]}
    log(key, json.dumps(SUMMARY[key])[:600])
    save()


def guarded(fn) -> dict:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def rate(fn, n: int, deadline: float, sync=lambda: None) -> dict:
    """images/s of fn() (n images), median of up to --repeats after a warm-up;
    fewer repeats when the deadline comes."""
    t = time.perf_counter()
    fn()
    sync()
    warm = time.perf_counter() - t
    rates, cpu = [], []
    for _ in range(ARGS.repeats):
        if rates and time.perf_counter() + warm > deadline:
            break
        c, t = time.process_time(), time.perf_counter()
        fn()
        sync()
        wall = time.perf_counter() - t
        rates.append(n / wall)
        cpu.append((time.process_time() - c) / wall)
    return {"ips": round(statistics.median(rates), 1), "repeats": len(rates),
            "cpu_s_per_s": round(statistics.median(cpu), 2), "warmup_s": round(warm, 2)}


class JpgMonitor:
    """``nvidia-smi dmon -s u`` in the background: the jpg (hardware JPEG
    engine) utilisation column while a decode loop runs."""

    def __init__(self, on: bool):
        self.proc = None
        if on:
            try:
                self.proc = subprocess.Popen(["nvidia-smi", "dmon", "-s", "u", "-d", "1"], stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, text=True)
            except Exception as e:  # noqa: BLE001
                self.error = str(e)

    def stop(self) -> dict:
        if self.proc is None:
            return {"jpg_util": None, "note": getattr(self, "error", "no nvidia-smi monitoring here")}
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=5)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            out = ""
        header, values = None, []
        for line in out.splitlines():
            parts = line.split()
            if line.startswith("#") and "jpg" in parts:
                header = parts[1:]
            elif header and parts and not line.startswith("#") and len(parts) == len(header):
                try:
                    values.append({h: (float(v) if v not in ("-", "N/A") else None) for h, v in zip(header, parts)})
                except ValueError:
                    pass
        jpg = [v["jpg"] for v in values if v.get("jpg") is not None]
        sm = [v["sm"] for v in values if v.get("sm") is not None]
        return {"jpg_util_samples": jpg, "jpg_util_max": max(jpg) if jpg else None,
                "sm_util_max": max(sm) if sm else None, "raw_tail": out.splitlines()[-3:] if not jpg else None}


def monitored(fn, seconds: float, on: bool) -> dict:
    """fn() in a loop for ``seconds`` under JpgMonitor; CPU seconds a wall second."""
    mon = JpgMonitor(on)
    time.sleep(1.2 if on else 0)
    c, t, loops = time.process_time(), time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        fn()
        loops += 1
    wall = time.perf_counter() - t
    out = {"loops": loops, "cpu_s_per_s": round((time.process_time() - c) / wall, 2)}
    out.update(mon.stop())
    return out


# -- the files -----------------------------------------------------------------------------------

def jpeg_props(files: list[bytes]) -> dict:
    import io

    from PIL import Image, JpegImagePlugin
    names = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0", -1: "other"}
    subs, prog, dims, dri = [], [], set(), 0
    for d in files:
        im = Image.open(io.BytesIO(d))
        subs.append(names.get(JpegImagePlugin.get_sampling(im), "other"))
        prog.append(bool(im.info.get("progressive") or im.info.get("progression")))
        dims.add(im.size)
        dri += b"\xff\xdd" in d[:d.find(b"\xff\xda") + 2]
    sizes = [len(d) for d in files]
    return {"distinct": len(files), "dims": sorted(dims), "subsampling": sorted(set(subs)),
            "progressive": sum(prog), "with_restart_interval": dri,
            "bytes_mean": int(np.mean(sizes)), "bytes_min": min(sizes), "bytes_max": max(sizes),
            "routed_to_gpu": sum(routed_size(d)[0] is None for d in files)}


# -- the measurements ------------------------------------------------------------------------------

def tv_decode(device):
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(tensors):
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    return decode


def as_tensors(data: list[bytes]):
    import torch
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        return [torch.frombuffer(d, dtype=torch.uint8) for d in data]


def batched(ctx: dict, deadline: float) -> dict:
    dec, tensors, sync = tv_decode(ctx["device"]), ctx["tensors"], ctx["sync"]
    out = {}
    for b in (16, 64):
        def run(b=b):
            for i in range(0, len(tensors), b):
                dec(tensors[i:i + b])
        out[f"batch_{b}"] = rate(run, len(tensors), deadline, sync)
        log("  batch", b, out[f"batch_{b}"])
    hw = ctx["device"] == "cuda"
    out["monitor_batch_64"] = monitored(lambda: (dec(tensors[:64]), sync()), 3.0 if hw else 0.5, hw)
    return out


def threaded(ctx: dict, deadline: float) -> dict:
    import torch
    dec, tensors, sync, device = tv_decode(ctx["device"]), ctx["tensors"], ctx["sync"], ctx["device"]
    b = 16
    batches = [tensors[i:i + b] for i in range(0, len(tensors), b)]
    out = {"batch": b}
    for n in (1, 2, 4, 8):
        streams = [torch.cuda.Stream() if device == "cuda" else None for _ in range(n)]
        pool = ThreadPoolExecutor(n)

        def work(k, n=n, streams=streams):
            s = streams[k]
            with torch.cuda.stream(s) if s is not None else contextlib.nullcontext():
                for j in range(k, len(batches), n):
                    dec(batches[j])
            if s is not None:
                s.synchronize()

        def run(n=n, pool=pool, work=work):
            list(pool.map(work, range(n)))
        try:
            out[f"threads_{n}"] = rate(run, len(tensors), deadline, sync)
        finally:
            pool.shutdown()
        log("  threads", n, out[f"threads_{n}"])
    one = out["threads_1"]["ips"]
    out["speedup_8_over_1"] = round(out["threads_8"]["ips"] / one, 2) if "threads_8" in out else None
    out["note"] = "torchvision's decode_jpegs_cuda takes one process-wide mutex for the whole call"
    return out


def single(ctx: dict, deadline: float) -> dict:
    dec, tensors, sync = tv_decode(ctx["device"]), ctx["tensors"][:64], ctx["sync"]

    def run():
        for t in tensors:
            dec([t])
    return rate(run, len(tensors), deadline, sync)


def h2d(ctx: dict, deadline: float) -> dict:
    import torch
    device, tensors, sync, data = ctx["device"], ctx["tensors"], ctx["sync"], ctx["data"]
    total = sum(len(d) for d in data)
    out = {"bytes_per_image": total // len(data)}
    out["pageable_per_file"] = rate(lambda: [t.to(device) for t in tensors], len(tensors), deadline, sync)
    flat = torch.from_numpy(np.frombuffer(b"".join(data), np.uint8).copy())
    pinned = flat.pin_memory() if device == "cuda" else flat
    out["pinned_one_copy"] = rate(lambda: pinned.to(device, non_blocking=True), len(tensors), deadline, sync)
    for k in ("pageable_per_file", "pinned_one_copy"):
        out[k]["GB_per_s"] = round(out[k]["ips"] * total / len(data) / 1e9, 2)
    return out


def resize(ctx: dict, deadline: float) -> dict:
    import torch
    pre, device, sync = ctx["pre"], ctx["device"], ctx["sync"]
    n = min(16, len(ctx["tensors"]))
    decoded = torch.stack(tv_decode(device)(ctx["tensors"][:n]))
    h, w = decoded.shape[2:]
    out = {"images": n, "size": [int(w), int(h)]}
    ref = None
    for mode in ("matmul", "banded"):
        dec = GpuJpegDecoder(pre, device, resize=mode)
        r = rate(lambda dec=dec: dec._resize(decoded, w, h), n, deadline, sync)
        got = dec._resize(decoded, w, h).cpu().numpy().astype(int)
        if ref is None:
            ref = got
        else:
            diff = np.abs(got - ref)
            r["max_diff_vs_matmul"], r["share_differing"] = int(diff.max()), float((diff > 0).mean())
        out[mode] = r
        log("  resize", mode, r)
    if device == "cuda":
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True      # what TF32 would give (not used by the engine)
        try:
            dec = GpuJpegDecoder(pre, device)
            out["matmul_tf32"] = rate(lambda: dec._resize(decoded, w, h), n, deadline, sync)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
    return out


DECODER_VARIANTS = {
    "default": {},
    "banded": {"resize": "banded"},
    "banded_overlap_c16": {"resize": "banded", "overlap": True, "chunk_images": 16},
    "banded_overlap_c32": {"resize": "banded", "overlap": True, "chunk_images": 32},
    "overlap_c32": {"overlap": True, "chunk_images": 32},
}


def decoder_alone(ctx: dict, deadline: float) -> dict:
    pre, device, sync, data = ctx["pre"], ctx["device"], ctx["sync"], ctx["data"]
    sizes = [routed_size(d)[1] for d in data]
    out = {}
    for name, kw in DECODER_VARIANTS.items():
        if time.perf_counter() > deadline:
            out[name] = {"skipped": "section time spent"}
            continue
        dec = GpuJpegDecoder(pre, device, **kw)
        try:
            out[name] = guarded(lambda dec=dec: rate(lambda: dec.decode(data, sizes), len(data), deadline, sync))
        finally:
            dec.close()
        log("  decoder", name, out[name])
    return out


_PRE = None


def _cpu_prepare(data: bytes) -> int:
    img = decode_image(data, _PRE.decode_min_size)
    return int(_PRE.pixels(img).shape[0])


def cpu_path(ctx: dict, deadline: float) -> dict:
    global _PRE
    _PRE = ctx["pre"]
    procs = os.cpu_count() or 1
    data = ctx["data"]
    with ProcessPoolExecutor(procs, mp_context=mp.get_context("fork")) as pool:
        r = rate(lambda: list(pool.map(_cpu_prepare, data, chunksize=4)), len(data), deadline)
    r["processes"] = procs
    return r


NVIMG_CONFIGS = {
    "all_backends": {},
    "HW_GPU_ONLY": {"backends": ["HW_GPU_ONLY"]},
    "GPU_ONLY": {"backends": ["GPU_ONLY"]},
    "HYBRID_CPU_GPU": {"backends": ["HYBRID_CPU_GPU"]},
    "HW_and_GPU": {"backends": ["HW_GPU_ONLY", "GPU_ONLY"]},
}


def nvimg_import() -> dict:
    """Import nvImageCodec; where libnvjpeg.so.13 was found."""
    from nvidia import nvimgcodec
    return {"version": nvimgcodec.__version__, "cuda_version": getattr(nvimgcodec, "__cuda_version__", None),
            "path": str(Path(nvimgcodec.__file__).parent)}


def nvimg(ctx: dict, deadline: float) -> dict:
    import torch
    from nvidia import nvimgcodec
    out = {"import": nvimg_import()}
    device, sync, data, pre = ctx["device"], ctx["sync"], ctx["data"], ctx["pre"]
    configs = NVIMG_CONFIGS if device == "cuda" else {"CPU_ONLY": {"backends": ["CPU_ONLY"]}}
    tensors = ctx["tensors"]
    b = 64
    cs0 = nvimgcodec.CodeStream(data[0])
    out["codestream"] = repr(cs0)[:300]
    best = None
    for name, kw in configs.items():
        if time.perf_counter() > deadline:
            out[name] = {"skipped": "section time spent"}
            continue

        def measure(name=name, kw=kw):
            threads = os.cpu_count() if name == "HYBRID_CPU_GPU" else 0
            fn = nvimgcodec_decode_fn(kw.get("backends"), cpu_threads=threads)
            first = fn(tensors[:2], device)             # raises when it cannot decode them
            r = rate(lambda: [fn(tensors[i:i + b], device) for i in range(0, len(tensors), b)], len(tensors),
                     deadline, sync)
            r["shape"] = list(first[0].shape)
            if name in ("HW_GPU_ONLY", "all_backends") and device == "cuda":
                r["monitor"] = monitored(lambda: (fn(tensors[:b], device), sync()), 3.0, True)
            return r
        out[name] = guarded(measure)
        log("  nvimgcodec", name, out[name])
        if "ips" in out[name] and (best is None or out[name]["ips"] > out[best]["ips"]):
            best = name
    out["best"] = best
    # ROI: only the crop box decoded (the resize reads nothing else).
    if best is not None and time.perf_counter() < deadline:
        def roi(kw=configs[best]):
            backends = kw.get("backends")
            kinds = None if backends is None else [nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, k))
                                                   for k in backends]
            decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY if device == "cpu" else -1,
                                         backends=kinds)
            params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=nvimgcodec.SRGB)
            streams = []
            for d in data:
                cs = nvimgcodec.CodeStream(d)
                left_, top, right, bottom = pre.crop_box(cs.width, cs.height)
                region = nvimgcodec.Region(int(top), int(left_), int(np.ceil(bottom)), int(np.ceil(right)))
                streams.append(cs.get_sub_code_stream(region=region))
            stream = torch.cuda.current_stream().cuda_stream if device == "cuda" else 0

            def run():
                for i in range(0, len(streams), b):
                    ims = decoder.decode(streams[i:i + b], params=params, cuda_stream=stream)
                    if any(im is None for im in ims):
                        raise RuntimeError("ROI decode gave None")
            r = rate(run, len(streams), deadline, sync)
            r["config"] = best
            r["roi_shape"] = list(decoder.decode(streams[0], params=params).shape)
            return r
        out["roi_best"] = guarded(roi)
        log("  nvimgcodec roi", out["roi_best"])
    return out


def pipelines(ctx: dict, deadline: float, variants: dict) -> dict:
    data = ctx["data"]
    out = {}
    for name, make in variants.items():
        if ARGS.rows and name not in ARGS.rows:
            continue
        if time.perf_counter() > deadline:
            out[name] = {"skipped": "section time spent"}
            continue

        def measure(make=make):
            e = make()
            try:
                r = rate(lambda: e.embed_all(data), len(data), deadline)
                if e.gpu_decoder is not None and e.gpu_decode_share != 1:
                    r["share_set"] = e.gpu_decode_share
                    r["share_last"] = round(e._share(), 3)
                    r["decode_rates"] = {k: None if v is None else round(v, 1) for k, v in e.decode_rates.items()}
                    r["workers"] = e.decode_processes
                return r
            finally:
                e.close()
        out[name] = guarded(measure)
        log("  pipeline", name, out[name])
    return out


def embedder(device, gpu_decode=False, batch=256, share=1.0, processes=0):
    return Embedder.from_model(runtime="torch", torch_device=device, torch_dtype="float32", max_batch_size=batch,
                               gpu_decode=gpu_decode, gpu_decode_share=share, decode_processes=processes)


def hybrids(device, pre) -> dict:
    """Pipeline rows of the GPU decoder (its best options at 12 MP) with the
    workers taking a share of each batch."""
    def make(share, processes=0):
        return lambda: embedder(device, GpuJpegDecoder(pre, device, **DECODER_VARIANTS["banded_overlap_c32"]),
                                share=share, processes=processes)
    procs = os.cpu_count() or 1
    return {"hybrid_auto": make("auto"), "hybrid_0.6": make(0.6),
            f"hybrid_auto_p{max(1, procs - 2)}": make("auto", max(1, procs - 2))}


def main() -> int:
    global ARGS
    import torch
    import torchvision

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", help="cpu: a dry run through torchvision's CPU decoder")
    ap.add_argument("--quick", action="store_true", help="small images, few of them, one repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=256, help="12 MP images (0.3 MP: 4x as many)")
    ap.add_argument("--budget", type=float, default=215.0, help="seconds for the whole run (sections are cut)")
    ap.add_argument("--out", help="also write the JSON here (after every section)")
    ap.add_argument("--sections", type=lambda s: set(s.split(",")),
                    help="only these sections, comma-separated (e.g. g_h_pipeline); default all")
    ap.add_argument("--rows", type=lambda s: set(s.split(",")),
                    help="only these pipeline rows, comma-separated (e.g. banded_overlap_c32,hybrid_auto)")
    ARGS = ap.parse_args()
    large, small, distinct = (4000, 3000), (640, 480), 32
    if ARGS.quick:
        ARGS.repeats, ARGS.images = 1, min(ARGS.images, 16)
        large, distinct = (1600, 1200), 8
    if ARGS.device == "cuda" and not torch.cuda.is_available():
        print("needs a CUDA GPU (--device cpu for a dry run)", file=sys.stderr)
        return 2
    faulthandler.dump_traceback_later(max(10, ARGS.budget + 10), exit=False)   # a hang says where
    device = ARGS.device
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    SUMMARY.update({"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                    "torch": torch.__version__, "torchvision": torchvision.__version__,
                    "cpu_count": os.cpu_count(), "quick": ARGS.quick, "repeats": ARGS.repeats})
    if device == "cuda":
        SUMMARY["nvidia_smi"] = guarded(lambda: {"q": subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout.strip()})
    SUMMARY["nvimgcodec"] = guarded(nvimg_import)
    pre = Embedder.from_model().preprocessor
    sets = {}
    for label, size, n in (("12MP", large, ARGS.images), ("0.3MP", small, 4 * ARGS.images)):
        t = time.perf_counter()
        files = photos_at(size, distinct)
        data = [files[i % len(files)] for i in range(n)]
        sets[label] = {"data": data, "tensors": as_tensors(data), "device": device, "sync": sync, "pre": pre}
        SUMMARY.setdefault(label, {})["props"] = guarded(lambda files=files: jpeg_props(files))
        SUMMARY[label]["images"] = n
        log(label, "photos made in", round(time.perf_counter() - t, 1), "s", SUMMARY[label]["props"])
    save()

    big, ref = sets["12MP"], sets["0.3MP"]

    def into(label, key, fn, share):
        if ARGS.sections and key not in ARGS.sections:
            return
        section(f"{label}.{key}", fn, share)
        SUMMARY[label][key] = SUMMARY.pop(f"{label}.{key}")
        save()

    into("12MP", "a_batched", lambda d: batched(big, d), 0.06)
    into("12MP", "b_threads", lambda d: threaded(big, d), 0.08)
    into("12MP", "c_single", lambda d: single(big, d), 0.04)
    into("12MP", "d_h2d", lambda d: h2d(big, d), 0.03)
    into("12MP", "e_resize", lambda d: resize(big, d), 0.05)
    into("12MP", "e_decoder", lambda d: decoder_alone(big, d), 0.12)
    into("12MP", "f_cpu", lambda d: cpu_path(big, d), 0.05)
    into("12MP", "i_nvimgcodec", lambda d: nvimg(big, d), 0.2)

    def variants(ctx):
        v = {"threads": lambda: embedder(device),
             "gpu_decode": lambda: embedder(device, True)}
        for name in ("banded", "banded_overlap_c32"):
            v[name] = lambda name=name: embedder(device, GpuJpegDecoder(pre, device, **DECODER_VARIANTS[name]))
        v.update(hybrids(device, pre))
        nv = SUMMARY["12MP"].get("i_nvimgcodec", {})
        best = nv.get("best") if isinstance(nv, dict) else None
        if best:
            kw = (NVIMG_CONFIGS if device == "cuda" else {"CPU_ONLY": {"backends": ["CPU_ONLY"]}})[best]
            threads = os.cpu_count() if best == "HYBRID_CPU_GPU" else 0
            v[f"nvimgcodec_{best}_banded_overlap_c32"] = lambda: embedder(device, GpuJpegDecoder(
                pre, device, decode_fn=nvimgcodec_decode_fn(kw.get("backends"), cpu_threads=threads),
                **DECODER_VARIANTS["banded_overlap_c32"]))
        return v

    into("12MP", "g_h_pipeline", lambda d: pipelines(big, d, variants(big)), 0.5)
    into("0.3MP", "a_batched", lambda d: batched(ref, d), 0.1)
    into("0.3MP", "e_resize", lambda d: resize(ref, d), 0.1)
    into("0.3MP", "g_h_pipeline", lambda d: pipelines(ref, d, {
        "gpu_decode": lambda: embedder(device, True),
        "banded_overlap_c32": lambda: embedder(device, GpuJpegDecoder(pre, device,
                                                                      **DECODER_VARIANTS["banded_overlap_c32"])),
        **hybrids(device, pre)}), 0.9)
    try:
        p = SUMMARY["12MP"]["g_h_pipeline"]
        rates = {k: v["ips"] for k, v in p.items() if isinstance(v, dict) and "ips" in v and k != "threads"}
        SUMMARY["12MP_best_pipeline"] = max(rates.items(), key=lambda kv: kv[1]) if rates else None
    except Exception:  # noqa: BLE001
        pass
    SUMMARY["wall_s"] = round(time.perf_counter() - T0, 1)
    faulthandler.cancel_dump_traceback_later()
    save()
    print(json.dumps(SUMMARY))
    return 0


if __name__ == "__main__":
    sys.exit(main())
