"""The image-property check as a pure function, on properties measured from
real images by the engine (``engine.properties``): thresholds that come from
the data, not one fixed rule for every data set."""
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from conftest import digit_image, photo_image
from imagesieve_server.checks import CHECKS
from imagesieve_server.checks.base import CheckInputs
from imagesieve_server.checks.image_properties import Params, from_inputs, run
from imagesieve_server.engine.properties import COUNT, NAMES, image_properties


def measure(images):
    return (np.stack([image_properties(im) for im in images]),
            np.array([im.size for im in images], np.int32))


def test_properties_follow_what_was_done_to_a_photo(photos):
    im = photo_image(photos[0][0])
    base = dict(zip(NAMES, image_properties(im)))
    dark = dict(zip(NAMES, image_properties(ImageEnhance.Brightness(im).enhance(0.2))))
    blur = dict(zip(NAMES, image_properties(im.filter(ImageFilter.GaussianBlur(4)))))
    gray = dict(zip(NAMES, image_properties(im.convert("L"))))
    flat = dict(zip(NAMES, image_properties(Image.new("RGB", im.size, (90, 100, 110)))))
    big = dict(zip(NAMES, image_properties(im.resize((im.width * 3, im.height * 3), Image.BICUBIC))))
    assert dark["brightness"] < 0.3 * base["brightness"]
    assert blur["sharpness"] < 0.1 * base["sharpness"] and abs(blur["brightness"] - base["brightness"]) < 0.02
    assert gray["colourfulness"] < 1e-3 < base["colourfulness"]
    assert flat["entropy"] < 0.1 and flat["contrast"] < 1e-3 and base["entropy"] > 4
    # Taken at one working size: a 3x upscale is nearly the same picture.
    assert abs(big["sharpness"] - base["sharpness"]) < 0.35 * base["sharpness"]


def test_planted_problems_among_real_photos_are_flagged_and_only_they(photos):
    ims = [photo_image(d).resize((320, 240)) for d, _, _ in photos]
    planted = {"dark": ImageEnhance.Brightness(ims[0]).enhance(0.08), "bright": ImageEnhance.Brightness(ims[1]).enhance(4),
               "blurry": ims[2].filter(ImageFilter.GaussianBlur(6)), "low_information": Image.new("RGB", (320, 240), "gray"),
               "grayscale": ims[3].convert("L"), "small": ims[4].resize((40, 30)), "odd_aspect": ims[5].resize((960, 120))}
    p, s = measure(ims + list(planted.values()))
    r = run(p, s)
    n = len(ims)
    for k, (kind, _) in enumerate(planted.items()):
        assert n + k in r.issues[kind].positions.tolist(), (kind, r.issues[kind].reason)
    ordinary = {kind: [i for i in v.positions.tolist() if i < n] for kind, v in r.issues.items()}
    assert all(not v for v in ordinary.values()), ordinary
    assert r.measured == n + len(planted) and r.issues["dark"].positions[0] == n
    assert "stricter of the fixed bound" in r.issues["dark"].reason


def test_a_sharp_picture_with_a_black_bar_or_a_flat_margin_is_not_blurry(photos):
    """Sharpness measured over every pixel counted a uniform area as blur: a
    black bar over a sharp picture adds luminance variance and no detail (a
    stranger's redacted screenshots, slides on a flat background, dialogs on
    white were flagged "blurry"). Uniform areas are now left out; a blurred
    copy among them is still flagged."""
    ims = [photo_image(d).resize((320, 240)) for d, _, _ in photos]

    def barred(im):
        out = im.copy()
        out.paste((0, 0, 0), (0, 60, 320, 180))                     # half the picture: a redaction bar
        return out

    def on_slide(im):
        slide = Image.new("RGB", (640, 480), (30, 60, 160))          # a flat blue slide, the picture a quarter
        slide.paste(im, (160, 120))
        return slide
    planted = [barred(ims[0]), on_slide(ims[1]), ims[2].filter(ImageFilter.GaussianBlur(6))]
    p, s = measure(ims + planted)
    sharp = p[:, NAMES.index("sharpness")]
    n = len(ims)
    assert sharp[n] > 0.5 * sharp[0] and sharp[n + 1] > 0.5 * sharp[1]
    assert sharp[n + 2] < 0.1 * sharp[2]
    blurry = r.issues["blurry"].positions.tolist() if (r := run(p, s)).issues.get("blurry") else []
    assert n + 2 in blurry and n not in blurry and n + 1 not in blurry, blurry


def test_a_grayscale_data_set_is_not_flagged_grayscale_or_low_information(digits):
    """Digits: every image is gray and has little tonal range; flagging them
    all would be noise. Gray is not judged where most images are gray, and
    low information only far below the set's own level."""
    x, _ = digits
    ims = [digit_image(a).convert("RGB") for a in x[:300]]
    blank = Image.new("RGB", (64, 64), "black")
    p, s = measure(ims + [blank])
    r = run(p, s)
    assert "grayscale" not in r.issues and any("grayscale not judged" in n for n in r.notes)
    low = r.issues["low_information"].positions.tolist()
    assert low == [300], (low, r.issues["low_information"].reason)
    assert len(r.issues["dark"].positions) <= 3          # digits are dark: only the blank stands out
    assert 300 in r.issues["dark"].positions.tolist()


def test_unmeasured_images_are_not_judged_and_too_few_use_the_fixed_bounds(photos):
    ims = [photo_image(d).resize((200, 150)) for d, _, _ in photos[:5]]
    p, s = measure(ims + [ImageEnhance.Brightness(ims[0]).enhance(0.05)])
    p[1] = np.nan
    r = run(p, s)
    assert r.measured == 5 and 1 not in r.issues["dark"].positions.tolist()
    assert r.issues["dark"].positions.tolist() == [5] and r.issues["dark"].threshold == Params().dark
    assert any("fixed bounds decide alone" in n for n in r.notes)
    # The audit's adapter: failed images count as unmeasured; stored-before-properties embeddings too.
    ok = np.ones(6, bool)
    ok[2] = False
    assert from_inputs(CheckInputs(ok, s, p)).measured == 4
    assert from_inputs(CheckInputs(ok, s, None)).measured == 0
    assert list(CHECKS) == ["duplicates", "leakage", "label_conflicts", "outliers", "image_properties", "label_issues",
                           "sample_size"]


@pytest.mark.parametrize("bad", [dict(spread=0), dict(min_images=2), dict(dark=1.5), dict(blur_ratio=0),
                                 dict(aspect_ratio=1.0), dict(gray=-1)])
def test_parameters_are_validated(bad):
    with pytest.raises(ValueError):
        Params(**bad)


def test_inputs_are_validated():
    with pytest.raises(ValueError):
        run(np.zeros((3, COUNT - 1), np.float32), np.ones((3, 2)))
    with pytest.raises(ValueError):
        run(np.zeros((3, COUNT), np.float32), np.ones((2, 2)))


def test_properties_come_with_the_signature_unless_a_caller_needs_none(embedder, photos):
    """The audit and Embed(with_layout_signature) get both from one decode;
    a collection's add or check stores no properties and pays for none."""
    data = photos[0][0]
    both = embedder.prepare(data, with_signature=True)
    assert both.signature is not None and both.properties.shape == (COUNT,)
    signature_only = embedder.prepare(data, with_signature=True, with_properties=False)
    assert signature_only.signature is not None and signature_only.properties is None
    plain = embedder.prepare(data)
    assert plain.signature is None and plain.properties is None
    for p in (both, signature_only, plain):          # the model inputs' charges go back to the budget
        embedder.budget.release(p.charged)


def test_a_bound_beyond_the_measures_range_says_why_nothing_is_flagged():
    """A set of half black-ground garments and half photos spreads so widely
    that median - 4 SDs of luminance is below 0: the reason read "mean
    luminance below -0.327" and looked like a mistake; it now says so."""
    rng = np.random.default_rng(0)
    props_ = np.zeros((60, COUNT), np.float32)
    props_[:, NAMES.index("brightness")] = np.r_[rng.uniform(0.02, 0.2, 30), rng.uniform(0.4, 0.9, 30)]
    props_[:, NAMES.index("entropy")] = rng.uniform(3, 5, 60)
    props_[:, NAMES.index("sharpness")] = 1.0
    props_[:, NAMES.index("colourfulness")] = 0.2
    r = run(props_, np.full((60, 2), 100.0))
    dark = r.issues["dark"]
    assert dark.threshold < 0 and dark.count == 0
    assert "beyond the measure's range (0..1)" in dark.reason and "none is flagged" in dark.reason
    assert "beyond" not in r.issues["low_information"].reason         # entropy's bound is within 0..6


def test_a_blank_image_is_nearly_uniform_however_widely_the_set_spreads(photos, digits):
    """Photos beside near-flat pictures (dim digits) spread entropy so widely
    that median - 4 SDs fell below 0, and four blank images of a stranger's
    audit (two white, two black) were flagged nearly uniform by no rule. An
    image of one tone is, whatever the set; a near-flat one is judged as
    before."""
    x, _ = digits
    ims = [photo_image(d) for d, _, _ in photos] + [digit_image(a).convert("RGB") for a in x[:20]]
    dim = [ImageEnhance.Brightness(digit_image(a).convert("RGB")).enhance(0.05) for a in x[20:40]]
    blank = [Image.new("RGB", (64, 48), c) for c in ("white", "black", (30, 90, 40))]
    p, s = measure(ims + dim + blank)
    r = run(p, s)
    low = r.issues["low_information"]
    n = len(ims) + len(dim)
    assert set(range(n, n + 3)) <= set(low.positions.tolist()), (low.positions, low.reason)
    assert "at any rate" in low.reason and "none is flagged" not in low.reason
    assert not set(range(len(photos))) & set(low.positions.tolist())          # no photo
    with pytest.raises(ValueError, match="one_tone"):
        Params(one_tone=2.0)
