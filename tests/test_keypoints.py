"""Keypoint evidence (engine.keypoints, verify.keypoint_confirmed): real
photos, copies the layouts alone judge poorly, and the look-alike guard
that keeps shared parts from pairing distinct pictures."""
from __future__ import annotations

import hashlib
import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from imagesieve_server.analysis.duplicates import verify
from imagesieve_server.analysis.duplicates.find import find_duplicates
from imagesieve_server.engine.keypoints import COUNT, KEYPOINT_BYTES, keypoint_block, matched_inliers, unpack_keypoints
from imagesieve_server.engine.signature import LAYOUT_BYTES, SIGNATURE_BYTES, keypoints, layout_signature, upgrade


def photo(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def local_contrast(im: Image.Image) -> Image.Image:
    """An 'HDR' filter: CLAHE on lightness, detail enhancement, saturation up."""
    bgr = cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2BGR)
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
    lab[..., 0] = cv2.createCLAHE(3.0, (8, 8)).apply(lab[..., 0])
    bgr = cv2.detailEnhance(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), sigma_s=12, sigma_r=0.2)
    return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def on_a_desktop(im: Image.Image) -> Image.Image:
    """The picture as a desktop background (scaled to cover 800x450, the
    rest cut off): icons, a task bar, a window."""
    s = max(800 / im.width, 450 / im.height)
    big = im.resize((round(im.width * s) + 1, round(im.height * s) + 1), Image.BICUBIC)
    x, y = (big.width - 800) // 2, (big.height - 450) // 2
    out = big.crop((x, y, x + 800, y + 450)).convert("RGB")
    d = ImageDraw.Draw(out)
    for i in range(5):
        d.rounded_rectangle((12, 10 + i * 70, 52, 50 + i * 70), 5, fill=(70 + 30 * i, 130, 200))
    d.rectangle((0, 420, 800, 450), fill=(32, 34, 40))
    d.rectangle((420, 60, 760, 230), fill=(30, 30, 30), outline=(90, 90, 90))
    for j in range(6):
        d.text((430, 70 + j * 24), f"user@host:~$ ls photos/{j}", fill=(120, 230, 120))
    return out


def test_a_block_round_trips_and_is_compact(photos):
    block = keypoint_block(photo(photos[0][0]))
    assert block.shape == (KEYPOINT_BYTES,) and block.dtype == np.uint8 and KEYPOINT_BYTES < 6000
    xy, desc = unpack_keypoints(block)
    assert 50 <= len(xy) <= COUNT and desc.shape == (len(xy), 32)
    assert (xy >= 0).all() and xy.min(axis=0).max() < 256 and xy.max() < 1024
    # A blank image has no keypoints, and nothing matches it.
    blank = keypoint_block(Image.new("RGB", (300, 200), (90, 90, 90)))
    assert len(unpack_keypoints(blank)[0]) == 0 and matched_inliers(blank, block) == 0
    with pytest.raises(ValueError, match="bytes"):
        unpack_keypoints(block[:-1])
    # Damaged blocks (random bytes: NaN positions, counts past COUNT) match without error.
    rng = np.random.default_rng(0)
    for _ in range(50):
        junk = rng.integers(0, 256, KEYPOINT_BYTES, dtype=np.uint8)
        assert 0 <= matched_inliers(junk, block) <= COUNT and matched_inliers(junk, junk[::-1].copy()) >= 0


def test_altered_copies_share_keypoints_and_other_photos_do_not(photos):
    ims = [photo(d) for d, _, _ in photos[:8]]
    blocks = [keypoint_block(im) for im in ims]
    found = []
    for im, block in zip(ims[:4], blocks[:4]):
        w, h = im.size
        # (Deep crops keep fewer: the layouts' search is what finds those.)
        copies = [local_contrast(im), on_a_desktop(im), im.rotate(12, resample=Image.BICUBIC).resize((w // 2, h // 2))]
        found += [matched_inliers(block, keypoint_block(c)) for c in copies]
    # Not every copy (a small photo mostly hidden by a desktop's windows keeps 3), but most.
    assert sum(f >= verify.MIN_INLIERS for f in found) >= 10, found
    others = [matched_inliers(blocks[i], blocks[j]) for i in range(8) for j in range(i + 1, 8)]
    assert max(others) < verify.MIN_INLIERS, others


def test_signatures_carry_keypoints_and_older_ones_read_as_having_none(photos):
    sig = layout_signature(photo(photos[1][0]))
    assert sig.shape == (SIGNATURE_BYTES,) and len(unpack_keypoints(keypoints(sig))[0]) > 50
    old = upgrade(sig[:LAYOUT_BYTES])                # stored before the keypoints
    assert old.shape == (SIGNATURE_BYTES,) and (old[:LAYOUT_BYTES] == sig[:LAYOUT_BYTES]).all()
    assert len(unpack_keypoints(keypoints(old))[0]) == 0 and matched_inliers(keypoints(old), keypoints(sig)) == 0
    ev = verify.verify_pairs(np.stack([sig, old, upgrade(layout_signature(local_contrast(photo(photos[1][0]))))]),
                             [0, 0], [1, 2])
    assert ev.keypoint_inliers[0] == 0 and ev.keypoint_inliers[1] >= verify.MIN_INLIERS


def test_keypoints_confirm_only_pairs_that_stand_out_from_their_look_alikes():
    # Image 0 with a copy (1) and look-alikes (2, 3) that share few keypoints with it.
    a, b = np.array([0, 0, 0, 1]), np.array([1, 2, 3, 2])
    same = np.zeros(4, bool)
    assert verify.keypoint_confirmed(4, a, b, [30, 3, 2, 4], same).tolist() == [True, False, False, False]
    # The same 30 inliers where a look-alike shares 12 (two icons on one folder base): not enough.
    assert not verify.keypoint_confirmed(4, a, b, [30, 12, 2, 4], same).any()
    # ... unless that look-alike is already found the same picture (a second copy): then it is no look-alike.
    assert verify.keypoint_confirmed(4, a, b, [30, 12, 2, 4], [False, True, False, False]).tolist() == \
        [True, False, False, False]
    # Too few inliers confirm nothing, however quiet the look-alikes.
    assert not verify.keypoint_confirmed(4, a, b, [verify.MIN_INLIERS - 1, 0, 0, 0], same).any()
    # verified_pairs adds them to what the layouts found.
    ok, _ = verify.verified_pairs(4, a, b, [0.7, 0.7, 0.7, 0.7], [0.8, 0.8, 0.8, 0.8],
                                  keypoint_inliers=[30, 3, 2, 4])
    assert ok.tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="keypoint_inliers"):
        verify.verified_pairs(4, a, b, [0.7] * 4, [0.8] * 4, keypoint_inliers=[30, 3])


def test_find_duplicates_reports_keypoint_evidence_for_a_filtered_copy(embedder, photos):
    """Real photos, each with a local-contrast copy and one on a desktop: every
    copy is paired with its original, nothing else is, and each pair says
    how many keypoints matched."""
    ims = [photo(d) for d, _, _ in photos[:12]]
    blobs = []
    for im in ims + [local_contrast(im) for im in ims[:6]] + [on_a_desktop(im) for im in ims[6:12]]:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    out = embedder.embed_all(blobs, with_signatures=True)
    vectors = np.stack([o.vector for o in out])
    signatures = np.stack([o.signature for o in out])
    keys = [str(i) for i in range(len(blobs))]
    rep = find_duplicates(vectors, keys, [""] * len(keys), [""] * len(keys),
                          [hashlib.sha256(b).hexdigest() for b in blobs], signatures=signatures)
    pairs = {(int(x), int(y)) for x, y in zip(rep.a, rep.b)}
    truth = {(i, 12 + i) for i in range(12)}
    assert pairs <= truth and len(pairs) >= 10, pairs
    assert {(i, 12 + i) for i in range(6)} <= pairs          # every filtered copy
    assert (rep.evidence.keypoint_inliers >= verify.MIN_INLIERS).sum() >= 10


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_strips_too_thin_for_keypoints_embed_like_any_image(embedder, photos):
    """A 1 x 800 strip once broke ORB's pyramid and, with it, the whole batch."""
    rng = np.random.default_rng(3)
    strips = [Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)) for w, h in ((1, 800), (2000, 1), (3, 2500))]
    for s in strips:
        assert len(unpack_keypoints(keypoint_block(s))[0]) == 0
        assert layout_signature(s).shape == (SIGNATURE_BYTES,)
    out = embedder.embed_all([photos[0][0]] + [png(s) for s in strips], with_signatures=True)
    assert all(o.ok and o.signature is not None for o in out)


def test_the_count_does_not_depend_on_which_image_comes_first(photos):
    a = keypoint_block(photo(photos[2][0]))
    b = keypoint_block(local_contrast(photo(photos[2][0])))
    assert matched_inliers(a, b) == matched_inliers(b, a) >= verify.MIN_INLIERS


def test_a_byte_identical_twin_is_no_look_alike():
    """X and its identical twin X' (found the same) and Y, a copy only keypoints
    confirm: Y's pair with X' must not count as the runner-up of its pair with X."""
    a, b, k, same = [0, 0, 1], [1, 2, 2], [150, 30, 30], [True, False, False]
    assert not verify.keypoint_confirmed(3, a, b, k, same).any()
    assert verify.keypoint_confirmed(3, a, b, k, same, twins=[0, 0, 1]).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="twins"):
        verify.keypoint_confirmed(3, a, b, k, same, twins=[0, 0])


def test_a_re_encoded_second_file_is_no_rival_of_its_first(embedder, photos):
    """A package that ships a photo twice (resized and re-saved, not
    byte-identical) and a desktop copy of it that only keypoints confirm:
    the copy matches both files with about the same inliers, and each file
    vetoed the other as the copy's rival (before: 1 of 12 desktop copies
    found, here measured 8 of 12). Two such files (near_identical_matches)
    are twins for the keypoint test; nothing unrelated gets paired."""
    ims = [photo(d) for d, _, _ in photos[:12]]

    def jpeg(im, quality=90):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        return buf.getvalue()

    blobs = ([jpeg(im) for im in ims] + [jpeg(im.resize((im.width * 4 // 5, im.height * 4 // 5)), 75) for im in ims]
             + [jpeg(on_a_desktop(im).filter(ImageFilter.GaussianBlur(1.5))) for im in ims])
    out = embedder.embed_all(blobs, with_signatures=True)
    vectors, signatures = np.stack([o.vector for o in out]), np.stack([o.signature for o in out])
    keys = [str(i) for i in range(len(blobs))]
    rep = find_duplicates(vectors, keys, [""] * len(keys), [""] * len(keys),
                          [hashlib.sha256(b).hexdigest() for b in blobs], signatures=signatures)
    pairs = {(int(x), int(y)) for x, y in zip(rep.a, rep.b)}
    truth = {(i, 12 + i) for i in range(12)} | {(i, 24 + i) for i in range(12)} | {(12 + i, 24 + i) for i in range(12)}
    assert pairs <= truth, pairs - truth
    assert {(i, 12 + i) for i in range(12)} <= pairs          # the second files: the layouts' verdict
    desktops = [i for i in range(12) if {(i, 24 + i), (12 + i, 24 + i)} <= pairs]
    assert len(desktops) >= 6, desktops

    # The rule itself: X and X' near-identical (found the same), Y matching each with 21 inliers.
    ev = verify.PairEvidence.empty(3)
    ev.agreement[:], ev.matched_area[:], ev.keypoint_inliers[:] = [0.99, 0.7, 0.7], [1.0, 0.6, 0.6], [120, 21, 21]
    a, b, cos = np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([0.99, 0.6, 0.6], np.float32)
    near = verify.near_identical_matches(ev, cos)
    assert near.tolist() == [True, False, False]
    assert verify.verified_pairs(3, a, b, ev.agreement, cos, keypoint_inliers=ev.keypoint_inliers,
                                 near_identical=near)[0].tolist() == [True, True, True]
    # A crop (part of the frame) is a copy, not a twin: its match still counts as a rival.
    ev.matched_area[0] = 0.6
    near = verify.near_identical_matches(ev, cos)
    assert not near.any()
    assert verify.verified_pairs(3, a, b, ev.agreement, cos, keypoint_inliers=ev.keypoint_inliers,
                                 near_identical=near)[0].tolist() == [True, False, False]
    with pytest.raises(ValueError, match="near_identical"):
        verify.verified_pairs(3, a, b, ev.agreement, cos, keypoint_inliers=ev.keypoint_inliers, near_identical=[True])


def test_a_streaming_check_reports_the_keypoints_it_matched(server, photos):
    from imagesieve import Client
    original = photo(photos[4][0])
    with Client(server.address) as c:
        c.create_collection("keypoint-evidence")
        list(c.add("keypoint-evidence", [photos[i][0] for i in range(4, 10)], keys=[f"p{i}" for i in range(4, 10)]))
        buf = io.BytesIO()
        local_contrast(original).save(buf, "JPEG", quality=90)
        (r,) = c.check("keypoint-evidence", [buf.getvalue()], keys=["filtered"])
    best = r.neighbors[0]
    assert best.key == "p4" and best.verified and best.keypoint_inliers >= verify.MIN_INLIERS
    assert all(n.keypoint_inliers < verify.MIN_INLIERS for n in r.neighbors[1:])
