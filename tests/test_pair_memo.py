"""Stage 2's evidence kept between runs (analysis.duplicates.pair_memo): a
pair aligned once is read, not aligned again, and reads as it was aligned."""
import dataclasses
import hashlib

import numpy as np
import pytest
from PIL import ImageEnhance, ImageOps

from imagesieve_server.analysis.duplicates import verify
from imagesieve_server.analysis.duplicates.find import find_duplicates
from imagesieve_server.analysis.duplicates.pair_memo import KEY, PairMemo, signature_digests
from imagesieve_server.checks import duplicates

from conftest import encode, photo_image


@pytest.fixture(scope="module")
def photo_set(embedder, photos):
    """Real photos, then three altered copies of three of them (the copies last)."""
    blobs = [d for d, _, _ in photos][:24]
    copies = [encode(ImageOps.mirror(photo_image(blobs[0])), "JPEG", quality=80),
              encode(ImageEnhance.Brightness(photo_image(blobs[5])).enhance(1.3), "PNG"),
              encode(photo_image(blobs[9]).rotate(90, expand=True), "JPEG", quality=90)]
    out = embedder.embed_all(blobs + copies, with_signatures=True)
    assert all(o.ok for o in out)
    vectors = np.stack([o.vector for o in out])
    signatures = np.stack([o.signature for o in out])
    sha = [hashlib.sha256(b).hexdigest() for b in blobs + copies]
    return vectors, signatures, sha


def _find(vectors, signatures, sha, memo=None):
    keys = [f"i{i}" for i in range(len(vectors))]
    none = [""] * len(vectors)
    return find_duplicates(vectors, keys, none, none, sha, signatures=signatures, pair_memo=memo)


def _same_report(x, y):
    assert x.a.tolist() == y.a.tolist() and x.b.tolist() == y.b.tolist()
    for f in dataclasses.fields(verify.PairEvidence):
        assert np.array_equal(getattr(x.evidence, f.name), getattr(y.evidence, f.name)), f.name
    assert np.array_equal(x.relative, y.relative, equal_nan=True)
    assert [sorted(g) for g in x.groups] == [sorted(g) for g in y.groups]


def test_a_kept_memo_aligns_nothing_again_and_answers_as_a_fresh_run(photo_set, monkeypatch):
    vectors, signatures, sha = photo_set
    calls = []
    real = verify.verify_pairs
    monkeypatch.setattr(verify, "verify_pairs", lambda sig, a, b, **kw: (calls.append(len(a)), real(sig, a, b, **kw))[1])
    fresh = _find(vectors, signatures, sha)
    first = PairMemo()
    with_memo = _find(vectors, signatures, sha, first)
    assert first.aligned == fresh.candidates > 0 and len(first) == fresh.candidates
    _same_report(fresh, with_memo)
    n = len(vectors)
    assert {(n - 3, 0), (n - 2, 5), (n - 1, 9)} <= {tuple(sorted(p, reverse=True)) for p in zip(with_memo.a.tolist(),
                                                                                             with_memo.b.tolist())}
    # Kept as arrays (as the audit keeps it), read back: nothing is aligned again.
    calls.clear()
    again = PairMemo.from_arrays(first.kept_for_next().to_arrays())
    rerun = _find(vectors, signatures, sha, again)
    assert calls == [] and again.aligned == 0
    _same_report(fresh, rerun)


def _sides(memo: PairMemo) -> np.ndarray:
    """(P, 2) the two images' digests of each pair a memo was asked for."""
    return np.ascontiguousarray(np.concatenate(memo.asked)).view(">u8").reshape(-1, 2)


def test_new_or_changed_images_alone_are_aligned_again(photo_set):
    vectors, signatures, sha = photo_set
    n = len(vectors)
    base = PairMemo()
    _find(vectors[:n - 1], signatures[:n - 1], sha[:n - 1], base)     # the turned copy not there yet
    kept = base.kept_for_next().to_arrays()
    grown = PairMemo.from_arrays(kept)
    report = _find(vectors, signatures, sha, grown)
    new = signature_digests(signatures[n - 1:])[0]
    involving = (_sides(grown) == new).any(axis=1)
    assert grown.aligned == int(involving.sum()) > 0      # every pair aligned now involves the new image
    assert (n - 1, 9) in {tuple(sorted(p, reverse=True)) for p in zip(report.a.tolist(), report.b.tolist())}
    # One image's signature changed (its file edited): its pairs are aligned again, no other.
    changed = signatures.copy()
    changed[3] = signatures[4]
    again = PairMemo.from_arrays(grown.kept_for_next().to_arrays())
    _find(vectors, changed, sha, again)
    with_3 = int((_sides(again) == signature_digests(changed)[3]).any(axis=1).sum())
    assert 0 < again.aligned <= with_3


def test_runs_over_other_subsets_keep_each_others_pairs_within_a_bound(photo_set, monkeypatch):
    """An audit, then a command over part of its images (or FindDuplicates
    and ScoreLabels on one collection): keeping only the last run's pairs,
    each run pushed the other's out and aligned them all again (a review:
    1,841 of 1,956 pairs). The others are kept too, up to a bound, those of
    the last run's images first."""
    from imagesieve_server.analysis.duplicates import pair_memo
    vectors, signatures, sha = photo_set
    full = PairMemo()
    _find(vectors, signatures, sha, full)
    everything = len(full)
    part = PairMemo.from_arrays(full.kept_for_next().to_arrays())
    _find(vectors[:12], signatures[:12], sha[:12], part)          # half the images
    mine = len(np.unique(np.concatenate(part.asked)))
    assert part.aligned < mine           # a smaller set proposes a few pairs the whole did not
    again = PairMemo.from_arrays(part.kept_for_next().to_arrays())
    assert len(again) == everything + part.aligned
    _find(vectors, signatures, sha, again)
    assert again.aligned == 0                                     # the whole set: nothing aligned again
    # Bounded: the others at most as many again as the last run's own pairs.
    monkeypatch.setattr(pair_memo, "KEEP_MIN_PAIRS", 0)
    small = PairMemo.from_arrays(full.kept_for_next().to_arrays())
    _find(vectors[:6], signatures[:6], sha[:6], small)
    own = len(np.unique(np.concatenate(small.asked)))
    kept = small.kept_for_next()
    assert 0 < own < mine and len(kept) == 2 * own < everything
    seen = signature_digests(signatures[:6])
    sides = np.ascontiguousarray(kept.keys).view(">u8").reshape(-1, 2)
    # the others kept are first those between the last run's images (here: none beyond its own), then any
    assert np.isin(sides, seen).all(axis=1).sum() == own


def test_a_pair_kept_without_its_profile_judged_is_aligned_again_when_that_matters(photo_set):
    vectors, signatures, sha = photo_set
    sig = signatures[:3]
    a, b = np.array([0, 0]), np.array([1, 2])
    memo = PairMemo()
    unjudged = memo.verify(sig, a, b, profiled=np.array([False, False]))
    assert memo.aligned == 2 and unjudged.matched_profile.all()       # not measured: True
    memo.verify(sig, a, b, profiled=np.array([False, False]))
    assert memo.aligned == 2                                           # read
    judged = memo.verify(sig, a, b, profiled=np.array([True, False]))
    assert memo.aligned == 3                                           # the first pair aligned again, judged
    fresh = verify.verify_pairs(sig, a[:1], b[:1], profiled=np.array([True]))
    assert judged.matched_profile[0] == fresh.matched_profile[0]
    memo.verify(sig, a, b, profiled=np.array([True, False]))
    assert memo.aligned == 3 and len(memo) == 2


@pytest.mark.parametrize("damage", ["missing field", "unsorted", "wrong dtype", "short field"])
def test_a_kept_memo_that_does_not_fit_is_not_read(photo_set, damage):
    vectors, signatures, sha = photo_set
    memo = PairMemo()
    _find(vectors[:8], signatures[:8], sha[:8], memo)
    arrays = memo.kept_for_next().to_arrays()
    assert len(arrays["keys"]) > 1
    if damage == "missing field":
        del arrays["warp_gain"]
    elif damage == "unsorted":
        arrays["keys"] = arrays["keys"][::-1].copy()
    elif damage == "wrong dtype":
        arrays["agreement"] = arrays["agreement"].astype(np.float64)
    else:
        arrays["turned"] = arrays["turned"][:-1]
    assert len(PairMemo.from_arrays(arrays)) == 0
    assert len(PairMemo.from_arrays(None)) == 0 and PairMemo().keys.dtype == np.dtype(KEY)


def test_the_duplicates_check_keeps_its_evidence_in_the_store(photo_set, tmp_path):
    """What the audit runs: checks.duplicates with the embedding store's folder."""
    vectors, signatures, sha = photo_set
    keys = [f"i{i}" for i in range(len(vectors))]
    none = [""] * len(vectors)
    first = duplicates.run(vectors, keys, none, none, sha, signatures, store=tmp_path)
    assert not any("earlier run" in n for n in first.notes)
    assert len(list((tmp_path / "results").glob(f"{duplicates.PAIR_EVIDENCE}-*.npz"))) == 1
    second = duplicates.run(vectors, keys, none, none, sha, signatures, store=tmp_path)
    candidates = second.details.report.candidates
    assert [n for n in second.notes if "earlier run" in n] == [
        f"stage 2: {candidates:,} of {candidates:,} candidate pairs read from an earlier run's evidence (the same "
        "two signatures, the same verifier), 0 aligned now"]
    _same_report(first.details.report, second.details.report)
    raw = duplicates.run(vectors, keys, none, none, sha, signatures, duplicates.Params(verify=False), store=tmp_path)
    assert not any("earlier run" in n for n in raw.notes)


def test_a_collections_find_duplicates_job_aligns_its_pairs_once(server, photos):
    """FindDuplicates keeps stage 2's evidence beside the collection: the same
    job again aligns nothing (no 'verify' progress) and answers alike."""
    from imagesieve import Client
    blobs = [d for d, _, _ in photos][:12]
    blobs.append(encode(ImageEnhance.Contrast(photo_image(blobs[3])).enhance(1.4), "JPEG", quality=85))
    with Client(server.address) as c:
        c.create_collection("pair-memo")
        try:
            assert all(r.added for r in c.add("pair-memo", blobs, keys=[f"k{i}" for i in range(len(blobs))]))
            runs = []
            for _ in range(2):
                stages = []
                result = c.find_duplicates("pair-memo", progress=lambda p: stages.append(p.stage))
                runs.append(({(p.key_a, p.key_b) for p in result.pairs}, stages))
        finally:
            c.drop_collection("pair-memo")
    (first, first_stages), (second, second_stages) = runs
    assert ("k12", "k3") in first or ("k3", "k12") in first
    assert first == second
    assert "verify" in first_stages and "verify" not in second_stages


def test_processes_false_aligns_in_the_calling_thread_however_many_pairs(photo_set, monkeypatch):
    """A server run with --verify-workers 0 (or 1) has no alignment pool and
    means "the request's thread"; its jobs pass processes=False, which no
    number of pairs overrides (from PROCESS_MIN_PAIRS on, stage 2 otherwise
    starts worker processes of its own)."""
    vectors, signatures, sha = photo_set
    keys = [f"i{i}" for i in range(len(vectors))]
    none = [""] * len(vectors)
    started = []

    class NoPool:
        def __init__(self, *args, **kwargs):
            started.append(args)
            raise AssertionError("a process pool was started")
    monkeypatch.setattr(verify, "PROCESS_MIN_PAIRS", 1)
    monkeypatch.setattr(verify, "AlignmentPool", NoPool)
    found = duplicates.run(vectors, keys, none, none, sha, signatures, processes=False)
    assert found.details.report.candidates > 1 and not started
    with pytest.raises(AssertionError, match="a process pool was started"):
        duplicates.run(vectors, keys, none, none, sha, signatures)
