"""Large PNGs: decoded whole, then reduced (the baseline) vs a band at a time.

    .venv/bin/python bench/png_bands.py [--repeats 3]

Five real files written here: a 10000x10000 16-bit gray gradient (the soak's
abusive kind), an 8000x8000 RGBA, a 6000x4000 RGB photo (a real photo scaled
up, written by Pillow), an 8000x6000 gray scan-like page and a 6000x6000 16-bit
RGB gradient, both written by OpenCV.
Each is decoded by ``decode_image(data, 256)`` (the model's minimum size) in
a fresh process, ``--repeats`` times a path: the baseline path decodes the
whole raster and reduces it (as before bands; ``decode._in_bands`` patched
off), the project's a band at a time. Both give the same pixels (checked).

Figures (last line, JSON), medians: ``peak_mb`` (the process's peak resident
size above its resident size just before the decode, from the kernel's
high-water mark reset there) and ``seconds`` a
decode, per file and path, and their ratios bands / whole.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import io, json, resource, sys, time
from PIL import Image
from imagesieve_server.engine import decode
data = open(sys.argv[1], "rb").read()
bands = sys.argv[2] == "bands"
if not bands:
    decode._in_bands = lambda *a: False
decode.decode_image(open(sys.argv[3], "rb").read(), 256)      # a small PNG: code paths warm
with open("/proc/self/statm") as f:
    before = int(f.read().split()[1]) * resource.getpagesize()
with open("/proc/self/clear_refs", "w") as f:                  # reset the high-water mark (VmHWM)
    f.write("5")
t = time.perf_counter()
img = decode.decode_image(data, 256)
seconds = time.perf_counter() - t
with open("/proc/self/status") as f:
    peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) * 1024
same = None
if bands:      # the pixels of decoding whole and reducing as the bands do (after the peak was read)
    whole = Image.open(io.BytesIO(data))
    whole.load()
    f = decode._reduce_factor(*whole.size, 256)
    ref = (decode._high_depth_to_l(whole, f).convert("RGB") if whole.mode in decode._HIGH_DEPTH
           else decode.to_rgb(whole.reduce(f)))
    same = ref.tobytes() == img.tobytes()
print(json.dumps({"peak_mb": max(0, peak - before) / 2**20, "seconds": seconds, "size": img.size,
                  "same": same}))
"""


def make_files(folder: Path) -> dict[str, Path]:
    import cv2
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).parent))
    from load import sample_images

    files = {}
    n = 10000
    axis = np.arange(n, dtype=np.uint16) * 3
    files["gray16_10000x10000"] = folder / "gray16.png"
    Image.fromarray(axis[None, :] + axis[:, None]).save(files["gray16_10000x10000"])
    a = ((np.arange(8000)[None, :] * 3 + np.arange(8000)[:, None]) % 256).astype(np.uint8)
    g = Image.fromarray(a)
    files["rgba_8000x8000"] = folder / "rgba.png"
    Image.merge("RGBA", [g, g.transpose(Image.Transpose.ROTATE_90), g, Image.fromarray(255 - a)]).save(
        files["rgba_8000x8000"])
    photo = Image.open(io.BytesIO(sample_images(512, 1)[0])).convert("RGB").resize((6000, 4000), Image.BICUBIC)
    files["rgb_photo_6000x4000"] = folder / "photo.png"
    photo.save(files["rgb_photo_6000x4000"])
    page = np.full((6000, 8000), 245, np.uint8)
    for y in range(200, 5800, 60):                   # lines of "text"
        page[y:y + 22, 300:7700] = np.where(np.random.default_rng(y).random((22, 7400)) < 0.35, 20, 245)
    files["gray_page_8000x6000_opencv"] = folder / "page.png"
    cv2.imwrite(str(files["gray_page_8000x6000_opencv"]), page)
    # 16-bit colour (Pillow makes it 8-bit; two passes a band here), written by OpenCV.
    files["rgb16_6000x6000_opencv"] = folder / "rgb16.png"
    y, x = np.mgrid[0:6000, 0:6000].astype(np.uint32)
    cv2.imwrite(str(files["rgb16_6000x6000_opencv"]),
                np.stack([(x * 10) % 65536, (y * 10) % 65536, ((x + y) * 5) % 65536], axis=-1).astype(np.uint16))
    del x, y
    small = folder / "small.png"
    photo.resize((300, 200)).save(small)
    files["_small"] = small
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="imagesieve-png-bands-"))
    files = make_files(folder)
    small = files.pop("_small")
    rows = {}
    for name, path in files.items():
        runs: dict[str, list[dict]] = {"whole": [], "bands": []}
        for r in range(args.repeats):
            for path_kind in ("whole", "bands"):
                out = subprocess.run([sys.executable, "-c", _CHILD, str(path), path_kind, str(small)],
                                     check=True, capture_output=True, text=True).stdout
                runs[path_kind].append(json.loads(out.strip().splitlines()[-1]))
        med = {k: {f: round(statistics.median(run[f] for run in v), 3) for f in ("peak_mb", "seconds")}
               for k, v in runs.items()}
        rows[name] = {"file_mb": round(path.stat().st_size / 2**20, 2), "whole": med["whole"], "bands": med["bands"],
                      "bands_size": runs["bands"][0]["size"], "whole_size": runs["whole"][0]["size"],
                      "same_pixels": all(run["same"] for run in runs["bands"]),
                      "peak_ratio": round(med["bands"]["peak_mb"] / max(med["whole"]["peak_mb"], 1e-9), 3),
                      "seconds_ratio": round(med["bands"]["seconds"] / med["whole"]["seconds"], 3)}
        print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    print(json.dumps({"repeats": args.repeats, "rows": rows,
                      "max_peak_ratio": max(r["peak_ratio"] for r in rows.values()),
                      "max_seconds_ratio": max(r["seconds_ratio"] for r in rows.values()),
                      "all_same_pixels": all(r["same_pixels"] for r in rows.values())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
