"""Verified duplicates (stage 2): real photos and digits, altered copies of
kinds the verifier was not tuned on, look-alikes as hard negatives,
alpha-only PNGs through the ingestion gate of a real server, and exact
duplicates answered alike on every path."""
import dataclasses
import hashlib
import io
import math
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from imagesieve import Client
from imagesieve_server.analysis.duplicates.find import CANDIDATE_THRESHOLD, RAW_FLOOR, find_duplicates
from imagesieve_server.analysis.duplicates.verify import (BLUR_SIGMAS, MAX_RELATIVE, AlignmentPool, PairEvidence,
                                                          one_dimensional, pair_alignment, verified_pairs,
                                                          verify_pairs)
from imagesieve_server.engine.signature import LAYOUT_BYTES, LEGACY_BYTES, SIGNATURE_BYTES, layout_signature, unpack

from conftest import digit_image, encode, photo_image


def _perspective(im):
    w, h = im.size
    return im.transform(im.size, Image.QUAD, (w * .06, h * .03, 0, h, w, h, w * .97, 0), Image.BILINEAR)


# Kinds not among those the verifier's constants were chosen on.
UNSEEN_KINDS = {
    "perspective": _perspective,
    "gamma": lambda im: Image.eval(im, lambda v: int(255 * (v / 255) ** 0.6)),
    "posterize": lambda im: ImageOps.posterize(im, 3),
    "pad_red": lambda im: ImageOps.expand(im, border=max(im.size) // 12, fill=(200, 40, 40)),
    "sharpen_saturate": lambda im: ImageEnhance.Color(im.filter(ImageFilter.SHARPEN)).enhance(1.6),
    "crop_60": lambda im: im.crop((int(im.width * .2), int(im.height * .2), int(im.width * .8),
                                   int(im.height * .8))),
}


def _embed(embedder, blobs):
    out = embedder.embed_all(blobs, with_signatures=True)
    assert all(o.ok for o in out)
    return np.stack([o.vector for o in out]), np.stack([o.signature for o in out])


def test_signature_trims_frames_and_is_compact(photos):
    im = photo_image(photos[0][0])
    sig = layout_signature(im)
    framed = layout_signature(ImageOps.expand(im, border=60, fill=(0, 0, 0)))
    # the layout part is smaller than a 1024-d float32 embedding; keypoints take the signature to < 8 KiB
    assert sig.dtype == np.uint8 and sig.shape == (SIGNATURE_BYTES,) and LAYOUT_BYTES < 4096 and SIGNATURE_BYTES < 8192
    # the black frame is trimmed: the same thumbnail within JPEG-free rounding
    assert np.abs(unpack(sig)[2].astype(int) - unpack(framed)[2].astype(int)).mean() < 3
    w, h = im.size
    assert unpack(framed)[1] == pytest.approx(w * h / ((w + 120) * (h + 120)), abs=0.02)   # content's area share
    assert unpack(sig)[1] > 0.95



@pytest.mark.parametrize("ground", [(0, 0, 0), (255, 255, 255)])
def test_a_frame_inside_a_frame_is_trimmed_as_the_picture_alone_would_be(photos, ground):
    """A picture on a plain ground (a garment on black, clip art on white)
    padded with a coloured border: the border was trimmed and the ground
    kept, so the copy showed the picture with margins its original's
    signature had trimmed (Fashion-MNIST: 4 of 19 such copies lost at
    agreement 0.95-0.97). Frames inside the outermost are trimmed too; a
    JPEG of the copy shows the picture as its original does."""
    im = photo_image(photos[3][0]).resize((160, 120))
    on_ground = ImageOps.expand(im, border=30, fill=ground)
    bordered = ImageOps.expand(on_ground, border=16, fill=(200, 40, 40))
    copy = Image.open(io.BytesIO(encode(bordered, "JPEG", quality=95)))
    sig, copy_sig = layout_signature(on_ground), layout_signature(copy)
    assert np.abs(unpack(sig)[2].astype(int) - unpack(copy_sig)[2].astype(int)).mean() < 4
    assert unpack(copy_sig)[1] == pytest.approx(160 * 120 / (252 * 212), abs=0.03)
    evidence = pair_alignment(sig, copy_sig)
    agreement, area = evidence[0], evidence[3]
    assert agreement > 0.98 and area > 0.95, (agreement, area)

@pytest.mark.parametrize("side", [28, 32])
def test_thumbnail_sized_pictures_and_their_half_size_copies_align(photos, side):
    """A picture smaller than the signature's thumbnail is enlarged smoothly,
    not in blocks of uneven width, so its half-size copy shows the same
    picture blurred (compared at one sharpness), not another block pattern.
    Measured on these 20 photos at 28 / 32 px: median agreement 0.81 / 0.84
    with block enlargement, 0.91 / 0.91 now."""
    small = [photo_image(p[0]).resize((side, side), Image.BOX) for p in photos]
    agreement = [pair_alignment(layout_signature(im), layout_signature(im.resize((side // 2,) * 2, Image.BOX)))[0]
                 for im in small]
    assert np.median(agreement) >= 0.88, np.round(agreement, 3)


@pytest.mark.parametrize("factor", [2, 3, 4, 6])
def test_pixel_art_and_its_nearest_neighbour_enlargement_have_one_signature(photos, factor):
    """A 16-px picture shown at an integer scale (pixel art, a sprite sheet
    exported at 4x) is blocks of identical pixels: its signature is made at
    its native grid, so the original (interpolated up to the thumbnail) and
    its enlargement (box-averaged down, before) no longer differ: two such
    copies of game tiles aligned at 0.91-0.94, as tiles of one set do, and
    were lost (bench/probes/sprites.py). Transparent sprites keep their
    opacity; a photograph, a picture that is not exactly blocky and one whose
    native grid is under MIN_NATIVE (8-px digits) are left as they are."""
    from imagesieve_server.engine.decode import decode_image
    from imagesieve_server.engine.signature import native_grid

    small = photo_image(photos[5][0]).resize((16, 16), Image.BOX)
    big = small.resize((16 * factor,) * 2, Image.NEAREST)
    layout = slice(0, LAYOUT_BYTES)        # the keypoints are the image's as it is
    assert np.array_equal(layout_signature(small)[layout], layout_signature(big)[layout])
    assert pair_alignment(layout_signature(small), layout_signature(big))[0] == pytest.approx(1.0)
    sprite = small.convert("RGBA")
    sprite.putalpha(Image.fromarray(((np.indices((16, 16)).sum(0) % 5) > 0).astype(np.uint8) * 255))
    sigs = [layout_signature(decode_image(encode(im, "PNG"), 224))
            for im in (sprite, sprite.resize((16 * factor,) * 2, Image.NEAREST))]
    assert (np.unpackbits(sigs[0][LEGACY_BYTES:LAYOUT_BYTES]) == 0).any()        # transparent pixels kept
    assert np.array_equal(sigs[0][layout], sigs[1][layout])
    digit = Image.fromarray(np.repeat(np.repeat(np.asarray(small.convert("L"))[::2, ::2], factor, 0), factor, 1))
    assert native_grid(digit)[0] is digit            # an 8-px picture enlarged: kept (under MIN_NATIVE)
    gray = photo_image(photos[5][0]).convert("L")
    assert native_grid(gray)[0] is gray                                          # a photograph: untouched
    nudged = np.asarray(big.convert("L")).copy()
    nudged[0, 1] ^= 1                                                            # one pixel off its block
    assert native_grid(Image.fromarray(nudged))[0].size == big.size


def test_a_picture_of_thumbnail_size_or_more_is_only_area_averaged(photos):
    im = photo_image(photos[3][0]).resize((60, 48), Image.BILINEAR)
    thumb = unpack(layout_signature(im))[2]
    assert np.array_equal(thumb, np.asarray(im.convert("L").resize((48, 48), Image.BOX)))


def test_a_picture_turned_on_its_canvas_is_turned_back_upright(photos):
    """A photo rotated by some degrees with its canvas expanded (black or
    white corners) gets the signature of the upright photo, at any angle;
    a round shape on a canvas is never turned, and other photos stay apart."""
    originals = [photo_image(d) for d, _, _ in photos[:6]]
    sigs = [layout_signature(im) for im in originals]
    for im, sig in zip(originals, sigs):
        wide = im.crop((0, 0, im.width, im.height * 2 // 3))      # not square: the aspect must survive
        for deg, fill in ((11, (0, 0, 0)), (-25, (255, 255, 255)), (40, (0, 0, 0))):
            for base, base_sig in ((im, sig), (wide, layout_signature(wide))):
                turned = layout_signature(base.rotate(deg, resample=Image.BICUBIC, expand=True, fillcolor=fill))
                assert unpack(turned)[0] == pytest.approx(unpack(base_sig)[0], rel=0.06)
                assert pair_alignment(base_sig, turned)[0] > 0.85, deg
    others = [pair_alignment(sigs[0], layout_signature(o.rotate(20, expand=True)))[0] for o in originals[1:]]
    assert max(others) < 0.9          # as distinct upright photos (see below)
    disc = Image.new("RGB", (200, 200), "white")
    ImageDraw.Draw(disc).ellipse((30, 40, 170, 160), fill=(30, 60, 200))
    assert np.array_equal(layout_signature(disc), layout_signature(disc.rotate(0)))
    assert unpack(layout_signature(disc))[0] == pytest.approx(140 / 120, rel=0.05)   # trimmed, not turned


def _drawing(seed: int) -> Image.Image:
    """A line drawing on a white canvas, with margins (clip art)."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (300, 400), "white")
    d = ImageDraw.Draw(im)
    for _ in range(14):
        x, y = rng.integers(40, 240), rng.integers(50, 330)
        box = (int(x), int(y), int(x + rng.integers(10, 60)), int(y + rng.integers(10, 60)))
        colour = tuple(int(c) for c in rng.integers(0, 200, 3))
        fill = tuple(int(c) for c in rng.integers(60, 255, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=fill, outline=colour, width=5)
    return im


def _cutout(im):
    """A photo cut to an ellipse on a white canvas: clip art's shape, with no
    rectangle for the signature to turn upright."""
    out = Image.new("RGB", im.size, "white")
    mask = Image.new("L", im.size, 0)
    ImageDraw.Draw(mask).ellipse((im.width // 10, im.height // 8, im.width * 9 // 10, im.height * 7 // 8), fill=255)
    out.paste(im, mask=mask)
    return out


def _angle_gap(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


def test_a_picture_tilted_by_any_angle_is_aligned(photos):
    """Tilts beyond the small-rotation search: a cut-out picture turned
    20-135 degrees on a grown white canvas (no rectangle to turn upright),
    and a photo turned in place (black corners); the evidence says by how
    much. Other pictures, tilted alike, stay apart."""
    photos6 = [photo_image(d) for d, _, _ in photos[:6]]
    cutouts = [_cutout(im) for im in photos6]
    sigs = [layout_signature(im) for im in cutouts]
    for im, sig in zip(cutouts, sigs):
        for deg, least in ((20, 0.85), (30, 0.85), (-45, 0.7), (135, 0.7)):
            agreement, _, _, _, _, turned, *_ = pair_alignment(sig, layout_signature(
                im.rotate(deg, resample=Image.BICUBIC, expand=True, fillcolor=(255, 255, 255))))
            assert agreement > least and _angle_gap(turned, deg) <= 10, (deg, agreement, turned)
    for im in photos6:
        sig = layout_signature(im)
        for deg in (20, 30, -45):
            agreement, _, _, _, _, turned, *_ = pair_alignment(sig, layout_signature(
                im.rotate(deg, resample=Image.BICUBIC, fillcolor=(0, 0, 0))))
            assert agreement > 0.75 and _angle_gap(turned, deg) <= 10, (deg, agreement, turned)
    tilted = [layout_signature(o.rotate(30, resample=Image.BICUBIC, expand=True, fillcolor=(255, 255, 255)))
              for o in cutouts[1:]]
    assert max(pair_alignment(sigs[0], t)[0] for t in tilted) < 0.75


def test_a_crop_of_a_drawing_on_a_canvas_stays_part_of_the_drawing():
    """A corner crop cuts the drawing on two sides and keeps canvas on the
    other two: those sides are trimmed as the whole drawing's are, so the
    crop's view is part of the drawing's and aligns with it; other drawings
    in the same style do not."""
    drawings = [_drawing(i) for i in range(6)]
    sigs = [layout_signature(im) for im in drawings]
    for im, sig in zip(drawings, sigs):
        w, h = im.size
        for box in ((0, 0, int(w * .75), int(h * .75)), (int(w * .3), int(h * .25), w, h)):
            crop = layout_signature(im.crop(box))
            assert pair_alignment(sig, crop)[0] > 0.85, box
    a, b = np.triu_indices(len(sigs), 1)
    assert max(pair_alignment(sigs[i], sigs[j])[0] for i, j in zip(a, b)) < 0.8


def test_a_random_resized_crop_aligns_nearly_as_well_as_the_plain_crop(photos):
    """A training pipeline's random-resized crop: half of the photo at 3:4 or
    4:3, resized to 224 x 224, so its aspect is neither the photo's (a squash)
    nor the crop's own. Widening or narrowing the best template (verify's
    stretch search) fits it: before, its agreement fell 0.125 short of the
    same crop left at its aspect (median, these photos), 0.076 after."""
    def part(im, aspect, rng):
        w, h = im.size
        cw, ch = min(w, round((0.5 * w * h * aspect) ** 0.5)), min(h, round((0.5 * w * h / aspect) ** 0.5))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return im.crop((x, y, x + cw, y + ch))
    plain, resized = [], []
    for i, (data, _, _) in enumerate(photos):
        im = photo_image(data)
        sig = layout_signature(im)
        for k, aspect in enumerate((0.75, 1.33)):
            crop = part(im, aspect, random.Random(10 * i + k))
            plain.append(pair_alignment(sig, layout_signature(crop))[0])
            resized.append(pair_alignment(sig, layout_signature(crop.resize((224, 224), Image.BILINEAR)))[0])
    assert np.median(resized) > 0.84
    assert np.median(np.array(plain) - np.array(resized)) < 0.1


def test_a_sticker_spoils_a_few_cells_not_the_agreement(photos):
    """An opaque sticker over a corner lowers the whole view's correlation;
    the cell-by-cell comparison (the best three quarters of 4x4 cells) keeps
    the copy's agreement up."""
    def sticker(im):
        im = im.copy()
        w, h = im.size
        ImageDraw.Draw(im).ellipse([w * .6, h * .6, w * .9, h * .9], fill=(250, 220, 0))
        return im
    originals = [photo_image(d) for d, _, _ in photos]
    ev = [pair_alignment(layout_signature(im), layout_signature(sticker(im))) for im in originals]
    agreement = np.array([e[0] for e in ev])
    whole_view = np.array([0.5 * (e[1] + e[2]) for e in ev])        # layout and detail alone
    assert np.median(agreement) > 0.87
    assert np.median(agreement - whole_view) > 0.03


def test_copies_of_unseen_kinds_verify_and_distinct_photos_do_not(embedder, photos):
    originals = [photo_image(d) for d, _, _ in photos]
    base_v, base_s = _embed(embedder, [encode(im, "JPEG", quality=92) for im in originals])
    n = len(originals)
    for kind, alter in UNSEEN_KINDS.items():
        v, s = _embed(embedder, [encode(alter(im), "JPEG", quality=90) for im in originals])
        sig = np.concatenate([base_s, s])
        ev = verify_pairs(sig, np.arange(n), np.arange(n, 2 * n))
        assert np.median(ev.agreement) > 0.85, kind
        assert (ev.agreement > 0.7).mean() >= 0.9, kind
    # all 190 pairs of distinct photos: far below copies
    a, b = np.triu_indices(n, 1)
    ev = verify_pairs(base_s, a, b)
    assert ev.agreement.max() < 0.9 and np.median(ev.agreement) < 0.7


def test_turned_flipped_and_negative_copies_are_found_with_their_evidence(embedder, photos):
    """A photo on its side, a scan upside down, a vertical flip (half a turn
    and a mirror) and a negative: the same picture, found by the whole
    two-stage search, each pair saying which transform it needed; the
    originals stay apart."""
    originals = [photo_image(d) for d, _, _ in photos[:10]]
    kinds = {"turn90": (lambda im: im.rotate(90, expand=True), 90, False),
             "turn270": (lambda im: im.rotate(270, expand=True), 270, False),
             "flip_vertical": (ImageOps.flip, 180, False),
             "negative": (ImageOps.invert, 0, True)}
    blobs = [encode(im, "JPEG", quality=92) for im in originals]
    expect = {}
    for kind, (alter, turned, inverted) in kinds.items():
        for i, im in enumerate(originals):
            expect[len(blobs)] = (i, kind, turned, inverted)
            blobs.append(encode(alter(im), "JPEG", quality=90))
    v, s = _embed(embedder, blobs)
    keys = [str(i) for i in range(len(blobs))]
    sha = [hashlib.sha256(b).hexdigest() for b in blobs]
    rep = find_duplicates(v, keys, [""] * len(blobs), [""] * len(blobs), sha, signatures=s)
    found = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(rep.a.tolist(), rep.b.tolist()))}
    per_kind = {}
    for c, (i, kind, turned, inverted) in expect.items():
        k = found.get((i, c))
        per_kind.setdefault(kind, []).append(k is not None)
        if k is not None:
            # key_a is the original: the copy is it turned counter-clockwise
            assert rep.evidence.turned[k] in ((turned, (360 - turned) % 360) if turned % 180 == 0 else (turned,))
            assert bool(rep.evidence.inverted[k]) == inverted
    assert all(np.mean(hits) >= 0.9 for hits in per_kind.values()), per_kind
    n = len(originals)
    assert not any(a < n and b < n for a, b in found), "distinct originals paired"


def test_a_picture_with_many_copies_keeps_its_hard_ones(embedder, photos):
    """Each of 12 photos with 8 altered copies (its whole candidate list is
    its own family): the hard copies (a 60% crop, a red pad, perspective)
    are judged against look-alikes, not against the picture's easy copies.
    With 8 candidates an image, half of such copies were lost."""
    originals = [photo_image(d) for d, _, _ in photos[:12]]
    kinds = {**UNSEEN_KINDS, "mirror": ImageOps.mirror,
             "caption": lambda im: (lambda c: (ImageDraw.Draw(c).rectangle((0, 0, c.width, c.height // 7),
                                                                         fill=(255, 255, 255)), c)[1])(im.copy())}
    blobs = [encode(im, "JPEG", quality=92) for im in originals]
    source = list(range(len(originals)))
    for i, im in enumerate(originals):
        for alter in kinds.values():
            blobs.append(encode(alter(im).convert("RGB"), "JPEG", quality=90))
            source.append(i)
    v, s = _embed(embedder, blobs)
    n, n0 = len(blobs), len(originals)
    rep = find_duplicates(v, [str(i) for i in range(n)], [""] * n, [""] * n,
                          [hashlib.sha256(b).hexdigest() for b in blobs], signatures=s)
    pairs = set(zip(rep.a.tolist(), rep.b.tolist()))
    found = [(source[c], c) in pairs for c in range(n0, n)]
    # 0.81 before the runner-up test, 0.79 with it (the family's unfound hard
    # copies crowd each other): 0.5 with 8 candidates.
    assert np.mean(found) >= 0.75, np.mean(found)
    assert all(source[a] == source[b] for a, b in pairs), "pictures of different families paired"


def test_look_alike_digits_are_not_duplicates_but_their_copies_are(embedder, digits):
    """Handwritten digits of one class look alike to the embedding (cosine
    ~0.9): raw cosine at the old default pairs many of them; verification
    keeps the planted copies and drops the look-alikes."""
    x, y = digits
    pick = np.flatnonzero(np.isin(y, [0, 1, 7]))[:150]
    originals = [digit_image(x[i], 64, Image.BILINEAR).convert("RGB") for i in pick]
    copies = {0: lambda im: ImageEnhance.Brightness(im).enhance(1.3),
              1: lambda im: ImageOps.expand(im, border=6, fill=(0, 0, 0)),
              2: lambda im: im.resize((128, 128), Image.BICUBIC),
              3: ImageOps.mirror}
    planted = list(range(0, 40, 2))
    blobs = [encode(im, "PNG") for im in originals] + \
        [encode(copies[j % 4](originals[i]), "PNG") for j, i in enumerate(planted)]
    v, s = _embed(embedder, blobs)
    sha = [hashlib.sha256(b).hexdigest() for b in blobs]
    keys = [str(i) for i in range(len(blobs))]
    none = [""] * len(blobs)
    source = np.r_[np.arange(len(originals)), planted]
    raw = find_duplicates(v, keys, none, none, sha, threshold=RAW_FLOOR)
    raw_false = int(np.sum(source[raw.a] != source[raw.b]))
    rep = find_duplicates(v, keys, none, none, sha, signatures=s)
    false = int(np.sum(source[rep.a] != source[rep.b]))
    found = {(int(a), int(b)) for a, b in zip(rep.a, rep.b)}
    recall = np.mean([(i, len(originals) + j) in found for j, i in enumerate(planted)])
    assert raw_false > 20                 # the problem: look-alikes pass raw cosine
    # far fewer look-alikes survive stage 2 (glyphs stay the hardest case: see the README)
    assert recall >= 0.9 and false * 10 <= raw_false, (recall, false, raw_false)
    assert rep.method == "verified" and rep.evidence is not None and len(rep.evidence.agreement) == len(rep.a)
    # raw cosine with no threshold derives one from the data: above the old default here
    derived = find_duplicates(v, keys, none, none, sha)
    assert derived.threshold > RAW_FLOOR and "from the data" in derived.threshold_reason
    assert int(np.sum(source[derived.a] != source[derived.b])) < raw_false


def test_verdict_is_judged_against_look_alikes():
    # Two images whose look-alikes agree at 0.95 (glyph-like data): 0.96 is
    # not enough, 0.995 is. Photo-like data (look-alikes at 0.5): 0.9 is.
    a, b = np.array([0, 0, 0, 1]), np.array([1, 2, 3, 2])
    ok, rel = verified_pairs(4, a[:1], b[:1], [0.96], [0.95], np.full(4, 0.95), np.full(4, 0.92))
    assert not ok[0]
    ok, _ = verified_pairs(4, a[:1], b[:1], [0.995], [0.97], np.full(4, 0.95), np.full(4, 0.92))
    assert ok[0]
    ok, _ = verified_pairs(4, a[:1], b[:1], [0.9], [0.7], np.full(4, 0.5), np.full(4, 0.55))
    assert ok[0]
    with pytest.raises(ValueError):
        verified_pairs(4, a, b, [0.9], [0.9])


def test_in_crowded_data_a_pair_must_beat_the_runner_up():
    """Look-alikes at cosine 0.9 (thumbnails of garments): image 0's best
    candidate agrees at 0.95 but its next one, not the same picture, at
    0.94: it does not stand out, so it is not a copy; a copy at 0.995
    against the same runner-up is. The same pairs where look-alikes sit at
    cosine 0.5 (photos): the relative rule alone decides."""
    a, b = np.array([0, 0, 0]), np.array([1, 2, 3])
    packs = (np.full(4, 0.6), np.full(4, 0.9))
    g, c = [0.95, 0.94, 0.7], [0.84, 0.8, 0.9]
    ok, rel = verified_pairs(4, a, b, g, c, *packs)
    # 0.2 passes the relative rule (<= 0.25); the runner-up's 0.3 is too close (0.2 > 0.6 x 0.3).
    assert not ok.any() and rel[0] <= MAX_RELATIVE < rel[1]
    ok, _ = verified_pairs(4, a, b, [0.995, 0.94, 0.7], c, *packs)
    assert ok.tolist() == [True, False, False]
    ok, _ = verified_pairs(4, a, b, g, [0.84, 0.8, 0.9], np.full(4, 0.6), np.full(4, 0.5))
    assert ok[0]


def _stripes(colours, vertical: bool, weights=(1, 1, 1), size=(300, 200)) -> Image.Image:
    im = Image.new("RGB", size)
    draw = ImageDraw.Draw(im)
    edges = np.cumsum((0,) + weights) / sum(weights) * (size[0] if vertical else size[1])
    for colour, lo, hi in zip(colours, edges[:-1], edges[1:]):
        draw.rectangle((lo, 0, hi, size[1]) if vertical else (0, lo, size[0], hi), fill=colour)
    return im


def _letterboxed(im: Image.Image) -> Image.Image:
    side = max(im.size)
    mean = tuple(int(v) for v in np.asarray(im).reshape(-1, 3).mean(0))
    out = Image.new("RGB", (side, side), mean)
    out.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return out


def test_a_flag_whose_outer_stripes_share_a_tone_keeps_them():
    """Outer stripes of one gray tone look like a frame: a tricolour in
    blue and red of equal luminance (France in kgeography's colours) and a
    red-white-red flag (Latvia) were trimmed to their flat white middle,
    which aligned with nothing, their letterboxed copies included (the
    augmentation benchmark's letterbox misses). A trim that leaves nothing
    but a flat field is undone."""
    flags = [_stripes([(0, 85, 164), (255, 255, 255), (255, 0, 0)], vertical=True),
             _stripes([(158, 48, 57), (255, 255, 255), (158, 48, 57)], vertical=False, weights=(2, 1, 2))]
    sigs = [layout_signature(f) for f in flags]
    for flag, sig in zip(flags, sigs):
        assert unpack(sig)[1] == 1.0 and unpack(sig)[2].std() > 20        # kept whole, stripes and all
        assert pair_alignment(sig, layout_signature(_letterboxed(flag)))[0] > 0.9
    disc = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(disc).ellipse((90, 40, 210, 160), fill=(188, 0, 45))
    assert max(pair_alignment(sig, layout_signature(disc))[0] for sig in sigs) < 0.6


def test_flat_images_pair_only_with_the_same_tone():
    white = layout_signature(Image.new("RGB", (64, 64), (255, 255, 255)))
    white2 = layout_signature(Image.new("RGB", (90, 50), (254, 254, 254)))
    grey = layout_signature(Image.new("RGB", (64, 64), (128, 128, 128)))
    assert pair_alignment(white, white2)[0] == 1.0 and pair_alignment(white, grey)[0] == 0.0


def test_dim_pictures_are_aligned_not_taken_for_blank(photos):
    """A dim picture (its thumbnail's spread under FLAT_STD: a night photo, a
    copy darkened) had no layout: two dim copies of different scenes were
    "the same" at agreement 1, and a dim copy aligned with nothing. Now a dim
    thumbnail is stretched: its own copy aligns, another scene does not."""
    def dim(im, factor=0.03):
        return Image.fromarray((np.asarray(im.convert("RGB"), np.float32) * factor + 10).astype(np.uint8))
    first, second = photo_image(photos[0][0]), photo_image(photos[1][0])
    sig = {name: layout_signature(Image.open(io.BytesIO(encode(im, "JPEG", quality=q))))
           for name, im, q in (("first", dim(first), 95), ("first again", dim(first.resize((300, 225))), 70),
                               ("second", dim(second), 95), ("first bright", first, 90))}
    assert all(1.0 <= unpack(sig[k])[2].std() < 2.0 for k in ("first", "first again", "second"))
    assert pair_alignment(sig["first"], sig["first again"])[0] > 0.8
    assert pair_alignment(sig["first"], sig["second"])[0] < 0.6
    assert pair_alignment(sig["first"], sig["first bright"])[0] > 0.7
    # Near black (a review): a recompressed copy's spread crosses BLANK_STD; the two are of one tone.
    black = [layout_signature(Image.open(io.BytesIO(encode(dim(first, 0.008), "JPEG", quality=q))))
             for q in (95, 60)]
    assert min(unpack(x)[2].std() for x in black) < 1.0
    assert pair_alignment(black[0], black[1])[0] == 1.0


def _alpha_only(draw_fn, size=256) -> bytes:
    """A white RGBA PNG whose picture lives only in its alpha channel."""
    alpha = Image.new("L", (size, size), 0)
    draw_fn(ImageDraw.Draw(alpha), size)
    im = Image.new("RGBA", (size, size), (255, 255, 255, 0))
    im.putalpha(alpha)
    return encode(im, "PNG")


ALPHA_PICTURES = {
    "circle": lambda d, s: d.ellipse((s * .2, s * .2, s * .8, s * .8), fill=255),
    "bars": lambda d, s: [d.rectangle((x, 0, x + s // 16, s), fill=255) for x in range(0, s, s // 5)],
    "triangle": lambda d, s: d.polygon([(s * .5, s * .1), (s * .9, s * .9), (s * .1, s * .7)], fill=255),
    "ring_and_dot": lambda d, s: (d.ellipse((s * .1, s * .1, s * .6, s * .6), outline=255, width=s // 20),
                                  d.ellipse((s * .7, s * .7, s * .85, s * .85), fill=255)),
}


def test_alpha_only_pngs_pass_the_ingestion_gate_and_a_copy_does_not(server):
    blobs = {k: _alpha_only(f) for k, f in ALPHA_PICTURES.items()}
    copy = Image.open(io.BytesIO(blobs["triangle"])).resize((200, 200))
    with Client(server.address) as c:
        c.create_collection("alpha-gate")
        verdicts = {r.key: r for r in c.check("alpha-gate", list(blobs.values()), keys=list(blobs),
                                              add_if_unique=True)}
        assert {k: r.verdict for k, r in verdicts.items()} == {k: "UNIQUE" for k in blobs}
        assert all(r.added for r in verdicts.values())
        (r,) = c.check("alpha-gate", [encode(copy, "PNG")], keys=["triangle-copy"])
        assert r.verdict == "NEAR_DUPLICATE" and r.neighbors[0].key == "triangle"
        assert r.neighbors[0].verified and r.neighbors[0].agreement > 0.9


def test_streaming_check_verifies_and_raw_cosine_turns_it_off(server, photos):
    data = [d for d, _, _ in photos]
    with Client(server.address) as c:
        c.create_collection("stream-verified")
        assert all(r.added for r in c.add("stream-verified", data[:12], keys=[f"p{i}" for i in range(12)],
                                          labels=["cat"] * 12, splits=["train"] * 12))
        crop = encode(UNSEEN_KINDS["crop_60"](photo_image(data[3])), "JPEG", quality=90)
        pad = encode(UNSEEN_KINDS["pad_red"](photo_image(data[5])), "JPEG", quality=90)
        results = list(c.check("stream-verified", [crop, pad, data[15]], keys=["crop3", "pad5", "new"]))
        assert [r.verdict for r in results] == ["NEAR_DUPLICATE", "NEAR_DUPLICATE", "UNIQUE"]
        assert results[0].neighbors[0].key == "p3" and results[0].neighbors[0].verified
        assert results[1].neighbors[0].key == "p5" and results[1].neighbors[0].agreement > 0.8
        assert not any(n.verified for n in results[2].neighbors)
        raw = list(c.check("stream-verified", [crop], keys=["crop3"], raw_cosine=True))[0]
        assert raw.neighbors[0].key == "p3" and raw.neighbors[0].agreement != raw.neighbors[0].agreement  # NaN
        # FindDuplicates agrees with the stream on the same collection
        res = c.find_duplicates("stream-verified")
        assert res.method == "verified" and not res.pairs      # 12 distinct photos
        # each candidate costs an alignment: the number a request may ask for is bounded
        with pytest.raises(grpc.RpcError) as e:
            c.find_duplicates("stream-verified", knn_k=10_000)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_byte_identical_candidates_are_not_aligned(embedder, photos, monkeypatch):
    """Identical bytes are duplicates whatever stage 2 says, yet each such
    candidate pair was aligned: 5,000 copies of one placeholder image spent
    140 s of a 299 s audit there. They now take the identical evidence
    without alignment; the other pairs are aligned and judged as before."""
    from imagesieve_server.analysis.duplicates import find

    blobs = [photos[0][0]] * 12 + [p[0] for p in photos[1:9]] + [encode(photo_image(photos[1][0]), "PNG")]
    v, s = _embed(embedder, blobs)
    sha = [hashlib.sha256(b).hexdigest() for b in blobs]
    keys = [str(i) for i in range(len(blobs))]
    aligned = []
    real = find.verify_pairs
    monkeypatch.setattr(find, "verify_pairs", lambda sig, a, b, **kw: (aligned.append((a, b)), real(sig, a, b, **kw))[1])
    rep = find_duplicates(v, keys, [""] * len(keys), [""] * len(keys), sha, signatures=s)
    a, b = np.concatenate([x for x, _ in aligned]), np.concatenate([y for _, y in aligned])
    assert len(a) and not any(sha[x] == sha[y] for x, y in zip(a.tolist(), b.tolist()))
    pairs = {(int(x), int(y)): e for x, y, e in zip(rep.a, rep.b, rep.exact)}
    assert sum(pairs.values()) == 12 * 11 // 2 and all(pairs[(i, j)] for i in range(12) for j in range(i + 1, 12))
    assert (12, 20) in pairs and not pairs[(12, 20)]          # photo 1 and its PNG: verified, not exact
    assert rep.evidence.agreement[rep.exact].min() == 1.0


def test_many_copies_of_one_file_are_one_group(embedder, photos):
    """Byte-identical files are every two a pair, but a set of more than 64
    is joined by a star of exact pairs, and the candidates are each image's
    16 nearest: 5,000 copies of one placeholder made a bounded group of 22.
    Copies now stand as one member when groups are formed: one group holds
    all 80 copies of one photo, and a PNG of another photo joins the group
    of that photo's two copies, as stage 2 verified it."""
    blobs = ([photos[0][0]] * 80 + [p[0] for p in photos[1:6]] + [photos[1][0]]
             + [encode(photo_image(photos[1][0]), "PNG")])
    v, s = _embed(embedder, blobs)
    sha = [hashlib.sha256(b).hexdigest() for b in blobs]
    keys = [str(i) for i in range(len(blobs))]
    for signatures, grouping in ((s, "bounded"), (s, "centre"), (None, "bounded")):
        rep = find_duplicates(v, keys, [""] * len(keys), [""] * len(keys), sha, signatures=signatures,
                              grouping=grouping)
        groups = sorted((g.tolist() for g in rep.groups), key=len)
        assert groups[-1] == list(range(80)), (grouping, signatures is None, [len(g) for g in groups])
        if signatures is not None:          # raw cosine may group the PNG too, or not, at its threshold
            assert groups[:-1] == [[80, 85, 86]], groups[:-1]

def test_a_copy_of_a_file_kept_many_times_is_judged_against_its_look_alikes(embedder, digits, tmp_path,
                                                                          monkeypatch):
    """20 identical files of one digit filled its blurred copy's 16
    candidates, so the copy was judged against its own original as its
    look-alikes: 3 of the 20 pairs were found. Candidates are now judged
    between one file of each identical set, and a verdict holds for every
    file of the set, whatever its split. A streaming check aligns the
    stored files of one signature once and judges them as one."""
    from imagesieve_server.analysis.duplicates import verify
    from imagesieve_server.collections import Collection, NewImage, Verdict

    x, _ = digits
    picture = digit_image(x[0], 96, Image.BILINEAR)
    blobs = ([encode(picture, "PNG")] * 20 + [encode(digit_image(x[i], 96, Image.BILINEAR), "PNG") for i in range(10, 130)]
             + [encode(picture.resize((72, 72)).filter(ImageFilter.GaussianBlur(1)), "JPEG", quality=60)])
    v, s = _embed(embedder, blobs)
    sha = [hashlib.sha256(b).hexdigest() for b in blobs]
    keys = [str(i) for i in range(len(blobs))]
    splits = ["test" if i in (5, 19) else "train" for i in range(len(blobs))]
    rep = find_duplicates(v, keys, [""] * len(keys), splits, sha, signatures=s)
    copy = len(blobs) - 1
    with_copy = {int(a): i for i, (a, b) in enumerate(zip(rep.a, rep.b)) if b == copy}
    assert sorted(with_copy) == list(range(20)), sorted(with_copy)
    assert not any(rep.exact[i] for i in with_copy.values())
    assert len({float(rep.evidence.agreement[i]) for i in with_copy.values()}) == 1    # one verdict, one evidence
    assert {a for a, i in with_copy.items() if rep.cross_split[i]} == {5, 19}
    assert int(rep.exact.sum()) == 20 * 19 // 2
    assert any(set(g.tolist()) == set(range(20)) | {copy} for g in rep.groups)

    coll = Collection.create(tmp_path / "c", "c", v.shape[1], "mobilenet_v1")
    coll.add([NewImage(keys[i], sha[i], v[i], signature=s[i]) for i in range(copy)])
    aligned = []
    real = verify.verify_pairs
    monkeypatch.setattr(verify, "verify_pairs",
                        lambda sig, a, b, **kw: (aligned.append(len(a)), real(sig, a, b, **kw))[1])
    out = coll.check(NewImage("copy", sha[copy], v[copy], signature=s[copy]), k=10)
    coll.close()
    assert out.verdict == Verdict.NEAR_DUPLICATE
    assert len(out.neighbors) == 10 and all(n.verified and int(n.key) < 20 for n in out.neighbors)
    assert aligned == [1]              # the 8 candidates are one stored picture


def test_pairs_of_identical_sets_keep_their_turn_their_leaks_and_the_plausible_share(embedder, photos, digits,
                                                                                      monkeypatch):
    """A review of the identical sets' verdicts: a pair read from the other
    set's side must say the turn the other way; the star form of two large
    sets must still pair every split that meets (a test file of the copy
    with the training files of its original); and the share of images in
    near pairs counts pictures, not the copies of one file."""
    from imagesieve_server.analysis.duplicates import find

    photo = photo_image(photos[0][0])
    blobs = [photos[0][0], encode(photo.rotate(90, expand=True), "JPEG", quality=90), photos[0][0]]
    v, s = _embed(embedder, blobs)
    sha = [hashlib.sha256(b).hexdigest() for b in blobs]
    rep = find_duplicates(v, ["0", "1", "2"], [""] * 3, [""] * 3, sha, signatures=s)
    turned = {(int(a), int(b)): int(t) for a, b, t in zip(rep.a, rep.b, rep.evidence.turned)}
    assert turned[(0, 1)] == 90 and turned[(1, 2)] == 270, turned     # 1 is 0 turned; 2 is 1 turned back

    x, _ = digits
    picture = digit_image(x[0], 96, Image.BILINEAR)
    copy = encode(picture.resize((72, 72)).filter(ImageFilter.GaussianBlur(1)), "JPEG", quality=60)
    others = [encode(digit_image(x[i], 96, Image.BILINEAR), "PNG") for i in range(10, 60)]
    blobs = [encode(picture, "PNG")] * 20 + others + [copy, copy]
    v, s = _embed(embedder, blobs)
    n = len(blobs)
    sha = [hashlib.sha256(b).hexdigest() for b in blobs]
    splits = ["test" if i in (0, n - 2, n - 1) else "train" for i in range(n)]
    monkeypatch.setattr(find, "MEMBER_PAIRS_MAX", 8)          # 20 x 2 files: the star form
    rep = find_duplicates(v, [str(i) for i in range(n)], [""] * n, splits, sha, signatures=s)
    pairs = list(zip(rep.a.tolist(), rep.b.tolist(), rep.cross_split.tolist()))
    for c in (n - 2, n - 1):               # each test copy of the copy meets a training original
        assert any(leak and c in (a, b) and min(a, b) in range(1, 20) for a, b, leak in pairs), c
    assert len([p for p in pairs if p[0] < 20 and p[1] >= n - 2]) < 20 * 2
    # the share of pictures in near pairs: 20 files of one picture and 2 of its copy are 2 of 52
    picture = {h: i for i, h in reversed(list(enumerate(sha)))}
    near = [(a, b) for a, b, e in zip(rep.a.tolist(), rep.b.tolist(), rep.exact.tolist()) if not e]
    in_near = {picture[sha[i]] for pair in near for i in pair}
    said = [w for w in rep.warnings if "near-duplicate pairs involve" in w]
    share = len(in_near) / len(set(sha))
    assert (f"involve {share:.0%} of the images" in said[0]) if share > 0.1 else not said, (said, share)


def test_exact_duplicates_are_the_same_on_every_path(server, photos):
    data = [d for d, _, _ in photos]
    with Client(server.address) as c:
        c.create_collection("exact-paths")
        first = list(c.add("exact-paths", [data[0], data[1]], keys=["a", "b"], labels=["dog", "cat"],
                           splits=["train", "train"]))
        assert [r.exact_duplicate_of for r in first] == ["", ""]
        again = list(c.add("exact-paths", [data[0], data[0]], keys=["a2", "a3"], splits=["test", "test"]))
        assert [r.exact_duplicate_of for r in again] == ["a", "a"] and all(r.added for r in again)
        skipped = list(c.add("exact-paths", [data[1]], keys=["b2"], skip_exact_duplicates=True))
        assert skipped[0].exact_duplicate_of == "b" and not skipped[0].added
        (chk,) = c.check("exact-paths", [data[1]], keys=["b3"])
        assert chk.verdict == "EXACT_DUPLICATE" and chk.neighbors[0][:4] == ("b", 1.0, "cat", "train")
        res = c.find_duplicates("exact-paths")
        exact = {frozenset((p.key_a, p.key_b)) for p in res.pairs if p.exact}
        assert exact == {frozenset(x) for x in (("a", "a2"), ("a", "a3"), ("a2", "a3"))}
        assert all(p.cross_split for p in res.pairs if "a" in (p.key_a, p.key_b))


def test_embed_answers_the_layout_signature_when_asked(server, photos, embedder):
    """A client storing vectors for a later duplicate search (the audit's
    --server backend) gets the signature from the server's own decode."""
    data = [d for d, _, _ in photos[:3]] + [b"not an image"]
    with Client(server.address) as c:
        plain = list(c.embed_stream(data))
        asked = list(c.embed_stream(data, with_layout_signature=True))
    assert all(r.signature == b"" and r.properties is None for r in plain)
    local = embedder.embed_all(data[:3], with_signatures=True)
    for r, mine in zip(asked[:3], local):
        assert len(r.signature) == SIGNATURE_BYTES
        assert np.array_equal(np.frombuffer(r.signature, np.uint8), mine.signature)
        # ... and the image's properties from the same decode (the image-property check).
        assert r.properties.shape == (5,) and np.allclose(r.properties, mine.properties, rtol=1e-6)
    assert not asked[3].ok and asked[3].signature == b"" and asked[3].properties is None


def test_worker_processes_give_the_same_evidence_and_stop_when_told(embedder, photos):
    """Large batches are aligned in worker processes (threads do not run
    the Python-glued alignment in parallel); the answers are those of the
    calling thread, and a report that raises (a cancelled job) stops the work."""
    originals = [photo_image(d) for d, _, _ in photos]
    blobs = [encode(im, "JPEG", quality=92) for im in originals]
    blobs += [encode(ImageOps.mirror(im).resize((im.width // 2, im.height // 2)), "JPEG") for im in originals]
    _, s = _embed(embedder, blobs)
    a, b = np.triu_indices(len(blobs), 1)
    inline = verify_pairs(s, a, b, workers=1)
    procs = verify_pairs(s, a, b, workers=2, processes=True)
    for field in (f.name for f in dataclasses.fields(PairEvidence)):
        assert np.array_equal(getattr(inline, field), getattr(procs, field)), field
    seen = []

    def cancelled(stage, done, total):
        seen.append(done)
        raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        verify_pairs(s, a, b, workers=2, processes=True, report=cancelled)
    assert len(seen) == 1 and seen[0] < len(a)

    # A server's long-lived pool: a streaming check's few pairs and a job's
    # many give the calling thread's answers, and a killed worker is replaced.
    pool = AlignmentPool(2)
    try:
        pool.warm()
        for sel in (slice(0, 3), slice(0, len(a))):
            got = verify_pairs(s, a[sel], b[sel], pool=pool)
            assert np.array_equal(got.agreement, inline.agreement[sel])
            assert np.array_equal(got.turned, inline.turned[sel])
        os.kill(next(iter(pool._pool._processes)), signal.SIGKILL)
        time.sleep(0.2)
        got = verify_pairs(s, a[:8], b[:8], pool=pool)          # answered in this thread this once
        assert np.array_equal(got.agreement, inline.agreement[:8])
        got = verify_pairs(s, a[:8], b[:8], pool=pool)          # by new workers
        assert np.array_equal(got.agreement, inline.agreement[:8])
    finally:
        pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        verify_pairs(s, a[:8], b[:8], pool=pool)


def test_what_an_image_derives_once_for_all_its_pairs_leaves_every_pair_as_aligned_alone(photos):
    """verify_pairs derives an image's views, templates, sheared bands and
    histograms once for all the pairs it is in (verify._Image). Each pair's
    evidence must be what it is aligned alone, whatever other pairs the
    image was in before: copies turned, tilted, sheared, solarized, cropped,
    mirrored and blurred, a transparent picture, and look-alikes, every pair
    of them in one call, in two orders."""
    ims = [photo_image(photos[i][0]).resize((200, 150)) for i in (0, 3, 7)]
    base = ims[0]
    w, h = base.size
    transparent = Image.new("RGBA", (w + 60, h + 60), (0, 0, 0, 0))
    transparent.paste(ims[1], (30, 30))
    copies = [base.rotate(90, expand=True), base.rotate(30),
              base.transform(base.size, Image.AFFINE, (1, 0.35, -0.175 * h, 0, 1, 0), Image.BILINEAR),
              ImageOps.solarize(base, 128), ImageOps.mirror(base.crop((20, 15, 170, 130))),
              base.filter(ImageFilter.GaussianBlur(3)), ims[1].convert("L"), transparent]
    sigs = np.stack([layout_signature(im) for im in ims + copies])
    a, b = np.triu_indices(len(sigs), 1)
    together = verify_pairs(sigs, a, b, processes=False)
    alone = [pair_alignment(sigs[i], sigs[j]) for i, j in zip(a, b)]
    order = np.random.default_rng(0).permutation(len(a))
    shuffled = verify_pairs(sigs, a[order], b[order], processes=False)
    fields = [f.name for f in dataclasses.fields(PairEvidence) if f.name != "keypoint_inliers"]
    for k, field in enumerate(fields):
        want = np.array([pair[k] for pair in alone]).astype(getattr(together, field).dtype)
        assert np.array_equal(getattr(together, field), want), field
        assert np.array_equal(getattr(shuffled, field), want[order]), field
    # the turned, tilted and solarized copies were found as such, so their searches ran
    first = {j: i for i, j in enumerate(b) if a[i] == 0}
    assert together.turned[first[3]] == 90 and together.turned[first[4]] == 30
    assert together.inverted[first[6]] and together.agreement[first[6]] > 0.8


def test_a_shared_pool_answers_checks_before_a_jobs_chunks(embedder, photos):
    """A server's pool serves checks (a few pairs, someone waiting) and
    FindDuplicates jobs (thousands). First come first served, a check waited
    behind a job's queued chunks (a probe: a one-image check 0.1 s -> 3.5-10
    s during a read-only FindDuplicates); now small calls go first, and both
    get the calling thread's answers."""
    originals = [photo_image(d) for d, _, _ in photos]
    blobs = [encode(im, "JPEG", quality=92) for im in originals]
    blobs += [encode(ImageOps.mirror(im).resize((im.width // 2, im.height // 2)), "JPEG") for im in originals]
    _, s = _embed(embedder, blobs)
    a, b = np.triu_indices(len(blobs), 1)
    reps = max(1, 3000 // len(a))
    big_a, big_b = np.tile(a, reps), np.tile(b, reps)
    small = slice(0, 8)
    inline = verify_pairs(s, a[small], b[small], workers=1)
    pool = AlignmentPool(2, shared=True)
    try:
        pool.warm()
        t = time.perf_counter()
        verify_pairs(s, a[small], b[small], pool=pool)
        alone = time.perf_counter() - t
        with ThreadPoolExecutor(1) as ex:
            t = time.perf_counter()
            job = ex.submit(verify_pairs, s, big_a, big_b, pool=pool)
            waits = []
            while not job.done() and len(waits) < 6:
                time.sleep(0.3)
                t0 = time.perf_counter()
                got = verify_pairs(s, a[small], b[small], pool=pool)
                waits.append(time.perf_counter() - t0)
                assert np.array_equal(got.agreement, inline.agreement)
            evidence = job.result()
            job_s = time.perf_counter() - t
        per_pair = job_s / len(big_a)             # the job's own pace, on both workers
    finally:
        pool.close()
    assert np.array_equal(evidence.agreement[:len(a)], verify_pairs(s, a, b, workers=1).agreement)
    assert len(waits) >= 3, (job_s, waits)
    # First come first served, a check waited for two 256-pair chunks a worker
    # (~512 pairs' time); now for at most one 32-pair chunk.
    assert max(waits) < alone + 64 * per_pair * 2 + 0.2, (alone, per_pair, waits)


def test_a_shared_pool_takes_turns_between_owners_of_checks(embedder, photos):
    """Four concurrent checks of one client (16 candidates each, as on a
    large collection) queued their tasks first come first served, ahead of
    another client's one-image check (a twenty-fourth probe: its p50 went 50
    -> 275 ms). The workers now take the next task from the owner that has
    used them least: while the four run, the other's check waits for about
    one task of theirs, not their queue; answers as in the calling thread."""
    from imagesieve_server.analysis.duplicates.verify import aligned_as
    originals = [photo_image(d) for d, _, _ in photos[:9]]
    blobs = [encode(im, "JPEG", quality=92) for im in originals]
    _, s = _embed(embedder, blobs)
    a, b = np.triu_indices(len(blobs), 1)          # 36 pairs of different photos: every search runs
    busy_a, busy_b = a[:16], b[:16]
    mine_a, mine_b = a[20:36], b[20:36]
    inline = verify_pairs(s, mine_a, mine_b, workers=1)
    pool = AlignmentPool(2, shared=True)
    finished: list[tuple[str, float]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            aligned_as("busy", verify_pairs, s, busy_a, busy_b, pool=pool)
            with lock:
                finished.append(("busy", time.perf_counter()))
    try:
        pool.warm()
        threads = [threading.Thread(target=busy) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)                               # the four have used the workers a while
        waits, overtaken = [], []
        for _ in range(3):
            with lock:
                before = len(finished)
            t0 = time.perf_counter()
            got = aligned_as("other", verify_pairs, s, mine_a, mine_b, pool=pool)
            waits.append(time.perf_counter() - t0)
            with lock:
                overtaken.append(len(finished) - before)
            assert np.array_equal(got.agreement, inline.agreement)
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        pool.close()
    # First come first served, the four's 8 queued tasks (4 whole checks) finished before the
    # other's; now at most the two in the workers when it came, and one more as its own two run.
    assert max(overtaken) <= 3, (overtaken, waits)


def test_one_knn_pass_gives_the_same_candidates(embedder, photos):
    """The audit searches each image's neighbours once, for the duplicate
    candidates and the outliers alike: the candidates are those of
    candidate_pairs' own search."""
    from imagesieve_server.analysis.duplicates.find import candidate_pairs
    from imagesieve_server.analysis.neighbors import knn
    originals = [photo_image(d) for d, _, _ in photos]
    blobs = [encode(im, "JPEG") for im in originals] + [encode(ImageOps.grayscale(im), "PNG") for im in originals]
    v, _ = _embed(embedder, blobs)
    own = candidate_pairs(v, 0.5, 8)
    shared = candidate_pairs(v, 0.5, 8, knn=knn(v, 10))
    for x, y in zip(own, shared):
        np.testing.assert_array_equal(x, y)
    assert len(own[0]) > len(blobs) // 2


@dataclasses.dataclass
class _CopiesRun:
    """What _copies_of_the_first measured: the originals' blobs, vectors and
    signatures first, then the copies'."""
    report: object
    blobs: list
    vectors: np.ndarray
    signatures: np.ndarray
    found: list          # for each copy, whether it was paired with its original
    false: list          # the pairs of two different originals' images


def _copies_of_the_first(embedder, originals, copies) -> _CopiesRun:
    """Originals (JPEG q92) and ``copies[i]`` of ``originals[i]`` (JPEG q90)
    through find_duplicates."""
    blobs = [encode(im, "JPEG", quality=92) for im in originals]
    blobs += [encode(c.convert("RGB"), "JPEG", quality=90) for c in copies]
    source = np.r_[np.arange(len(originals)), np.arange(len(copies))]
    v, s = _embed(embedder, blobs)
    n = len(blobs)
    rep = find_duplicates(v, [str(i) for i in range(n)], [""] * n, [""] * n, [str(i) for i in range(n)], signatures=s)
    pairs = set(zip(rep.a.tolist(), rep.b.tolist()))
    found = [(int(source[c]), c) in pairs for c in range(len(originals), n)]
    return _CopiesRun(rep, blobs, v, s, found, sorted((a, b) for a, b in pairs if source[a] != source[b]))


def test_solarized_copies_are_found_and_distinct_photos_stay_apart(embedder, photos):
    """Solarize (RandAugment's: each channel's tones above a threshold turned
    over) relates a copy to its original by no monotonic tone map: such copies
    of these photos aligned at 0.3-0.77, as look-alikes do, and 2 of 10 were
    found. Compared folded about mid-gray (see verify.FOLD_GAIN), where a tone
    and its turned-over tone are one: 8 of 10 now, at thresholds from 64 to
    192, and still no pair of different photos."""
    originals = [photo_image(d) for d, _, _ in photos]
    thresholds = (64, 96, 128, 160, 192, 80, 112, 144, 176, 128)
    run = _copies_of_the_first(embedder, originals,
                               [ImageOps.solarize(originals[i], t) for i, t in enumerate(thresholds)])
    assert sum(run.found) >= 7, run.found
    assert not run.false, run.false
    rep = run.report
    turned = rep.evidence.inverted[[k for k, (a, b) in enumerate(zip(rep.a, rep.b)) if b >= len(originals)]]
    assert turned.sum() >= 6, turned    # the evidence says the tones were turned (a light solarize needs no fold)


def _sheared(im: Image.Image, degrees: float, vertical: bool) -> Image.Image:
    """RandAugment's ShearX / ShearY: about the top-left corner, the size
    kept, black where nothing came in."""
    t = math.tan(math.radians(degrees))
    return im.transform(im.size, Image.AFFINE, (1, 0, 0, t, 1, 0) if vertical else (1, t, 0, 0, 1, 0),
                        Image.NEAREST, fillcolor=(0, 0, 0))


def test_sheared_copies_are_found_and_distinct_photos_stay_apart(embedder, photos):
    """A shear is no crop, turn or stretch: 15-25 degree sheared copies of
    these photos (RandAugment's ShearX / ShearY) are placed on their
    originals as the band every column (row) keeps (see verify.SHEARS).
    Measured: the copies' layouts aligned at 0.46-0.79 without it (all 10
    found all the same, by shared keypoints: these photos are rich in
    corners, the probe's smooth landscapes were not); with it 9 of 10 at
    0.96-1.00, and no pair of different photos either way. The tenth (-15
    degrees vertical) fits at 0.92 detail, under verify.SHEAR_DETAIL (0.93:
    at 0.9 cards of one deck paired as copies, see the cards test)."""
    originals = [photo_image(d) for d, _, _ in photos]
    shears = ((18, True), (-22, True), (25, True), (-15, True), (21, True),
              (20, False), (-24, False), (16, False), (-19, False), (23, False))
    run = _copies_of_the_first(embedder, originals, [_sheared(originals[i], d, v) for i, (d, v) in enumerate(shears)])
    assert sum(run.found) >= 9, run.found
    assert not run.false, run.false
    s = run.signatures
    agreement = np.array([pair_alignment(s[i], s[len(originals) + i])[0] for i in range(len(shears))])
    assert np.sum(agreement >= 0.95) >= 9, np.round(agreement, 3)


def test_blurred_and_pixelated_copies_are_found_by_their_layout(embedder, photos):
    """A lock-screen blur (Gaussian of 1.5% of the width, darkened) or 16 px
    pixelation hides the texture the embedding keys on: many such copies
    fall out of the embedding's candidates (cosine < 0.5), and their coarse
    layouts bring them back; distinct photos still do not pair."""
    originals = [photo_image(d) for d, _, _ in photos]
    kinds = {
        "blur_dark": lambda im: ImageEnhance.Brightness(im.filter(ImageFilter.GaussianBlur(im.width * 0.015)))
        .enhance(0.6),
        "pixelate16": lambda im: im.resize((max(4, im.width // 16), max(4, im.height // 16)), Image.BOX)
        .resize(im.size, Image.NEAREST),
    }
    blobs = [encode(im, "JPEG", quality=92) for im in originals]
    source = list(range(len(originals)))
    for alter in kinds.values():
        for i, im in enumerate(originals[:10]):
            blobs.append(encode(alter(im), "JPEG", quality=90))
            source.append(i)
    v, s = _embed(embedder, blobs)
    n, n0 = len(blobs), len(originals)
    cosine = np.array([float(v[c] @ v[source[c]]) for c in range(n0, n)])
    assert np.mean(cosine < CANDIDATE_THRESHOLD) >= 0.3, cosine      # not even candidates by embedding

    def found(**kw):
        rep = find_duplicates(v, [str(i) for i in range(n)], [""] * n, [""] * n,
                              [hashlib.sha256(x).hexdigest() for x in blobs], signatures=s, **kw)
        pairs = set(zip(rep.a.tolist(), rep.b.tolist()))
        assert all(source[a] == source[b] for a, b in pairs), "distinct photos paired"
        return np.mean([(source[c], c) in pairs for c in range(n0, n)])
    with_layout, embedding_alone = found(), found(layout_k=0, keypoint_k=0)
    assert with_layout >= 0.8 and with_layout >= embedding_alone + 0.25, (with_layout, embedding_alone)


def test_heavily_blurred_copies_are_compared_at_one_sharpness(embedder, photos):
    """A blur of 3-4% of the width (a Gaussian, or a box blur nobody tuned
    on) leaves a copy's layout but not the detail its original's thumbnail
    keeps: compared as they are, such copies agreed at ~0.8, no better than
    the runner-up bar allows. The sharper view is blurred to the other's
    sharpness first, so they agree as copies do; distinct photos, one of
    them blurred, still never pair. The evidence says how much the sharper
    view was blurred; a sharp copy (recompressed) is compared as it is."""
    ev, found = _alternate_copies(embedder, photos, (
        lambda im: im.filter(ImageFilter.GaussianBlur(im.width * 0.03)),
        lambda im: im.filter(ImageFilter.BoxBlur(im.width * 0.04))))
    assert np.median(ev.agreement) >= 0.93, np.round(ev.agreement, 3)
    assert found >= 0.8, found          # 0.5 before the sharpness matching
    assert np.mean(ev.matched_blur_px > 0) >= 0.8 and ev.matched_blur_px.max() <= max(BLUR_SIGMAS), \
        ev.matched_blur_px
    originals = [photo_image(d) for d, _, _ in photos[:6]]
    sharp = [pair_alignment(layout_signature(im), layout_signature(Image.open(io.BytesIO(
        encode(im, "JPEG", quality=60))))) for im in originals]
    assert [round(s[8], 2) for s in sharp] == [0.0] * len(sharp), sharp      # matched_blur_px


def _remapped(im: Image.Image, x_of, y_of) -> Image.Image:
    """``im`` resampled: each pixel (x, y) takes the colour at (x_of(x, y), y_of(x, y))."""
    import cv2
    a = np.asarray(im.convert("RGB"))
    y, x = np.mgrid[0:a.shape[0], 0:a.shape[1]].astype(np.float32)
    return Image.fromarray(cv2.remap(a, x_of(x, y).astype(np.float32), y_of(x, y).astype(np.float32),
                                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))


def _lens(im: Image.Image, k: float = 0.15) -> Image.Image:
    w, h = im.size
    cx, cy, half = (w - 1) / 2, (h - 1) / 2, math.hypot(w, h) / 2
    scale = lambda x, y: 1 + k * (((x - cx) / half) ** 2 + ((y - cy) / half) ** 2)
    return _remapped(im, lambda x, y: (x - cx) * scale(x, y) + cx, lambda x, y: (y - cy) * scale(x, y) + cy)


def _waves(im: Image.Image, amplitude: float = 0.02, waves: int = 4) -> Image.Image:
    w, h = im.size
    a = amplitude * min(w, h)
    return _remapped(im, lambda x, y: x + a * np.sin(2 * np.pi * waves * y / h + 1),
                     lambda x, y: y + a * np.sin(2 * np.pi * (waves - 1) * x / w))


def test_locally_warped_copies_are_compared_warped_back(photos, monkeypatch):
    """A lens distortion or ripples move a picture's parts by a pixel or two
    of the thumbnail, differently across it: no crop, turn or shear undoes
    that. The best placement is also compared warped back by a smooth flow:
    such copies gain, distinct photos gain nothing, and the evidence says by
    how much (the agreement without the warp is the agreement less it)."""
    from imagesieve_server.analysis.duplicates import verify
    originals = [photo_image(d) for d, _, _ in photos]
    sigs = [layout_signature(im) for im in originals]
    copies = {kind: [layout_signature(alter(im)) for im in originals] for kind, alter in
              (("lens", _lens), ("waves", _waves))}
    others = [(sigs[i], sigs[(i + 1) % len(sigs)]) for i in range(len(sigs))]
    warped = {kind: [pair_alignment(s, c) for s, c in zip(sigs, cs)] for kind, cs in copies.items()}
    distinct = [pair_alignment(x, y) for x, y in others]
    for kind, ev in warped.items():
        assert np.median([e[10] for e in ev]) >= 0.025, (kind, [round(e[10], 3) for e in ev])
    assert max(e[10] for e in distinct) <= 0.02, [round(e[10], 3) for e in distinct]
    monkeypatch.setattr(verify, "_warped", lambda m: None)
    for kind, cs in copies.items():
        rigid = [pair_alignment(s, c) for s, c in zip(sigs, cs)]
        assert [round(r[0], 4) for r in rigid] == [round(e[0] - e[10], 4) for e in warped[kind]], kind
        assert all(r[10] == 0 for r in rigid)


def test_no_warp_where_a_thumbnail_holds_no_fine_detail(photos, monkeypatch):
    """A thumbnail enlarged from a picture smaller than itself holds little
    fine detail, and a flow of a pixel or two can bend one smooth outline
    onto another (28 px garments). The warp is tried only where both
    thumbnails hold some (WARP_DETAIL)."""
    from imagesieve_server.analysis.duplicates import verify
    originals = [photo_image(d) for d, _, _ in photos]
    full = [verify.fine_detail(unpack(layout_signature(im))[2]) for im in originals]
    small = [layout_signature(im.resize((28, 28), Image.BOX)) for im in originals]
    copies = [layout_signature(_lens(im).resize((28, 28), Image.BOX)) for im in originals]
    detail = np.array([min(verify.fine_detail(unpack(x)[2]), verify.fine_detail(unpack(y)[2]))
                       for x, y in zip(small, copies)])
    assert np.median(full) >= 3 * verify.WARP_DETAIL > 3 * np.median(detail), (np.round(full, 3), np.round(detail, 4))
    gated = detail < verify.WARP_DETAIL
    assert all(pair_alignment(x, y)[10] == 0 for x, y, g in zip(small, copies, gated) if g)
    monkeypatch.setattr(verify, "WARP_DETAIL", 0.0)
    assert any(pair_alignment(x, y)[10] > 0 for x, y, g in zip(small, copies, gated) if g), "the gate must matter"


def test_a_warp_counts_only_for_a_pair_it_sets_apart():
    """Pictures of one template (smileys, cards of one deck) all come closer
    warped: a warp's gain counts for a pair only when no other candidate of
    either image gains as much; elsewhere the pair is judged as aligned
    rigidly. A copy warped back alone among its candidates keeps its gain."""
    from imagesieve_server.analysis.duplicates.verify import warp_beyond_rivals
    #        copy   look   look  sibling sibling sibling
    a = np.array([0, 0, 0, 3, 3, 4])
    b = np.array([1, 2, 5, 4, 5, 5])
    gain = np.array([0.08, 0.0, 0.01, 0.06, 0.05, 0.06], np.float32)
    assert warp_beyond_rivals(6, a, b, gain).tolist() == [True, False, False, True, False, True]
    assert not warp_beyond_rivals(6, a, b, np.zeros(6, np.float32)).any()
    # Verdicts: the copy passes by its warp; with a rival gaining as much, it is judged unwarped.
    g = np.array([0.95, 0.6, 0.62, 0.7, 0.7, 0.7], np.float32)
    c = np.full(6, 0.6, np.float32)
    alone, _ = verified_pairs(6, a, b, g, c, warp_gain=gain)
    rigid, _ = verified_pairs(6, a, b, g - gain, c)
    rival = gain.copy()
    rival[2] = 0.09
    crowded, _ = verified_pairs(6, a, b, g, c, warp_gain=rival)
    assert alone[0] and not rigid[0] and not crowded[0], (alone, rigid, crowded)
    with pytest.raises(ValueError, match="warp_gain"):
        verified_pairs(6, a, b, g, c, warp_gain=gain[:-1])


def _alternate_copies(embedder, photos, kinds):
    """The photos, and a copy of each made by the kinds in turn, embedded
    and searched with stage 2: (each copy's PairEvidence with its original,
    the share of copies paired with it). Asserts no distinct photos pair."""
    originals = [photo_image(d) for d, _, _ in photos]
    blobs = [encode(im, "JPEG", quality=92) for im in originals]
    source = list(range(len(originals)))
    for k, alter in enumerate(kinds):
        for i in range(k, len(originals), len(kinds)):
            blobs.append(encode(alter(originals[i]), "JPEG", quality=90))
            source.append(i)
    v, s = _embed(embedder, blobs)
    n, n0 = len(blobs), len(originals)
    ev = verify_pairs(s, np.array(source[n0:]), np.arange(n0, n))
    rep = find_duplicates(v, [str(i) for i in range(n)], [""] * n, [""] * n,
                          [hashlib.sha256(x).hexdigest() for x in blobs], signatures=s)
    pairs = set(zip(rep.a.tolist(), rep.b.tolist()))
    assert all(source[a] == source[b] for a, b in pairs), "distinct photos paired"
    return ev, float(np.mean([(source[c], c) in pairs for c in range(n0, n)]))


def test_a_streaming_check_finds_a_blurred_copy_by_its_layout(embedder, photos, tmp_path, monkeypatch):
    """CheckDuplicates has the batch search's second source of candidates:
    a 2%-blurred photo falls below the embedding's candidate cosine, and the
    collection's coarse-layout index still proposes its original, which the
    layouts verify. The index follows adds and removes and is rebuilt from
    the store when the collection is opened again."""
    from imagesieve_server.collections import Collection, NewImage, Verdict

    originals = [photo_image(d) for d, _, _ in photos]
    blobs = [encode(im, "JPEG", quality=92) for im in originals]
    blurred = [encode(im.filter(ImageFilter.GaussianBlur(im.width * 0.02)), "JPEG", quality=90) for im in originals]
    v, s = _embed(embedder, blobs)
    bv, bs = _embed(embedder, blurred)
    hidden = [i for i in range(len(blobs)) if float(bv[i] @ v[i]) < CANDIDATE_THRESHOLD]
    assert len(hidden) >= 3, "the embedding still sees through the blur: the test needs copies it misses"

    def image(key, data, vec, sig):
        return NewImage(key, hashlib.sha256(data).hexdigest(), vec, signature=sig)

    coll = Collection.create(tmp_path / "c", "c", v.shape[1], "mobilenet_v1")
    assert all(o.added for o in coll.add([image(f"p{i}", blobs[i], v[i], s[i]) for i in range(len(blobs))]))
    for i in hidden:
        out = coll.check(image(f"blur{i}", blurred[i], bv[i], bs[i]), k=5)
        assert out.verdict == Verdict.NEAR_DUPLICATE, (i, [(n.key, n.cosine, n.agreement) for n in out.neighbors])
        assert out.neighbors[0].key == f"p{i}" and out.neighbors[0].verified
        assert out.neighbors[0].cosine < CANDIDATE_THRESHOLD
        assert [n.key for n in out.neighbors if n.verified] == [f"p{i}"]      # no other photo
        off = coll.check(image(f"blur{i}", blurred[i], bv[i], bs[i]), k=5, verify_layout=False)
        assert off.verdict == Verdict.UNIQUE                                 # raw cosine cannot see it
        # a threshold asked for bounds the layouts' candidates too
        assert coll.check(image(f"blur{i}", blurred[i], bv[i], bs[i]), threshold=0.6).verdict == Verdict.UNIQUE
    first = hidden[0]
    coll.remove([f"p{first}"])
    out = coll.check(image("again", blurred[first], bv[first], bs[first]), k=5)
    assert out.verdict == Verdict.UNIQUE and f"p{first}" not in [n.key for n in out.neighbors]
    coll.add([image("new", blobs[first], v[first], s[first])])              # added after the index was built
    assert coll.check(image("again", blurred[first], bv[first], bs[first])).neighbors[0].key == "new"
    coll.close()
    reopened = Collection.open(tmp_path / "c")
    out = reopened.check(image("again", blurred[hidden[1]], bv[hidden[1]], bs[hidden[1]]))
    assert out.verdict == Verdict.NEAR_DUPLICATE and out.neighbors[0].key == f"p{hidden[1]}"
    reopened.close()
    # A large collection builds the index in the background: checks do not wait for it.
    import imagesieve_server.collections.collection as collection_module
    monkeypatch.setattr(collection_module, "LAYOUT_INDEX_INLINE", 0)
    large = Collection.open(tmp_path / "c")
    large.check(image("again", blurred[hidden[1]], bv[hidden[1]], bs[hidden[1]]))    # starts the build
    large.remove([f"p{hidden[2]}"])                                                 # while it may run
    deadline = time.monotonic() + 30
    while large._layouts is None and time.monotonic() < deadline:
        time.sleep(0.05)
    out = large.check(image("again", blurred[hidden[1]], bv[hidden[1]], bs[hidden[1]]))
    assert out.verdict == Verdict.NEAR_DUPLICATE and out.neighbors[0].key == f"p{hidden[1]}"
    gone = large.check(image("again", blurred[hidden[2]], bv[hidden[2]], bs[hidden[2]]))
    assert f"p{hidden[2]}" not in [n.key for n in gone.neighbors]                   # its removal caught up
    large.close()


def test_a_pair_only_the_layouts_proposed_is_judged_by_its_layout_alone():
    # Look-alikes at agreement 0.7 and cosine 0.6. A pair the embedding missed
    # (cosine 0.35, below the look-alikes') whose layouts agree at 0.9: its
    # layout is 1/3 as far as its look-alikes' (within MAX_RELATIVE_LAYOUT
    # = 0.4), and its low cosine does not count against it; proposed by the
    # embedding with the same figures, it is not verified (its cosine is
    # evidence there), nor at 0.8 (2/3 as far) either way.
    a, b = np.array([0]), np.array([1])
    packs = np.full(4, 0.7), np.full(4, 0.6)
    assert verified_pairs(4, a, b, [0.9], [0.35], *packs, layout_only=[True])[0][0]
    assert not verified_pairs(4, a, b, [0.9], [0.35], *packs, layout_only=[True], max_relative_layout=0.25)[0][0]
    assert not verified_pairs(4, a, b, [0.9], [0.35], *packs, layout_only=[False])[0][0]
    assert not verified_pairs(4, a, b, [0.8], [0.35], *packs, layout_only=[True])[0][0]
    with pytest.raises(ValueError, match="max_relative_layout"):
        verified_pairs(4, a, b, [0.9], [0.35], max_relative_layout=0.0)


def _cut_out(im: Image.Image, shape: int, hidden: str) -> Image.Image:
    """A transparent PNG made from a photo: the picture inside a figure (a
    star, or three overlapping discs, like a character cut out of its
    scene: half the frame around it transparent), the colour under the
    transparent pixels black or the photo's own leftovers (as an editor
    leaves them)."""
    w, h = im.size
    alpha = Image.new("L", im.size, 0)
    d = ImageDraw.Draw(alpha)
    if shape % 2:
        turn = shape * 0.3
        d.polygon([(w / 2 + (0.48 if k % 2 == 0 else 0.2) * w * np.cos(turn + k * np.pi / 5),
                    h / 2 + (0.48 if k % 2 == 0 else 0.2) * h * np.sin(turn + k * np.pi / 5)) for k in range(10)],
                  fill=255)
    else:
        for cx, cy, r in ((0.3, 0.35, 0.22), (0.62, 0.3, 0.2), (0.5, 0.7, 0.26)):
            d.ellipse((w * (cx - r), h * (cy - r), w * (cx + r), h * (cy + r)), fill=255)
    rgb = im.convert("RGB") if hidden == "leftovers" else Image.composite(im.convert("RGB"), Image.new("RGB", im.size),
                                                                         alpha)
    out = rgb.convert("RGBA")
    out.putalpha(alpha)
    return out


def test_transparent_pictures_keep_their_opacity_in_the_signature(photos):
    from imagesieve_server.engine.decode import decode_image
    from imagesieve_server.engine.signature import opacity, upgrade
    im = photo_image(photos[0][0])
    cut = decode_image(encode(_cut_out(im, 1, "black"), "PNG"), 0)
    sig = layout_signature(cut)
    opaque = opacity(sig)
    assert opaque is not None and 0.3 < opaque.mean() < 0.7          # a star in its bounding frame
    assert opaque[24, 24] and not opaque[0, 0]
    assert opacity(layout_signature(decode_image(encode(im, "PNG"), 0))) is None            # opaque: no mask
    assert opacity(layout_signature(decode_image(encode(im.convert("RGBA"), "PNG"), 0))) is None
    alpha_only = decode_image(_alpha_only(ALPHA_PICTURES["circle"]), 0)  # its picture is the alpha: no mask
    assert "opacity" not in alpha_only.info and opacity(layout_signature(alpha_only)) is None
    # the copy that ignores the alpha, turned a few degrees: the mask turns with the template
    naive = decode_image(encode(_cut_out(im, 1, "black").convert("RGB").rotate(6, resample=Image.BICUBIC), "JPEG"), 0)
    assert pair_alignment(sig, layout_signature(naive))[0] > 0.8
    legacy = sig[:LEGACY_BYTES]                  # stored before the opacity bits: read as opaque
    assert upgrade(legacy).shape == (SIGNATURE_BYTES,) and opacity(upgrade(legacy)) is None
    assert (unpack(legacy)[2] == unpack(sig)[2]).all()
    assert pair_alignment(legacy, sig)[0] > 0.99


def test_a_transparent_picture_saved_without_its_alpha_is_found(embedder, photos):
    """Saved as JPEG with no regard to its alpha, a transparent picture
    shows the colour under its transparent pixels (black, or leftovers)
    where the original, over white, shows white: compared on the opaque
    pixels, the copy is found; judged without the opacity bits (signatures
    stored before them), most are not; distinct cut-outs never pair."""
    originals = [_cut_out(photo_image(d), i, "black" if i % 3 else "leftovers")
                 for i, (d, _, _) in enumerate(photos[:12])]
    blobs = [encode(im, "PNG") for im in originals]
    blobs += [encode(im, "PNG") for im in (photo_image(d) for d, _, _ in photos[12:])]     # opaque photos
    blobs += [encode(im.convert("RGB"), "JPEG", quality=85) for im in originals]         # alpha dropped
    n, n0 = len(blobs), len(photos)
    source = list(range(n0)) + list(range(12))
    v, s = _embed(embedder, blobs)
    sha = [hashlib.sha256(x).hexdigest() for x in blobs]

    def found(signatures):
        rep = find_duplicates(v, [str(i) for i in range(n)], [""] * n, [""] * n, sha, signatures=signatures)
        pairs = set(zip(rep.a.tolist(), rep.b.tolist()))
        assert all(source[a] == source[b] for a, b in pairs), "distinct pictures paired"
        return np.mean([(source[c], c) in pairs for c in range(n0, n)])
    with_opacity, without = found(s), found(s[:, :LEGACY_BYTES])
    assert with_opacity >= 0.75 and with_opacity >= without + 0.25, (with_opacity, without)


# Debian's adwaita-icon-theme (scripts/setup.sh --test): full-colour 48-px icons, transparent.
ADWAITA_LEGACY = "/usr/share/icons/Adwaita/48x48/legacy"


def test_flat_icons_that_dropped_their_alpha_over_black_are_compared_off_the_edge():
    """Real transparent icons (flat artwork: most of what varies is the
    picture's outline) and copies that dropped the alpha over black (what
    a converter that ignores it leaves). An edge pixel of the thumbnail
    blends the picture with white in one and with black in the other; off
    the edge, the copies agree with their originals as copies do (on all
    opaque pixels, half of them agreed below 0.9, median 0.899)."""
    from imagesieve_server.engine.decode import decode_image
    files = sorted(f for f in os.listdir(ADWAITA_LEGACY) if f.endswith(".png") and "symbolic" not in f)[::4]
    icons = [Image.open(os.path.join(ADWAITA_LEGACY, f)).convert("RGBA") for f in files]
    icons = [im for im in icons if (np.asarray(im)[:, :, 3] < 128).mean() > 0.1]     # transparent round the picture
    assert len(icons) >= 60
    flattened = [Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im).convert("RGB") for im in icons]
    agreement = np.array([pair_alignment(layout_signature(decode_image(encode(im, "PNG"), 0)),
                                         layout_signature(decode_image(encode(flat, "PNG"), 0)))[0]
                          for im, flat in zip(icons, flattened)])
    assert np.median(agreement) >= 0.92 and (agreement < 0.9).mean() <= 0.35, (np.median(agreement),
                                                                                (agreement < 0.9).mean())


def test_a_copy_joins_its_originals_group_before_a_look_alike_does(embedder):
    """Groups take verified pairs strongest evidence first: by cosine, an
    icon's look-alike sibling (another state of one design, cosine ~0.95)
    took its group before the icon's copy flattened on black (a clearer
    copy at a lower cosine), and the copy, verified with its original,
    stayed out of the group (85% of such copies in their original's group
    by cosine, 91% by evidence, on half of GNOME's legacy icons)."""
    files = sorted(f for f in os.listdir(ADWAITA_LEGACY) if f.endswith(".png") and "symbolic" not in f)[::2]
    icons = [Image.open(os.path.join(ADWAITA_LEGACY, f)).convert("RGBA") for f in files]
    icons = [im for im in icons if (np.asarray(im)[:, :, 3] < 128).mean() > 0.1]
    flattened = [Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im).convert("RGB") for im in icons]
    blobs = [encode(im, "PNG") for im in icons + flattened]
    n0, n = len(icons), len(blobs)
    v, s = _embed(embedder, blobs)
    sha = [hashlib.sha256(x).hexdigest() for x in blobs]
    rep = find_duplicates(v, [str(i) for i in range(n)], [""] * n, [""] * n, sha, signatures=s)
    pairs = set(zip(rep.a.tolist(), rep.b.tolist()))
    group = {x: g for g, members in enumerate(rep.groups) for x in members.tolist()}
    verified = [i for i in range(n0) if (i, n0 + i) in pairs]
    together = np.mean([group.get(i, -1) == group.get(n0 + i, -2) for i in verified])
    assert len(verified) >= 0.7 * n0 and together >= 0.89, (len(verified), n0, together)


def test_a_collection_reads_signatures_stored_before_the_opacity_bits(embedder, photos, tmp_path):
    """Rows written by a version without the opacity bits (2,306-byte
    signatures) still verify, as opaque, next to new ones."""
    from imagesieve_server.collections import Collection, NewImage, Verdict
    blobs = [d for d, _, _ in photos[:8]]
    crop = encode(UNSEEN_KINDS["crop_60"](photo_image(blobs[2])), "JPEG", quality=90)
    v, s = _embed(embedder, blobs + [crop])
    coll = Collection.create(tmp_path / "c", "c", v.shape[1], "mobilenet_v1")
    coll.add([NewImage(f"p{i}", hashlib.sha256(b).hexdigest(), v[i], signature=s[i]) for i, b in enumerate(blobs)])
    with coll.store._transaction() as db:
        db.execute(f"UPDATE layouts SET signature = substr(signature, 1, {LEGACY_BYTES}) WHERE image_id % 2 = 1")
        assert db.execute("SELECT COUNT(*) FROM layouts WHERE length(signature) = ?", (LEGACY_BYTES,)).fetchone()[0] == 4
    out = coll.check(NewImage("crop", hashlib.sha256(crop).hexdigest(), v[-1], signature=s[-1]))
    assert out.verdict == Verdict.NEAR_DUPLICATE and out.neighbors[0].key == "p2" and out.neighbors[0].verified
    assert coll.all_images(with_signatures=True).signatures.shape == (8, SIGNATURE_BYTES)
    coll.close()


def test_damaged_or_old_signatures_never_stop_checks(embedder, photos, tmp_path, monkeypatch):
    """A signature of the wrong length is refused at add (that item only);
    a damaged stored one is left out of the layout index, and a build of
    that index that fails leaves checks with the embedding's candidates
    (tried again after LAYOUT_RETRY_S, not on every check); an audit store
    handed an older server's 2,306-byte signature keeps it as opaque."""
    from imagesieve_server.audit.store import Embedded, EmbeddingStore
    from imagesieve_server.collections import Collection, NewImage, Verdict
    blobs = [d for d, _, _ in photos[:6]]
    crop = encode(UNSEEN_KINDS["crop_60"](photo_image(blobs[2])), "JPEG", quality=90)
    v, s = _embed(embedder, blobs + [crop])
    sha = [hashlib.sha256(b).hexdigest() for b in blobs + [crop]]
    coll = Collection.create(tmp_path / "c", "c", v.shape[1], "mobilenet_v1")
    out = coll.add([NewImage(f"p{i}", sha[i], v[i], signature=s[i]) for i in range(6)]
                   + [NewImage("short", "x", v[0], signature=s[0][:100])])
    assert [o.added for o in out] == [True] * 6 + [False] and out[-1].error.code == "INVALID_ARGUMENT"
    with coll.store._transaction() as db:
        db.execute("UPDATE layouts SET signature = substr(signature, 1, 999) WHERE image_id = 1")
    query = NewImage("crop", sha[-1], v[-1], signature=s[-1])
    assert coll.check(query).verdict == Verdict.NEAR_DUPLICATE                # p0 damaged, p2 found
    coll.close()

    import imagesieve_server.collections.collection as collection_module
    coll = Collection.open(tmp_path / "c")
    calls = []

    def broken(*a, **kw):
        calls.append(1)
        raise OSError("disk read error")
    monkeypatch.setattr(coll, "_read_layouts", broken)
    assert coll.check(query).verdict == Verdict.NEAR_DUPLICATE and coll._layouts is None
    coll.check(query)
    assert len(calls) == 1                                                   # not again at once
    monkeypatch.setattr(collection_module, "LAYOUT_RETRY_S", 0.0)
    coll._layouts_retry_at = 0.0
    coll.check(query)
    assert len(calls) == 2
    coll.close()

    store = EmbeddingStore(tmp_path / "audit", "mobilenet_v1", v.shape[1])
    store.put(Embedded("a.jpg", sha[0], 1, 1, v[0], 10, 10, "", s[0][:LEGACY_BYTES]))
    store.flush()
    loaded = store.load(["a.jpg"])
    store.close()
    assert loaded.signatures.shape == (1, SIGNATURE_BYTES) and (loaded.signatures[0][LEGACY_BYTES:LAYOUT_BYTES] == 255).all()


def test_the_ingestion_gate_catches_a_transparent_picture_saved_without_its_alpha(server, photos):
    """Over a real server: transparent cut-outs are added; their copies
    saved as JPEG without regard to the alpha are NEAR_DUPLICATE of their
    own original, and a cut-out of another photo stays UNIQUE."""
    cutouts = [encode(_cut_out(photo_image(d), i, "black"), "PNG") for i, (d, _, _) in enumerate(photos[:10])]
    naive = [encode(Image.open(io.BytesIO(b)).convert("RGB"), "JPEG", quality=85) for b in cutouts]
    with Client(server.address) as c:
        c.create_collection("alpha-naive")
        added = list(c.check("alpha-naive", cutouts[:8], keys=[f"cut{i}" for i in range(8)], add_if_unique=True))
        assert all(r.verdict == "UNIQUE" and r.added for r in added)
        results = list(c.check("alpha-naive", naive[:8] + [cutouts[9]], keys=[f"naive{i}" for i in range(8)] + ["new"]))
    found = [r.verdict == "NEAR_DUPLICATE" and r.neighbors[0].key == f"cut{i}" and r.neighbors[0].verified
             for i, r in enumerate(results[:8])]
    assert sum(found) >= 6, [(r.verdict, [(n.key, round(n.agreement, 3)) for n in r.neighbors[:2]]) for r in results]
    assert results[8].verdict == "UNIQUE"


def _sky(seed: int, w: int = 480, h: int = 320) -> Image.Image:
    """A sky: colour changing from top to bottom (two colours, a curve, a
    horizon band of its own height): a profile, not a layout."""
    r = np.random.default_rng(seed)
    t = (np.linspace(0, 1, h) ** r.uniform(0.5, 2.0))[:, None, None]
    top, bottom = r.uniform(0, 255, 3), r.uniform(0, 255, 3)
    img = top * (1 - t) + bottom * t
    y = int(h * r.uniform(0.55, 0.9))
    img[y:] = img[y:] * r.uniform(0.3, 0.7)             # the ground, darker
    return Image.fromarray(np.clip(np.repeat(img, w, axis=1), 0, 255).astype(np.uint8))


def test_skies_are_profiles_and_pair_only_with_their_copies(embedder, photos):
    """Any two skies (a colour changing from top to bottom over a horizon)
    align at 0.9-1.0: a crop of one fits part of the other, and the
    correlation ignores their colours. Their layout says nothing, so only
    the embedding may pair them: distinct skies stay apart, re-encoded and
    resized copies are still found, and photos keep their layout evidence."""
    skies = [_sky(k) for k in range(12)]
    blobs = [encode(im, "PNG") for im in skies]
    blobs += [encode(skies[k].resize((360, 240)), "JPEG", quality=70) for k in range(3)]   # copies of 0-2
    originals = [photo_image(d) for d, _, _ in photos[:6]]
    blobs += [encode(im, "JPEG", quality=92) for im in originals]
    w, h = originals[0].size
    blobs += [encode(ImageEnhance.Brightness(originals[0]).enhance(1.3).crop((w // 10, h // 10, w, h)), "JPEG")]
    vectors, sigs = _embed(embedder, blobs)
    assert one_dimensional(sigs[:15]).all() and not one_dimensional(sigs[15:]).any()
    rep = find_duplicates(vectors, [str(i) for i in range(len(blobs))], [""] * len(blobs), [""] * len(blobs),
                          [hashlib.sha256(b).hexdigest() for b in blobs], signatures=sigs)
    found = {(int(x), int(y)) for x, y in zip(rep.a, rep.b)}
    assert {(0, 12), (1, 13), (2, 14), (15, 21)} <= found, found
    # Two distinct skies pair only where their embeddings are as close as copies'
    # (without the rule: 5 such pairs, at cosine 0.62-0.79, their layouts agreeing at ~0.97).
    skies_paired = [p for p in found if p[0] < 12 and p[1] < 12]
    assert all(float(vectors[x] @ vectors[y]) > 0.85 for x, y in skies_paired), skies_paired


def _tilted_sky(seed: int, degrees: float) -> Image.Image:
    """A sky whose horizon runs askew (a gradient from corner to corner):
    a larger sky turned, its middle cut out, so no corner of the canvas shows."""
    big = _sky(seed, 900, 900).rotate(degrees, resample=Image.BICUBIC)
    return big.crop((210, 300, 690, 620))


def test_a_profile_running_in_any_direction_is_a_profile(embedder, photos):
    """Skies turned 20-70 degrees (a horizon running from corner to corner)
    are as one-dimensional as upright ones: their thumbnails vary along one
    direction only, and a crop of one, stretched, fits any other. Measured
    only on rows and columns, these 12 distinct skies made 4 pairs, 3 of
    them at cosine 0.60-0.63 on their layouts alone. Now they pair only
    where their embeddings are as close as copies', and the copies whose
    embedding stayed close are found; photos, upright or turned, are no
    profiles. The cost, measured here too: a copy whose JPEG blocks moved
    its embedding to 0.80 (as far as two distinct skies) is no longer found
    by its layout."""
    angles = [20, 35, 50, 70, 25, 40, 55, 65, 30, 45, 60, 68]
    skies = [_tilted_sky(100 + k, angles[k]) for k in range(12)]
    blobs = [encode(im, "PNG") for im in skies]
    blobs += [encode(skies[k].resize((360, 240)), "JPEG", quality=70) for k in range(3)]   # copies of 0-2
    pictures = [photo_image(d) for d, _, _ in photos[:6]]
    blobs += [encode(im.rotate(35 * (i % 2), expand=True), "JPEG", quality=92) for i, im in enumerate(pictures)]
    vectors, sigs = _embed(embedder, blobs)
    # One of them (55 degrees, a dim purple over a dark band) measures 0.87 in gray: a near profile.
    assert one_dimensional(sigs[:15]).sum() >= 14 and not one_dimensional(sigs[15:]).any()
    rep = find_duplicates(vectors, [str(i) for i in range(len(blobs))], [""] * len(blobs), [""] * len(blobs),
                          [hashlib.sha256(b).hexdigest() for b in blobs], signatures=sigs)
    found = {(int(x), int(y)) for x, y in zip(rep.a, rep.b)}
    close_copies = {(k, 12 + k) for k in range(3) if float(vectors[k] @ vectors[12 + k]) >= 0.85}
    assert len(close_copies) >= 2 and close_copies <= found, (close_copies, found)
    skies_paired = [p for p in found if p[0] < 12 and p[1] < 12]
    assert all(float(vectors[x] @ vectors[y]) > 0.9 for x, y in skies_paired), \
        [(p, round(float(vectors[p[0]] @ vectors[p[1]]), 3)) for p in skies_paired]
    assert not any(x >= 15 or y >= 15 for x, y in found), found


def _faded(im: Image.Image) -> Image.Image:
    """A 16:9 band of a photo faded towards white (a faded print; a chart or a
    drawing on white is as light and as low in contrast at 48 px)."""
    w, h = im.size
    band = im.crop((0, (h - w * 9 // 16) // 2, w, (h + w * 9 // 16) // 2))
    return Image.blend(Image.new("RGB", band.size, "white"), band, 0.3)


def _titled(im: Image.Image) -> Image.Image:
    """``im`` under a dark title band, as on a slide whose frame is cut away."""
    w, h = im.size
    out = Image.new("RGB", (w, h + h // 5), (31, 56, 100))
    ImageDraw.Draw(out).text((w // 20, h // 30), "Results", fill="white", font=ImageFont.load_default(h // 8))
    out.paste(im, (0, h // 5))
    return out


def test_a_light_picture_under_a_title_band_is_judged_by_the_picture(embedder, photos):
    """A dark title band over a light picture holds most of the thumbnail's
    variance in its row means: the thumbnail measures as a profile, and a
    profile's agreement says nothing. But what aligns with the picture's
    own thumbnail is the picture, which is no profile, so the pair is judged
    on its agreement (a chart probe lost a chart pasted on a slide so, at
    agreement 0.955; here, judged by their cosine alone, one copy of 8 was
    lost, at 0.87). Distinct pictures under the same band align by the band
    (one partly, at agreement 0.84): profiles, which only the embedding
    could pair."""
    pictures = [_faded(photo_image(d)) for d, _, _ in photos[:16]]
    blobs = [encode(im, "PNG") for im in pictures[:8]]                       # 0-7: originals
    blobs += [encode(_titled(im), "PNG") for im in pictures[8:]]             # 8-15: distinct, titled
    blobs += [encode(_titled(im), "JPEG", quality=90) for im in pictures[:8]]   # 16-23: copies of 0-7
    vectors, sigs = _embed(embedder, blobs)
    assert not one_dimensional(sigs[:8]).any() and one_dimensional(sigs[16:]).sum() >= 6
    copies = {(k, 16 + k) for k in range(8)}
    a, b = np.r_[np.arange(8), 0], np.r_[np.arange(16, 24), 1]
    ev = verify_pairs(sigs, a, b)
    assert not ev.matched_profile[:8].any() and ev.agreement[:8].min() > 0.9, ev
    # Measured only where a profile is on either side (the others' value does not matter).
    profiled = one_dimensional(sigs)[a] | one_dimensional(sigs)[b]
    assert profiled[:8].sum() >= 6 and not profiled[8]
    part = verify_pairs(sigs, a, b, profiled=profiled)
    assert (part.matched_profile == np.where(profiled, ev.matched_profile, True)).all()
    assert (part.agreement == ev.agreement).all()
    titled = [(i, j) for i in range(8, 24) for j in range(i + 1, 24) if (i, j) not in copies]
    ev = verify_pairs(sigs, *np.array(titled).T)
    assert ev.matched_profile[ev.agreement > 0.6].all(), ev
    rep = find_duplicates(vectors, [str(i) for i in range(len(blobs))], [""] * len(blobs), [""] * len(blobs),
                          [hashlib.sha256(b).hexdigest() for b in blobs], signatures=sigs)
    assert {(int(x), int(y)) for x, y in zip(rep.a, rep.b)} == copies


def _vignetted(im: Image.Image, k: float) -> Image.Image:
    """``im`` darkened towards its corners (a lens's fall-off, ``k`` at the corners)."""
    a = np.asarray(im, np.float32)
    h, w = a.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    shade = 1 - k * (((x - w / 2) / (w / 2)) ** 2 + ((y - h / 2) / (h / 2)) ** 2) / 2
    return Image.fromarray(np.clip(a * shade[:, :, None], 0, 255).astype(np.uint8))


def test_skies_shaded_alike_by_a_vignette_are_still_profiles(embedder, photos):
    """A vignette shades different skies alike: smooth 2-D shading that a 1-D
    profile does not hold. A review found two different vignetted skies
    paired (agreement 0.977) while the alignment's residual was taken
    beyond the 1-D profiles; beyond the two strongest singular components
    (a profile, and a profile shaded) nothing of them is left to correlate,
    so their agreement still says nothing and the embedding decides."""
    skies = [_vignetted(_sky(k), 0.35) for k in range(1, 9)]
    blobs = [encode(photo_image(d), "JPEG", quality=92) for d, _, _ in photos] + [encode(s, "PNG") for s in skies]
    vectors, sigs = _embed(embedder, blobs)
    n, first = len(blobs), len(photos)
    pairs = np.array([(i, j) for i in range(first, n) for j in range(i + 1, n)])
    ev = verify_pairs(sigs, pairs[:, 0], pairs[:, 1])
    profiled = one_dimensional(sigs)
    assert profiled[first:].sum() >= 4
    with_profile = (profiled[pairs[:, 0]] | profiled[pairs[:, 1]]) & (ev.agreement > 0.9)
    assert with_profile.sum() >= 5 and ev.matched_profile[with_profile].all(), ev
    rep = find_duplicates(vectors, [str(i) for i in range(n)], [""] * n, [""] * n,
                          [hashlib.sha256(b).hexdigest() for b in blobs], signatures=sigs)
    paired = [(int(x), int(y)) for x, y in zip(rep.a, rep.b)]
    assert all(float(vectors[x] @ vectors[y]) > 0.9 for x, y in paired), paired


def test_a_partial_match_of_a_simple_piece_is_no_evidence(photos):
    """A probe on UI screenshots found unrelated pictures paired at
    agreement 0.92-0.999 by a quarter of their frame: a menu's edge, a grey
    box, a bar, which fits part of any picture that has one. Such a piece
    is nearly rank 2 (simplicity >= SIMPLE_MATCH); a piece of a real
    picture is not. A pair aligned only by such a piece is judged like a
    profile's (its cosine alone must set it apart), and stays a look-alike."""
    from imagesieve_server.analysis.duplicates.verify import (DEEP_PARTIAL_AREA, MIN_INLIERS, PARTIAL_AREA,
                                                              SIMPLE_MATCH, PairEvidence, simplicity,
                                                              uninformative_matches)
    from imagesieve_server.engine.signature import SIDE

    box = np.full((20, 20), 236.0)
    box[5:15, 4:16] = 150.0
    edge = np.tile(np.r_[np.full(9, 40.0), np.full(11, 220.0)], (14, 1))
    corner = np.full((16, 16), 200.0)
    corner[8:, 8:] = 30.0
    assert min(simplicity(x) for x in (box, edge, corner)) >= SIMPLE_MATCH
    assert simplicity(np.full((10, 10), 7.0)) == 0.0
    # Quarters of real photos' signature thumbnails: far from simple.
    pieces = []
    for data, _, _ in photos[:8]:
        t = unpack(layout_signature(photo_image(data)))[2].astype(np.float32)
        h = SIDE // 2
        pieces += [t[:h, :h], t[h:, h:], t[:h, h:]]
    assert max(simplicity(p) for p in pieces) < 0.93, sorted(simplicity(p) for p in pieces)[-3:]
    # A bar cut from a real photo, on white, slanted as a pencil or a pair of
    # tweezers lies in clip art (a probe paired such objects with unrelated
    # pictures: axis-aligned, a 45-degree bar measured 0.53-0.6).
    import cv2
    texture = np.asarray(photo_image(photos[0][0]).convert("L").resize((200, 200)), np.float32)
    canvas = np.full((160, 160), 245.0, np.float32)
    canvas[70:90, 10:150] = texture[50:70, 20:160] * 0.4
    for degrees in (20, 35, 45, 60, 120):
        turned = cv2.warpAffine(canvas, cv2.getRotationMatrix2D((80, 80), degrees, 1.0), (160, 160), borderValue=245)
        assert simplicity(cv2.resize(turned, (26, 26), interpolation=cv2.INTER_AREA)) >= SIMPLE_MATCH, degrees
    # A slanted piece of a real photo is not simple for being slanted.
    piece = unpack(layout_signature(photo_image(photos[1][0])))[2].astype(np.float32)[8:34, 8:34]
    for degrees in (30, 45):
        grown = cv2.copyMakeBorder(piece, 12, 12, 12, 12, cv2.BORDER_CONSTANT, value=245)
        turned = cv2.warpAffine(grown, cv2.getRotationMatrix2D((25, 25), degrees, 1.0), (50, 50), borderValue=245)
        assert simplicity(turned) < 0.93, degrees

    # Three images; pair (0, 1): unrelated pictures whose quarter-frame match of
    # a simple piece agrees at 0.999; pair (0, 2) and (1, 2): look-alikes.
    ev = PairEvidence.empty(3)
    ev.agreement[:] = [0.999, 0.55, 0.52]
    ev.matched_area[:] = [0.237, 1.0, 1.0]
    ev.matched_simplicity[:] = [0.99, 0.8, 0.8]
    a, b, cos = np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([0.52, 0.5, 0.51], np.float32)
    assert uninformative_matches(ev).tolist() == [True, False, False]
    assert verified_pairs(3, a, b, ev.agreement, cos)[0][0]          # without the rule: "the same picture"
    assert not verified_pairs(3, a, b, ev.agreement, cos, uninformative=uninformative_matches(ev))[0].any()
    # The same agreement over more than PARTIAL_AREA of the frame is evidence.
    ev.matched_area[0] = PARTIAL_AREA
    assert verified_pairs(3, a, b, ev.agreement, cos, uninformative=uninformative_matches(ev))[0][0]
    # On under DEEP_PARTIAL_AREA of the frame a fairly simple region is no
    # evidence either (two probes of unseen data: game art and UI screenshots
    # paired unrelated pictures at simplicity 0.93-0.99, area 0.24-0.28),
    # unless keypoints confirm the match; a piece of a photo (0.6-0.89) is.
    ev.matched_area[0], ev.matched_simplicity[0] = 0.237, 0.95
    assert uninformative_matches(ev)[0]
    assert not verified_pairs(3, a, b, ev.agreement, cos, uninformative=uninformative_matches(ev))[0].any()
    ev.keypoint_inliers[0] = MIN_INLIERS
    assert not uninformative_matches(ev)[0]
    ev.keypoint_inliers[0], ev.matched_simplicity[0] = 0, 0.85
    assert not uninformative_matches(ev)[0]
    ev.matched_area[0], ev.matched_simplicity[0] = DEEP_PARTIAL_AREA, 0.95
    assert not uninformative_matches(ev)[0]

    # Nor is it a rival: in crowded data (look-alikes at cosine >= 0.8) a real
    # copy (X, Y) must stand out from X's closest other candidate; a simple
    # piece X shares with Z (agreement 0.999) once vetoed it (a review).
    rng = np.random.default_rng(0)
    rows = [(0, 1, 0.93, 1.0, 0.8, 0.95), (0, 2, 0.999, 0.3, 0.99, 0.86)]
    rows += [(i, j, 0.45 + 0.05 * rng.random(), 1.0, 0.8, 0.82 + 0.03 * rng.random())
             for i in range(8) for j in range(i + 1, 8) if (i, j) not in ((0, 1), (0, 2))]
    a, b, g, area, simple, cos = (np.array(x) for x in zip(*rows))
    ev = PairEvidence.empty(len(a))
    ev.agreement[:], ev.matched_area[:], ev.matched_simplicity[:] = g, area, simple
    same = verified_pairs(8, a, b, ev.agreement, cos.astype(np.float32), uninformative=uninformative_matches(ev))[0]
    assert same[0] and not same[1]


def test_a_partial_negative_of_a_simple_region_needs_keypoints_but_a_photos_does_not(photos):
    """A game's course preview (a pale blob on white) matched a speed gauge's
    arc as its negative on a third of the frame (agreement 0.948,
    simplicity 0.946, no keypoints) and was verified at cosine 0.61. A
    negative copies a whole picture; a partial one of a fairly simple region
    counts only with keypoints. A photo's cropped negative is no simple region."""
    from imagesieve_server.analysis.duplicates.verify import (DEEP_SIMPLE_MATCH, MIN_INLIERS, PARTIAL_AREA,
                                                              PairEvidence, uninformative_matches)
    ev = PairEvidence.empty(3)
    ev.agreement[:] = [0.948, 0.55, 0.52]
    ev.matched_area[:] = [0.327, 1.0, 1.0]
    ev.matched_simplicity[:] = [0.946, 0.8, 0.8]
    ev.inverted[0] = True
    a, b, cos = np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([0.61, 0.5, 0.51], np.float32)
    assert uninformative_matches(ev).tolist() == [True, False, False]
    assert not verified_pairs(3, a, b, ev.agreement, cos, uninformative=uninformative_matches(ev))[0].any()
    ev.inverted[0] = False                                  # upright, above the deep floor: evidence as before
    assert not uninformative_matches(ev)[0]
    ev.inverted[0], ev.keypoint_inliers[0] = True, MIN_INLIERS      # keypoints confirm it
    assert not uninformative_matches(ev)[0]
    ev.keypoint_inliers[0], ev.matched_area[0] = 0, PARTIAL_AREA    # half the frame or more
    assert not uninformative_matches(ev)[0]
    # Real photos: the negative of a 55% crop aligns, inverted, on a region far from simple.
    for data, _, _ in photos[:4]:
        im = photo_image(data)
        w, h = im.size
        crop = ImageOps.invert(im.convert("RGB").crop((0, 0, int(w * 0.74), int(h * 0.74))))
        al = pair_alignment(layout_signature(im), layout_signature(crop))
        assert al[6] and al[3] < PARTIAL_AREA + 0.1 and al[7] < DEEP_SIMPLE_MATCH, al
        ev = PairEvidence.empty(1)
        ev.agreement[0], ev.matched_area[0], ev.inverted[0], ev.matched_simplicity[0] = al[0], al[3], al[6], al[7]
        assert not uninformative_matches(ev)[0]


def test_two_slanted_tools_on_white_are_no_evidence_but_a_copy_of_one_is(photos):
    """Two different thin objects on a plain ground, slanted alike (a hammer
    and a wrench of an artwork package, area 0.62), align by their
    silhouettes' common axis at agreement ~0.92 over a simple region, more
    than half the frame: too much to be a partial match, too little for a
    copy of a simple region (SIMPLE_AGREEMENT). A cropped, shrunk copy of
    either still counts."""
    import cv2

    from imagesieve_server.analysis.duplicates.verify import SIMPLE_MATCH, PairEvidence, uninformative_matches

    texture = np.asarray(photo_image(photos[0][0]).resize((400, 400)))

    def tool(head: str) -> Image.Image:
        canvas = np.full((256, 256, 3), 250, np.uint8)
        canvas[123:133, 38:217] = texture[100:110, 50:229] // 2                   # the handle
        if head == "hammer":
            canvas[100:156, 195:217] = texture[200:256, 100:122] // 2             # a bar across
        else:
            cv2.circle(canvas, (207, 128), 18, tuple(int(v) for v in texture[300, 300] // 2), 6)   # a ring
        turn = cv2.getRotationMatrix2D((128, 128), 45, 1.0)
        return Image.fromarray(cv2.warpAffine(canvas, turn, (256, 256), borderValue=(250, 250, 250)))

    hammer, wrench = tool("hammer"), tool("wrench")
    pairs = [(hammer, wrench), (wrench, wrench.resize((200, 200)).crop((10, 10, 190, 190)))]
    ev = PairEvidence.empty(len(pairs))
    for k, (x, y) in enumerate(pairs):
        found = pair_alignment(layout_signature(x), layout_signature(y))
        ev.agreement[k], ev.matched_area[k], ev.matched_simplicity[k] = found[0], found[3], found[7]
    assert ev.matched_simplicity.min() >= SIMPLE_MATCH and ev.matched_area.min() >= 0.5, ev
    assert uninformative_matches(ev).tolist() == [True, False], ev.agreement

def test_turned_and_upside_down_copies_are_found_in_crowded_data(embedder, digits, tmp_path, monkeypatch):
    """The embedding is not turn-invariant: among 250 handwritten digits, a
    digit turned by a quarter ranks far outside its copy's 16 nearest (here
    up to 338th), so neither stage 1's neighbours nor the upright coarse
    layouts proposed it. The coarse layouts are now also compared turned and
    upside down (find.layout_turns), in the batch search and in a streaming
    check, and stage 2 verifies the turn."""
    from imagesieve_server.analysis.duplicates.find import CANDIDATE_K
    from imagesieve_server.collections import Collection, NewImage, Verdict

    x = digits[0][:250]
    ims = [digit_image(a, 64, Image.BILINEAR) for a in x]
    blobs = [encode(im, "PNG") for im in ims]
    picked = list(range(0, 40, 5))
    copies = ([encode(ims[i].rotate(90, expand=True), "PNG") for i in picked]
              + [encode(ImageOps.flip(ims[i]), "PNG") for i in picked])
    sources = picked + picked
    vectors, sigs = _embed(embedder, blobs + copies)
    n = len(blobs) + len(copies)
    sims = vectors @ vectors.T
    ranks = [int((sims[250 + j] > sims[250 + j, i]).sum()) - 1 for j, i in enumerate(sources)]
    assert sum(r >= CANDIDATE_K for r in ranks[:len(picked)]) >= 4, ranks     # the embedding misses them
    import imagesieve_server.analysis.duplicates.find as find_module

    def found_pairs():
        rep = find_duplicates(vectors, [str(i) for i in range(n)], [""] * n, [""] * n,
                              [hashlib.sha256(b).hexdigest() for b in blobs + copies], signatures=sigs)
        return set(zip(rep.a.tolist(), rep.b.tolist()))

    found = found_pairs()
    assert all((i, 250 + j) in found for j, i in enumerate(sources)), [
        (i, ranks[j]) for j, i in enumerate(sources) if (i, 250 + j) not in found]
    source_of = {i: i for i in range(250)} | {250 + j: i for j, i in enumerate(sources)}
    # A copy pairs with its own, or with a digit its original pairs with too.
    strays = [(a, b) for a, b in found if b >= 250 and source_of[a] != source_of[b]
              and tuple(sorted((source_of[a], source_of[b]))) not in found]
    assert not strays, strays
    # Upright layouts alone: the far-ranked turned copies are lost, and the
    # pairs of distinct digits (handwriting that alike, 8x8 upscaled) are the same.
    monkeypatch.setattr(find_module, "_turned_knn_chunks", lambda coarse, k: find_module.knn_chunks(coarse, k))
    upright = found_pairs()
    assert {(a, b) for a, b in found if b < 250} == {(a, b) for a, b in upright if b < 250}
    assert sum((sources[j], 250 + j) not in upright for j in range(len(picked))) >= 2
    monkeypatch.undo()

    coll = Collection.create(tmp_path / "digits", "digits", vectors.shape[1], "mobilenet_v1")
    coll.add([NewImage(f"d{i}", hashlib.sha256(blobs[i]).hexdigest(), vectors[i], signature=sigs[i])
              for i in range(250)])
    far = [j for j in range(len(picked)) if ranks[j] >= CANDIDATE_K]
    for j in far:
        out = coll.check(NewImage(f"turned{j}", hashlib.sha256(copies[j]).hexdigest(), vectors[250 + j],
                                  signature=sigs[250 + j]))
        assert out.verdict == Verdict.NEAR_DUPLICATE and out.neighbors[0].key == f"d{sources[j]}", (
            j, [(m.key, m.cosine, m.verified) for m in out.neighbors])


def test_a_search_of_a_collection_dropped_meanwhile_stops_aborted(embedder, photos, tmp_path):
    """A verified FindDuplicates on a collection dropped 3 s in ran 43 s
    more and answered OK, for a name that by then held another collection
    (a tenth probe). The job now stops ABORTED at its next progress report."""
    import asyncio

    from imagesieve.v1 import duplicates_pb2
    from imagesieve_server.collections import Collection, CollectionError, NewImage
    from imagesieve_server.jobs.find_duplicates import find_duplicates_events

    originals = [photo_image(d) for d, _, _ in photos]
    blobs = [encode(im, "JPEG", quality=92) for im in originals]
    blobs += [encode(ImageOps.mirror(im).resize((im.width // 2, im.height // 2)), "JPEG") for im in originals]
    v, s = _embed(embedder, blobs)
    coll = Collection.create(tmp_path / "c", "c", v.shape[1], "mobilenet_v1")
    coll.add([NewImage(f"i{k}", hashlib.sha256(b).hexdigest(), v[k], signature=s[k]) for k, b in enumerate(blobs)])

    # Every image's 39 others as candidates: the verification (seconds) comes after the
    # candidates are reported, and the collection is closed as soon as they are.
    request = duplicates_pb2.FindDuplicatesRequest(collection="c", knn_k=len(blobs) - 1)

    async def search(drop: bool):
        got = []
        async for event in find_duplicates_events(coll, request):
            got.append(event)
            if drop and event.HasField("progress") and event.progress.stage == "candidates":
                await asyncio.to_thread(coll.close)
        return got

    assert any(e.HasField("result") for e in asyncio.run(search(False)))
    with pytest.raises(CollectionError) as e:
        asyncio.run(search(True))
    assert e.value.code == "ABORTED" and "dropped or closed" in str(e.value)


def _deck(photos) -> list:
    """A deck of 32 cards in one template: a bordered white card, the rank in two
    corners and its pips (2-7 and 10 in four suits: a disc, a diamond, a square
    and a triangle, red or black), and four kings whose faces are real photos."""
    from PIL import ImageFont
    font = ImageFont.load_default(size=28)
    spots = {2: [(0, -1), (0, 1)], 3: [(0, -1), (0, 0), (0, 1)], 4: [(-1, -1), (1, -1), (-1, 1), (1, 1)]}
    spots[5] = spots[4] + [(0, 0)]
    spots[6] = spots[4] + [(-1, 0), (1, 0)]
    spots[7] = spots[6] + [(0, -0.5)]
    spots[8] = spots[7] + [(0, 0.5)]
    spots[9] = spots[4] + [(-1, -1 / 3), (1, -1 / 3), (-1, 1 / 3), (1, 1 / 3), (0, 0)]
    spots[10] = spots[9][:-1] + [(0, -2 / 3), (0, 2 / 3)]
    suits = [("disc", (200, 20, 20)), ("diamond", (200, 20, 20)), ("square", (20, 20, 20)), ("triangle", (20, 20, 20))]
    cards = []
    for s, (shape, colour) in enumerate(suits):
        for rank in [2, 3, 4, 5, 6, 7, 10, "K"]:
            card = Image.new("RGB", (240, 336), (250, 250, 246))
            d = ImageDraw.Draw(card)
            d.rounded_rectangle((6, 6, 233, 329), radius=14, outline=(40, 40, 90), width=4)
            for x, y in ((16, 12), (196, 290)):
                d.text((x, y), str(rank), fill=colour, font=font)
            if rank == "K":
                face = photo_image(photos[s][0]).resize((150, 220))
                card.paste(face, (45, 58))
            else:
                for px, py in spots[rank]:
                    cx, cy, r = 120 + px * 50, 168 + py * 105, 17
                    box = (cx - r, cy - r, cx + r, cy + r)
                    if shape == "disc":
                        d.ellipse(box, fill=colour)
                    elif shape == "square":
                        d.rectangle(box, fill=colour)
                    elif shape == "diamond":
                        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
                    else:
                        d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
            cards.append(card)
    return cards


def test_cards_of_one_deck_are_not_each_others_copies_but_their_copies_are(embedder, photos):
    """A probe's 342 playing cards and board-game tiles (14 decks): 122 pairs of
    different cards (4 and 5 of clubs: one pip apart) passed verification, as
    the median look-alike (other decks) is far and the embeddings of two cards
    of one deck are closer than a copy's. A copy stands out from its images'
    nearer look-alikes too (verify.SIBLING_RATIO); copies of kinds the rule
    was not chosen on are still found."""
    from imagesieve_server.analysis.duplicates import verify
    cards = _deck(photos)
    kinds = [lambda im: im.resize((180, 252)).convert("P", palette=Image.ADAPTIVE, colors=32).convert("RGB"),
             lambda im: ImageOps.expand(im, border=30, fill=(30, 110, 40)),            # dealt on felt
             lambda im: im.filter(ImageFilter.GaussianBlur(1.5)),
             lambda im: ImageEnhance.Contrast(im).enhance(0.6),
             lambda im: im.rotate(4, expand=True, fillcolor=(255, 255, 255))]
    planted = [1, 9, 14, 20, 27, 7]
    blobs = [encode(c, "PNG") for c in cards] + [encode(kinds[j % len(kinds)](cards[i]), "JPEG")
                                                 for j, i in enumerate(planted)]
    v, s = _embed(embedder, blobs)
    n = len(blobs)
    source = np.r_[np.arange(len(cards)), planted]
    sha = [hashlib.sha256(b).hexdigest() for b in blobs]

    def verdicts(ratio):
        old = verify.SIBLING_RATIO
        verify.SIBLING_RATIO = ratio
        try:
            rep = find_duplicates(v, [str(i) for i in range(n)], [""] * n, [""] * n, sha, signatures=s)
        finally:
            verify.SIBLING_RATIO = old
        false = int(np.sum(source[rep.a] != source[rep.b]))
        found = {(int(a), int(b)) for a, b in zip(rep.a, rep.b)}
        recall = np.mean([(i, len(cards) + j) in found for j, i in enumerate(planted)])
        return false, recall

    before, before_recall = verdicts(None)
    after, recall = verdicts(verify.SIBLING_RATIO)
    assert before >= 20 and before_recall == 1.0, (before, before_recall)    # the problem: cards pair up
    assert after <= 0.7 * before and recall == 1.0, (before, after, recall)


def test_corner_crops_are_found_though_few_keypoints_survive(embedder, photos, tmp_path):
    """A 60% crop from a photo's corner keeps few of the photo's strongest
    keypoints: 8 of these 20 matched 3 or fewer (centre crops: 1 of 20). A
    rule that asked a partial match for keypoints above chance (fewer than 4
    inliers: judged by the embedding alone) removed 5 false pairs of two
    probes and one of the benchmark's, and lost 7 of these 19 corner crops
    in a streaming check: reverted (docs/verified-duplicates.md, "Stars and
    screens"). Batch and streaming both find them by their layouts."""
    from imagesieve_server.collections import Collection, NewImage, Verdict
    from imagesieve_server.engine.keypoints import matched_inliers
    from imagesieve_server.engine.signature import keypoints

    originals = [photo_image(d) for d, _, _ in photos]
    corners = [im.crop((0, 0, int(im.width * 0.6), int(im.height * 0.6))) for im in originals]
    run = _copies_of_the_first(embedder, originals, corners)
    n = len(originals)
    s, v, sha = run.signatures, run.vectors, [hashlib.sha256(b).hexdigest() for b in run.blobs]
    inliers = [matched_inliers(keypoints(s[i]), keypoints(s[n + i])) for i in range(n)]
    assert sum(k < 4 for k in inliers) >= 5, inliers
    assert sum(run.found) >= n - 1, run.found
    assert not run.false, run.false

    coll = Collection.create(tmp_path / "c", "c", v.shape[1], "mobilenet_v1")
    coll.add([NewImage(f"p{i}", sha[i], v[i], signature=s[i]) for i in range(n)])
    caught = 0
    for i in range(n):
        r = coll.check(NewImage(f"crop{i}", sha[n + i], v[n + i], signature=s[n + i]), k=5)
        verified = [x.key for x in r.neighbors if x.verified]
        assert verified in ([], [f"p{i}"]), (i, verified)                 # never another photo
        caught += r.verdict == Verdict.NEAR_DUPLICATE
    coll.close()
    assert caught >= n - 1, caught


def test_partial_matches_must_hold_where_they_were_found(embedder, photos):
    """A match on part of a frame holds when the larger picture, cut to
    where the smaller one fits, comes closer to it by embedding (a crop is
    that region; another picture whose layout fits there by chance is not):
    analysis.duplicates.region. 60% corner crops of the 20 photos, each
    judged against its own photo and against the next photo as if stage 2
    had accepted both: every own photo holds, other photos do not."""
    from imagesieve_server.analysis.duplicates import region
    from imagesieve_server.analysis.duplicates.verify import verify_pairs

    originals = [photo_image(d) for d, _, _ in photos]
    corners = [im.crop((0, 0, int(im.width * 0.6), int(im.height * 0.6))) for im in originals]
    blobs = ([encode(im, "JPEG", quality=92) for im in originals]
             + [encode(c, "JPEG", quality=90) for c in corners])
    v, s = _embed(embedder, blobs)
    n = len(originals)
    a = np.r_[np.arange(n), np.arange(n)]
    b = np.r_[n + np.arange(n), n + (np.arange(n) + 1) % n]          # its own crop, then the next photo's
    own = np.arange(2 * n) < n
    ev = verify_pairs(s, a, b, processes=False)
    accepted = np.ones(2 * n, bool)
    tested = region.tested_pairs(accepted, ev)
    # Crops that kept 8 keypoints or more are confirmed by them: not tested (7 of 20 are).
    assert tested[own].sum() >= 5 and tested[~own].sum() >= 10, (tested[own].sum(), tested[~own].sum())
    kept = region.confirmed(s, a, b, accepted, ev, region.image_cosines(lambda: embedder, blobs.__getitem__))
    assert kept[own].all(), np.flatnonzero(~kept[own])
    assert (~kept[~own & tested]).sum() >= tested[~own].sum() - 1, kept[~own & tested]
    assert kept[~tested].all()                                       # untested pairs keep their verdict
    # Parts that cannot be embedded (a file changed or gone): the verdicts stand.
    lost = region.confirmed(s, a, b, accepted, ev, lambda requests, report=None: np.full((len(requests), 2), np.nan))
    assert lost.all()


def test_a_sheet_partly_matched_by_many_pictures_is_decoded_once(embedder, photos, monkeypatch):
    """A collage (a sprite sheet, a contact sheet) is the larger picture of
    every pair its parts are in: region.image_cosines reads and decodes it
    once for all of them, and each smaller picture once however many pairs
    it is in, with the cosines each pair gets alone."""
    from imagesieve_server.analysis.duplicates import region

    pics = [photo_image(d).resize((160, 120)) for d, _, _ in photos[:4]]
    sheet = Image.new("RGB", (320, 240))
    for k, im in enumerate(pics):
        sheet.paste(im, ((k % 2) * 160, (k // 2) * 120))
    blobs = [encode(sheet, "PNG")] + [encode(im, "PNG") for im in pics]
    boxes = [((k % 2) * 0.5, (k // 2) * 0.5, (k % 2) * 0.5 + 0.5, (k // 2) * 0.5 + 0.5) for k in range(4)]
    # each picture against its own quarter and against the next one's
    requests = ([(1 + k, 0, boxes[k], False, None) for k in range(4)]
                + [(1 + k, 0, boxes[(k + 1) % 4], False, None) for k in range(4)])
    reads = []

    def read(i):
        reads.append(i)
        return blobs[i]

    together = region.image_cosines(lambda: embedder, read)(requests)
    assert sorted(reads) == [0, 1, 2, 3, 4], reads
    alone = np.concatenate([region.image_cosines(lambda: embedder, blobs.__getitem__)([r]) for r in requests])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # Regions cut from one decode are bounded (many large boxes of one sheet): 8 pairs, 3 a decode.
    monkeypatch.setattr(region, "PARTS_PER_DECODE", 3)
    reads.clear()
    np.testing.assert_allclose(region.image_cosines(lambda: embedder, read)(requests), alone, atol=1e-5)
    assert reads.count(0) == 3 and sorted(set(reads)) == [0, 1, 2, 3, 4], reads
    own, other = together[:4], together[4:]
    assert (own[:, 1] > 0.9).all() and (other[:, 1] < own[:, 1]).all(), together
    assert region.region_holds(own[:, 0], own[:, 1]).all()


def test_a_sheared_band_is_compared_where_it_fits(embedder, photos):
    """The shear search matches a band of one picture, sheared, on the
    other: region.shear_placement finds that band again and the region test
    cuts the same band from the pixels (region.sheared_band), so a sheared
    copy comes far closer there than as a whole (0.85-0.94 -> >= 0.99 on
    these photos) and its verdict holds."""
    from imagesieve_server.analysis.duplicates import region
    from imagesieve_server.analysis.duplicates.verify import pair_alignment

    for data, _, name in photos[:6]:
        im = photo_image(data)
        w, h = im.size
        k = 0.3                      # each column moved down by 0.3 x its offset from the centre (a ShearY)
        copy = im.transform((w, h), Image.Transform.AFFINE, (1, 0, 0, -k, 1, k * w / 2), Image.BILINEAR)
        blobs = [encode(im, "JPEG", quality=92), encode(copy, "JPEG", quality=90)]
        _, s = _embed(embedder, blobs)
        area = pair_alignment(s[0], s[1])[3]
        found = region.shear_placement(s[0], s[1], area)
        assert found is not None and found[2] == (0, pytest.approx(0.3)), (name, found)
        searched, box, shear, _ = found
        whole, part = region.image_cosines(lambda: embedder, blobs.__getitem__)(
            [(1 - searched, searched, box, False, shear)])[0]
        assert part >= 0.98 and region.region_holds([whole], [part]).all(), (name, whole, part)


def test_altered_crops_hold_where_they_were_found(embedder, photos):
    """A crop that was also blurred, turned gray or shrunk comes less close to
    its region than a plain crop: compared at one resolution and in gray when
    the crop is gray, with a small margin (region.REGION_GAIN), every such
    copy of the 20 photos that is tested holds (a review: blurred, gray and
    48-px corner crops lost 1-2 true pairs of 20 each at a margin of 0.2)."""
    from imagesieve_server.analysis.duplicates import region
    from imagesieve_server.analysis.duplicates.verify import verify_pairs

    originals = [photo_image(d) for d, _, _ in photos]
    n = len(originals)
    kinds = {
        "blurred": lambda c: c.filter(ImageFilter.GaussianBlur(3)),
        "gray": lambda c: ImageOps.grayscale(c).convert("RGB"),
        "48 px": lambda c: c.resize((48, round(48 * c.height / c.width)), Image.BOX),
    }
    tested_in_all = 0
    for kind, alter in kinds.items():
        crops = [alter(im.crop((0, 0, int(im.width * 0.55), int(im.height * 0.55)))) for im in originals]
        blobs = [encode(im, "JPEG", quality=92) for im in originals] + [encode(c, "JPEG", quality=90) for c in crops]
        _, s = _embed(embedder, blobs)
        a, b = np.arange(n), n + np.arange(n)
        ev = verify_pairs(s, a, b, processes=False)
        accepted = np.ones(n, bool)
        tested = region.tested_pairs(accepted, ev)
        kept = region.confirmed(s, a, b, accepted, ev, region.image_cosines(lambda: embedder, blobs.__getitem__))
        assert kept.all(), (kind, np.flatnonzero(~kept))
        tested_in_all += int(tested.sum())
    assert tested_in_all >= 15, tested_in_all


def test_plain_colours_pair_only_where_the_embedding_sees_one_colour(embedder, photos):
    """Two plain images have no layout: their signatures' blank thumbnails
    matched whenever their gray levels were within 8, so a brown and a dusty
    pink square (game textures, gray 99 and 96) were verified the same
    picture at agreement 1. A blank thumbnail now counts as a profile: its
    agreement says nothing, and only the embedding, which sees the colour
    (cosine 1.000 for a re-encoded copy, 0.87 brown against pink), may pair it."""
    colours = [(148, 87, 20), (142, 76, 77), (128, 100, 90), (104, 98, 96), (40, 200, 40), (200, 40, 40)]
    blobs = [encode(Image.new("RGB", (256, 256), c), "JPEG", quality=90) for c in colours]
    blobs += [encode(Image.new("RGB", (200, 120), c), "PNG") for c in colours[:2]]      # copies of 0 and 1
    originals = [photo_image(d) for d, _, _ in photos[:6]]
    blobs += [encode(im, "JPEG", quality=92) for im in originals]
    blobs += [encode(originals[0].resize((300, 225)), "JPEG", quality=70)]              # a copy of a photo
    vectors, sigs = _embed(embedder, blobs)
    assert one_dimensional(sigs[:8]).all() and not one_dimensional(sigs[8:]).any()
    rep = find_duplicates(vectors, [str(i) for i in range(len(blobs))], [""] * len(blobs), [""] * len(blobs),
                          [hashlib.sha256(b).hexdigest() for b in blobs], signatures=sigs)
    found = {(int(x), int(y)) for x, y in zip(rep.a, rep.b)}
    assert found == {(0, 6), (1, 7), (8, 14)}, found


def _edge_band(top: bool, colour, size=(128, 256)) -> Image.Image:
    im = Image.new("RGB", size, (0, 0, 0))
    y = 4 if top else size[1] - 14
    ImageDraw.Draw(im).rectangle((0, y, size[0], y + 8), fill=colour)
    return im


def test_a_picture_that_lies_in_its_margin_is_aligned_whole():
    """A black texture with one thin band along its bottom edge (a game's
    jet panel) and its resized JPEG copy, at cosine 0.9995: the alignment
    searches templates cut from each view's inner part, all flat here, so
    nothing aligned (agreement -1) and the copy was lost. Where every
    template is flat, the whole frames are now compared."""
    original = _edge_band(False, (167, 134, 8))
    sig = layout_signature(original)
    copy = layout_signature(Image.open(io.BytesIO(encode(original.resize((96, 192)), "JPEG", quality=80))))
    other = layout_signature(_edge_band(True, (40, 90, 200)))
    assert pair_alignment(sig, copy)[0] > 0.95
    assert pair_alignment(sig, other)[0] < 0.6
    # ...and such a match is no evidence by itself (the embedding decides, as for a
    # profile): two plain squares of different colours with rounded transparent corners
    # agree there at 0.999 (a probe's copies of a pink and a black texture).
    def rounded(colour):
        im = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
        ImageDraw.Draw(im).rounded_rectangle((0, 0, 255, 255), radius=24, fill=colour + (255,))
        return layout_signature(im)
    squares = np.stack([rounded((230, 150, 160)), rounded((20, 20, 20)), sig, copy])
    assert one_dimensional(squares).all()
    found = pair_alignment(squares[0], squares[1])
    assert found[0] > 0.95 and found[9]                  # aligned, and judged as a profile's



def test_an_image_with_few_candidates_is_not_held_to_crowded_look_alikes(embedder, photos, monkeypatch):
    """An image with too few candidates to measure its own look-alikes was
    judged against the data set's median pack; beside smooth abstract
    pictures (look-alikes at cosine ~0.9) that median was theirs. The 20
    ImageNet photos with two copies each (kinds of the probe sets) and 120
    smooth pictures beside them: 1-2 copies that held alone were lost in
    each of 3 runs, a 21:9 crop among them at relative disagreement 0.526
    (agreement 0.916, cosine 0.625, against a median pack of ~0.66 / 0.82). An image whose search found fewer candidates than it
    asked for has its other neighbours below the candidates' floor: its
    look-alikes' cosine is now at most that (0.186 in that run)."""
    crowd = np.arange(3, 8)
    ca, cb = np.array([(i, j) for i in crowd for j in crowd if i < j]).T
    a, b = np.r_[0, 0, ca], np.r_[1, 2, cb]
    g = np.r_[0.916, 0.998, np.full(len(ca), 0.66)]
    c = np.r_[0.625, 0.903, np.full(len(ca), 0.82)]
    before, rel_before = verified_pairs(8, a, b, g, c)
    sparse = np.r_[np.full(3, 0.5), np.full(5, np.nan)].astype(np.float32)
    after, rel_after = verified_pairs(8, a, b, g, c, sparse_cosine=sparse)
    assert rel_before[0] > 2 * MAX_RELATIVE and not before[0]
    assert rel_after[0] < 0.8 * MAX_RELATIVE and after[0] and after[1]
    assert not after[2:].any() and np.allclose(rel_after[2:], rel_before[2:])     # the crowd as before
    # find_duplicates bounds the images whose search came back short (the distinct photos; one
    # that the copies' own searches name may count 16 pairs: left unbounded, the safe side),
    # never a photo with 17 copies or the copies themselves (each has 16 others at the floor).
    import imagesieve_server.analysis.duplicates.find as find_module
    originals = [photo_image(d) for d, _, _ in photos]
    blobs = [encode(im, "JPEG", quality=92) for im in originals]
    blobs += [encode(originals[0].resize((300 - 5 * k, 225 - 4 * k)), "JPEG", quality=60 + k) for k in range(17)]
    vectors, sigs = _embed(embedder, blobs)
    seen = {}
    real = find_module.verified_pairs
    monkeypatch.setattr(find_module, "verified_pairs",
                        lambda *args, **kw: (seen.update(kw), real(*args, **kw))[1])
    n = len(blobs)
    find_duplicates(vectors, [str(i) for i in range(n)], [""] * n, [""] * n,
                    [hashlib.sha256(b).hexdigest() for b in blobs], signatures=sigs)
    bounded = np.isfinite(seen["sparse_cosine"])
    assert bounded[1:20].sum() >= 15 and not bounded[0] and not bounded[20:].any()
    assert np.all(seen["sparse_cosine"][bounded] == CANDIDATE_THRESHOLD)


def test_a_check_aligns_without_the_collections_lock_and_adds_atomically(embedder, photos, tmp_path, monkeypatch):
    """A check's alignments (tens of ms an image) ran under the collection's
    lock, so every other call of the collection, and the shared threads
    they waited in, waited for them (a twenty-fourth probe). They now run
    without it, and stats take no lock at all; an add_if_unique whose
    collection changed meanwhile is judged again holding the lock, so two
    copies checked at once cannot both be added."""
    from imagesieve_server.analysis.duplicates import verify
    from imagesieve_server.collections import Collection, NewImage, Verdict
    blobs = [d for d, _, _ in photos[:6]]
    crop = encode(UNSEEN_KINDS["crop_60"](photo_image(blobs[2])), "JPEG", quality=90)
    v, s = _embed(embedder, blobs + [crop])
    sha = [hashlib.sha256(b).hexdigest() for b in blobs + [crop]]
    coll = Collection.create(tmp_path / "c", "c", v.shape[1], "mobilenet_v1")
    coll.add([NewImage(f"p{i}", sha[i], v[i], signature=s[i]) for i in (0, 1, 3, 4, 5)])
    held = []
    real = verify.verify_pairs

    def spy(sig, a, b, **kw):
        held.append(coll._lock._is_owned())
        return real(sig, a, b, **kw)
    monkeypatch.setattr(verify, "verify_pairs", spy)
    query = NewImage("crop", sha[-1], v[-1], signature=s[-1])
    # add_if_unique: its original (p2) added between the first judgement (unique: no
    # candidate) and the add sends the check back to be judged again under the lock.
    first_judge, added_meanwhile = coll._judge, []

    def judge_then_race(*args):
        out = first_judge(*args)
        if not added_meanwhile:
            added_meanwhile.append(coll.add([NewImage("p2", sha[2], v[2], signature=s[2])])[0].added)
        return out
    monkeypatch.setattr(coll, "_judge", judge_then_race)
    out = coll.check(query, add_if_unique=True)
    assert added_meanwhile == [True]
    assert out.verdict == Verdict.NEAR_DUPLICATE and not out.added and out.neighbors[0].key == "p2"
    assert held == [True]                   # aligned once: judged again, holding the lock
    # A plain check aligns without it.
    monkeypatch.setattr(coll, "_judge", first_judge)
    held.clear()
    assert coll.check(query).verdict == Verdict.NEAR_DUPLICATE
    assert held == [False]
    # Stats while another thread holds the lock: answered at once.
    taken, release = threading.Event(), threading.Event()

    def hold():
        with coll._lock:
            taken.set()
            release.wait(30)
    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(10)
    answered = []
    stats = threading.Thread(target=lambda: answered.append(coll.info().num_images))
    stats.start()
    stats.join(5)
    release.set()
    holder.join()
    assert answered == [6]
    coll.close()


def test_near_misses_are_the_rejected_candidates_that_came_closest(embedder, photos):
    """Where a person looks for a copy that was not found: a stranger's
    redacted screenshot (65 keypoints) was rejected and appeared in no output.
    The rejected candidates some evidence spoke for (as close as look-alikes
    or closer, or MIN_INLIERS keypoints) are listed, closest first, with
    their evidence; embossed and contour copies of photos (kinds stage 2
    does not reach) are among them."""
    from imagesieve_server.analysis.duplicates.find import NEAR_MISS_RELATIVE
    from imagesieve_server.analysis.duplicates.verify import MIN_INLIERS
    blobs = [d for d, _, _ in photos]
    originals = len(blobs)
    filters = (ImageFilter.EMBOSS, ImageFilter.CONTOUR)
    source = list(range(originals)) + [i for i in range(8)]
    blobs += [encode(photo_image(blobs[i]).filter(filters[i // 4]), "JPEG", quality=90) for i in range(8)]
    v, s = _embed(embedder, blobs)
    n = len(blobs)
    rep = find_duplicates(v, [str(i) for i in range(n)], [""] * n, [""] * n,
                          [hashlib.sha256(b).hexdigest() for b in blobs], signatures=s)
    m = rep.near_misses
    pairs = set(zip(m.a.tolist(), m.b.tolist()))
    assert len(pairs) == len(m.a) > 0 and all(x < y for x, y in pairs)
    assert not pairs & set(zip(rep.a.tolist(), rep.b.tolist()))
    grouped = {i: g for g, members in enumerate(rep.groups) for i in members.tolist()}
    assert not [p for p in pairs if p[0] in grouped and grouped[p[0]] == grouped.get(p[1])]   # found via a third
    rel = np.nan_to_num(m.relative, nan=np.inf)
    assert np.all(np.diff(rel) >= 0)
    assert np.all((m.relative <= NEAR_MISS_RELATIVE) | (m.evidence.keypoint_inliers >= MIN_INLIERS))
    missed = [(source[c], c) for c in range(originals, n) if (source[c], c) not in set(zip(rep.a.tolist(),
                                                                                          rep.b.tolist()))]
    assert len([p for p in missed if p in pairs]) >= 3, (missed, pairs)
    # Raw cosine has no stage 2 to miss anything.
    assert find_duplicates(v, [str(i) for i in range(n)], [""] * n, [""] * n,
                           [hashlib.sha256(b).hexdigest() for b in blobs]).near_misses is None


def test_a_check_judged_again_aligns_only_the_candidates_it_has_not_aligned(embedder, photos, tmp_path,
                                                                            monkeypatch):
    """Under many concurrent adds nearly every add_if_unique is judged again
    under the lock, and every candidate was aligned a second time there
    (bench/soak.py, 64 clients: checks of two images, p50 21 s). An
    alignment depends on its two signatures alone, so the second judgement
    aligns only the candidates the first did not; its answer is a fresh
    judgement's."""
    from imagesieve_server.analysis.duplicates import verify
    from imagesieve_server.collections import Collection, NewImage, Verdict
    blobs = [d for d, _, _ in photos]
    crop = encode(UNSEEN_KINDS["crop_60"](photo_image(blobs[2])), "JPEG", quality=90)
    v, s = _embed(embedder, blobs + [crop])
    sha = [hashlib.sha256(b).hexdigest() for b in blobs + [crop]]
    coll = Collection.create(tmp_path / "c", "c", v.shape[1], "mobilenet_v1")
    coll.add([NewImage(f"p{i}", sha[i], v[i], signature=s[i]) for i in range(len(blobs)) if i != 2])
    aligned = []
    real = verify.verify_pairs
    monkeypatch.setattr(verify, "verify_pairs",
                        lambda sig, a, b, **kw: (aligned.append(len(a)), real(sig, a, b, **kw))[1])
    query = NewImage("crop", sha[-1], v[-1], signature=s[-1])
    first_judge = coll._judge

    def judge_then_race(*args):
        out = first_judge(*args)
        if len(aligned) == 1:       # its original added between the first judgement and the add
            coll.add([NewImage("p2", sha[2], v[2], signature=s[2])])
        return out
    monkeypatch.setattr(coll, "_judge", judge_then_race)
    out = coll.check(query, add_if_unique=True)
    assert len(aligned) == 2 and aligned[0] >= 1 and aligned[1] == 1     # the second: p2 alone
    assert out.verdict == Verdict.NEAR_DUPLICATE and not out.added and out.neighbors[0].key == "p2"
    fresh_verdict, fresh, _ = first_judge(query, 5, 0.0, True)
    assert fresh_verdict == out.verdict
    evidence = lambda ns: [(n.key, n.cosine, n.verified, n.agreement, n.keypoint_inliers, n.matched_blur_px)  # noqa: E731
                           for n in ns]
    assert evidence(out.neighbors) == evidence(fresh[:len(out.neighbors)])
    coll.close()


def test_a_pair_only_the_layouts_proposed_needs_keypoints_when_its_match_is_a_simple_region(photos):
    """A game's light ring button (a gray disk once trimmed) and a black
    scalloped flag field, two round blobs, agreed at 0.952 over the whole
    frame (simplicity 0.979, no keypoints) at cosine 0.37: only the layouts
    proposed them, below the embedding's candidate floor, so their
    silhouettes were all the evidence, and they were verified. Such a match
    of a simple region now counts only with keypoints; the same match
    among the embedding's candidates, or with keypoints, is evidence as
    before, and a blurred photo's is no simple region."""
    from imagesieve_server.analysis.duplicates.verify import (MIN_INLIERS, SIMPLE_MATCH, PairEvidence,
                                                              uninformative_matches)
    ev = PairEvidence.empty(2)
    ev.agreement[:] = [0.952, 0.55]
    ev.matched_area[:] = [1.0, 1.0]
    ev.matched_simplicity[:] = [0.979, 0.8]
    a, b, cos = np.array([0, 0]), np.array([1, 2]), np.array([0.37, 0.5], np.float32)
    layout_only = np.array([True, False])
    unproposed = layout_only & (cos < CANDIDATE_THRESHOLD)
    assert verified_pairs(3, a, b, ev.agreement, cos, layout_only=layout_only,
                          uninformative=uninformative_matches(ev))[0].tolist() == [True, False]
    assert uninformative_matches(ev, unproposed).tolist() == [True, False]
    assert not verified_pairs(3, a, b, ev.agreement, cos, layout_only=layout_only,
                              uninformative=uninformative_matches(ev, unproposed))[0].any()
    assert not uninformative_matches(ev, np.array([False, False]))[0]       # at the floor or above: as before
    ev.keypoint_inliers[0] = MIN_INLIERS
    assert not uninformative_matches(ev, unproposed)[0]                     # keypoints confirm it
    # Real photos blurred by 2% of their width (found by layouts alone, cosine 0.22-0.56): no simple region.
    for data, _, _ in photos[:6]:
        im = photo_image(data)
        al = pair_alignment(layout_signature(im), layout_signature(im.filter(ImageFilter.GaussianBlur(im.width * 0.02))))
        assert al[7] < SIMPLE_MATCH, al
