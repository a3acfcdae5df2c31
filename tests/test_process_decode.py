"""Decoding in worker processes into shared-memory batch buffers
(``engine.process_decode``): the same answers as the decoding threads, bad
images failing alone, and workers that die replaced without losing images."""
import os
import signal

import numpy as np
import pytest
from PIL import Image

from imagesieve_server.engine import Embedder
from imagesieve_server.engine import process_decode
from imagesieve_server.engine.process_decode import ProcessDecoder

from conftest import encode, photo_image

CRASH_MARKER = b"imagesieve-test: this image kills its decoder"


def mixed_images(photos) -> list[bytes]:
    """Real photos in several formats and modes, with bad items among them."""
    out = []
    for i, (data, _, _) in enumerate(photos):
        img = photo_image(data)
        out.append(data)
        if i % 4 == 1:
            out.append(encode(img.convert("L"), "PNG"))
        if i % 4 == 2:
            rgba = img.resize((150, 110)).convert("RGBA")
            rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
            out.append(encode(rgba, "PNG"))
        if i % 4 == 3:
            sixteen = np.asarray(img.convert("L"), np.uint16) * 257
            out.append(encode(Image.fromarray(sixteen), "PNG"))
    out.insert(3, b"not an image at all")
    out.insert(9, photos[0][0][: len(photos[0][0]) // 3])        # a truncated JPEG
    out.insert(17, b"")
    return out


def test_processes_give_the_threads_answers_and_a_bad_image_fails_alone(photos, manifest_path):
    images = mixed_images(photos)
    threads = Embedder.from_model(str(manifest_path), max_batch_size=8)
    procs = Embedder.from_model(str(manifest_path), max_batch_size=8, decode_processes=2)
    try:
        a = threads.embed_all(images, with_signatures=True)
        b = procs.embed_all(images, with_signatures=True, in_processes=True)
        again = procs.embed_all(images[:5], in_processes=True)      # the workers serve a second call
    finally:
        threads.close()
        procs.close()
    assert len(b) == len(images) > 3 * 8          # several batches: the ring of buffers is reused
    assert [r.ok for r in a] == [r.ok for r in b]
    assert sum(not r.ok for r in b) == 3
    for x, y in zip(a, b):
        if not x.ok:
            assert (y.error.code, str(y.error)) == (x.error.code, str(x.error))
            continue
        assert (y.width, y.height) == (x.width, x.height)
        np.testing.assert_allclose(y.vector, x.vector, atol=1e-6)
        np.testing.assert_array_equal(y.signature, x.signature)
        np.testing.assert_array_equal(y.properties, x.properties)
    for x, y in zip(a[:5], again):
        assert x.ok == y.ok and (not x.ok or np.allclose(x.vector, y.vector, atol=1e-6))
        assert y.signature is None                # not asked for this time


def _threads_tensors(manifest_path, images) -> list[np.ndarray | None]:
    from imagesieve_server.engine import DecodeError
    e = Embedder.from_model(str(manifest_path), max_batch_size=8)
    try:
        out = []
        for data in images:
            try:
                out.append(e.prepare(data).tensor)
            except DecodeError:
                out.append(None)
        return out
    finally:
        e.close()


def _rows(decoder: ProcessDecoder, batches) -> list[np.ndarray | None]:
    rows = []
    for batch in batches:
        ok = iter(np.array(batch.tensors))         # copied: the buffer is reused after the next batch
        rows.extend(next(ok) if item.ok else None for item in batch.items)
    return rows


def test_a_worker_killed_mid_run_is_replaced_and_no_image_is_lost(photos, manifest_path):
    images = [d for d, _, _ in photos] * 3
    expected = _threads_tensors(manifest_path, images)
    decoder = ProcessDecoder(manifest_path, "normalized", batch_size=8, workers=2)
    try:
        it = decoder.batches(images)
        first = next(it)
        rows = [np.array(t) for t in first.tensors]
        before = {w.process.pid for w in decoder._pool}
        os.kill(decoder._pool[0].process.pid, signal.SIGKILL)   # while it holds chunks of the next batches
        rows += _rows(decoder, it)
        after = {w.process.pid for w in decoder._pool}
    finally:
        decoder.close()
    assert len(after) == 2 and len(after - before) == 1
    assert len(rows) == len(images)
    for got, want in zip(rows, expected):
        np.testing.assert_array_equal(got, want)


def _dies_on_marker(conn, *args):
    """A real decoding worker that dies (as a decoder crash would) on a marked image."""
    class Conn:
        def recv(self):
            msg = conn.recv()
            if msg is not None and any(CRASH_MARKER in data for data in msg[2]):
                os._exit(70)
            return msg

        def send(self, obj):
            conn.send(obj)
    process_decode._worker_main(Conn(), *args)


def test_an_image_that_kills_its_worker_fails_alone(photos, manifest_path, monkeypatch):
    monkeypatch.setattr(process_decode, "_worker_main", _dies_on_marker)
    images = [d for d, _, _ in photos]
    images.insert(5, CRASH_MARKER)
    images.insert(13, CRASH_MARKER + b" again")
    decoder = ProcessDecoder(manifest_path, "pixels", batch_size=8, workers=2)
    try:
        batches = list(decoder.batches(images))
        items = [item for b in batches for item in b.items]
        again = [item for b in decoder.batches(images[:4]) for item in b.items]
    finally:
        decoder.close()
    assert len(items) == len(images)
    failed = [i for i, item in enumerate(items) if not item.ok]
    assert failed == [5, 13]
    assert all(process_decode.WORKER_DIED in str(items[i].error) for i in failed)
    assert all(item.ok for item in again)
    assert all(b.tensors.dtype == np.uint8 and b.tensors.shape[1:] == (224, 224, 3) for b in batches)


def _assert_reusable_after(interrupt, photos, manifest_path) -> None:
    """``interrupt(decoder, open_call)`` while a call's later chunks are being
    decoded; the next call must still get exactly the threads' tensors."""
    images = [d for d, _, _ in photos]
    expected = _threads_tensors(manifest_path, images[:8])
    decoder = ProcessDecoder(manifest_path, "normalized", batch_size=4, workers=2)
    try:
        first = decoder.batches(images * 2)
        next(first)
        interrupt(decoder, first)
        rows = _rows(decoder, decoder.batches(images[:8]))
    finally:
        decoder.close()
    for got, want in zip(rows, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_consumer_that_stops_early_leaves_no_stale_answer(photos, manifest_path):
    _assert_reusable_after(lambda decoder, first: first.close(), photos, manifest_path)


def _fails_to_start(conn, *args):
    raise ImportError("as a worker whose script lacks a __main__ guard, or whose imports fail")


def test_workers_that_cannot_start_are_one_clear_error_not_every_image_blamed(photos, manifest_path, monkeypatch):
    monkeypatch.setattr(process_decode, "_worker_main", _fails_to_start)
    decoder = ProcessDecoder(manifest_path, "normalized", batch_size=4, workers=2)
    try:
        with pytest.raises(RuntimeError, match="could not start"):
            list(decoder.batches([d for d, _, _ in photos[:4]]))
        assert decoder._pool == []
    finally:
        decoder.close()


def test_one_call_at_a_time_and_an_interrupt_leaves_a_usable_decoder(photos, manifest_path):
    def second_call_then_ctrl_c(decoder, first):
        with pytest.raises(RuntimeError, match="already decoding"):
            next(decoder.batches([photos[0][0]]))      # a second call while the first is open
        with pytest.raises(KeyboardInterrupt):
            first.throw(KeyboardInterrupt)             # Ctrl-C while chunks are in flight
        assert decoder._pool == []                     # stopped, not waited for
    _assert_reusable_after(second_call_then_ctrl_c, photos, manifest_path)


def test_parameters_are_checked_and_the_shared_buffer_is_freed(manifest_path):
    with pytest.raises(ValueError, match="batch_size"):
        ProcessDecoder(manifest_path, "normalized", batch_size=0)
    with pytest.raises(ValueError, match="input_kind"):
        ProcessDecoder(manifest_path, "floats", batch_size=4)
    decoder = ProcessDecoder(manifest_path, "normalized", batch_size=4, workers=1)
    name = decoder._shm.name
    assert os.path.exists(f"/dev/shm/{name}")
    decoder.close()
    assert not os.path.exists(f"/dev/shm/{name}")


@pytest.mark.parametrize("in_processes", [False, True])
def test_files_read_ahead_of_the_model_are_bounded_in_bytes(photos, manifest_path, monkeypatch, in_processes):
    """Decoding ran two batches ahead of the model counted in images alone:
    an audit of 500 MB scans held 64 files read ahead on the threads (16 sparse
    ones: 8 GB) and up to three batches in the decoding processes. Now the
    threads' window stops at READ_AHEAD_BYTES and a process batch is cut at
    BATCH_BYTES (here 8 MB and 4 MB, photos padded to ~2 MB each): every
    image is still embedded, in order."""
    from imagesieve_server.engine import pipeline
    monkeypatch.setattr(pipeline, "READ_AHEAD_BYTES", 8 << 20)
    monkeypatch.setattr(process_decode, "BATCH_BYTES", 4 << 20)
    blobs = [p[0] + b"\0" * ((2 << 20) - len(p[0])) for p in photos]      # JPEGs end at their EOI marker
    pulled, answered, most = [0], [0], [0]

    def files():
        for data in blobs:
            most[0] = max(most[0], (pulled[0] - answered[0]) * len(data))
            pulled[0] += 1
            yield data
    e = Embedder.from_model(str(manifest_path), max_batch_size=8, decode_processes=2)
    try:
        out = []
        for r in e.embed(files(), in_processes=in_processes):
            answered[0] += 1
            out.append(r)
        alone = [r.vector for r in e.embed(blobs[:3])]
    finally:
        e.close()
    assert all(r.ok for r in out) and len(out) == len(blobs)
    np.testing.assert_allclose(np.stack([r.vector for r in out[:3]]), np.stack(alone), atol=1e-5)
    # threads: the window's 8 MB and one file; processes: 3 batches of 4 MB and one file each, and one answering
    bound = (8 << 20) + (2 << 20) if not in_processes else 4 * ((4 << 20) + (2 << 20))
    assert most[0] <= bound, (most[0] / 2**20, bound / 2**20)
