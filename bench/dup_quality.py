"""Duplicate verdicts on three real collections, stage 1 alone vs verified.

    .venv/bin/python bench/dup_quality.py [--fashion 1500] [--copy-share 0.2] [--stream 40] [--kinds probe|probe2|probe3|probe4|warps]

Collections (each: real distinct originals plus planted altered copies):
  photos         foolbox's ImageNet photos and scikit-image's photos (bench/photos.py)
  illustrations  Art4Apps clip art, one artist, one style (Debian pysiogame; bench/collections_real.py)
  icons          Oxygen icons, one glossy style (Debian oxygen-icon-theme)
  fashion        Fashion-MNIST thumbnails, 28x28 (Debian dataset-fashion-mnist)
  documents      pages of Debian's license texts typeset 600x800 (--collections documents; not in the default run)
  gradients      120 generated smooth abstract pictures, 4 styles (--collections gradients; a stress
                 case for look-alikes, not a real collection, not in the default run)
Copies use kinds that were NOT used to tune the verifier (COPY_KINDS below:
perspective, noise, gamma, sharpen+saturate, coloured pad, caption bar,
WebP, rotate+crop, downscale, posterize) plus the issue's named kinds (60%
centre crop, letterbox, watermark) and three kinds the verifier was extended
for after a probe found them missed (quarter turn, vertical flip, negative). Light/dark or colour variants of one
design (collections_real's families) count as related, not false. ``--kinds probe``,
``probe2`` and ``probe3`` plant three later sets instead (PROBE_KINDS, PROBE2_KINDS,
PROBE3_KINDS), to see how the verdicts hold on kinds nobody tuned for.

Per collection and method ("stage1": raw cosine at the threshold derived
from the data; "verified": two stages), at the default settings of
``analysis.duplicates.find.find_duplicates``: recall (copies paired with
their original), recall_by_kind, false_pairs_per_1k_images (pairs of
unrelated images), wrong_original_pairs (a copy paired with an unrelated
original), covered_share (images in some group, planted copies and their
originals excluded), images/s end to end (embedding + search). Then the
streaming CheckDuplicates p50 latency over a real server, with and without
stage 2 (alternating). Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

sys.path.insert(0, str(Path(__file__).parent))
from photos import ALTERATIONS, encode, real_photos  # noqa: E402

from imagesieve_server.analysis.duplicates import region  # noqa: E402
from imagesieve_server.analysis.duplicates.find import find_duplicates  # noqa: E402
from imagesieve_server.engine import Embedder  # noqa: E402


def _perspective(im):
    w, h = im.size
    d = 0.08
    coeffs = _find_coeffs([(0, 0), (w, 0), (w, h), (0, h)],
                          [(w * d, h * d * 0.5), (w * (1 - d * 0.5), 0), (w, h), (0, h * (1 - d))])
    return im.transform(im.size, Image.PERSPECTIVE, coeffs, Image.BILINEAR)


def _find_coeffs(dst, src):
    a = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.array(a, float), np.array(src, float).ravel()).tolist()


def _noise(im, sigma: float = 12, seed: int = 7):
    arr = np.asarray(im.convert("RGB"), np.float32)
    arr += np.random.default_rng(seed).normal(0, sigma, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _caption(im):
    w, h = im.size
    out = Image.new("RGB", (w, h + h // 6), (20, 20, 20))
    out.paste(im.convert("RGB"), (0, 0))
    ImageDraw.Draw(out).text((w // 20, h + h // 24), "shared via imagesieve", fill=(240, 240, 240))
    return out


def _webp(im):
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="WEBP", quality=40)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _rotate_crop(im):
    w, h = im.size
    r = im.convert("RGB").rotate(-3, resample=Image.BICUBIC, expand=False)
    return r.crop((w // 20, h // 20, w - w // 20, h - h // 20))


COPY_KINDS = {
    "perspective": _perspective,
    "noise": _noise,
    "gamma": lambda im: Image.eval(im.convert("RGB"), lambda v: int(255 * (v / 255) ** 0.6)),
    "sharpen_saturate": lambda im: ImageEnhance.Color(im.convert("RGB").filter(ImageFilter.SHARPEN)).enhance(1.6),
    "pad_colour": lambda im: ImageOps.expand(im.convert("RGB"), border=max(im.size) // 12, fill=(200, 40, 40)),
    "caption_bar": _caption,
    "webp_q40": _webp,
    "rotate_crop": _rotate_crop,
    "downscale_half": lambda im: im.convert("RGB").resize((max(8, im.width // 2), max(8, im.height // 2)),
                                                          Image.LANCZOS),
    "posterize": lambda im: ImageOps.posterize(im.convert("RGB"), 3),
    "crop_60": lambda im: im.crop((int(im.width * .2), int(im.height * .2), int(im.width * .8), int(im.height * .8))),
    "letterbox_16x9": ALTERATIONS["letterbox_16x9"],
    "watermark": ALTERATIONS["watermark"],
    # Found missing by a probe of kinds the benchmark lacked (stage 2 had no
    # quarter turns or negatives), then used to design the fix: not unseen.
    "turn90": lambda im: im.convert("RGB").rotate(90, expand=True),
    "flip_vertical": lambda im: ImageOps.flip(im.convert("RGB")),
    "negative": lambda im: ImageOps.invert(im.convert("RGB")),
}


# A second set, to probe how the verdicts hold on kinds nobody tuned for:
# written after the benchmark's kinds, run with --kinds probe. rot15_expand
# (and its 11-40 degree siblings in the tests) led to the signature turning
# tilted pictures upright; the others were not used to change anything.
def _hue(im):
    h, s_, v = im.convert("HSV").split()
    return Image.merge("HSV", (h.point(lambda x: (x + 85) % 256), s_, v)).convert("RGB")


def _picture_in_picture(im):
    w, h = im.size
    bg = Image.new("RGB", (w, h), (90, 120, 160))
    d = ImageDraw.Draw(bg)
    for i in range(0, w, max(4, w // 10)):
        d.line([(i, 0), (i, h)], fill=(60, 80, 100), width=2)
    bg.paste(im.convert("RGB").resize((max(1, int(w * .7)), max(1, int(h * .7)))), (int(w * .2), int(h * .1)))
    return bg


def _sticker(im):
    im = im.convert("RGB").copy()
    w, h = im.size
    ImageDraw.Draw(im).ellipse([w * .6, h * .6, w * .9, h * .9], fill=(250, 220, 0))
    return im


def _jpeg(im, quality):
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _vignette(im):
    im = im.convert("RGB")
    w, h = im.size
    y, x = np.ogrid[:h, :w]
    r = np.sqrt(((x - w / 2) / (w / 2)) ** 2 + ((y - h / 2) / (h / 2)) ** 2)
    return Image.fromarray((np.asarray(im) * np.clip(1.2 - 0.6 * r, 0, 1)[..., None]).astype(np.uint8))


def _side_by_side(im):
    im = im.convert("RGB")
    w, h = im.size
    out = Image.new("RGB", (w * 2, h), (255, 255, 255))
    out.paste(im, (0, 0))
    out.paste(ImageOps.grayscale(im).convert("RGB"), (w, 0))
    return out


PROBE_KINDS = {
    "grayscale": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "hue_shift": _hue,
    "blur": lambda im: im.convert("RGB").filter(ImageFilter.GaussianBlur(max(1, im.width / 150))),
    "jpeg_q8": lambda im: _jpeg(im, 8),
    "rot15_expand": lambda im: im.convert("RGB").rotate(15, resample=Image.BICUBIC, expand=True, fillcolor=(0, 0, 0)),
    "corner_crop75": lambda im: im.convert("RGB").crop((0, 0, int(im.width * .75), int(im.height * .75))),
    "stretch_1.5x": lambda im: im.convert("RGB").resize((int(im.width * 1.5), im.height)),
    "picture_in_picture": _picture_in_picture,
    "sticker": _sticker,
    "rot12_noexpand": lambda im: im.convert("RGB").rotate(-12, resample=Image.BICUBIC, fillcolor=(0, 0, 0)),
    "rot30_white": lambda im: im.convert("RGB").rotate(30, resample=Image.BICUBIC, expand=True,
                                                       fillcolor=(255, 255, 255)),
    "pixelate8": lambda im: im.convert("RGB").resize((max(4, im.width // 8), max(4, im.height // 8)),
                                                     Image.BOX).resize(im.size, Image.NEAREST),
    "low_contrast": lambda im: ImageEnhance.Contrast(im.convert("RGB")).enhance(0.4),
    "vignette": _vignette,
    "mirror": lambda im: ImageOps.mirror(im.convert("RGB")),
    "side_by_side": _side_by_side,
    "upscale2x_sharp": lambda im: im.convert("RGB").resize((im.width * 2, im.height * 2), Image.BICUBIC)
                                                   .filter(ImageFilter.UnsharpMask(2, 150)),
}


# A third set (--kinds probe2), written 2026-12-05 after both others and used to change
# nothing: filters, overlays and framings a data pipeline or a person applies.
def _meme(im):
    im = im.convert("RGB").copy()
    w, h = im.size
    font = ImageFont.load_default(max(10, h // 9))     # Pillow's own scalable font
    for y, text in ((h // 30, "WHEN THE DATA"), (h - h // 7, "IS CLEAN")):
        ImageDraw.Draw(im).text((w // 10, y), text, font=font, fill="white", stroke_width=max(1, h // 150),
                                stroke_fill="black")
    return im


def _phone(im):
    """The picture at 62% in a dark phone frame with a status bar."""
    w, h = im.size
    pw, ph = max(1, int(w * 0.62)), max(1, int(h * 0.62))
    out = Image.new("RGB", (int(pw * 1.12), int(ph * 1.35)), (25, 25, 28))
    d = ImageDraw.Draw(out)
    d.rectangle((0, 0, out.width, int(ph * 0.1)), fill=(40, 40, 45))
    d.text((10, 4), "12:45  LTE", fill="white")
    out.paste(im.convert("RGB").resize((pw, ph)), (int(pw * 0.06), int(ph * 0.17)))
    return out


def _sepia(im):
    g = np.asarray(im.convert("L"), np.float32)
    return Image.fromarray(np.clip(np.stack([g * 1.07 + 20, g * 0.95 + 8, g * 0.75], -1), 0, 255).astype(np.uint8))


def _motion_blur(im):
    k = np.zeros((15, 15), np.float32)
    k[7, :] = 1 / 15
    return Image.fromarray(cv2.filter2D(np.asarray(im.convert("RGB")), -1, k))


def _checker_border(im):
    im = im.convert("RGB")
    w, h = im.size
    b = max(4, w // 7)
    s = max(2, b // 3)
    out = Image.new("RGB", (w + 2 * b, h + 2 * b))
    d = ImageDraw.Draw(out)
    for y in range(0, out.height, s):
        for x in range(0, out.width, s):
            d.rectangle((x, y, x + s, y + s), fill=(200, 30, 30) if (x // s + y // s) % 2 else (240, 240, 240))
    out.paste(im, (b, b))
    return out


def _augment_chain(im):
    """A training pipeline's chain: mirror, an 85% crop off centre, brighter, squashed 10%."""
    im = ImageOps.mirror(im.convert("RGB"))
    w, h = im.size
    im = im.crop((int(w * .1), int(h * .02), int(w * .95), int(h * .87)))
    return ImageEnhance.Brightness(im).enhance(1.25).resize((max(1, int(im.width * 0.9)), im.height))


def _aspect(im, ratio: float, size: tuple[int, int] | None = None):
    """The largest centred crop of width / height ``ratio`` (a wallpaper's other aspect)."""
    im = im.convert("RGB")
    w, h = im.size
    cw, ch = (w, int(w / ratio)) if w / h < ratio else (int(h * ratio), h)
    x, y = (w - cw) // 2, (h - ch) // 2
    out = im.crop((x, y, x + cw, y + ch))
    return out.resize(size) if size else out


def _clahe(im):
    lab = cv2.cvtColor(np.asarray(im.convert("RGB")), cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(3.0, (8, 8)).apply(lab[..., 0])
    return Image.fromarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))


PROBE2_KINDS = {
    "meme_text": _meme,
    "phone_frame": _phone,
    "channel_swap": lambda im: Image.merge("RGB", [im.convert("RGB").split()[i] for i in (2, 0, 1)]),
    "sepia": _sepia,
    "emboss": lambda im: im.convert("RGB").filter(ImageFilter.EMBOSS),
    "contour": lambda im: im.convert("RGB").filter(ImageFilter.CONTOUR),
    "oil_paint": lambda im: ImageOps.posterize(im.convert("RGB").filter(ImageFilter.ModeFilter(7)), 4),
    "rot45_expand": lambda im: im.convert("RGB").rotate(45, resample=Image.BICUBIC, expand=True, fillcolor=(0, 0, 0)),
    "noise30": lambda im: _noise(im, sigma=30, seed=3),
    "motion_blur": _motion_blur,
    "checker_border": _checker_border,
    "augment_chain": _augment_chain,
    "aspect_4_3": lambda im: _aspect(im, 4 / 3, (800, 600)),
    "aspect_21_9": lambda im: _aspect(im, 21 / 9),
    "thumb64": lambda im: im.convert("RGB").resize((64, max(1, round(64 * im.height / im.width))), Image.LANCZOS),
    "clahe": _clahe,
}


# A fourth set (--kinds probe3), written 2026-12-05 (a later session) before any run of it:
# tone maps that are not monotonic, resampling and palette effects, lens and shear
# geometry, sketches, mosaics.
def _shear(im, degrees: float = 15):
    im = im.convert("RGB")
    w, h = im.size
    t = float(np.tan(np.radians(degrees)))
    return im.transform((w + int(abs(t) * h), h), Image.AFFINE, (1, -t, t * h if t < 0 else 0, 0, 1, 0),
                        Image.BICUBIC, fillcolor=(128, 128, 128))


def _pencil_sketch(im):
    g = np.asarray(im.convert("L"), np.float32)
    inv = np.asarray(Image.fromarray((255 - g).astype(np.uint8)).filter(ImageFilter.GaussianBlur(
        max(1, im.width / 60))), np.float32)
    return Image.fromarray(np.clip(g * 255 / np.maximum(255 - inv, 1), 0, 255).astype(np.uint8)).convert("RGB")


def _barrel(im, k: float = 0.3):
    a = np.asarray(im.convert("RGB"))
    h, w = a.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    nx, ny = (x - w / 2) / (w / 2), (y - h / 2) / (h / 2)
    f = 1 + k * (nx * nx + ny * ny)
    return Image.fromarray(cv2.remap(a, (nx / f * w / 2 + w / 2).astype(np.float32),
                                     (ny / f * h / 2 + h / 2).astype(np.float32), cv2.INTER_LINEAR))


def _rotate_fill(im, degrees: float = 30):
    """Turned in place, then the largest upright rectangle inside cut out and resized back."""
    im = im.convert("RGB")
    w, h = im.size
    r = np.radians(degrees)
    c, s = abs(np.cos(r)), abs(np.sin(r))
    # the largest axis-aligned rectangle of the frame's aspect inside the turned frame
    scale = min(w / (w * c + h * s), h / (w * s + h * c))
    cw, ch = int(w * scale), int(h * scale)
    rot = im.rotate(degrees, resample=Image.BICUBIC)
    return rot.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)).resize((w, h))


def _colormap(im):
    return Image.fromarray(cv2.cvtColor(cv2.applyColorMap(np.asarray(im.convert("L")), cv2.COLORMAP_JET),
                                        cv2.COLOR_BGR2RGB))


def _tile(im):
    im = im.convert("RGB")
    w, h = im.size
    half = im.resize((max(1, w // 2), max(1, h // 2)))
    out = Image.new("RGB", (half.width * 2, half.height * 2))
    for x in (0, half.width):
        for y in (0, half.height):
            out.paste(half, (x, y))
    return out


PROBE3_KINDS = {
    "solarize": lambda im: ImageOps.solarize(im.convert("RGB"), 128),
    "shear_15": _shear,
    "dither_1bit": lambda im: im.convert("L").convert("1").convert("RGB"),
    "palette_16": lambda im: im.convert("RGB").quantize(16).convert("RGB"),
    "median_5": lambda im: im.convert("RGB").filter(ImageFilter.MedianFilter(5)),
    "pencil_sketch": _pencil_sketch,
    "barrel": _barrel,
    "jpeg_q5": lambda im: _jpeg(im, 5),
    "rot30_fill": _rotate_fill,
    "overexpose": lambda im: ImageEnhance.Brightness(im.convert("RGB")).enhance(2.0),
    "colormap_jet": _colormap,
    "low_light_noise": lambda im: _noise(ImageEnhance.Brightness(im.convert("RGB")).enhance(0.25), sigma=6, seed=5),
    "tile_2x2": _tile,
    "transpose": lambda im: im.convert("RGB").transpose(Image.Transpose.TRANSPOSE),
}
# A fifth set (--kinds probe4), written 2026-12-06 (a later session) before any run of it:
# an augmentation library's photometric and local-geometry ops that no earlier set has
# (elastic and grid warps, dropout, weather, local blurs, region censoring).
def _rng_of(im, salt: int) -> np.random.Generator:
    return np.random.default_rng(salt * 7919 + im.width * 31 + im.height)


def _remapped(im, dx: np.ndarray, dy: np.ndarray):
    a = np.asarray(im.convert("RGB"))
    h, w = a.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return Image.fromarray(cv2.remap(a, x + dx.astype(np.float32), y + dy.astype(np.float32), cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT))


def _elastic(im, alpha: float = 0.06, sigma: float = 0.04):
    """Smooth random displacements (alpha: of the shorter side; sigma: their smoothness)."""
    w, h = im.size
    r, s = _rng_of(im, 1), min(w, h)
    d = [cv2.GaussianBlur(r.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma * s) for _ in range(2)]
    d = [x / max(1e-6, float(np.abs(x).max())) * alpha * s for x in d]
    return _remapped(im, d[0], d[1])


def _grid_distortion(im, steps: int = 5, limit: float = 0.3):
    """Each of steps x steps cells stretched or shrunk by up to ``limit`` along x and y."""
    w, h = im.size
    r = _rng_of(im, 2)
    def axis(n):
        cuts = np.cumsum(1 + r.uniform(-limit, limit, steps))
        cuts = np.r_[0, cuts / cuts[-1]] * (n - 1)
        return np.interp(np.arange(n), np.linspace(0, n - 1, steps + 1), cuts) - np.arange(n)
    dx, dy = np.meshgrid(axis(w), axis(h))
    return _remapped(im, dx, dy)


def _cutout(im, holes: int = 8, side: float = 0.12):
    """Coarse dropout: black squares of ``side`` of the shorter side at random places."""
    im = im.convert("RGB").copy()
    r, d = _rng_of(im, 3), ImageDraw.Draw(im)
    s = max(2, int(min(im.size) * side))
    for _ in range(holes):
        x, y = int(r.integers(0, max(1, im.width - s))), int(r.integers(0, max(1, im.height - s)))
        d.rectangle((x, y, x + s, y + s), fill=(0, 0, 0))
    return im


def _fog(im, strength: float = 0.55):
    """A bright haze, thicker towards the top."""
    a = np.asarray(im.convert("RGB"), np.float32)
    h = a.shape[0]
    t = (strength * (1 - np.linspace(0, 0.6, h)))[:, None, None]
    haze = cv2.GaussianBlur(_rng_of(im, 4).uniform(200, 255, a.shape[:2]).astype(np.float32), (0, 0),
                            max(2, a.shape[1] / 20))[:, :, None]
    return Image.fromarray(np.clip(a * (1 - t) + haze * t, 0, 255).astype(np.uint8))


def _snow(im, flakes: float = 0.004):
    im = im.convert("RGB").copy()
    r, d = _rng_of(im, 5), ImageDraw.Draw(im)
    rad = max(1, min(im.size) // 150)
    for _ in range(int(im.width * im.height * flakes)):
        x, y = int(r.integers(0, im.width)), int(r.integers(0, im.height))
        d.ellipse((x - rad, y - rad, x + rad, y + rad), fill=(250, 250, 255))
    return im.filter(ImageFilter.GaussianBlur(0.6))


def _rain(im, drops: float = 0.0015):
    im = im.convert("RGB").copy()
    r, d = _rng_of(im, 6), ImageDraw.Draw(im)
    length = max(4, im.height // 12)
    for _ in range(int(im.width * im.height * drops)):
        x, y = int(r.integers(0, im.width)), int(r.integers(0, im.height))
        d.line((x, y, x + length // 5, y + length), fill=(190, 190, 200), width=max(1, im.width // 400))
    return ImageEnhance.Brightness(im).enhance(0.8)


def _shadow(im):
    """A dark polygon over a part of the picture (a random shadow)."""
    w, h = im.size
    r = _rng_of(im, 7)
    mask = Image.new("L", im.size, 0)
    pts = [(int(r.uniform(0, w)), int(r.uniform(h * 0.3, h))) for _ in range(5)] + [(0, h), (w, h)]
    ImageDraw.Draw(mask).polygon(pts, fill=150)
    return Image.composite(Image.new("RGB", im.size, (0, 0, 0)), im.convert("RGB"), mask)


def _glass_blur(im, sigma: float = 0.7, delta: int = 2):
    """Neighbouring pixels swapped at random, blurred before and after."""
    a = np.asarray(im.convert("RGB").filter(ImageFilter.GaussianBlur(sigma)), np.float32)
    h, w = a.shape[:2]
    r = _rng_of(im, 8)
    y, x = np.mgrid[0:h, 0:w]
    ys = np.clip(y + r.integers(-delta, delta + 1, (h, w)), 0, h - 1)
    xs = np.clip(x + r.integers(-delta, delta + 1, (h, w)), 0, w - 1)
    return Image.fromarray(a[ys, xs].astype(np.uint8)).filter(ImageFilter.GaussianBlur(sigma))


def _zoom_blur(im, top: float = 1.12, steps: int = 6):
    """The average of the picture zoomed about its centre by 1 .. ``top``."""
    im = im.convert("RGB")
    w, h = im.size
    acc = np.zeros((h, w, 3), np.float32)
    for z in np.linspace(1, top, steps):
        cw, ch = w / z, h / z
        box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
        acc += np.asarray(im.resize((w, h), Image.BILINEAR, box=box), np.float32)
    return Image.fromarray((acc / steps).astype(np.uint8))


def _iso_noise(im):
    """Camera noise: luminance noise plus colour blotches."""
    a = np.asarray(im.convert("RGB"), np.float32)
    r = _rng_of(im, 9)
    lum = r.normal(0, 10, a.shape[:2])[:, :, None]
    chroma = cv2.GaussianBlur(r.normal(0, 25, a.shape).astype(np.float32), (0, 0), 1.5)
    return Image.fromarray(np.clip(a + lum + chroma, 0, 255).astype(np.uint8))


def _censor(im, share: float = 0.3):
    """A centred rectangle of ``share`` of each side pixelated (a face or a plate censored)."""
    im = im.convert("RGB").copy()
    w, h = im.size
    box = (int(w * (0.5 - share / 2)), int(h * (0.4 - share / 2)), int(w * (0.5 + share / 2)),
           int(h * (0.4 + share / 2)))
    part = im.crop(box)
    block = max(2, min(part.size) // 6)
    im.paste(part.resize((max(1, part.width // block), max(1, part.height // block)), Image.BOX)
             .resize(part.size, Image.NEAREST), box)
    return im


def _crop_and_pad(im):
    """Shifted by a tenth of the frame: cut off at one side, padded black at the other."""
    im = im.convert("RGB")
    w, h = im.size
    out = Image.new("RGB", im.size, (0, 0, 0))
    out.paste(im.crop((int(w * 0.1), 0, w, int(h * 0.92))), (0, int(h * 0.08)))
    return out


def _social(im):
    """What a social network keeps: resized to 1080 px wide, sharpened, JPEG q70, twice."""
    im = im.convert("RGB")
    for _ in range(2):
        im = im.resize((1080, max(1, round(1080 * im.height / im.width))), Image.BICUBIC)
        im = _jpeg(im.filter(ImageFilter.UnsharpMask(1.5, 80)), 70)
    return im


PROBE4_KINDS = {
    "elastic": _elastic,
    "grid_distortion": _grid_distortion,
    "cutout": _cutout,
    "fog": _fog,
    "snow": _snow,
    "rain": _rain,
    "shadow": _shadow,
    "glass_blur": _glass_blur,
    "zoom_blur": _zoom_blur,
    "iso_noise": _iso_noise,
    "censor": _censor,
    "crop_and_pad": _crop_and_pad,
    "social_recompress": _social,
    "downscale_nearest": lambda im: im.convert("RGB").resize((max(4, im.width // 4), max(4, im.height // 4)),
                                                             Image.NEAREST).resize(im.size, Image.NEAREST),
}


# A sixth set (--kinds warps), written 2026-12-06 (a later session) before any run of it, to
# check a change chosen on probe4's elastic and grid warps: other local geometric warps (lens
# distortion both ways, ripples, a swirl, a jittered mesh, a bulge), each with a common
# second change, since a warp seldom travels alone.
def _lens(im, k: float):
    """Radial lens distortion: a point at radius r (1 = the half-diagonal) moves to r(1 + k r^2)."""
    w, h = im.size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, half = (w - 1) / 2, (h - 1) / 2, math.hypot(w, h) / 2
    u, v = (x - cx) / half, (y - cy) / half
    s = 1 + k * (u * u + v * v)
    return _remapped(im, u * s * half + cx - x, v * s * half + cy - y)


def _ripple(im, amplitude: float = 0.012, waves: float = 6):
    """Sine ripples along both axes (amplitude: of the shorter side; waves across the frame)."""
    w, h = im.size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a = amplitude * min(w, h)
    return _remapped(im, a * np.sin(2 * np.pi * waves * y / h), a * np.sin(2 * np.pi * waves * x / w))


def _swirl(im, strength: float = 2.5, radius: float = 0.45):
    from skimage.transform import swirl
    a = np.asarray(im.convert("RGB"))
    out = swirl(a, strength=strength, radius=radius * min(a.shape[:2]), preserve_range=True, mode="reflect")
    return Image.fromarray(out.astype(np.uint8))


def _mesh_jitter(im, steps: int = 4, jitter: float = 0.04):
    """A steps x steps mesh whose inner nodes move by up to ``jitter`` of each side, warped bilinearly."""
    w, h = im.size
    r = _rng_of(im, 11)
    d = r.uniform(-jitter, jitter, (2, steps + 1, steps + 1)).astype(np.float32)
    d[:, [0, -1], :] = 0
    d[:, :, [0, -1]] = 0
    dx = cv2.resize(d[0] * w, (w, h), interpolation=cv2.INTER_LINEAR)
    dy = cv2.resize(d[1] * h, (w, h), interpolation=cv2.INTER_LINEAR)
    return _remapped(im, dx, dy)


def _bulge(im, strength: float = 0.35, radius: float = 0.35):
    """A magnifying bulge off the centre (a liquify tool's bloat)."""
    w, h = im.size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, rad = 0.4 * w, 0.55 * h, radius * min(w, h)
    dist = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / rad
    pull = np.where(dist < 1, strength * (1 - dist) ** 2, 0).astype(np.float32)
    return _remapped(im, -(x - cx) * pull, -(y - cy) * pull)


WARP_KINDS = {
    "barrel": lambda im: _jpeg(_lens(im, 0.12), 80),
    "pincushion": lambda im: _lens(im, -0.1).resize((max(8, im.width * 3 // 4), max(8, im.height * 3 // 4)),
                                                     Image.BILINEAR),
    "ripple": _ripple,
    "swirl": _swirl,
    "mesh_jitter": lambda im: ImageEnhance.Color(_mesh_jitter(im)).enhance(0.6),
    "bulge": _bulge,
    "elastic_soft": lambda im: _jpeg(_elastic(im, alpha=0.03, sigma=0.06), 75),
    "grid_and_crop": lambda im: _grid_distortion(im, steps=4, limit=0.25).crop(
        (im.width // 12, im.height // 12, im.width - im.width // 12, im.height - im.height // 12)),
}


PROBE_SETS = {"probe": PROBE_KINDS, "probe2": PROBE2_KINDS, "probe3": PROBE3_KINDS,
              "probe4": PROBE4_KINDS, "warps": WARP_KINDS}


def flat(im: Image.Image) -> Image.Image:
    """Icons come as RGBA: shown on white, as a browser would."""
    if im.mode == "RGBA":
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


MAX_SHARED_LINES = 3       # typeset lines a text page may share with the pages kept before it


def text_pages(n: int = 120) -> list[tuple[Image.Image, str]]:
    """Pages of real prose (Debian's license texts, /usr/share/common-licenses)
    typeset in DejaVu Serif, 600x800: every page looks alike at a glance
    (a block of text), each one a distinct picture. Each license is read once
    (GPL, LGPL and GFDL are links to a version also listed), and the licenses
    repeat one another (GFDL-1.2 and 1.3, LGPL-2 and 2.1 share paragraphs word
    for word), so a page that shares MAX_SHARED_LINES or more typeset lines
    with the pages kept before it, together, is skipped: such pages are the
    same picture in part (the keypoints matched 12-38 points on them), not
    hard negatives. Fewer than ``n`` pages may remain (said on stderr)."""
    import glob
    import textwrap
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf", 14)
    files = dict.fromkeys(Path(f).resolve() for f in sorted(glob.glob("/usr/share/common-licenses/*")))
    words = " ".join(f.read_text(errors="ignore") for f in files if f.is_file()).split()
    pages, seen = [], set()
    for p in range(len(words) // 330):
        lines = textwrap.wrap(" ".join(words[p * 330:(p + 1) * 330]), 70)[:36]
        if len(seen.intersection(lines)) >= MAX_SHARED_LINES:
            continue
        seen.update(lines)
        im = Image.new("RGB", (600, 800), "white")
        draw = ImageDraw.Draw(im)
        for row, line in enumerate(lines):
            draw.text((40, 40 + 20 * row), line, fill=(0, 0, 0), font=font)
        pages.append((im, f"d{p}"))
        if len(pages) == n:
            break
    if len(pages) < n:
        print(f"text pages: {len(pages)} distinct pages of the {n} asked for", file=sys.stderr)
    return pages


def gradients(n: int = 120, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """Smooth abstract pictures, generated (no package ships such a set
    outside wallpaper packages, which are kept out of benchmarks): soft
    colour blobs, interfering waves, a gradient with a soft band, blurred
    bokeh discs, 960x600. Every picture of one style looks like any other at
    a glance, and any crop of one fits some part of another: hard negatives
    for the layout, a stress case, not a real collection."""
    h, w = 600, 960
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        r = np.random.default_rng(seed * 100_003 + i)
        img = np.zeros((h, w, 3), np.float32) + r.uniform(5, 60, 3)
        style = i % 4
        if style == 0:
            for _ in range(r.integers(3, 7)):
                cx, cy, sd, c = r.uniform(0, w), r.uniform(0, h), r.uniform(80, 400), r.uniform(-40, 200, 3)
                img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sd * sd))[..., None] * c
        elif style == 1:
            for _ in range(3):
                f, ang, ph, c = r.uniform(0.002, 0.01), r.uniform(0, np.pi), r.uniform(0, 6.28), r.uniform(20, 120, 3)
                img += (0.5 + 0.5 * np.sin(f * (xx * np.cos(ang) + yy * np.sin(ang)) + ph))[..., None] * c
        elif style == 2:
            ang = r.uniform(0, np.pi)
            t = xx * np.cos(ang) + yy * np.sin(ang)
            t = (t - t.min()) / (t.max() - t.min())
            img += t[..., None] * r.uniform(50, 200, 3)
            img += np.exp(-((t - r.uniform(0.3, 0.7)) / 0.05) ** 2)[..., None] * r.uniform(30, 150, 3)
        if style == 3:
            im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(im, "RGBA")
            for _ in range(40):
                x, y, rad = r.uniform(0, w), r.uniform(0, h), r.uniform(10, 80)
                colour = tuple(int(v) for v in r.uniform(80, 255, 3)) + (int(r.uniform(30, 90)),)
                draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=colour)
            im = im.filter(ImageFilter.GaussianBlur(6))
        else:
            im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        out.append((im, f"g{i}"))
    return out


def load(name: str, fashion_n: int) -> list[tuple[Image.Image, str]]:
    """(image, family) originals of one collection."""
    if name == "photos":
        return [(im, f"p{i}") for i, im in enumerate(real_photos())]
    if name in ("illustrations", "icons"):
        import collections_real
        collections_real.ensure_installed(name)
        return [(flat(im), fam) for _, im, fam in collections_real.load_collection(name)]
    if name == "documents":
        return text_pages()
    if name == "gradients":
        return gradients()
    from datasets import fashion_mnist
    x, _, _, _ = fashion_mnist()
    pick = np.random.default_rng(0).choice(len(x), fashion_n, replace=False)
    return [(Image.fromarray(x[i].reshape(28, 28).astype(np.uint8)).convert("RGB"), f"f{i}") for i in pick]


def build(originals, copy_share: float, seed: int = 0, copy_kinds: dict | None = None, copies: int = 1):
    """Encoded images with their source index (-1 = original), family and
    kind; ``copies`` planted copies (of successive kinds) per chosen original."""
    copy_kinds = copy_kinds or COPY_KINDS
    rng = np.random.default_rng(seed)
    n = len(originals)
    blobs = [encode(im) for im, _ in originals]
    source, family, kind = list(range(n)), [f for _, f in originals], ["original"] * n
    kinds = list(copy_kinds)
    chosen = rng.choice(n, max(1, int(round(copy_share * n))), replace=False)
    j = 0
    for i in sorted(chosen.tolist()):
        for _ in range(copies):
            k = kinds[j % len(kinds)]
            j += 1
            blobs.append(encode(copy_kinds[k](originals[i][0])))
            source.append(i), family.append(originals[i][1]), kind.append(k)
    return blobs, np.array(source), np.array(family, dtype=object), np.array(kind, dtype=object), n


def score(report, source, family, kind, n_orig) -> dict:
    a, b = report.a, report.b
    related = (source[a] == source[b]) | (family[a] == family[b])
    copies = np.flatnonzero(np.arange(len(source)) >= n_orig)
    paired = set()
    for x, y, rel in zip(a.tolist(), b.tolist(), related.tolist()):
        if rel:
            paired.add((x, y))
    found = np.array([(min(c, source[c]), max(c, source[c])) in paired for c in copies])
    is_copy = np.arange(len(source)) >= n_orig
    wrong = int(np.sum(~related & (is_copy[a] | is_copy[b])))
    planted = np.zeros(len(source), bool)
    planted[copies] = True
    planted[source[copies]] = True
    # Covered: in a group with an unrelated member (variants of one design
    # grouped together are related, like planted copies).
    in_group = np.zeros(len(source), bool)
    for g in report.groups:
        if len(set(family[g].tolist())) > 1:
            in_group[g] = True
    by_kind = {k: round(float(np.mean(found[kind[copies] == k])), 3) for k in sorted(set(kind[copies]))}
    return {"recall": round(float(found.mean()), 4), "recall_by_kind": by_kind,
            "false_pairs_per_1k_images": round(1000 * int((~related).sum()) / len(source), 3),
            "false_pairs": int((~related).sum()), "wrong_original_pairs": wrong,
            "wrong_original_share_of_copies": round(wrong / max(len(copies), 1), 4),
            "covered_share": round(float(np.sum(in_group & ~planted) / max(np.sum(~planted), 1)), 4),
            "threshold": round(float(report.threshold), 4), "threshold_reason": report.threshold_reason,
            "warnings": report.warnings}


def write_false_pairs(path: Path, report, source, family, kind, originals) -> None:
    """One CSV row per pair of unrelated images in a verified ``report``: the
    two images (index, kind, their originals), the two originals' mean
    absolute difference at 64x64 gray (0-255; near 0: the data set's own
    near duplicates), and the pair's evidence."""
    import csv
    a, b = report.a, report.b
    false = ~((source[a] == source[b]) | (family[a] == family[b]))
    path.parent.mkdir(parents=True, exist_ok=True)
    ev = report.evidence
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "kind_a", "kind_b", "source_a", "source_b", "originals_mad", "cosine", "agreement",
                    "matched_area", "keypoint_inliers", "matched_simplicity", "relative_disagreement"])
        for i in np.flatnonzero(false).tolist():
            x, y = int(a[i]), int(b[i])
            gray = [np.asarray(originals[source[z]][0].convert("L").resize((64, 64), Image.BOX), np.float32)
                    for z in (x, y)]
            w.writerow([x, y, kind[x], kind[y], int(source[x]), int(source[y]),
                        round(float(np.abs(gray[0] - gray[1]).mean()), 1), round(float(report.cosine[i]), 4),
                        round(float(ev.agreement[i]), 4), round(float(ev.matched_area[i]), 3),
                        int(ev.keypoint_inliers[i]), round(float(ev.matched_simplicity[i]), 4),
                        round(float(report.relative[i]), 4)])


def stream_latency(stored: list[bytes], queries: list[bytes], rounds: int) -> dict:
    """p50 latency of one-image CheckDuplicates calls, stage 2 on vs off,
    alternating, over a real server on loopback. ``stored`` fill the
    collection; ``queries`` (copies of stored images and new originals)
    are checked."""
    from imagesieve import Client
    from imagesieve.local_server import LocalServer
    lat = {"verified": [], "stage1": []}
    with LocalServer(["--max-images-per-request", "256"]) as srv, Client(srv.address) as c:
        c.create_collection("bench")
        for _ in c.add("bench", stored, keys=[f"o{i}" for i in range(len(stored))]):
            pass
        for r in range(rounds):
            q = queries[r % len(queries)]
            for method in (("verified", "stage1") if r % 2 else ("stage1", "verified")):
                t = time.perf_counter()
                list(c.check("bench", [q], keys=[f"q{r}"], raw_cosine=method == "stage1"))
                lat[method].append(time.perf_counter() - t)
    p50 = {m: statistics.median(v) * 1000 for m, v in lat.items()}
    return {"p50_ms_verified": round(p50["verified"], 2), "p50_ms_stage1": round(p50["stage1"], 2),
            "p50_ratio": round(p50["verified"] / p50["stage1"], 3), "calls_each": rounds}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fashion", type=int, default=1500, help="Fashion-MNIST originals")
    ap.add_argument("--copy-share", type=float, default=0.2, help="originals that get a planted copy")
    ap.add_argument("--stream", type=int, default=60, help="CheckDuplicates calls per method")
    ap.add_argument("--collections", default="photos,illustrations,icons,fashion")
    ap.add_argument("--copies", type=int, default=1,
                    help="copies planted per chosen original (the issue's trial set had 8 of each)")
    ap.add_argument("--kinds", choices=("benchmark", *PROBE_SETS), default="benchmark",
                    help="the benchmark's copy kinds, or a probe's (kinds nobody tuned for)")
    ap.add_argument("--false-pairs", metavar="DIR",
                    help="write each collection's verified false pairs, with their evidence, to DIR/NAME.csv")
    ap.add_argument("--no-region", action="store_true",
                    help="do not test partial matches where they were found (analysis.duplicates.region)")
    args = ap.parse_args()
    emb = Embedder.from_model("mobilenet_v1")
    rows = {}
    illustrations = None
    for name in args.collections.split(","):
        originals = load(name, args.fashion)
        share = 1.0 if name == "photos" else args.copy_share      # few photos: copy each
        blobs, source, family, kind, n_orig = build(originals, share, copies=args.copies,
                                                    copy_kinds=PROBE_SETS.get(args.kinds))
        t0 = time.perf_counter()
        out = emb.embed_all(blobs, with_signatures=True)
        t_embed = time.perf_counter() - t0
        vectors = np.stack([o.vector for o in out])
        signatures = np.stack([o.signature for o in out])
        sha = [hashlib.sha256(b).hexdigest() for b in blobs]
        keys = [f"{name}/{i}" for i in range(len(blobs))]
        none = [""] * len(blobs)
        for method, sig in (("stage1", None), ("verified", signatures)):
            t = time.perf_counter()
            regions = None if args.no_region else region.image_cosines(lambda: emb, blobs.__getitem__)
            rep = find_duplicates(vectors, keys, none, none, sha, signatures=sig, region_cosines=regions)
            took = time.perf_counter() - t
            row = score(rep, source, family, kind, n_orig)
            row.update(images=len(blobs), copies=len(blobs) - n_orig,
                       images_per_s=round(len(blobs) / (t_embed + took), 1), search_s=round(took, 2))
            rows[f"{name}/{method}"] = row
            if args.false_pairs and sig is not None:
                write_false_pairs(Path(args.false_pairs) / f"{name}.csv", rep, source, family, kind, originals)
            print(json.dumps({name: method, **{k: v for k, v in row.items() if k != "recall_by_kind"}}),
                  file=sys.stderr, flush=True)
        if name == "illustrations":
            # The stream: the copies, and as many new pictures held out of the collection.
            copied = set(source[n_orig:].tolist())
            fresh = [i for i in range(n_orig) if i not in copied][-(len(blobs) - n_orig):]
            illustrations = ([blobs[i] for i in range(n_orig) if i not in set(fresh)],
                             [x for pair in zip(blobs[n_orig:], [blobs[i] for i in fresh]) for x in pair])
    emb.close()
    stream = stream_latency(*illustrations, rounds=args.stream) if illustrations and args.stream else {}
    verified = [r for k, r in rows.items() if k.endswith("/verified")]
    print(json.dumps({"rows": rows, "streaming_check": stream,
                      "min_recall": min(r["recall"] for r in verified),
                      "max_false_pairs_per_1k": max(r["false_pairs_per_1k_images"] for r in verified),
                      "max_wrong_original_share": max(r["wrong_original_share_of_copies"] for r in verified),
                      "max_covered_share": max(r["covered_share"] for r in verified),
                      "stage1_min_recall": min(r["recall"] for k, r in rows.items() if k.endswith("/stage1")),
                      "stage1_max_false_pairs_per_1k": max(r["false_pairs_per_1k_images"]
                                                           for k, r in rows.items() if k.endswith("/stage1"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
