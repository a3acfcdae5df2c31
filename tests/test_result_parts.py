"""Job results larger than the server's message limit arrive in parts that
merge back into the whole result: the split itself, and a real server with
--max-message-mb 1 answering ScoreLabels over 800 images with long keys and
labels (a 1.4 MB answer that failed with RESOURCE_EXHAUSTED before)."""
from __future__ import annotations

import numpy as np
from imagesieve.v1 import analysis_pb2, duplicates_pb2
from sklearn.datasets import load_digits

from imagesieve import Client
from imagesieve.local_server import LocalServer
from imagesieve_server.jobs.result_parts import result_parts
from conftest import digit_png


def test_parts_stay_small_and_merge_back():
    result = analysis_pb2.ScoreLabelsResult(estimated_noise_rate=0.031, note="n")
    for i in range(20_000):
        result.scores.add(key=f"image-{i:06d}", given_label="shirt", suggested_label="t-shirt", score=i / 1e5)
    result.suspects.extend(result.scores[:200])
    parts = result_parts(result, part_bytes=64 << 10)
    assert len(parts) > 10 and all(p.ByteSize() <= (64 << 10) + 100 for p in parts)
    assert parts[0].estimated_noise_rate == 0.031 and all(not p.note for p in parts[1:])
    merged = analysis_pb2.ScoreLabelsResult()
    for p in parts:
        merged.MergeFrom(p)
    assert merged == result
    small = duplicates_pb2.FindDuplicatesResult(num_images=3, warnings=["w"])
    assert result_parts(small) == [small]


def test_a_result_over_the_message_limit_arrives_in_parts(manifest_path):
    d = load_digits()
    idx = np.arange(800)
    keys = [f"{i:04d}-" + "k" * 1000 for i in idx]           # the 1,024-byte key limit
    labels = [str(d.target[i]) * 250 for i in idx]           # the 256-byte label limit
    with LocalServer(["--max-message-mb", "1", "--max-images-per-request", "64"], model=str(manifest_path)) as srv, \
            Client(srv.address) as c:
        c.create_collection("long")
        for lo in range(0, len(idx), 50):
            added = list(c.add("long", [digit_png(d.images[i], 32) for i in idx[lo:lo + 50]],
                               keys=keys[lo:lo + 50], labels=labels[lo:lo + 50]))
            assert all(a.added for a in added)
        request = analysis_pb2.ScoreLabelsRequest(source=analysis_pb2.LabelledSource(collection="long"))
        events = list(c.analysis.ScoreLabels(request))
        assert sum(e.HasField("result") for e in events) >= 2
        res = c.score_labels(collection="long")
    assert res.ByteSize() > 1 << 20
    assert sorted(s.key for s in res.scores) == sorted(keys)
    assert len(res.suspects) == 8 and res.estimated_noise_rate > 0
