"""The in-process pipeline and the dynamic batcher, without gRPC."""
import asyncio

import numpy as np
import pytest

from imagesieve_server.engine.batcher import DynamicBatcher, QueueFullError
from imagesieve_server.engine.preprocess import Preprocessor

from conftest import cosine, encode, photo_image


def test_vectors_are_unit_and_ordered_and_bad_item_fails_alone(embedder, photos):
    data = [d for d, _, _ in photos[:6]]
    data.insert(3, b"definitely not an image")
    out = embedder.embed_all(data)
    assert len(out) == 7
    assert not out[3].ok and out[3].error.code == "INVALID_ARGUMENT"
    good = [o for i, o in enumerate(out) if i != 3]
    assert all(o.ok and o.vector.shape == (1024,) and o.vector.dtype == np.float32 for o in good)
    assert np.allclose([np.linalg.norm(o.vector) for o in good], 1.0, atol=1e-5)
    # order: the 5th output (index 4) is the 4th photo
    alone = embedder.embed_all([photos[3][0]])[0]
    assert cosine(alone.vector, out[4].vector) > 0.99999


def test_batch_composition_does_not_change_vectors(embedder, photos):
    data = [d for d, _, _ in photos[:10]]
    batched = np.stack([o.vector for o in embedder.embed_all(data)])
    single = np.stack([embedder.embed_all([d])[0].vector for d in data])
    assert np.abs(batched - single).max() < 1e-5


def test_memory_plans_off_changes_no_vector(embedder, photos, manifest_path):
    # The executor turns ONNX Runtime's per-shape memory plans off (they kept
    # blocks for every batch size seen: bench/ort_memory.py); same numbers.
    from imagesieve_server.engine.onnx_executor import OnnxExecutor
    x = np.stack([embedder.preprocessor(photo_image(d)) for d, _, _ in photos[:5]])
    planned = OnnxExecutor(manifest_path, memory_pattern=True)
    for n in (5, 2, 5, 3):
        assert np.abs(planned.run(x[:n])[0] - embedder.executor.run(x[:n])[0]).max() < 1e-5
    assert not embedder.executor.session.get_session_options().enable_mem_pattern


def test_altered_copy_is_nearest_neighbour(embedder, photos):
    originals = [d for d, _, _ in photos]
    copies = [encode(photo_image(d).resize((256, 256)), "JPEG", quality=30) for d in originals]
    a = np.stack([o.vector for o in embedder.embed_all(originals)])
    b = np.stack([o.vector for o in embedder.embed_all(copies)])
    assert (np.argmax(b @ a.T, axis=1) == np.arange(len(originals))).all()


def test_preprocessor_follows_manifest(embedder, photos):
    pre = Preprocessor(embedder.executor.manifest)
    x = pre(photo_image(photos[0][0]))
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert -1.0001 <= x.min() and x.max() <= 1.0001          # (x-127.5)/127.5
    assert pre.decode_min_size == 256
    assert pre.crop_box(400, 200) == (112.5, 12.5, 287.5, 187.5)


def test_dynamic_batcher_batches_concurrent_callers():
    calls = []

    def run(tensors):
        calls.append(len(tensors))
        x = np.stack(tensors)
        return x.reshape(len(x), -1), None

    async def main():
        b = DynamicBatcher(run, max_batch_size=8, max_delay_s=0.05)
        b.start()
        outs = await asyncio.gather(*(b.submit(np.full((3, 1, 1), i, np.float32)) for i in range(20)))
        await b.stop()
        return outs

    outs = asyncio.run(main())
    assert [int(o[0][0]) for o in outs] == list(range(20))      # each caller gets its own row
    assert max(calls) == 8 and sum(calls) == 20 and len(calls) == 3


def test_dynamic_batcher_refuses_when_queue_full():
    async def main():
        b = DynamicBatcher(lambda t: (np.stack(t).reshape(len(t), -1), None), max_batch_size=1,
                           max_delay_s=0, max_queue=2)
        # not started: nothing drains the queue
        tasks = [asyncio.ensure_future(b.submit(np.zeros((3, 1, 1), np.float32))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError, match="full"):
            await b.submit(np.zeros((3, 1, 1), np.float32))
        for t in tasks:
            t.cancel()

    asyncio.run(main())


def test_dynamic_batcher_serves_owners_in_turn():
    """Batches take one image per owner (connection) in turn: an image of
    a caller that arrives behind another's 64 is in the first batch, not
    the ninth (first come, first served put a one-image Embed behind a
    stream's 128 images: 2.4-2.9 s instead of 34 ms)."""
    batches = []

    def run(tensors):
        batches.append([int(t[0, 0, 0]) for t in tensors])
        x = np.stack(tensors)
        return x.reshape(len(x), -1), None

    async def main():
        b = DynamicBatcher(run, max_batch_size=8, max_delay_s=0.05)
        b.start()
        flood = [b.submit(np.full((3, 1, 1), i, np.float32), owner="stream") for i in range(64)]
        others = [b.submit(np.full((3, 1, 1), 100 + i, np.float32), owner=f"caller{i}") for i in range(3)]
        outs = await asyncio.gather(*flood, *others)
        await b.stop()
        return outs

    outs = asyncio.run(main())
    assert [int(o[0][0]) for o in outs] == list(range(64)) + [100, 101, 102]   # each its own row
    assert {100, 101, 102} <= set(batches[0]), batches[0]
    assert [i for batch in batches for i in batch if i < 100] == list(range(64))   # an owner's order kept
    assert sum(map(len, batches)) == 67 and max(map(len, batches)) == 8


def test_model_failure_fails_its_batch_not_the_batcher():
    def run(tensors):
        if any(t[0, 0, 0] < 0 for t in tensors):
            raise RuntimeError("model exploded")
        return np.stack(tensors).reshape(len(tensors), -1), None

    async def main():
        b = DynamicBatcher(run, max_batch_size=4, max_delay_s=0)
        b.start()
        with pytest.raises(RuntimeError, match="exploded"):
            await b.submit(np.full((3, 1, 1), -1, np.float32))
        ok = await b.submit(np.ones((3, 1, 1), np.float32))
        await b.stop()
        return ok

    assert asyncio.run(main())[0].shape == (3,)
