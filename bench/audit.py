"""The batch audit at growing N: end-to-end throughput against embedding
alone, and peak memory at N and 4N.

    .venv/bin/python bench/audit.py [--n 5000] [--repeats 3] [--no-sweep]

Images (make_images): 640x480 JPEG q90 collages of the package-shipped real
photos (bench/photos.py), in 8 class folders, generated once per N under
bench/out/audit_images/v2-<N> (deterministic given N; 2 processes take about
100 s for N=5000 plus 4N=20000). A class owns the photos whose index % 8 is
its number. Each original image is a background view of one of its class's
photos, a dominant view of another in the centre square that the embedder
sees (30-45% of it), and 0-2 small patches of other classes' photos. Every
view is rotated, zoomed (10-100%), stretched, mirrored, mesh-warped, often
restyled (negative, posterized, solarized, grayscale, blurred) and colour
jittered; flat views are drawn again (they embed alike whatever the photo),
and pictures that are no scene (colour chart, silhouette, logo, phantom,
Hubble field) are patches only. So two independent images rarely reach
cosine 0.75 (MobileNetV1) and the classes are learnable but not trivially.
About 10% of the images are altered copies (imagesieve.alterations) of an
earlier original, in its class folder: the planted near duplicates. Measured
by bench/audit_images_check.py: pairs at cosine >= 0.75 are 187 at N=1500
(156 planted) and 1165 at N=6000 (645 planted), x6.2 for x4 images (old
crops of 32 photos: 18,512 and 290,262); at N=5000 902 (561 planted), at
20000 7910 (2167 planted): chance look-alikes still grow quadratically and
outnumber the copies at 20000. 5-fold shrinkage-LDA accuracy: 0.74 on the
1500 set, 0.84 on the 5000 set.
- embed_ips: the in-process embedding pipeline alone on the same N files
  (warm model, files read in order), median of --repeats runs, each run
  just before an audit run at N (so drift affects both alike);
- audit_ips: N / wall time of `imagesieve audit` (a fresh process: start,
  model load, embedding, every analysis, the report), median of --repeats
  runs at N and at 4N;
- peak RSS of that process at N and 4N (medians), against the growth of
  the vectors themselves (4 bytes x 1024 per image): ``rss_growth`` is the
  RSS growth over the vectors' growth (target <= 1.1);
- ``resumed_rss_growth``: the same for audit processes rerun over the same
  --out (nothing left to embed; 3 after each fresh run, median of the 9),
  whose peak is the analyses' and the report's: the memory that grows with
  N, without the embedding stage's constant peak (ONNX Runtime's arenas,
  decode buffers) above it.
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps, ImageStat

from imagesieve.samples import imagenet_photos, natural_photos

sys.path.insert(0, str(Path(__file__).parent))
from photos import ALTERATIONS, jpeg, real_photos  # noqa: E402

OUT = Path(__file__).parent / "out" / "audit_images"
VERSION = "v2"          # bump when the generator changes: cached sets are per version
CLASSES = 8
SIZE = (640, 480)
COPY_RATE = 0.1         # share of images that are altered copies of an earlier image
# The embedder sees the centre square only (crop_fraction 0.875 of the shorter
# side): the dominant view lies inside it and areas are shares of it.
_SIDE = int(SIZE[1] * 0.875)
VIEW = ((SIZE[0] - _SIDE) // 2, (SIZE[1] - _SIDE) // 2, (SIZE[0] + _SIDE) // 2, (SIZE[1] + _SIDE) // 2)
DOMINANT_AREA = (0.3, 0.45)
PATCHES = (0, 2)
PATCH_AREA = (0.04, 0.1)
ZOOM = (0.1, 1.0)       # share of the largest view that fits in the photo (log-uniform)
STRETCH = 2.0           # at most this much wider or taller than the source
WARP = 0.35             # mesh-warp amplitude, in grid cells
MIN_DETAIL = 12.0       # mean edge strength (0-255) a background or dominant view must show
# Independent restyles of each view, with their probabilities.
RESTYLES = {"invert": 0.45, "posterize": 0.45, "solarize": 0.3, "gray": 0.35, "blur": 0.35}
# Pictures that are no scene (a colour chart, a silhouette, a logo, a CT phantom)
# and the Hubble deep field look alike wherever they are cut: small patches only.
PATCH_ONLY = {"hubble_deep_field.jpg", "color.png", "horse.png", "logo.png", "phantom.png"}

# RGB <-> YIQ, for hue rotation and saturation as one 3x3 colour matrix.
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = np.linalg.inv(_YIQ)
_PHOTOS: list = []
_NAMES: list = []
_EDGES: list = []       # per photo: integral image of its edge strength at 1/4 size


def _photos() -> list:
    """real_photos(), their file names (same order), and their edge maps; once per process."""
    if not _PHOTOS:
        _PHOTOS.extend(real_photos())
        _NAMES.extend([p.name for p, _ in imagenet_photos()] + [
            p.name for p in natural_photos()
            if Image.open(p).mode in ("RGB", "RGBA") and min(Image.open(p).size) >= 256])
        assert len(_NAMES) == len(_PHOTOS), "bench/photos.py real_photos() changed its selection"
        for photo in _PHOTOS:
            small = photo.convert("L").reduce(4).filter(ImageFilter.FIND_EDGES)
            e = np.asarray(small, dtype=np.float64)[1:-1, 1:-1]       # FIND_EDGES leaves the rim at 0
            _EDGES.append(np.pad(e.cumsum(0).cumsum(1), ((1, 0), (1, 0))))
    return _PHOTOS


def _piece(rng: random.Random, photo: int, size: tuple[int, int], pos: tuple[int, int]) -> dict:
    """A random view of one photo: rotation, zoom, stretch, centre, mirror, mesh
    warp, restyles and colour jitter."""
    return {
        "photo": photo, "size": size, "pos": pos,
        "angle": rng.uniform(-180, 180), "zoom": math.exp(rng.uniform(*map(math.log, ZOOM))),
        "stretch": math.exp(rng.uniform(-math.log(STRETCH), math.log(STRETCH))),
        "centre": (rng.random(), rng.random()), "flip": rng.random() < 0.5,
        "warp": [rng.uniform(-WARP, WARP) for _ in range(32)],     # x, y of a 4x4 grid
        "restyles": {k: rng.random() for k, q in RESTYLES.items() if rng.random() < q},
        "brightness": rng.uniform(0.7, 1.3), "contrast": rng.uniform(0.7, 1.3),
        "saturation": rng.uniform(0.3, 1.6), "hue": rng.uniform(-0.6, 0.6),
    }


def _detail(p: dict) -> float:
    """Mean edge strength of the photo in the view's bounding box, per output pixel."""
    x0, y0, x1, y1 = (v / 4 for v in _source_box(p))
    c = _EDGES[p["photo"]]
    h, w = c.shape[0] - 1, c.shape[1] - 1
    a, b = min(w - 1, max(0, int(x0) - 1)), min(h - 1, max(0, int(y0) - 1))
    r, t = max(a + 1, min(w, int(x1) - 1)), max(b + 1, min(h, int(y1) - 1))
    mean = (c[t, r] - c[b, r] - c[t, a] + c[b, a]) / ((r - a) * (t - b))
    return mean * min(1.0, _geometry(p)[2])       # a magnified view spreads the same edges thinner


def _detailed_piece(rng: random.Random, photo: int, size: tuple[int, int], pos: tuple[int, int]) -> dict:
    """A view with at least MIN_DETAIL, or the most detailed of 8 tries: flat
    views (sky, a wall, the inside of a silhouette) embed alike whatever their
    photo, and the other pieces then decide the whole embedding."""
    best = None
    for _ in range(8):
        p = _piece(rng, photo, size, pos)
        d = _detail(p)
        if d >= MIN_DETAIL:
            return p
        if best is None or d > best[0]:
            best = (d, p)
    return best[1]


def _box(rng: random.Random, area: tuple[float, float], inside: tuple[int, int, int, int]) -> tuple:
    """(size, position) of a random rectangle of a share of the centre square, inside ``inside``."""
    a = rng.uniform(*area) * _SIDE ** 2
    aspect = math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
    w = min(inside[2] - inside[0], int(round((a * aspect) ** 0.5)))
    h = min(inside[3] - inside[1], int(round(a / w)))
    return (w, h), (rng.randint(inside[0], inside[2] - w), rng.randint(inside[1], inside[3] - h))


def layout(n: int, i: int) -> dict:
    """Every random choice of original image i of the set of n (deterministic).
    A class owns the photos whose index % CLASSES is its number; the image is
    a background view of one of them, a dominant view of another in the centre
    square (``pieces[0]``), and 0-2 small patches of other classes' photos."""
    photos = _photos()
    rng = random.Random(f"audit-{VERSION}/{n}/{i}")
    label = rng.randrange(CLASSES)
    mine = [p for p in range(label, len(photos), CLASSES) if _NAMES[p] not in PATCH_ONLY]
    dom, bg = rng.sample(mine, 2)
    background = _detailed_piece(rng, bg, SIZE, (0, 0))
    pieces = [_detailed_piece(rng, dom, *_box(rng, DOMINANT_AREA, VIEW))]
    others = [p for p in range(len(photos)) if p % CLASSES != label]
    for _ in range(rng.randint(*PATCHES)):
        pieces.append(_piece(rng, rng.choice(others), *_box(rng, PATCH_AREA, (0, 0, *SIZE))))
    return {"label": label, "background": background, "pieces": pieces}


def _geometry(p: dict) -> tuple[float, float, float, float, float, float, float]:
    """(centre x, centre y, source px per output px, sin, cos, bounding box w, h)
    of the view in its photo: rotated, zoomed, stretched, fully inside the photo."""
    w, h = p["size"]
    pw, ph = _photos()[p["photo"]].size
    t = math.radians(p["angle"])
    cos, sin = math.cos(t), math.sin(t)
    sx, sy = p["stretch"] ** 0.5, p["stretch"] ** -0.5
    bw = w * sx * abs(cos) + h * sy * abs(sin)          # the rotated box, in source px at scale 1
    bh = w * sx * abs(sin) + h * sy * abs(cos)
    s = min(pw / bw, ph / bh) * p["zoom"]
    cx = bw * s / 2 + p["centre"][0] * (pw - bw * s)
    cy = bh * s / 2 + p["centre"][1] * (ph - bh * s)
    return cx, cy, s, sin, cos, bw * s, bh * s


def _source_box(p: dict) -> tuple[float, float, float, float]:
    cx, cy, _, _, _, bw, bh = _geometry(p)
    return cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2


def _view(photo: Image.Image, p: dict) -> Image.Image:
    """The piece's view of the photo, mesh-warped, in one resampling."""
    w, h = p["size"]
    cx, cy, s, sin, cos, _, _ = _geometry(p)
    sx, sy = p["stretch"] ** 0.5, p["stretch"] ** -0.5
    fx = -1 if p["flip"] else 1
    a, b, d, e = cos * s * sx * fx, -sin * s * sy, sin * s * sx * fx, cos * s * sy

    def src(x: float, y: float) -> tuple[float, float]:
        x, y = x - w / 2, y - h / 2
        return cx + a * x + b * y, cy + d * x + e * y

    g = 3                                                # 3x3 cells; the inner grid points move
    xs = [[w * i / g for i in range(g + 1)] for _ in range(g + 1)]
    ys = [[h * j / g for _ in range(g + 1)] for j in range(g + 1)]
    for j in range(g + 1):
        for i in range(g + 1):
            k = 2 * (j * (g + 1) + i)
            if 0 < i < g:
                xs[j][i] += p["warp"][k] * w / g
            if 0 < j < g:
                ys[j][i] += p["warp"][k + 1] * h / g
    mesh = []
    for j in range(g):
        for i in range(g):
            box = (w * i // g, h * j // g, w * (i + 1) // g, h * (j + 1) // g)
            quad = (src(xs[j][i], ys[j][i]) + src(xs[j + 1][i], ys[j + 1][i])
                    + src(xs[j + 1][i + 1], ys[j + 1][i + 1]) + src(xs[j][i + 1], ys[j][i + 1]))
            mesh.append((box, quad))
    return photo.transform((w, h), Image.MESH, mesh, resample=Image.BILINEAR)


def _restyle(img: Image.Image, restyles: dict, scale: float) -> Image.Image:
    for kind, arg in restyles.items():
        if kind == "invert":
            img = ImageOps.invert(img)
        elif kind == "posterize":
            img = ImageOps.posterize(img, 2 + int(arg * 2))
        elif kind == "solarize":
            img = ImageOps.solarize(img, 96 + int(arg * 96))
        elif kind == "gray":
            img = img.convert("L").convert("RGB")
        elif kind == "blur":
            img = img.filter(ImageFilter.GaussianBlur((1.5 + 2.5 * arg) * scale))
    return img


def _jitter(img: Image.Image, p: dict) -> Image.Image:
    """Hue rotation, saturation, contrast (about the mean) and brightness as
    one affine colour matrix."""
    c, s = np.cos(p["hue"]) * p["saturation"], np.sin(p["hue"]) * p["saturation"]
    m = p["brightness"] * p["contrast"] * (_YIQ_INV @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ _YIQ)
    mean = np.array(ImageStat.Stat(img).mean) @ m.T / p["contrast"]
    offset = mean * (1 - p["contrast"])
    return img.convert("RGB", tuple(np.concatenate([m, offset[:, None]], 1).ravel().tolist()))


def _render_piece(p: dict) -> Image.Image:
    """A magnified view is drawn at its photo's own resolution and then scaled
    up: the same picture at a fraction of the cost."""
    photo = _photos()[p["photo"]]
    w, h = p["size"]
    r = min(1.0, max(0.25, _geometry(p)[2]))
    if r > 0.8:
        return _jitter(_restyle(_view(photo, p), p["restyles"], 1.0), p)
    small = dict(p, size=(max(8, round(w * r)), max(8, round(h * r))))
    return _jitter(_restyle(_view(photo, small), p["restyles"], r), p).resize((w, h), Image.BILINEAR)


def render(spec: dict) -> Image.Image:
    canvas = _render_piece(spec["background"])
    for p in spec["pieces"]:
        canvas.paste(_render_piece(p), p["pos"])
    return canvas


def plan(n: int) -> list[tuple[int, int | None, str | None]]:
    """(index, index of the original it copies or None, alteration kind or None)."""
    rng = random.Random(f"audit-{VERSION}/{n}")
    kinds = sorted(ALTERATIONS)
    originals: list[int] = []
    out = []
    for i in range(n):
        if originals and rng.random() < COPY_RATE:
            out.append((i, rng.choice(originals), rng.choice(kinds)))
        else:
            originals.append(i)
            out.append((i, None, None))
    return out


def _flatten(img: Image.Image) -> Image.Image:
    if img.mode == "RGBA":                  # transparent corners as a browser shows them
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.getchannel("A"))
        return bg
    return img.convert("RGB")


def _make_one(job: tuple[Path, int, int, int | None, str | None]) -> None:
    folder, n, i, src, kind = job
    spec = layout(n, i if src is None else src)
    img = render(spec)
    if kind is not None:
        img = _flatten(ALTERATIONS[kind](img))
    (folder / f"class{spec['label']}" / f"img{i:06d}.jpg").write_bytes(jpeg(img, 90))


def make_images(n: int) -> Path:
    """n JPEGs (q90) in class0..class7 under bench/out/audit_images/<VERSION>-<n>,
    generated once (deterministic given n, whatever the number of workers)."""
    folder = OUT / f"{VERSION}-{n}"
    if folder.exists() and sum(1 for _ in folder.rglob("*.jpg")) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for c in range(CLASSES):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    jobs = [(folder, n, i, src, kind) for i, src, kind in plan(n)]
    workers = min(os.cpu_count() or 1, 8)
    if workers == 1:
        for j in jobs:
            _make_one(j)
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_make_one, jobs, chunksize=32):
                pass
    return folder


def embed_only(folder: Path) -> float:
    from imagesieve_server.engine import Embedder
    paths = sorted(folder.rglob("*.jpg"))
    e = Embedder.from_model()
    e.embed_all(p.read_bytes() for p in paths[:64])        # warm up
    t = time.perf_counter()
    for _ in e.embed(p.read_bytes() for p in paths):
        pass
    return len(paths) / (time.perf_counter() - t)


def audit(folder: Path, extra: list[str], resumes: int = 3) -> tuple[float, float, dict, list[float]]:
    """(wall seconds, peak RSS MiB, report summary) of one fresh audit
    process, and the peak RSS of each of ``resumes`` processes that resume it
    (nothing left to embed: loading the vectors, every analysis and the
    report; a few MiB of run-to-run noise, hence several)."""
    with tempfile.TemporaryDirectory() as out:
        probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                 "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                 "assert r.returncode == 0, r.stderr[-3000:]; "
                 "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        cmd = [sys.executable, "-c", probe, sys.executable, "-m", "imagesieve.cli", "audit",
               str(folder), "--out", out, *extra]
        wall, rss_kb = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        summary = json.loads((Path(out) / "report.json").read_text())["summary"]
        resumed_mb = []
        for _ in range(resumes):
            _, resumed_kb = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
            resumed = json.loads((Path(out) / "report.json").read_text())["summary"]
            assert resumed["seconds"]["embedding"] < 0.1 * summary["seconds"]["embedding"], "the rerun embedded again"
            resumed_mb.append(int(resumed_kb) / 1024)
        return float(wall), int(rss_kb) / 1024, summary, resumed_mb


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3, help="runs at N and at 4N (medians)")
    ap.add_argument("--no-sweep", action="store_true")
    args = ap.parse_args()
    extra = ["--no-sweep"] if args.no_sweep else []
    small, large = make_images(args.n), make_images(4 * args.n)
    embed_runs, runs_n = [], []
    for _ in range(args.repeats):      # alternated: drift on a shared machine hits baseline and audit alike
        embed_runs.append(embed_only(small))
        runs_n.append(audit(small, extra))
    embed_ips = statistics.median(embed_runs)
    wall_n = statistics.median(r[0] for r in runs_n)
    rss_n = statistics.median(r[1] for r in runs_n)
    sum_n = runs_n[len(runs_n) // 2][2]
    runs_4n = [audit(large, extra) for _ in range(args.repeats)]
    wall_4n = statistics.median(r[0] for r in runs_4n)
    rss_4n = statistics.median(r[1] for r in runs_4n)
    sum_4n = runs_4n[len(runs_4n) // 2][2]
    resumed_n = statistics.median(mb for r in runs_n for mb in r[3])
    resumed_4n = statistics.median(mb for r in runs_4n for mb in r[3])
    vectors_growth_mb = 3 * args.n * 1024 * 4 / 2**20
    audit_ips = args.n / wall_n
    result = {
        "n": args.n, "repeats": args.repeats, "embed_ips": round(embed_ips, 1), "audit_ips": round(audit_ips, 1),
        "audit_over_embed": round(audit_ips / embed_ips, 3),
        "audit_walls_n": [round(r[0], 1) for r in runs_n],
        "embed_ips_runs": [round(e, 1) for e in embed_runs],
        "audit_over_embed_runs": [round(args.n / r[0] / e, 3) for r, e in zip(runs_n, embed_runs)],
        "audit_ips_4n": round(4 * args.n / wall_4n, 1),
        "audit_over_embed_4n": round(4 * args.n / wall_4n / embed_ips, 3),
        "peak_rss_mb_n": round(rss_n, 1), "peak_rss_mb_4n": round(rss_4n, 1),
        "peak_rss_mb_runs_n": [round(r[1], 1) for r in runs_n],
        "peak_rss_mb_runs_4n": [round(r[1], 1) for r in runs_4n],
        "audit_walls_4n": [round(r[0], 1) for r in runs_4n],
        "vectors_growth_mb": round(vectors_growth_mb, 1),
        "rss_growth_mb": round(rss_4n - rss_n, 1),
        "rss_growth": round((rss_4n - rss_n) / vectors_growth_mb, 2),
        # The same for a rerun over embedded images: the analyses' own memory,
        # without the embedding stage's (constant) peak hiding it.
        "resumed_peak_rss_mb_n": round(resumed_n, 1), "resumed_peak_rss_mb_4n": round(resumed_4n, 1),
        "resumed_peak_rss_mb_range_n": [round(min(mb for r in runs_n for mb in r[3]), 1),
                                        round(max(mb for r in runs_n for mb in r[3]), 1)],
        "resumed_peak_rss_mb_range_4n": [round(min(mb for r in runs_4n for mb in r[3]), 1),
                                         round(max(mb for r in runs_4n for mb in r[3]), 1)],
        "resumed_rss_growth": round((resumed_4n - resumed_n) / vectors_growth_mb, 2),
        # Near-duplicate pairs: the planted copies (linear in N) plus chance
        # look-alikes among collages of 32 photos (quadratic, fewer at these N);
        # their arrays and groups are in the RSS.
        "duplicate_pairs_n": sum_n.get("duplicate_pairs"), "duplicate_pairs_4n": sum_4n.get("duplicate_pairs"),
        "stage_seconds_n": sum_n["seconds"], "stage_seconds_4n": sum_4n["seconds"],
        "stage_peak_rss_mb_n": sum_n["peak_rss_mb"], "stage_peak_rss_mb_4n": sum_4n["peak_rss_mb"],
        "stage_rss_mb_n": sum_n["rss_mb"], "stage_rss_mb_4n": sum_4n["rss_mb"],
        "sweep": not args.no_sweep,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
