"""The outliers check on real embeddings: real photos of one kind, and
images of another kind among them."""
import numpy as np
import pytest
from PIL import Image

from conftest import digit_image, encode
from imagesieve_server.analysis.outliers import knn_similarity
from imagesieve_server.checks.base import CheckInputs
from imagesieve_server.checks.outliers import Params, from_inputs, run


def test_off_topic_images_among_photos_are_the_outliers(embedder, photos, digits):
    x, _ = digits
    blobs = [d for d, _, _ in photos] * 10                    # 200 photos (each 10 times: a dense set)
    blobs = [encode(Image.open(__import__("io").BytesIO(b)).convert("RGB").rotate(k % 10), "JPEG")
             for k, b in enumerate(blobs)]
    odd = [encode(digit_image(x[i], 128).convert("RGB"), "PNG") for i in (0, 1)]
    out = embedder.embed_all(blobs + odd)
    vectors = np.stack([o.vector for o in out])
    sim = knn_similarity(vectors, k=10)
    r = run(sim)
    flagged = r.issues["isolated"].positions.tolist()
    assert set(flagged) == {200, 201}, (flagged, r.issues["isolated"].scores)
    assert (r.issues["isolated"].scores >= 3.5).all() and r.measured == 202
    # The cap: at most 1% of the images (2 of 202; rounded up it was 3), the most isolated first.
    capped = run(sim, Params(z=0.5, max_fraction=0.01))
    assert len(capped.issues["isolated"].positions) == 2 and set(flagged) <= set(capped.issues["isolated"].positions)


def test_unmeasured_images_are_skipped_and_positions_index_all_images():
    sim = np.array([0.9, np.nan, 0.91, 0.89, 0.9, 0.2, 0.92, 0.88, 0.9, 0.91] * 10, np.float32)
    r = run(sim)
    flagged = r.issues["isolated"].positions.tolist()
    # 10 isolated images of 90 measured, at most 1% flagged: one, an isolated one, never the NaN rows.
    assert r.measured == 90 and len(flagged) == 1 and flagged[0] in range(5, 100, 10)
    assert from_inputs(CheckInputs(np.ones(3, bool), np.zeros((3, 2)))).measured == 0


@pytest.mark.parametrize("bad", [dict(z=0), dict(max_fraction=0), dict(max_fraction=1.5)])
def test_parameters_are_validated(bad):
    with pytest.raises(ValueError):
        Params(**bad)
