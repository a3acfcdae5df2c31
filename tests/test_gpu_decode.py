"""GPU JPEG decoding (``engine.gpu_decode``) without a GPU or torchvision:
which files the host routes to the GPU (real files of every kind), Pillow's
resize geometry as the GPU path applies it, and the pipeline's plumbing:
routed and fallback images in one batch, each answered as the CPU path
answers it. The torchvision decoder itself is checked by
``bench/gpu_smoke.py`` and ``bench/gpu.py`` on a host that has it."""
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from imagesieve_server.engine import DecodeLimits, Embedder, decode_image
from imagesieve_server.engine.decode import DecodeError
from imagesieve_server.engine.gpu_decode import (GpuJpegDecoder, band_weights, gpu_route, jpeg_header,
                                                 pillow_bilinear_weights, routed_size)

from conftest import encode, photo_image

GPU_REFUSES = b"imagesieve-test: the GPU decoder raises on this one"


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.fixture(scope="module")
def files(photos) -> dict[str, bytes]:
    """One real photo in every variant the router must tell apart."""
    img = photo_image(photos[0][0]).resize((320, 240))
    baseline = encode(img, "JPEG", quality=90)
    many_scans = encode(img, "JPEG", quality=90, progressive=True)
    # 120 extra (empty) scans: what the CPU path refuses as a scan bomb.
    many_scans = many_scans[:-2] + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" * 120 + b"\xff\xd9"
    return {
        "baseline": baseline,
        "grey": encode(img.convert("L"), "JPEG", quality=90),
        "subsampled_444": encode(img, "JPEG", quality=90, subsampling=0),
        "exif_upright": encode(img, "JPEG", quality=90, exif=_exif(1)),
        "progressive": encode(img, "JPEG", quality=90, progressive=True),
        "cmyk": encode(img.convert("CMYK"), "JPEG", quality=90),
        "rgb_components": encode(img, "JPEG", quality=90, keep_rgb=True),
        "exif_rotated": encode(img, "JPEG", quality=90, exif=_exif(6)),
        "xmp_rotated": encode(img, "JPEG", quality=90,
                              xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
                                  b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'),
        "png": encode(img, "PNG"),
        "truncated": baseline[:len(baseline) * 2 // 3],
        "header_only": baseline[:200],
        "padded": baseline[:2] + b"\x00" * 70_000 + baseline[2:],     # preflight refuses it
        "many_scans": many_scans,
    }


GPU = {"baseline", "grey", "subsampled_444", "exif_upright"}


def test_routes_only_jpegs_the_cpu_path_decodes_alike(files):
    routes = {name: gpu_route(data) for name, data in files.items()}
    assert {n for n, r in routes.items() if r is None} == GPU, routes
    assert "progressive" in routes["progressive"]
    assert "CMYK" in routes["cmyk"]
    assert "colour transform" in routes["rgb_components"]
    assert "orientation" in routes["exif_rotated"] and "orientation" in routes["xmp_rotated"]
    assert routes["png"] == "not a JPEG"
    assert "end-of-image" in routes["truncated"]
    assert "decode limits" in routes["padded"]
    # Progressive ones when asked for, except what the CPU path refuses (then it says why).
    assert gpu_route(files["progressive"], progressive=True) is None
    assert "too many scans" in gpu_route(files["many_scans"], progressive=True)
    with pytest.raises(DecodeError, match="scans"):
        decode_image(files["many_scans"], 256)
    # The decode limits: what the CPU path would refuse stays with it.
    assert "decode limits" in gpu_route(files["baseline"], DecodeLimits(max_pixels=320 * 240 - 1))
    assert "decode limits" in gpu_route(files["baseline"], DecodeLimits(max_bytes=len(files["baseline"]) - 1))
    assert "decode limits" in gpu_route(files["baseline"], DecodeLimits(max_side=319))
    for name in GPU:          # the header's size is the size the CPU path reports
        img = decode_image(files[name], 10_000)
        assert routed_size(files[name])[1] == img.info["original_size"] == (320, 240)
        assert img.mode == "RGB"


def test_header_parser_reads_what_pillow_reads(files):
    h = jpeg_header(files["baseline"])
    assert (h.sof, h.precision, h.width, h.height, len(h.component_ids)) == (0xC0, 8, 320, 240, 3)
    assert jpeg_header(files["grey"]).component_ids == (1,)
    assert jpeg_header(files["exif_rotated"]).orientation == 6
    assert jpeg_header(files["exif_upright"]).orientation == 1
    assert jpeg_header(files["cmyk"]).adobe
    assert jpeg_header(files["header_only"]) is None and jpeg_header(files["png"]) is None
    for cut in range(0, 200, 7):          # any prefix of a header: None or a header, never an exception
        jpeg_header(files["exif_rotated"][:cut])


@pytest.mark.parametrize("size", [(640, 480), (500, 375), (1153, 865), (4000, 3000), (224, 224), (333, 500)])
def test_resize_weights_are_pillows(embedder, photos, size):
    """The two weight matrices, applied as the GPU path applies them
    (horizontal pass, 8-bit rounding, vertical pass), give
    ``Preprocessor.pixels`` to within one level."""
    pre = embedder.preprocessor
    img = photo_image(photos[1][0]).resize(size, Image.BICUBIC)
    want = pre.pixels(img).astype(int)
    left, top, right, bottom = pre.crop_box(*size)
    x0, wx = pillow_bilinear_weights(size[0], left, right, pre.size)
    y0, wy = pillow_bilinear_weights(size[1], top, bottom, pre.size)
    assert np.allclose(wx.sum(1), 1) and np.allclose(wy.sum(1), 1)
    src = np.asarray(img, np.float64)[y0:y0 + wy.shape[1], x0:x0 + wx.shape[1]]
    across = np.clip(np.floor(np.einsum("yxc,sx->ysc", src, wx) + 0.5), 0, 255)
    got = np.clip(np.floor(np.einsum("ty,ysc->tsc", wy, across) + 0.5), 0, 255).astype(int)
    diff = np.abs(got - want)
    assert diff.max() <= 1
    # Pillow 13 runs the vertical pass first for some sizes (333x500 here): more one-level differences.
    assert diff.mean() < (0.3 if size == (333, 500) else 0.02)


def _pillow_decode(tensors, device):
    """A stand-in for torchvision's decode_jpeg: full-size RGB decode with
    Pillow (as nvJPEG: no DCT scaling), raising as a decoder does."""
    import torch
    _pillow_decode.calls.append(len(tensors))
    out = []
    for t in tensors:
        data = t.numpy().tobytes()
        if GPU_REFUSES in data:
            raise RuntimeError("nvjpeg: this stand-in refuses the image")
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        out.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1).to(device))
    return out


_pillow_decode.calls = []


@pytest.fixture(scope="module")
def torch_embedders(manifest_path):
    cpu = Embedder.from_model(str(manifest_path), runtime="torch", torch_device="cpu", max_batch_size=8)
    decoder = GpuJpegDecoder(cpu.preprocessor, "cpu", decode_fn=_pillow_decode)
    gpu = Embedder.from_model(str(manifest_path), runtime="torch", torch_device="cpu", max_batch_size=8,
                              gpu_decode=decoder)
    yield cpu, gpu
    cpu.close()
    gpu.close()


def test_routed_and_fallback_images_in_one_batch_answer_as_the_cpu_path(torch_embedders, files, photos):
    cpu, gpu = torch_embedders
    refused = encode(photo_image(photos[2][0]), "JPEG", quality=90, comment=GPU_REFUSES)
    # The sample photos are progressive (the CPU path's); baseline copies go to the GPU.
    images = ([encode(photo_image(d), "JPEG", quality=90) for d, _, _ in photos[:6]] + [files[n] for n in sorted(files)]
              + [refused, b"not an image", b""] + [d for d, _, _ in photos[6:12]])
    _pillow_decode.calls.clear()
    a, b = cpu.embed_all(images), gpu.embed_all(images)
    # One call a batch of 8 for its routed images (the 6 photos and 4 files, the
    # refused one); the call that raised, again one image at a time.
    assert _pillow_decode.calls == [7, 2, 2, 1, 1]
    assert [r.ok for r in a] == [r.ok for r in b]
    assert not b[images.index(files["truncated"])].ok and not b[-7].ok
    for x, y, data in zip(a, b, images):
        if not x.ok:
            assert (y.error.code, str(y.error)) == (x.error.code, str(x.error))
            continue
        assert (y.width, y.height) == (x.width, x.height)
        cos = float(x.vector @ y.vector)
        if gpu_route(data) is None and data is not refused:
            # The same pixels up to the resize's rounding (these photos are too small for DCT scaling).
            assert cos > 0.9999, cos
        else:
            np.testing.assert_allclose(y.vector, x.vector, atol=1e-6)   # the CPU path itself
        assert y.logits is not None and y.logits.shape == x.logits.shape
    # With signatures the CPU path answers (signatures are measured on its decode).
    with_sig = gpu.embed_all(images[:4], with_signatures=True)
    assert all(r.signature is not None for r in with_sig)


def test_gpu_decode_options(manifest_path, torch_embedders):
    cpu, _ = torch_embedders
    with pytest.raises(ValueError, match="torch runtime"):
        Embedder.from_model(str(manifest_path), gpu_decode=True)
    with pytest.raises(ValueError, match="gpu_decode must be"):
        Embedder.from_model(str(manifest_path), runtime="torch", torch_device="cpu", gpu_decode="yes")
    auto = Embedder.from_model(str(manifest_path), runtime="torch", torch_device="cpu", gpu_decode="auto")
    assert auto.gpu_decoder is None          # auto: only on CUDA
    auto.close()
    assert cpu.executor.register_host_memory(np.zeros(16, np.uint8)) is None    # nothing to page-lock on a CPU


def test_run_device_matches_run(torch_embedders, photos):
    import torch
    cpu, _ = torch_embedders
    pixels = np.stack([cpu.prepare(d).tensor for d, _, _ in photos[:3]])
    a, la = cpu.executor.run(pixels)
    b, lb = cpu.executor.run_device(torch.from_numpy(pixels))
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(la, lb, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        cpu.executor.run_device(torch.zeros((1, 3, 224, 224), dtype=torch.uint8))


@pytest.mark.parametrize("size", [(640, 480), (4000, 3000), (333, 500), (224, 224), (250, 250)])
def test_band_weights_give_the_full_products(size):
    """The banded horizontal pass reads, for each run of output columns, only
    the source columns its taps reach, and sums the same weights."""
    span_w = size[0]
    x0, w = pillow_bilinear_weights(span_w, 0.0625 * span_w, 0.9375 * span_w, 224)
    idx, wb = band_weights(w)
    g, band, k = wb.shape
    assert idx.shape == (g, band) and g * k >= 224 and idx.min() >= 0 and idx.max() < w.shape[1]
    src = np.random.default_rng(0).uniform(0, 255, (5, w.shape[1]))
    got = np.einsum("rgb,gbk->rgk", src[:, idx], wb).reshape(5, g * k)[:, :224]
    np.testing.assert_allclose(got, src @ w.T, atol=1e-9)
    if span_w >= 4 * 224:
        assert band * g < w.shape[1] * 2           # a large reduction reads each source column about once


def test_decoder_options_give_the_same_pixels(embedder, photos):
    """resize="banded", chunk_images and overlap change how the work is cut,
    not the answer: the same rows, sizes and fallbacks, pixels within one
    level (float32 summation order) of the default's."""
    refused = encode(photo_image(photos[3][0]), "JPEG", quality=90, comment=GPU_REFUSES)
    images = [encode(photo_image(d).resize(s), "JPEG", quality=90)
              for (d, _, _), s in zip(photos[:5], [(640, 480), (1153, 865), (333, 500), (640, 480), (1600, 1200)])]
    images.insert(2, refused)
    sizes = [routed_size(d)[1] for d in images]
    base = GpuJpegDecoder(embedder.preprocessor, "cpu", decode_fn=_pillow_decode).decode(images, sizes)
    assert base.fallback == [2] and base.rows == [0, 1, 3, 4, 5]
    _pillow_decode.calls.clear()
    dec = GpuJpegDecoder(embedder.preprocessor, "cpu", decode_fn=_pillow_decode, resize="banded", chunk_images=2,
                         overlap=True)
    try:
        got = dec.decode(images, sizes)
    finally:
        dec.close()
    # Chunks of two (the one holding the refused image again one at a time), the next decoding ahead.
    assert _pillow_decode.calls == [2, 2, 1, 1, 2]
    assert (got.rows, got.sizes, got.fallback) == (base.rows, base.sizes, base.fallback)
    diff = np.abs(got.pixels.numpy().astype(int) - base.pixels.numpy().astype(int))
    assert diff.max() <= 1 and diff.mean() < 1e-3
    with pytest.raises(ValueError, match="resize"):
        GpuJpegDecoder(embedder.preprocessor, "cpu", resize="nearest")
    with pytest.raises(ValueError, match="chunk_images"):
        GpuJpegDecoder(embedder.preprocessor, "cpu", chunk_images=0)


def _bad_scan(data: bytes) -> bytes:
    """A JPEG that routes to the GPU (its header is sound) but that no
    decoder reads: its scan names a component the frame does not have."""
    at = data.find(b"\xff\xda")
    return data[:at + 5] + b"\x09" + data[at + 6:]


def _embedder_with(manifest_path, share, decode_fn=_pillow_decode, batch=8):
    cpu = Embedder.from_model(str(manifest_path), runtime="torch", torch_device="cpu")
    decoder = GpuJpegDecoder(cpu.preprocessor, "cpu", decode_fn=decode_fn)
    cpu.close()
    return Embedder.from_model(str(manifest_path), runtime="torch", torch_device="cpu", max_batch_size=batch,
                               decode_processes=2, gpu_decode=decoder, gpu_decode_share=share)


@pytest.fixture(scope="module")
def split_images(files, photos):
    """Routed baseline photos with a bad routed file (and one the GPU
    stand-in refuses) among them, and the files the router keeps on the CPU."""
    baseline = [encode(photo_image(d), "JPEG", quality=90) for d, _, _ in photos[:10]]
    refused = encode(photo_image(photos[2][0]), "JPEG", quality=90, comment=GPU_REFUSES)
    bad = _bad_scan(baseline[0])
    assert gpu_route(bad) is None
    # Two bad ones next to each other among the routed: at share 0.5 one goes to each side.
    return (baseline[:3] + [bad, _bad_scan(baseline[1])] + baseline[3:6] + [files["png"], b"not an image", refused]
            + baseline[6:] + [files["progressive"], files["truncated"]])


def _same_answers(a, b, images, cos_gpu=0.9999):
    assert len(a) == len(b) == len(images)
    for x, y, data in zip(a, b, images):
        assert x.ok == y.ok
        if not x.ok:
            assert (y.error.code, str(y.error)) == (x.error.code, str(x.error))
            continue
        assert (y.width, y.height) == (x.width, x.height)
        assert y.logits is not None and y.logits.shape == x.logits.shape
        cos = float(x.vector @ y.vector)
        assert cos > cos_gpu, cos        # on the CPU path (threads or workers): the same vector


@pytest.mark.parametrize("share", [0.5, 0, 0.3])
def test_split_between_gpu_and_workers_answers_in_order(manifest_path, torch_embedders, split_images, share):
    """gpu_decode_share < 1: the routed JPEGs split between the GPU decoder
    and the worker processes, both answering in input order; a bad file in
    either part fails alone, with the CPU path's error."""
    cpu, _ = torch_embedders
    want = cpu.embed_all(split_images)
    e = _embedder_with(manifest_path, share)
    try:
        _pillow_decode.calls.clear()
        got = e.embed_all(split_images)
        routed = [d for d in split_images if gpu_route(d) is None]
        sent = sum(_pillow_decode.calls)
        if share == 0:
            assert sent == 0                         # all routed ones in the workers
        else:
            # at most the share of each batch's routed ones (plus the refused and bad ones again, alone)
            assert 0 < sent < len(routed)
        _same_answers(want, got, split_images)
        bad = [i for i, r in enumerate(got) if not r.ok]
        assert bad == [3, 4, 9, 16], bad
        assert want[3].error.code == "INVALID_ARGUMENT"
        for i, x in enumerate(want):
            if x.ok and gpu_route(split_images[i]) is not None:
                np.testing.assert_allclose(got[i].vector, x.vector, atol=1e-6)
        assert e.process_decoder is not None and e.decode_rates["workers"] > 0
        assert (e.decode_rates["gpu"] is None) == (share == 0)
        # A second call reuses the workers; an early stop leaves them free for the next.
        it = e.embed(split_images)
        next(it)
        it.close()
        _same_answers(want, e.embed_all(split_images), split_images)
    finally:
        e.close()


def test_split_share_one_is_todays_path_and_bad_values(manifest_path):
    e = _embedder_with(manifest_path, 1.0)
    try:
        assert not e._split                      # the GPU takes every routed JPEG, no workers started
        e.embed_all([tiny_jpeg_bytes()])
        assert e.process_decoder is None
    finally:
        e.close()
    for bad in (1.5, -0.1, "fast", None):
        with pytest.raises(ValueError, match="gpu_decode_share"):
            Embedder.from_model(str(manifest_path), runtime="torch", torch_device="cpu", gpu_decode_share=bad)


def tiny_jpeg_bytes() -> bytes:
    from imagesieve_server.engine.gpu_decode import tiny_jpeg
    return tiny_jpeg()


def test_split_decodes_both_parts_at_once(manifest_path, photos):
    """The workers' part of a batch is decoded while the GPU decodes its
    part: the GPU stand-in does not return before the workers' batch is in."""
    seen = []

    def waits_for_workers(tensors, device):
        t = time.perf_counter()
        while e.decode_rates["workers"] is None and time.perf_counter() - t < 60:
            time.sleep(0.01)
        seen.append(e.decode_rates["workers"] is not None)
        return _pillow_decode(tensors, device)

    e = _embedder_with(manifest_path, 0.5, decode_fn=waits_for_workers)
    try:
        images = [encode(photo_image(d), "JPEG", quality=90) for d, _, _ in photos[:8]]
        got = e.embed_all(images)
        assert all(r.ok for r in got) and seen and seen[0]
    finally:
        e.close()


def test_auto_share_follows_the_measured_rates(manifest_path, torch_embedders, photos):
    """"auto": the GPU's share is its rate over both sides' (EWMAs of each
    batch's images/s), within AUTO_SHARE_BOUNDS: a slow GPU decoder gets
    less of each batch, but one image at least (its rate stays measured)."""
    from imagesieve_server.engine import pipeline

    def slow(tensors, device):
        time.sleep(0.25 * len(tensors))          # 4 images/s: far slower than two workers on small photos
        return _pillow_decode(tensors, device)

    e = _embedder_with(manifest_path, "auto", decode_fn=slow, batch=8)
    try:
        assert e._share() == pipeline.AUTO_SHARE_START
        images = [encode(photo_image(d), "JPEG", quality=90) for d, _, _ in photos[:16]] * 2
        _pillow_decode.calls.clear()
        _same_answers(torch_embedders[0].embed_all(images), e.embed_all(images), images)
        g, w = e.decode_rates["gpu"], e.decode_rates["workers"]
        assert g < w and e._share() < pipeline.AUTO_SHARE_START
        assert e._share() == max(pipeline.AUTO_SHARE_BOUNDS[0], g / (g + w))
        # The first three batches were split before any was measured (two ahead of the model), the last after.
        assert _pillow_decode.calls == [4, 4, 4, 1]
        e.decode_rates.update(gpu=900.0, workers=600.0)
        assert e._share() == pytest.approx(0.6)
        e._measured("gpu", 300, 1.0)           # an EWMA: halfway to the new batch's rate
        assert e.decode_rates["gpu"] == pytest.approx(600.0)
        e.decode_rates.update(gpu=1e6, workers=1.0)
        assert e._share() == pipeline.AUTO_SHARE_BOUNDS[1]
    finally:
        e.close()


def test_split_share_spreads_the_gpu_images():
    from imagesieve_server.engine.pipeline import split_share
    assert split_share(0, 0.5) == [] and split_share(4, 0) == [False] * 4 and split_share(4, 1) == [True] * 4
    for n in (1, 7, 256):
        for share in (0.05, 0.3, 0.62):
            s = split_share(n, share)
            assert sum(s) == round(share * n)
    assert split_share(10, 0.5) == [False, True] * 5
    assert split_share(8, 0.01, both=True).count(True) == 1 and split_share(8, 0.99, both=True).count(False) == 1
    assert split_share(1, 0.01, both=True) == [False]
    assert split_share(1, 0.5, both=True) == [True]     # a lone image reaches the GPU too (round(0.5) is 0)


def test_auto_share_measures_a_side_not_yet_measured(manifest_path):
    """Batches of one image: each goes to the side not yet measured, so both
    rates come to be known (before, the GPU never got one)."""
    e = _embedder_with(manifest_path, "auto", batch=1)
    try:
        e.decode_rates.update(gpu=None, workers=100.0)
        assert e._share() == 1.0
        e.decode_rates.update(gpu=100.0, workers=None)
        assert e._share() == 0.0
    finally:
        e.close()


def test_a_split_call_dropped_unfinished_does_not_hang_close(manifest_path, photos):
    """A caller that takes one answer and drops the generator unclosed: the
    workers' feeding thread waited for a batch forever, and ``close`` (and
    the interpreter's exit) with it."""
    e = _embedder_with(manifest_path, 0.5, batch=4)
    images = [encode(photo_image(d), "JPEG", quality=90) for d, _, _ in photos[:20]]
    gen = e.embed(images)
    assert next(gen).ok
    closer = threading.Thread(target=e.close, daemon=True)
    closer.start()
    closer.join(30)
    assert not closer.is_alive(), "close() blocked on the dropped call's feeding thread"
    assert not [t for t in threading.enumerate() if t.name == "imagesieve-gpu-share" and not t.daemon]
    del gen
