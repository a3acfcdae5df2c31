"""Several annotators through the real server: annotations stored on a
collection, consensus over its embeddings."""

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_digits

from imagesieve import Client

from conftest import digit_png



def test_annotations_and_consensus_over_a_collection(server):
    d = load_digits()
    rng = np.random.default_rng(1)
    idx = rng.choice(len(d.images), 240, replace=False)
    keys = [f"d{i}" for i in idx]
    truth = {k: str(d.target[i]) for k, i in zip(keys, idx)}
    rows = []
    for k in keys:
        for name, acc, share in (("ann", 0.95, 1.0), ("bea", 0.9, 0.7), ("carl", 0.45, 0.8)):
            if rng.random() < share:
                label = truth[k] if rng.random() < acc else str(rng.integers(10))
                rows.append((k, name, label))
    with Client(server.address) as c:
        c.create_collection("annotated")
        assert all(r.added for r in c.add("annotated", [digit_png(d.images[i]) for i in idx], keys=keys))
        stored = c.add_annotations("annotated", rows + [("no-such-key", "ann", "3"), ("d0x", "", "1")])
        assert stored.stored == len(rows) and list(stored.error_indices) == [len(rows), len(rows) + 1]
        assert "no image with key" in stored.errors[0].message
        events = []
        res = c.consensus("annotated", progress=events.append)
    assert events and res.method == "dawid_skene"
    acc = np.mean([im.consensus == truth[im.key] for im in res.images])
    assert acc >= 0.93, acc
    rel = {a.annotator: a.estimated_accuracy for a in res.annotators}
    assert min(rel, key=rel.get) == "carl" and rel["ann"] > 0.85
    assert 0 < res.krippendorff_alpha < 1
    ranks = {im.key: im.review_rank for im in res.images}
    assert res.review_queue and [ranks[k] for k in res.review_queue] == list(range(1, len(res.review_queue) + 1))
    unanimous = [im for im in res.images if im.agreement == 1.0 and im.num_labels == 3]
    assert unanimous and all(im.review_rank == 0 for im in unanimous)


def test_consensus_errors(server, photos):
    with Client(server.address) as c:
        c.create_collection("no-annotations")
        list(c.add("no-annotations", [photos[0][0]], keys=["x"]))
        with pytest.raises(grpc.RpcError) as e:
            c.consensus("no-annotations")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no annotations" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            c.consensus("missing")
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
