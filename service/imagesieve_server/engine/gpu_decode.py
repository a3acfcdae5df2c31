"""JPEG decoding and resizing on the GPU (torchvision's nvJPEG decoder).

Why: on a GPU host the model alone ran ~10,000 images/s from uint8 pixels
while CPU decoding held the whole pipeline near 1,000 (0.3 MP) and 400
(12 MP) images/s (README, "On one GPU host"). nvJPEG decodes baseline JPEGs
in batches on the GPU's hardware JPEG engines (A100 and later), and the
resize then runs on the GPU too: the model reads its batch where it was made,
with no host round trip.

Two halves:

- ``gpu_route(data, limits)``, on the host, before any GPU work, pure Python
  (no torch): None when the file is a JPEG that the CPU path
  (``decode.decode_image`` + ``Preprocessor.pixels``) would decode to the
  same picture, else why not. Everything else takes the CPU path, that image
  alone: other formats, CMYK/YCCK and Adobe-transformed JPEGs, EXIF or XMP
  orientation other than 1, arithmetic, lossless or 12-bit JPEGs, MPO files,
  files without their end-of-image marker (truncated: the CPU path says so),
  and anything the CPU path refuses under ``DecodeLimits`` (it then gives
  its own error). Progressive JPEGs go to the CPU by default: torchvision
  decodes them one at a time in software under one lock (only baseline ones
  are batched on the hardware engines), where the CPU path's threads decode
  them in parallel with DCT scaling.
- ``GpuJpegDecoder.decode(images, sizes)``: the routed JPEGs -> (N, S, S, 3) uint8
  on the executor's device, resized with exactly the geometry of
  ``Preprocessor.pixels``: Pillow's bilinear filter (antialiased: its support
  grows with the reduction) over the crop box, horizontal pass first with
  8-bit rounding between the passes, as Pillow's resampler does; the weights
  are Pillow's (``pillow_bilinear_weights``), applied as two matrix products.
  Pillow 13 runs the vertical pass first for some sizes (e.g. 333x500); then
  ~20% of the pixels differ by one level (``tests/test_gpu_decode.py``).
  An image the GPU decoder raises on is handed back for the CPU path.

What differs from the CPU path: the CPU path decodes a large JPEG at 1/2,
1/4 or 1/8 scale (libjpeg's DCT scaling, ``decode``) before the same
resize, nvJPEG at full size; and the two decoders' IDCT and chroma
upsampling differ by a level or two. The embeddings' cosine against the CPU
path's is measured by ``bench/gpu.py`` and ``bench/gpu_smoke.py``.

Imported only when GPU decoding is asked for (``Embedder(gpu_decode=...)``);
the routing half needs no torch.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import warnings
from typing import Callable, Sequence

import numpy as np
from imagesieve.orientation import ifd0_orientation

from . import preflight
from .decode import DecodeLimits, jpeg_scans, max_jpeg_scans
from .preflight import MAX_HEADER_SEGMENTS
from .preprocess import Preprocessor

# Start-of-frame markers: baseline and progressive Huffman, 8-bit, are what
# nvJPEG and the CPU path both decode; the rest (extended, lossless,
# hierarchical, arithmetic) stay on the CPU.
SOF_BASELINE, SOF_PROGRESSIVE = 0xC0, 0xC2
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}
_RGB_IDS = (ord("R"), ord("G"), ord("B"))   # libjpeg reads such a file as RGB, not YCbCr


@dataclasses.dataclass(frozen=True)
class JpegHeader:
    """What a JPEG's segments before its first scan say (``jpeg_header``)."""
    sof: int                    # start-of-frame marker, 0xC0..0xCF
    precision: int              # bits a sample
    width: int
    height: int
    component_ids: tuple[int, ...]
    adobe: bool                 # an APP14 "Adobe" segment (colour transform of its own: CMYK, YCCK, RGB)
    mpf: bool                   # an APP2 "MPF" segment (Pillow opens it as MPO)
    orientation: int | None     # EXIF orientation tag of the first Exif segment, None without one
    exif_unreadable: bool       # an Exif segment whose IFD0 could not be read
    xmp_orientation: bool       # an XMP packet naming an orientation (Pillow reads it when EXIF has none)


def jpeg_header(data: bytes) -> JpegHeader | None:
    """Parse ``data``'s segments up to its first scan (at most
    MAX_HEADER_SEGMENTS), or None when it is not a JPEG or the header is
    cut short or malformed."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, n = 2, len(data)
    frame = None
    adobe = mpf = exif_unreadable = xmp_orientation = False
    orientation = None
    seen_exif = False
    for _ in range(MAX_HEADER_SEGMENTS):
        if pos + 4 > n or data[pos] != 0xFF:
            return None                 # junk between segments: the CPU path's own checks apply
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1                    # fill byte
            continue
        if marker in _NO_LENGTH:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 2 or pos + 2 + length > n:
            return None
        body = data[pos + 4:pos + 2 + length]
        if marker == 0xDA:              # the first scan: the header is complete
            if frame is None:
                return None
            return JpegHeader(*frame, adobe, mpf, orientation, exif_unreadable, xmp_orientation)
        if marker in _SOF:
            if frame is not None or len(body) < 6:
                return None
            count = body[5]
            if len(body) < 6 + 3 * count:
                return None
            frame = (marker, body[0], int.from_bytes(body[3:5], "big"), int.from_bytes(body[1:3], "big"),
                     tuple(body[6 + 3 * i] for i in range(count)))
        elif marker == 0xEE and body[:5] == b"Adobe":
            adobe = True
        elif marker == 0xE2 and body[:4] == b"MPF\x00":
            mpf = True
        elif marker == 0xE1 and body[:6] == b"Exif\x00\x00":
            if not seen_exif:           # Pillow reads the first one
                seen_exif = True
                orientation, exif_unreadable = ifd0_orientation(body[6:])
        elif marker == 0xE1 and b"Orientation" in body and body.startswith(b"http://ns.adobe.com/xap/"):
            xmp_orientation = True
        pos += 2 + length
    return None


def gpu_route(data: bytes, limits: DecodeLimits = DecodeLimits(), progressive: bool = False) -> str | None:
    """None when ``data`` may be decoded on the GPU (see the module's
    docstring), else why it takes the CPU path. Reads headers only (and, for
    a progressive JPEG, counts its scans as the CPU path does)."""
    reason, _ = routed_size(data, limits, progressive)
    return reason


def routed_size(data: bytes, limits: DecodeLimits = DecodeLimits(), progressive: bool = False
                ) -> tuple[str | None, tuple[int, int] | None]:
    """(``gpu_route``'s answer, (width, height) from the header when routed
    to the GPU, else None): the header is parsed once."""
    reason = _route(data, limits, progressive)
    return (reason, None) if isinstance(reason, str) else (None, reason)


def _route(data: bytes, limits: DecodeLimits, progressive: bool) -> str | tuple[int, int]:
    """Why ``data`` takes the CPU path, or its (width, height) when it does not."""
    if data[:2] != b"\xff\xd8":
        return "not a JPEG"
    if len(data) > limits.max_bytes or preflight.problem(data, limits.max_pixels):
        return "refused by the decode limits (the CPU path gives the error)"
    h = jpeg_header(data)
    if h is None:
        return "JPEG header unreadable here"
    if h.sof == SOF_PROGRESSIVE and not progressive:
        return "progressive JPEG (decoded one at a time on the GPU; the CPU threads do better)"
    if h.sof not in (SOF_BASELINE, SOF_PROGRESSIVE):
        return f"JPEG frame type 0x{h.sof:02X} (the GPU path takes baseline and progressive)"
    if h.precision != 8:
        return f"{h.precision}-bit JPEG"
    if len(h.component_ids) not in (1, 3):
        return f"JPEG of {len(h.component_ids)} components (CMYK/YCCK)"
    if h.adobe or h.component_ids == _RGB_IDS:
        return "JPEG with its own colour transform (Adobe APP14 or RGB components)"
    if h.mpf:
        return "MPO (several pictures)"
    if h.exif_unreadable or h.xmp_orientation or h.orientation not in (None, 1):
        return "EXIF/XMP orientation to apply"
    w, hh = h.width, h.height
    if w <= 0 or hh <= 0 or w * hh > limits.max_pixels or max(w, hh) > limits.max_side \
            or 3 * w * hh > limits.max_raster_bytes:
        return "size refused by the decode limits, or unknown (the CPU path gives the error)"
    scans = jpeg_scans(data)
    if scans > max_jpeg_scans(w * hh):
        return "JPEG of too many scans (the CPU path gives the error)"
    if scans > 1 and h.sof != SOF_PROGRESSIVE:
        return "sequential JPEG in several scans (the CPU path charges its coefficient buffer)"
    if data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return "no end-of-image marker (truncated, or data after it)"
    return w, hh


def pillow_bilinear_weights(in_size: int, start: float, end: float, out_size: int) -> tuple[int, np.ndarray]:
    """Pillow's bilinear resampling of ``in_size`` source pixels, the box
    [start, end) of them, to ``out_size``: (first source pixel used,
    weights (out_size, span) float64, rows summing to 1), so that
    ``out = weights @ src[first:first + span]``. As Pillow's
    ``precompute_coeffs`` (Resample.c): the triangle filter's support
    scaled by the reduction (antialiasing), each output pixel's taps
    clipped to the image and normalized."""
    scale = (end - start) / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    rows, lo, hi = [], [], []
    for xx in range(out_size):
        center = start + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        x = np.arange(xmin, xmax, dtype=np.float64)
        w = np.maximum(0.0, 1.0 - np.abs((x - center + 0.5) / filterscale))
        total = w.sum()
        rows.append(w / total if total != 0 else w)
        lo.append(xmin)
        hi.append(xmax)
    first, span = min(lo), max(hi) - min(lo)
    out = np.zeros((out_size, span), np.float64)
    for xx, (a, w) in enumerate(zip(lo, rows)):
        out[xx, a - first:a - first + len(w)] = w
    return first, out


# Bytes of float32 working memory one resize step may use on the device
# (a 12 MP crop is ~83 MB as float32: ~24 such images a step).
MAX_RESIZE_BYTES = 2 << 30
# Decoded pixels one nvJPEG call may produce (x 3 bytes): bounds the
# device memory of a batch of large photos (256 x 12 MP would be 9 GB).
MAX_DECODE_PIXELS = 512 << 20
MAX_WEIGHT_SIZES = 64           # source sizes whose resize weights stay on the device
BAND_OUTPUTS = 16               # output columns a band of the banded horizontal pass computes
RESIZES = ("matmul", "banded")


@dataclasses.dataclass
class GpuDecoded:
    """``pixels``: (len(rows), S, S, 3) uint8 on the decoder's device, row
    k being image ``rows[k]`` (an index into the list given to ``decode``);
    ``sizes``: (width, height) of each row's file; ``fallback``: indices of
    the images the GPU decoder raised on, for the CPU path."""
    pixels: object
    rows: list[int]
    sizes: list[tuple[int, int]]
    fallback: list[int]


def _torchvision_decode_jpeg() -> Callable:
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(tensors, device):
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    return decode


class GpuJpegDecoder:
    """Routed JPEGs -> the model's input pixels on ``device``.

    Parameters
    ----------
    preprocessor : the model's geometry (input size S, crop fraction).
    device : a torch device: "cuda" (nvJPEG), or "cpu" (torchvision's libjpeg
        decoder: to exercise this code on a host without a GPU).
    limits : the CPU path's decode limits, which routing keeps.
    progressive : also route progressive JPEGs here (see the module's docstring).
    decode_fn : ``(list of 1-D uint8 CPU tensors, device) -> list of
        (3, H, W) uint8 tensors on device``, raising on a bad image;
        default torchvision's ``decode_jpeg`` in RGB mode.
    resize : "matmul" (default): the horizontal pass as one matrix product
        over the crop's full width; "banded": the same weights, each run of
        BAND_OUTPUTS output columns multiplied only by the band of source
        columns it reads (a 12 MP photo: ~20x fewer multiply-adds; the same
        sums up to float32 rounding order).
    chunk_images : at most this many images a decoder call (None: bounded
        by MAX_DECODE_PIXELS only).
    overlap : decode the next chunk on a helper thread while this one is
        resized (torchvision's decoder holds one process-wide lock, so
        decoder calls never overlap each other, but they can overlap the
        resize).
    """

    def __init__(self, preprocessor: Preprocessor, device="cuda", limits: DecodeLimits = DecodeLimits(),
                 progressive: bool = False, decode_fn: Callable | None = None, resize: str = "matmul",
                 chunk_images: int | None = None, overlap: bool = False):
        import torch
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
        if chunk_images is not None and chunk_images < 1:
            raise ValueError(f"chunk_images must be >= 1, got {chunk_images}")
        self._torch = torch
        self.pre = preprocessor
        self.device = torch.device(device)
        self.limits = limits
        self.progressive = progressive
        self._decode_fn = decode_fn or _torchvision_decode_jpeg()
        self.resize = resize
        self.chunk_images = chunk_images
        self.overlap = overlap
        self._pool = None               # the helper thread of ``overlap``, made on first use
        # Per source size, the resize's two weight matrices on the device (a
        # 12 MP size: ~4 MB), the most recently used MAX_WEIGHT_SIZES of them:
        # a stream of odd sizes must not grow device memory without bound.
        self._weights: collections.OrderedDict[tuple, tuple] = collections.OrderedDict()

    def route(self, data: bytes) -> tuple[str | None, tuple[int, int] | None]:
        """(None, (width, height)) when ``data`` goes to ``decode``, else
        (why the CPU path takes it, None)."""
        return routed_size(data, self.limits, self.progressive)

    def decode(self, images: Sequence[bytes], sizes: Sequence[tuple[int, int]]) -> GpuDecoded:
        """Decode and resize ``images`` (each one routed here, with the
        (width, height) ``route`` gave). Never raises for an image: one the
        decoder refuses is listed in ``fallback``."""
        torch = self._torch
        resized: dict[int, object] = {}        # index -> (S, S, 3) uint8 on device
        decoded_sizes: dict[int, tuple[int, int]] = {}
        fallback: list[int] = []
        for chunk, (decoded_chunk, failed) in self._decoded_chunks(images, self._chunks(sizes)):
            fallback += [chunk[j] for j in failed]
            groups: dict[tuple[int, int], list[int]] = {}
            for j, t in decoded_chunk.items():
                groups.setdefault(tuple(t.shape[1:]), []).append(j)
                decoded_sizes[chunk[j]] = (int(t.shape[2]), int(t.shape[1]))
            for (h, w), js in groups.items():
                step = max(1, MAX_RESIZE_BYTES // self._resize_bytes(w, h))
                for a in range(0, len(js), step):
                    part = js[a:a + step]
                    out = self._resize(torch.stack([decoded_chunk[j] for j in part]), w, h)
                    resized.update((chunk[j], out[k]) for k, j in enumerate(part))
            del decoded_chunk
        rows = sorted(resized)
        s = self.pre.size
        out = torch.stack([resized[i] for i in rows]) if rows else \
            torch.empty((0, s, s, 3), dtype=torch.uint8, device=self.device)
        return GpuDecoded(out, rows, [decoded_sizes[i] for i in rows], sorted(fallback))

    def _decoded_chunks(self, images: Sequence[bytes], chunks: list[list[int]]):
        """(chunk, ``_decode_chunk``'s answer) for each chunk, in order; with
        ``overlap``, the next chunk decoding on the helper thread meanwhile."""
        if not self.overlap or len(chunks) < 2:
            for chunk in chunks:
                yield chunk, self._decode_chunk([images[i] for i in chunk])
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="imagesieve-nvjpeg")
        ahead = collections.deque()
        for chunk in chunks:
            ahead.append((chunk, self._pool.submit(self._decode_chunk, [images[i] for i in chunk])))
            if len(ahead) > 1:
                done, future = ahead.popleft()
                yield done, future.result()
        while ahead:
            done, future = ahead.popleft()
            yield done, future.result()

    def _resize_bytes(self, width: int, height: int) -> int:
        """Device working memory of one image's resize, about."""
        if self.resize == "banded":
            side = max(1, round(min(width, height) * self.pre.crop_fraction))
            # float32: the gathered bands (a quarter wider than the crop), their copy for bmm, the pass's output
            return 3 * side * (side * 5 // 4 + 64) * 4 * 3
        return 3 * height * width * 4

    def _chunks(self, sizes: Sequence[tuple[int, int]]) -> list[list[int]]:
        """Indices of the images of ``sizes`` in runs of at most
        MAX_DECODE_PIXELS (and ``chunk_images`` images)."""
        chunks, current, pixels = [], [], 0
        most = self.chunk_images or len(sizes) or 1
        for i, (w, h) in enumerate(sizes):
            if current and (pixels + w * h > MAX_DECODE_PIXELS or len(current) >= most):
                chunks.append(current)
                current, pixels = [], 0
            current.append(i)
            pixels += w * h
        if current:
            chunks.append(current)
        return chunks

    def _decode_chunk(self, images: list[bytes]) -> tuple[dict[int, object], list[int]]:
        """({index: (3, H, W) uint8 on device}, indices that failed). One
        batched call; when it raises, each image again on its own, so that
        one bad image fails alone."""
        torch = self._torch
        with warnings.catch_warnings():
            # The bytes are read-only and the decoder only reads them: no copy.
            warnings.filterwarnings("ignore", message="The given buffer is not writable")
            tensors = [torch.frombuffer(d, dtype=torch.uint8) for d in images]
        try:
            return dict(enumerate(self._decode_fn(tensors, self.device))), []
        except Exception:  # noqa: BLE001 - find the image(s) it was, below
            pass
        ok, failed = {}, []
        for j, t in enumerate(tensors):
            try:
                ok[j] = self._decode_fn([t], self.device)[0]
            except Exception:  # noqa: BLE001 - this image takes the CPU path, which says what is wrong
                failed.append(j)
        return ok, failed

    def _resize(self, batch, width: int, height: int):
        """(n, 3, H, W) uint8 on device -> (n, S, S, 3) uint8, as
        ``Preprocessor.pixels`` (Pillow's two passes, rounded between)."""
        torch = self._torch
        key = (width, height)
        if key in self._weights:
            self._weights.move_to_end(key)
        else:
            left, top, right, bottom = self.pre.crop_box(width, height)
            x0, wx = pillow_bilinear_weights(width, left, right, self.pre.size)
            y0, wy = pillow_bilinear_weights(height, top, bottom, self.pre.size)
            bands = None
            if self.resize == "banded":
                idx, wb = band_weights(wx)
                bands = (torch.from_numpy(idx).to(self.device), torch.from_numpy(wb.astype(np.float32)).to(self.device))
            self._weights[key] = (x0, torch.from_numpy(wx.T.astype(np.float32)).to(self.device),
                                  y0, torch.from_numpy(wy.astype(np.float32)).to(self.device), bands)
            while len(self._weights) > MAX_WEIGHT_SIZES:
                self._weights.popitem(last=False)
        x0, wx_t, y0, wy, bands = self._weights[key]
        src = batch[:, :, y0:y0 + wy.shape[1], x0:x0 + wx_t.shape[0]]
        if bands is None:
            across = torch.matmul(src.float(), wx_t)                              # (n, 3, rows, S)
        else:
            idx, wb = bands                                                       # (G, band), (G, band, k)
            n, c, rows = src.shape[:3]
            g, band, k = wb.shape
            gathered = src.index_select(3, idx.reshape(-1)).float().view(n * c * rows, g, band)
            across = torch.bmm(gathered.transpose(0, 1), wb)                    # (G, n*3*rows, k)
            across = across.transpose(0, 1).reshape(n, c, rows, g * k)[..., :self.pre.size]
        across = across.add_(0.5).floor_().clamp_(0, 255)
        down = torch.matmul(wy, across).add_(0.5).floor_().clamp_(0, 255)        # (n, 3, S, S)
        return down.to(torch.uint8).permute(0, 2, 3, 1)

    def close(self) -> None:
        """Stop the helper thread of ``overlap``, if started."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def band_weights(w: np.ndarray, outputs: int = BAND_OUTPUTS) -> tuple[np.ndarray, np.ndarray]:
    """``pillow_bilinear_weights``' (S, span) matrix cut into bands: runs of
    ``outputs`` output pixels, each with the one window of source columns
    that holds all their taps (every window as wide as the widest, kept
    inside the span). Returns (idx (G, band) int64 source columns, weights
    (G, band, outputs) float64), G = ceil(S / outputs), zero rows and columns
    where a window reaches past its taps or the last band past S, so that
    ``out[:, g*outputs + j] = src[:, idx[g]] @ weights[g, :, j]`` equals
    ``src @ w.T`` column for column."""
    s, span = w.shape
    g = -(-s // outputs)
    nz = w != 0
    lo = np.where(nz.any(1), nz.argmax(1), 0)
    hi = np.where(nz.any(1), span - nz[:, ::-1].argmax(1), 0)
    starts, ends = [], []
    for b in range(g):
        rows = slice(b * outputs, min(s, (b + 1) * outputs))
        starts.append(int(lo[rows].min()))
        ends.append(int(hi[rows].max()))
    band = max(1, max(e - a for a, e in zip(starts, ends)))
    band = min(band, span)
    idx = np.empty((g, band), np.int64)
    out = np.zeros((g, band, outputs), np.float64)
    for b, a in enumerate(starts):
        a = min(a, span - band)
        idx[b] = np.arange(a, a + band)
        for j in range(outputs):
            r = b * outputs + j
            if r < s:
                out[b, :, j] = w[r, a:a + band]
    return idx, out


def tiny_jpeg() -> bytes:
    """An 8x8 baseline JPEG: a probe that GPU decoding works on this host."""
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 140, 200)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def gpu_decoder_for(executor, preprocessor: Preprocessor, limits: DecodeLimits, mode) -> GpuJpegDecoder | None:
    """The decoder ``Embedder(gpu_decode=mode)`` uses with ``executor``:
    ``mode`` a GpuJpegDecoder -> itself; True -> one on the executor's device (CPU too: a test of this
    code without a GPU), raising when torchvision cannot decode there;
    "auto" -> one when the executor runs on CUDA and a probe JPEG decodes
    there, else None; False -> None."""
    if isinstance(mode, GpuJpegDecoder):
        return mode                     # made by the caller (a test's own decode function)
    if mode not in (True, False, "auto"):
        raise ValueError(f"gpu_decode must be True, False, 'auto' or a GpuJpegDecoder, got {mode!r}")
    if not mode:
        return None
    device = getattr(executor, "device", None)
    if device is None or not hasattr(executor, "run_device"):
        if mode == "auto":
            return None
        raise ValueError("gpu_decode needs the torch runtime (runtime='torch')")
    if mode == "auto" and device.type != "cuda":
        return None
    try:
        decoder = GpuJpegDecoder(preprocessor, device, limits)
        probe = decoder.decode([tiny_jpeg()], [(8, 8)])
        if probe.fallback:
            raise RuntimeError("torchvision could not decode a probe JPEG on " + str(device))
    except Exception:
        if mode == "auto":
            return None
        raise
    return decoder


__all__ = ["GpuDecoded", "GpuJpegDecoder", "band_weights", "gpu_decoder_for", "gpu_route",
           "pillow_bilinear_weights", "routed_size"]
