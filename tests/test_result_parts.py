"""Job results larger than the server's message limit arrive in parts that
merge back into the whole result: the split itself, and a real server with
--max-message-mb 1 answering ScoreLabels over 800 images with long keys and
labels (a 1.4 MB answer that failed with RESOURCE_EXHAUSTED before); results
under the limit still come whole (older clients take the first result event)."""
from __future__ import annotations

import numpy as np
import pytest
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
    assert result_parts(result) == [result]                 # ~1.2 MB: whole under the default 64 MB limit
    parts = result_parts(result, limit_bytes=64 << 10)
    assert len(parts) > 10 and all(p.ByteSize() <= 64 << 10 for p in parts)
    assert parts[0].parts == len(parts) and all(p.parts == 0 for p in parts[1:])
    assert parts[0].estimated_noise_rate == 0.031 and all(not p.note for p in parts[1:])
    merged = analysis_pb2.ScoreLabelsResult()
    for p in parts:
        merged.MergeFrom(p)
    merged.parts = 0
    assert merged == result
    small = duplicates_pb2.FindDuplicatesResult(num_images=3, warnings=["w"])
    assert result_parts(small, limit_bytes=64 << 10) == [small]


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
        results = [e.result for e in c.analysis.ScoreLabels(request) if e.HasField("result")]
        assert len(results) >= 2 and results[0].parts == len(results)
        assert all(r.ByteSize() < 1 << 20 for r in results)
        res = c.score_labels(collection="long")
    assert res.ByteSize() > 1 << 20
    assert sorted(s.key for s in res.scores) == sorted(keys)
    assert len(res.suspects) == 8 and res.estimated_noise_rate > 0


def test_the_client_merges_parts_and_refuses_a_result_missing_some():
    result = analysis_pb2.ScoreLabelsResult()
    for i in range(3000):
        result.scores.add(key=f"k{i:05d}" + "x" * 40, score=i)
    parts = result_parts(result, limit_bytes=64 << 10)
    events = [analysis_pb2.ScoreLabelsEvent(result=p) for p in parts]
    merged = Client._merged(iter(events), None)
    assert [s.key for s in merged.scores] == [s.key for s in result.scores]
    with pytest.raises(RuntimeError, match=f"{len(parts) - 1} of its {len(parts)} parts"):
        Client._merged(iter(events[:-1]), None)
