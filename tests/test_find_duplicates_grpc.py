"""FindDuplicates over a real collection: pairs, groups, leakage, conflicts."""
import grpc
import numpy as np
import pytest
from PIL import ImageFilter

from imagesieve import Client

from conftest import encode, photo_image


@pytest.fixture(scope="module")
def dup_collection(server, photos):
    """20 photos (labels, 4 in test split) + planted copies: an exact copy
    under another key, near copies in the other split and with another label,
    a heavily blurred copy."""
    data = [d for d, _, _ in photos]
    names = [n for _, _, n in photos]
    images = list(data)
    keys = list(names)
    labels = [str(l) for _, l, _ in photos]
    splits = ["train"] * 20
    small = lambda d, q: encode(photo_image(d).resize((300, 300)), "JPEG", quality=q)  # noqa: E731
    planted = [
        (data[0], "exact-0", labels[0], "train"),               # same bytes
        (small(data[1], 60), "near-1-test", labels[1], "test"),  # leakage
        (small(data[2], 60), "near-2-relabelled", "999", "train"),  # label conflict
        (small(data[3], 50), "near-3-a", labels[3], "train"),
        (small(data[3], 30), "near-3-b", labels[3], "train"),
        (encode(photo_image(data[4]).filter(ImageFilter.GaussianBlur(12)), "JPEG", quality=90), "blur-4",
         labels[4], "train"),
    ]
    for d, k, l, s in planted:
        images.append(d)
        keys.append(k)
        labels.append(l)
        splits.append(s)
    with Client(server.address) as c:
        c.create_collection("dups")
        assert all(r.added for r in c.add("dups", images, keys=keys, labels=labels, splits=splits))
    return names, images, keys


def test_pairs_groups_and_flags(server, dup_collection):
    names, images, keys = dup_collection
    events = []
    with Client(server.address) as c:
        res = c.find_duplicates("dups", progress=events.append)
    assert res.num_images == 26 and res.method == "verified" and res.threshold == pytest.approx(0.5)
    assert "stage 2" in res.threshold_reason
    assert events and events[-1].stage
    pairs = {frozenset((p.key_a, p.key_b)): p for p in res.pairs}
    exact = pairs[frozenset((names[0], "exact-0"))]
    assert exact.exact and exact.cosine > 0.9999
    leak = pairs[frozenset((names[1], "near-1-test"))]
    assert leak.cross_split and not leak.labels_disagree
    conflict = pairs[frozenset((names[2], "near-2-relabelled"))]
    assert conflict.labels_disagree and not conflict.cross_split
    assert frozenset((names[3], "near-3-a")) in pairs and frozenset(("near-3-a", "near-3-b")) in pairs
    # no pair among the 20 distinct photos
    assert not [p for p in res.pairs if p.key_a in names and p.key_b in names]
    groups = sorted(sorted(g.keys) for g in res.groups)
    assert sorted([names[3], "near-3-a", "near-3-b"]) in groups
    # every verified pair carries its evidence: copies of one photo align
    assert all(p.agreement > 0.8 and 0 < p.matched_area <= 1 for p in res.pairs)
    # ... and says when the sharper one was blurred to compare them at one sharpness
    assert pairs[frozenset((names[4], "blur-4"))].matched_blur_px > 0
    assert pairs[frozenset((names[3], "near-3-a"))].matched_blur_px == 0
    # the streaming check gives the same evidence of the blurred copy
    with Client(server.address) as c:
        again = encode(photo_image(images[4]).filter(ImageFilter.GaussianBlur(12)), "JPEG", quality=80)
        r = next(c.check("dups", [again], keys=["blur-4 again"]))
    near = {n.key: n for n in r.neighbors}
    assert r.verdict == "NEAR_DUPLICATE" and near[names[4]].verified and near[names[4]].matched_blur_px > 0


def test_pairs_equal_brute_force_on_the_same_vectors(server, dup_collection, embedder):
    _, images, keys = dup_collection
    x = np.stack([o.vector for o in embedder.embed_all(images)])   # identical to the server's
    sims = x @ x.T
    for t in (0.5, 0.75):
        ref = {frozenset((keys[i], keys[j])) for i in range(len(keys)) for j in range(i + 1, len(keys))
               if sims[i, j] >= t}
        with Client(server.address) as c:
            res = c.find_duplicates("dups", threshold=t, raw_cosine=True)
            got = {frozenset((p.key_a, p.key_b)) for p in res.pairs}
        assert res.method == "raw cosine"
        assert got == ref and len(ref) >= 5


def test_find_duplicates_errors(server, dup_collection):
    with Client(server.address) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.find_duplicates("no-such-collection")
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as e:
            c.find_duplicates("dups", grouping="whatever")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A hostile value is not echoed whole: 100 KB of it in the status made
        # the client see RESOURCE_EXHAUSTED (metadata over its limit), and retry.
        with pytest.raises(grpc.RpcError) as e:
            c.find_duplicates("dups", grouping="x" * 100_000)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(e.value.details()) < 4096


@pytest.mark.parametrize("raw_cosine", [False, True])
@pytest.mark.parametrize("approximate", [False, True])
def test_find_duplicates_on_an_empty_or_single_image_collection(server, photos, raw_cosine, approximate):
    """Before: the verified path failed INTERNAL on an empty collection
    (a collection just created, or dropped and made again)."""
    name = f"few-{int(raw_cosine)}{int(approximate)}"
    with Client(server.address) as c:
        c.create_collection(name)
        res = c.find_duplicates(name, raw_cosine=raw_cosine, approximate=approximate)
        assert res.num_images == 0 and not res.pairs and not res.groups
        assert next(iter(c.add(name, [photos[0][0]], keys=["one"]))).added
        res = c.find_duplicates(name, raw_cosine=raw_cosine, approximate=approximate, grouping="components")
        assert res.num_images == 1 and not res.pairs
        c.drop_collection(name)


def test_raw_pairs_beyond_what_an_answer_can_hold_are_refused_not_built(manifest_path):
    """N near-identical images make N^2/2 raw-cosine pairs: 3,000 blank
    images took a server to 4.7 GB and 55 s. The exact search now stops at
    jobs.find_duplicates.MAX_PAIRS (lowered here so that 600 images exceed
    it) and says what to do; the kNN-graph search still answers."""
    import io
    from PIL import Image
    from imagesieve.local_server import LocalServer

    def blank(i):
        buf = io.BytesIO()
        Image.new("RGB", (16 + i % 40, 16 + i // 40), (120, 120, 120)).save(buf, "PNG")
        return buf.getvalue()

    with LocalServer(["--max-images-per-request", "256", "--max-pairs", "50000"],
                     model=str(manifest_path)) as srv, Client(srv.address) as c:
        c.create_collection("blank", threshold=0.75)       # without one, measured on these blanks: ~1
        images = [blank(i) for i in range(600)]
        assert all(r.added for r in c.add("blank", images, keys=[f"b{i}" for i in range(600)]))
        with pytest.raises(grpc.RpcError) as e:
            c.find_duplicates("blank", raw_cosine=True)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "more than 50,000 pairs" in e.value.details() and "raise the threshold" in e.value.details()
        res = c.find_duplicates("blank", raw_cosine=True, approximate=True, knn_k=8)
        assert 0 < len(res.pairs) < 50_000        # a bounded number an image
