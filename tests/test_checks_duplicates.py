"""The duplicates check and the two checks that refine its pairs (leakage,
label conflicts) on real photos with planted copies: one definition of
"the same picture", most certain first, positions over every image (failed
ones included)."""
import hashlib

import numpy as np
import pytest
from PIL import ImageOps

from imagesieve.alterations import ALTERATIONS, jpeg
from imagesieve_server.checks import CHECKS, duplicates, label_conflicts, leakage
from imagesieve_server.checks.base import CheckInputs, FlaggedPairs

from conftest import photo_image


@pytest.fixture(scope="module")
def planted(photos, embedder):
    """16 real photos in train (labelled by class), then: photo 0's exact
    bytes in test; photo 1 cropped in test; photo 2 mirrored and re-encoded
    in train under another label; a file that does not decode (position 3
    of the list: every later position is shifted by one among the ok)."""
    data = [d for d, _, _ in photos[:16]]
    labels = [f"c{label}" for _, label, _ in photos[:16]]
    blobs = data[:3] + [b"not an image"] + data[3:] + [
        data[0], jpeg(ALTERATIONS["crop_80"](photo_image(data[1])), 90),
        jpeg(ImageOps.mirror(photo_image(data[2])), 85)]
    labels = labels[:3] + ["broken"] + labels[3:] + [labels[0], labels[1], "someone-else"]
    splits = ["train"] * 17 + ["test", "test", "train"]
    out = embedder.embed_all(blobs, with_signatures=True)
    ok = np.array([o.ok for o in out])
    idx = np.flatnonzero(ok)
    dim = out[0].vector.size
    vectors = np.stack([o.vector if o.ok else np.zeros(dim, np.float32) for o in out])
    sigs = np.stack([o.signature for o in out if o.ok])
    inputs = CheckInputs(ok, np.zeros((len(ok), 2), np.int32), vectors=np.ascontiguousarray(vectors[idx]),
                         keys=[f"img{i}" for i in idx], labels=[labels[i] for i in idx],
                         splits=[splits[i] for i in idx],
                         sha256=np.array([hashlib.sha256(blobs[i]).hexdigest() for i in idx], dtype="S64"),
                         signatures=sigs)
    return inputs, len(blobs)


def test_checks_flag_the_planted_copies_in_every_image_position(planted):
    inputs, n = planted
    assert not inputs.ok[3]
    for name in ("duplicates", "leakage", "label_conflicts"):
        inputs.results[name] = CHECKS[name].from_inputs(inputs)
    found = inputs.results["duplicates"]
    exact, near = found.issues["exact"], found.issues["near"]
    assert isinstance(exact, FlaggedPairs)
    assert {(int(a), int(b)) for a, b in zip(exact.a, exact.b)} == {(0, n - 3)}
    assert exact.evidence["exact"].all() and not near.evidence["exact"].any()
    near_pairs = {(int(a), int(b)) for a, b in zip(near.a, near.b)}
    assert {(1, n - 2), (2, n - 1)} <= near_pairs, near_pairs
    # Most certain first, with stage 2's evidence beside the cosine.
    assert list(near.scores) == sorted(near.scores, reverse=True)
    assert near.unit == "stage-2 agreement" and set(near.evidence) >= {"cosine", "agreement", "matched_area"}
    assert near.evidence["mirrored"][list(zip(near.a, near.b)).index((2, n - 1))]

    leak = inputs.results["leakage"].issues["cross_split"]
    pairs = list(zip(leak.a.tolist(), leak.b.tolist()))
    assert pairs[0] == (0, n - 3), "identical bytes lead"
    assert (1, n - 2) in pairs and (2, n - 1) not in pairs        # the mirrored copy stays in train
    conflicts = label_conflicts.conflicting_pairs(inputs.results["duplicates"])
    assert [tuple(p) for p in conflicts.tolist()] == [(2, n - 1)]
    assert inputs.results["label_conflicts"].issues["different_labels"].count == 1


def test_raw_cosine_and_parameters(planted):
    inputs, n = planted
    raw = duplicates.from_inputs(inputs, duplicates.Params(verify=False, threshold=0.95))
    assert raw.issues["near"].unit == "cosine" and raw.details.report.method == "raw cosine"
    assert (raw.issues["near"].scores >= 0.95).all()
    assert leakage.run(raw).issues["cross_split"].count >= 1     # the exact copy at least
    for bad in (dict(threshold=1.5), dict(knn_k=-1), dict(grouping="rings")):
        with pytest.raises(ValueError):
            duplicates.Params(**bad)
