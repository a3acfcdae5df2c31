"""Label scoring and sample-size sweeps through the real server, over a
labelled collection (no re-embedding) and over inline images (bytes, or
server paths inside the server's allowed roots)."""

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_digits

from imagesieve import Client

from conftest import digit_png



def add_flipped_digits(server, name: str, n: int, flips: int, seed: int) -> set[str]:
    """``n`` real handwritten digits (scikit-learn) in a new collection,
    ``flips`` of them with a wrong label; returns the flipped images' keys."""
    d = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(d.images), n, replace=False)
    labels = [str(d.target[i]) for i in idx]
    flipped = rng.choice(n, flips, replace=False)
    for j in flipped:
        labels[j] = str((int(labels[j]) + 1 + rng.integers(9)) % 10)
    keys = [f"{name}-{i}" for i in idx]
    with Client(server.address) as c:
        c.create_collection(name)
        for lo in range(0, n, 64):      # the server's --max-images-per-request
            added = list(c.add(name, [digit_png(d.images[i]) for i in idx[lo:lo + 64]], keys=keys[lo:lo + 64],
                               labels=labels[lo:lo + 64]))
            assert all(a.added for a in added)
    return {keys[j] for j in flipped}


@pytest.fixture(scope="module")
def digits_collection(server):
    """400 real handwritten digits, 8 with a wrong label, in collection "digits"."""
    return add_flipped_digits(server, "digits", 400, 8, seed=0)


def test_score_labels_with_a_pixel_cnn_on_the_stored_thumbnails(server, digits_collection, photos):
    """pixels=True over 1,000 real digits with 30 flipped labels: a small CNN
    on the collection's stored 48x48 thumbnails averaged with LDA (torch is
    installed here) finds the flips, and says how it scored; on the 400-digit
    collection and 12 inline photos it says why it used the embeddings alone.
    Two folds: each fold trains the CNN on the CPU (five took ~3.5 minutes
    of the test suite)."""
    flipped = add_flipped_digits(server, "digits1000", 1000, 30, seed=1)
    with Client(server.address) as c:
        res = c.score_labels(collection="digits1000", top_fraction=0.03, pixels=True, folds=2)
        assert "small CNN on the pixels" in res.note
        found = {s.key for s in res.suspects} & flipped
        assert len(found) >= 20, f"found {len(found)} of 30 flipped labels among 30 suspects"
        plain = c.score_labels(collection="digits1000", top_fraction=0.03, folds=2)
        assert plain.note == ""
        assert max(abs(a.suggested_probability - b.suggested_probability)
                   for a, b in zip(res.scores, plain.scores)) > 0.01
        small = c.score_labels(collection="digits", top_fraction=0.04, pixels=True)
        assert "needs at least 1,000 labelled images (here 400)" in small.note
        inline = c.score_labels(images=[d for d, _, _ in photos[:12]], labels=["a", "b"] * 6, folds=2, pixels=True)
        assert len(inline.scores) == 12 and "scored on embeddings alone" in inline.note


def test_score_labels_over_a_collection(server, digits_collection):
    events = []
    with Client(server.address) as c:
        res = c.score_labels(collection="digits", top_fraction=0.04, progress=events.append)
    assert {e.stage for e in events} >= {"loading collection"}
    assert len(res.scores) == 400 and len(res.suspects) == 16
    found = {s.key for s in res.suspects} & digits_collection
    assert len(found) >= 6, f"found {len(found)} of 8 flipped labels among 16 suspects"
    assert all(s.suggested_label != s.given_label for s in res.suspects if s.key in found)
    assert 0 < res.estimated_noise_rate < 0.2


def test_score_labels_reports_duplicates_with_different_labels(server, photos):
    """The same photo twice under two labels is a label conflict."""
    data = [d for d, _, _ in photos[:12]]
    images = data + [data[0]]
    labels = ["a" if i % 2 else "b" for i in range(12)] + ["a"]      # photo 0 is "b" and "a"
    keys = [f"p{i}" for i in range(12)] + ["p0-again"]
    with Client(server.address) as c:
        res = c.score_labels(images=images, labels=labels, keys=keys, folds=2, top_fraction=0.2)
    pairs = {frozenset((x.key_a, x.key_b)): {x.label_a, x.label_b} for x in res.conflicting_duplicates}
    assert pairs.get(frozenset(("p0", "p0-again"))) == {"a", "b"}


def test_label_conflicts_are_the_duplicates_with_different_labels(server, photos):
    """One definition whichever RPC asks: ScoreLabels' conflicting pairs
    over a collection are exactly FindDuplicates' pairs whose labels
    differ, an altered copy (cropped and re-encoded, below cosine 0.97) among
    them, and a look-alike under another label is not."""
    from imagesieve.alterations import ALTERATIONS, jpeg
    from conftest import photo_image
    data = [d for d, _, _ in photos[:12]]
    labels = ["a" if i % 2 else "b" for i in range(12)]
    images = data + [data[0], jpeg(ALTERATIONS["crop_80"](photo_image(data[3])), 80)]
    labels += ["a", "b"]                       # photo 0 is "b" and "a"; photo 3 "a" and "b"
    keys = [f"p{i}" for i in range(12)] + ["p0-again", "p3-cropped"]
    with Client(server.address) as c:
        c.create_collection("conflicts")
        assert all(a.added for a in c.add("conflicts", images, keys=keys, labels=labels))
        res = c.score_labels(collection="conflicts", folds=2, top_fraction=0.2)
        found = c.find_duplicates("conflicts")
    from_scores = {frozenset((x.key_a, x.key_b)) for x in res.conflicting_duplicates}
    from_find = {frozenset((p.key_a, p.key_b)) for p in found.pairs if p.labels_disagree}
    assert from_scores == from_find == {frozenset(("p0", "p0-again")), frozenset(("p3", "p3-cropped"))}
    cropped = next(p for p in found.pairs if {p.key_a, p.key_b} == {"p3", "p3-cropped"})
    assert cropped.cosine < 0.97 and not cropped.exact
    # Scored again, unchanged: the verified pairs are reused, and the same.
    # After an add or a removal they are computed again.
    with Client(server.address) as c:
        again = c.score_labels(collection="conflicts", folds=2, top_fraction=0.2)
        assert {frozenset((x.key_a, x.key_b)) for x in again.conflicting_duplicates} == from_scores
        assert all(a.added for a in c.add("conflicts", [data[5]], keys=["p5-again"], labels=["b"]))
        c.remove("conflicts", ["p0-again"])
        changed = c.score_labels(collection="conflicts", folds=2, top_fraction=0.2)
    assert {frozenset((x.key_a, x.key_b)) for x in changed.conflicting_duplicates} == \
        {frozenset(("p5", "p5-again")), frozenset(("p3", "p3-cropped"))}


def test_sample_size_over_a_collection(server, digits_collection):
    with Client(server.address) as c:
        res = c.sample_size(collection="digits", target_accuracy=0.99, fractions=[0.1, 0.2, 0.35, 0.5],
                            repeats=3)
    means = [p.mean_accuracy for p in res.points]
    assert len(means) == 4 and means[-1] > means[0]
    assert res.chosen_fit and res.answer
    assert res.plot_png[:8] == b"\x89PNG\r\n\x1a\n" and "<svg" in res.plot_svg


def test_analysis_errors_are_clear(server, photos):
    with Client(server.address) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.score_labels(collection="no-such")
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as e:
            c.score_labels(images=[d for d, _, _ in photos[:4]], labels=["a"] * 4)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "2 distinct labels" in e.value.details()
        c.create_collection("unlabelled")
        list(c.add("unlabelled", [photos[0][0], photos[1][0]], keys=["x", "y"]))
        with pytest.raises(grpc.RpcError) as e:
            c.sample_size(collection="unlabelled", target_accuracy=0.9)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no label" in e.value.details()


def _scores(res):
    return [(s.key, s.given_label, s.suggested_label, s.suggested_probability, s.score) for s in res.scores]


def test_score_labels_reads_server_paths_in_allowed_roots(server, photos):
    """Inline images named by server_path (inside an allowed root) score as the same images sent as bytes."""
    folder = server.allowed_root / "analysis-inline"
    folder.mkdir(exist_ok=True)
    data = [d for d, _, _ in photos[:12]]
    paths = []
    for i, d in enumerate(data):
        (folder / f"p{i}.jpg").write_bytes(d)
        paths.append(f"server_path:{folder / f'p{i}.jpg'}")
    labels = ["a" if i % 2 else "b" for i in range(12)]
    keys = [f"p{i}" for i in range(12)]
    kw = dict(labels=labels, keys=keys, folds=2, top_fraction=0.2, seed=3)
    with Client(server.address) as c:
        from_bytes = c.score_labels(images=data, **kw)
        from_paths = c.score_labels(images=paths, **kw)
    got, want = _scores(from_paths), _scores(from_bytes)
    assert [g[:3] for g in got] == [w[:3] for w in want] and len(got) == 12
    assert [x for g in got for x in g[3:]] == pytest.approx([x for w in want for x in w[3:]], abs=1e-4)
    assert [s.key for s in from_paths.suspects] == [s.key for s in from_bytes.suspects]


def test_analysis_server_paths_outside_allowed_roots_are_refused(server, photos, tmp_path):
    """A path outside the allowed roots (or missing) fails the job, naming the image and why."""
    inside = server.allowed_root / "analysis-ok.jpg"
    inside.write_bytes(photos[0][0])
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(photos[1][0])
    sneaky = f"{server.allowed_root}/../{tmp_path.name}/secret.jpg"
    images = [f"server_path:{inside}", photos[2][0], f"server_path:{outside}", f"server_path:{sneaky}",
              f"server_path:{server.allowed_root}/missing.jpg"]
    keys = ["ok", "bytes", "outside", "sneaky", "missing"]
    labels = ["a", "b", "a", "b", "a"]
    with Client(server.address) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.score_labels(images=images, labels=labels, keys=keys, folds=2)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = e.value.details()
        assert details.startswith("3 image(s) could not be embedded: outside (")
        assert "outside the server's allowed roots" in details and f"{outside}" in details
        assert "sneaky (" in details and "missing (cannot read" in details
        assert "ok (" not in details and "bytes (" not in details
        with pytest.raises(grpc.RpcError) as e:   # 3 of 5 failed: more than half, the job stops
            c.sample_size(images=images, labels=labels, keys=keys, target_accuracy=0.9, fractions=[0.9, 1.0])
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details().startswith("3 image(s) could not be embedded: outside (")
        assert "outside the server's allowed roots" in e.value.details()


def test_analysis_jobs_go_on_without_images_that_cannot_be_read(server, photos, tmp_path):
    """A corrupt file, a truncated PNG and a path outside the allowed roots
    among 120 real digits: ScoreLabels and SampleSizeSweep score the 120 and
    list the three in `skipped` (input order, each with its error), and say
    so in their note and answer. Before, one of them failed the whole job."""
    d = load_digits()
    idx = np.flatnonzero(d.target < 3)[:120]
    good = [digit_png(d.images[i]) for i in idx]
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(photos[0][0])
    bad = {"broken": b"not an image at all", "truncated": good[0][:len(good[0]) // 2],
           "outside": f"server_path:{outside}"}
    images = good[:40] + [bad["broken"]] + good[40:80] + [bad["truncated"], bad["outside"]] + good[80:]
    keys = [f"d{i}" for i in range(40)] + ["broken"] + [f"d{i}" for i in range(40, 80)] + ["truncated", "outside"] \
        + [f"d{i}" for i in range(80, 120)]
    wanted = [str(d.target[i]) for i in idx]
    labels = wanted[:40] + ["0"] + wanted[40:80] + ["1", "2"] + wanted[80:]
    with Client(server.address) as c:
        scored = c.score_labels(images=images, labels=labels, keys=keys, folds=3)
        swept = c.sample_size(images=images, labels=labels, keys=keys, fractions=[0.3, 0.6, 1.0], repeats=2)
    assert [s.key for s in scored.scores] == [k for k in keys if k not in bad]
    for result in (scored, swept):
        assert [s.key for s in result.skipped] == ["broken", "truncated", "outside"]
        assert all(s.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for s in result.skipped[:2])
        assert "outside the server's allowed roots" in result.skipped[2].error.message
    assert "3 image(s) left out" in scored.note and "broken, truncated, outside" in scored.note
    assert "3 image(s) left out" in swept.answer
    assert sum(p.num_images for p in swept.points[-1:]) <= 117 and len(swept.points) == 3


def test_a_client_resubmitting_jobs_the_moment_they_end_does_not_keep_the_slot_from_another(manifest_path, photos,
                                                                                            tmp_path):
    """Jobs beyond --max-jobs were refused at once: a client (a token) whose
    threads resubmit the moment a job ends took every freed slot before
    another client's retries came (a twenty-fifth probe's open limit; and
    the light client asked once: gRPC's retries do not cover a call whose
    headers were sent). Now a job waits for a slot, a freed one goes to the
    waiting client holding the fewest, one waiting job a client, and the
    light client asks again for ~8 s when refused all the same."""
    import collections
    import threading
    import time

    from imagesieve.local_server import LocalServer

    flooder, victim = "flood-" + "0" * 32, "victim-" + "1" * 32
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{flooder} rw flooder\n{victim} rw victim\n")
    images, labels = [d for d, _, _ in photos[:6]], ["a", "b"] * 3
    with LocalServer(["--max-jobs", "1", "--tokens-file", str(tokens)], model=str(manifest_path)) as srv:
        stop, outcomes = threading.Event(), collections.Counter()

        def flood():
            with Client(srv.address, token=flooder, retries=False, timeout=30) as c:
                while not stop.is_set():
                    try:
                        c.score_labels(images=images, labels=labels, folds=2)
                        outcomes["done"] += 1
                    except grpc.RpcError as e:
                        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
                        outcomes["refused"] += 1
                        time.sleep(0.001)

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 60
            while outcomes["done"] < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert outcomes["done"] >= 2, outcomes
            with Client(srv.address, token=victim, timeout=30) as c:     # it asks again for ~8 s by itself
                answered = c.score_labels(images=images, labels=labels, folds=2)
            assert len(answered.scores) == 6
            before = outcomes["done"]
            deadline = time.monotonic() + 20
            while outcomes["done"] == before and time.monotonic() < deadline:
                time.sleep(0.05)
            assert outcomes["done"] > before, "once the victim had its slot, the flooder's jobs run again"
        finally:
            stop.set()
            for t in threads:
                t.join(30)
