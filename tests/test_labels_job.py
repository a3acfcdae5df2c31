"""The ScoreLabels job end to end on real photos: inline images with labels
(some flipped) -> embedding progress, fold progress, one result."""
from __future__ import annotations

import asyncio
import io

import pytest
from imagesieve.samples import imagenet_photos
from imagesieve.v1 import analysis_pb2, common_pb2
from PIL import Image, ImageEnhance, ImageOps

from imagesieve_server.engine import Embedder
from imagesieve_server.engine.async_embedder import AsyncEmbedder
from imagesieve_server.jobs.score_labels import score_labels_events, validate_request

PHOTOS = 8
FLIPPED = {3: 1, 17: 6}  # image index -> wrong class index


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _variants(im: Image.Image) -> list[Image.Image]:
    w, h = im.size
    return [im, ImageOps.mirror(im), im.crop((w // 10, h // 10, w - w // 10, h - h // 10)),
            ImageEnhance.Brightness(im).enhance(1.3), im.resize((w // 4, h // 4)).resize((w, h))]


def build_request() -> analysis_pb2.ScoreLabelsRequest:
    """8 real photos x 5 altered copies, class = which photo; 2 labels flipped."""
    images = []
    for c, (path, _) in enumerate(imagenet_photos()[:PHOTOS]):
        for v, im in enumerate(_variants(Image.open(path))):
            i = len(images)
            label = FLIPPED.get(i, c)
            images.append(common_pb2.Image(key=f"photo{c}_v{v}", data=_jpeg(im), label=f"class{label}"))
    return analysis_pb2.ScoreLabelsRequest(source=analysis_pb2.LabelledSource(
        inline=analysis_pb2.InlineImages(images=images)), top_fraction=0.05, folds=5)


@pytest.fixture(scope="module")
def request_with_flips() -> analysis_pb2.ScoreLabelsRequest:
    return build_request()


async def _collect(request):
    engine = AsyncEmbedder(Embedder.from_model())
    await engine.start()
    try:
        return [e async for e in score_labels_events(request, engine)]
    finally:
        await engine.stop()


def test_job_streams_progress_and_finds_flipped_labels(request_with_flips):
    events = asyncio.run(_collect(request_with_flips))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"progress"}
    stages = [e.progress.stage for e in events[:-1]]
    assert stages[0] == "embedding" and events[0].progress.total == 40
    assert "folds" in stages and "neighbours" in stages
    emb = [e.progress for e in events[:-1] if e.progress.stage == "embedding"]
    assert emb[-1].done == 40

    result = events[-1].result
    assert [s.key for s in result.scores] == [im.key for im in request_with_flips.source.inline.images]
    flipped_keys = {request_with_flips.source.inline.images[i].key for i in FLIPPED}
    assert len(result.suspects) == 2  # round(5% of 40)
    # precision at 5%: both flipped images are the two suspects (measured: scores 0.00,
    # suggested probability 1.00; every other image scores far higher)
    assert {s.key for s in result.suspects} == flipped_keys
    for s in result.suspects:
        if s.key in flipped_keys:
            true_class = f"class{int(s.key[5])}"
            assert s.suggested_label == true_class and s.given_label != true_class
            assert s.suggested_probability > 0.3
    assert result.suspects[0].score <= result.suspects[1].score
    assert all(0.0 <= s.score <= 1.0 and 0.0 <= s.neighbor_agreement <= 1.0 for s in result.scores)
    assert 0.0 < result.estimated_noise_rate < 0.5


def _req(**kw):
    images = kw.pop("images", [common_pb2.Image(key=k, data=k.encode(), label=("cat", "dog")[i % 2])
                               for i, k in enumerate("abcd")])
    return analysis_pb2.ScoreLabelsRequest(
        source=analysis_pb2.LabelledSource(inline=analysis_pb2.InlineImages(images=images)), folds=2, **kw)


def test_bad_requests_raise_value_error():
    with pytest.raises(ValueError, match="unknown method"):
        validate_request(_req(method="magic"))
    for bad in (1.5, -0.01):
        with pytest.raises(ValueError, match="top_fraction"):
            validate_request(_req(top_fraction=bad))
    with pytest.raises(ValueError, match="2 distinct labels"):
        validate_request(_req(images=[common_pb2.Image(key="a", data=b"x", label="cat"),
                                      common_pb2.Image(key="b", data=b"y", label="cat")]))
    with pytest.raises(ValueError, match="missing label"):
        validate_request(_req(images=[common_pb2.Image(key="a", data=b"x")]))
    with pytest.raises(ValueError, match="unknown classifier"):
        validate_request(_req(classifier="svm"))
    with pytest.raises(ValueError, match="needs encoded bytes in `data` or a `server_path`"):
        validate_request(_req(images=[common_pb2.Image(key="a", label="cat")]))
    params = validate_request(_req())
    assert (params.method, params.top_fraction, params.classifier) == ("out_of_fold", 0.01, "lda")
    validate_request(_req(images=[common_pb2.Image(key="a", server_path="/x/a.jpg", label="cat"),
                                  *_req().source.inline.images[1:]]))  # server_path accepted
    # Folds no data could fill are refused before any embedding (a probe's 400 one-image
    # classes were refused after 8 s of it).
    with pytest.raises(ValueError, match="fold"):
        validate_request(_req(images=[common_pb2.Image(key=f"k{i}", data=b"x", label=f"c{i}") for i in range(40)]))


def _undecodable(first: common_pb2.Image) -> list:
    return [first] + [common_pb2.Image(key=k, data=b"neither", label=("cat", "dog")[i % 2])
                      for i, k in enumerate("bcd", 1)]


def test_undecodable_image_is_a_clear_error():
    req = _req(images=_undecodable(common_pb2.Image(key="bad", data=b"not an image", label="cat")))
    with pytest.raises(ValueError, match="could not be embedded: bad"):
        asyncio.run(_collect(req))


def test_server_path_without_a_reader_is_refused():
    """Without the server's reader (no allowed roots) a server_path fails its image, named."""
    req = _req(images=_undecodable(common_pb2.Image(key="far", server_path="/etc/hostname", label="cat")))
    with pytest.raises(ValueError, match=r"4 image\(s\) could not be embedded: far \(server paths are disabled"):
        asyncio.run(_collect(req))
