"""SampleSizeSweep as a job: real digit images (scikit-learn digits saved as
PNG bytes) embedded by the real ONNX model through an AsyncEmbedder."""
from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest
from imagesieve.v1 import analysis_pb2, common_pb2
from PIL import Image
from sklearn.datasets import load_digits

from imagesieve_server.engine import Embedder
from imagesieve_server.engine.async_embedder import AsyncEmbedder
from imagesieve_server.jobs.sample_size import sample_size_events, validate_request
from conftest import digit_png

PER_CLASS = 20  # 200 images: embedding stays within a few seconds



@pytest.fixture(scope="module")
def digit_images() -> list[common_pb2.Image]:
    d = load_digits()
    picked = np.concatenate([np.flatnonzero(d.target == c)[:PER_CLASS] for c in range(10)])
    return [common_pb2.Image(key=f"d{i}", data=digit_png(d.images[i], 32), label=str(d.target[i]),
                             split="test" if j % 4 == 0 else "train")
            for j, i in enumerate(picked)]


def twice(images) -> list[common_pb2.Image]:
    """Each image a second time under its own key (keys must be unique)."""
    return list(images) + [common_pb2.Image(key=im.key + "-again", data=im.data, label=im.label, split=im.split)
                           for im in images]


def request(images, **kw) -> analysis_pb2.SampleSizeRequest:
    return analysis_pb2.SampleSizeRequest(
        source=analysis_pb2.LabelledSource(inline=analysis_pb2.InlineImages(images=images)), **kw)


async def collect(req, manifest_path, stop_after_stage: str | None = None):
    engine = AsyncEmbedder(Embedder.from_model(str(manifest_path), max_batch_size=16))
    await engine.start()
    events = []
    try:
        gen = sample_size_events(req, engine)
        async for ev in gen:
            events.append(ev)
            if stop_after_stage and ev.WhichOneof("event") == "progress" and ev.progress.stage == stop_after_stage:
                await gen.aclose()  # what the servicer does when the client cancels
                # the worker thread stops at its next progress report
                deadline = time.monotonic() + 30
                while any(t.name == "imagesieve-job" for t in threading.enumerate()):
                    assert time.monotonic() < deadline, "the sweep kept running after cancel"
                    await asyncio.sleep(0.05)
                break
    finally:
        await engine.stop()
    return events


def test_job_streams_progress_then_a_result_with_a_plot(digit_images, manifest_path):
    req = request(digit_images, fractions=[0.2, 0.35, 0.5, 0.75], repeats=2, target_accuracy=0.9,
                  seed=1)
    events = asyncio.run(collect(req, manifest_path))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"progress"}
    stages = [e.progress.stage for e in events[:-1]]
    assert stages[0] == "embedding" and {"fit", "bootstrap", "plot"} <= set(stages)
    fits = [e.progress for e in events[:-1] if e.progress.stage == "fit"]
    assert [p.done for p in fits] == list(range(1, 9)) and fits[-1].total == 8

    res = events[-1].result
    train = sum(im.split != "test" for im in digit_images)
    assert [p.num_images for p in res.points] == [round(f * train) for f in (0.2, 0.35, 0.5, 0.75)]
    means = [p.mean_accuracy for p in res.points]
    assert means[-1] > means[0] > 0.3  # real embeddings of real digits: learnable
    assert set(res.points[-1].per_class_accuracy) == {str(c) for c in range(10)}
    assert {f.name for f in res.fits} == {"power_law", "inverse_power_law", "exp_approach"}
    assert res.chosen_fit in {f.name for f in res.fits}
    assert res.target_accuracy == pytest.approx(0.9)
    assert res.answer and "given test split (50 images)" in res.answer
    if res.images_needed > 0:
        assert res.images_needed_low <= res.images_needed
    else:
        assert "above the ceiling" in res.answer
    img = Image.open(io.BytesIO(res.plot_png))
    img.load()
    assert img.format == "PNG"
    assert "<svg" in res.plot_svg


def test_closing_the_stream_cancels_the_job(digit_images, manifest_path):
    """100 fits requested; after the first, closing the stream stops the
    worker thread (checked in ``collect``) and no result arrives."""
    req = request(digit_images[::2], fractions=[0.2, 0.5], repeats=50, target_accuracy=0.9)   # 150: a sweep needs 100
    events = asyncio.run(collect(req, manifest_path, stop_after_stage="fit"))
    assert not any(e.WhichOneof("event") == "result" for e in events)
    fits = [e.progress.done for e in events if e.progress.stage == "fit"]
    assert fits == [1]


def test_accuracy_at_asked_sizes_without_a_target(digit_images, manifest_path):
    """No target: the answer is the accuracy expected at the sizes asked,
    each inside [0, 1] with its interval around it."""
    req = request(digit_images, fractions=[0.2, 0.35, 0.5, 0.75], repeats=2, at_sizes=[60, 1000], seed=2)
    res = asyncio.run(collect(req, manifest_path))[-1].result
    assert res.target_accuracy == 0 and res.images_needed == 0
    assert [a.num_images for a in res.accuracy_at] == [60, 1000]
    for a in res.accuracy_at:
        assert 0 <= a.low <= a.accuracy <= a.high <= 1
    measured = {p.num_images: p.mean_accuracy for p in res.points}
    assert res.accuracy_at[0].accuracy == pytest.approx(np.interp(60, sorted(measured), [measured[k] for k in sorted(measured)]), abs=0.08)
    assert "1,000 images:" in res.answer and "extrapolation" in res.answer


def test_bad_requests_are_rejected(digit_images):
    with pytest.raises(ValueError, match="target_accuracy"):
        validate_request(request(digit_images, target_accuracy=1.5))
    with pytest.raises(ValueError, match="at_sizes"):
        validate_request(request(digit_images, at_sizes=[0]))
    with pytest.raises(ValueError, match="at_sizes"):
        validate_request(request(digit_images, at_sizes=list(range(1, 30))))
    p = validate_request(request(twice(digit_images)))
    assert p.target is None and p.at_sizes == ()
    with pytest.raises(ValueError, match="strictly increasing"):
        validate_request(request(digit_images, fractions=[0.5, 0.1], target_accuracy=0.9))
    with pytest.raises(ValueError, match="fewer images than classes"):
        validate_request(request(digit_images, fractions=[0.02, 0.5], target_accuracy=0.9))
    with pytest.raises(ValueError, match="unknown classifier"):
        validate_request(request(digit_images, classifier="svm", target_accuracy=0.9))
    # every image in the test split: refused before any embedding (a probe's was, after 8.6 s of it)
    all_test = [common_pb2.Image(key=im.key, data=im.data, label=im.label, split="test") for im in digit_images]
    with pytest.raises(ValueError, match="none is left to train on"):
        validate_request(request(all_test, target_accuracy=0.9))
    unlabelled = [common_pb2.Image(key="x", data=digit_images[0].data)]
    with pytest.raises(ValueError, match="missing label"):
        validate_request(request(unlabelled, target_accuracy=0.9))
    p = validate_request(request(twice(digit_images), target_accuracy=0.9))
    # Unset classifier: the sample-size check chooses (logreg; lda above LARGE_SWEEP), as for the audit.
    assert p.fractions == (0.05, 0.10, 0.20, 0.35, 0.50) and p.repeats == 5 and p.classifier is None
