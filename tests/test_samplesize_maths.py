"""Learning-curve maths on synthetic curves with known parameters:
fitting, inversion, ceilings, hold-out selection, bootstrap coverage."""
from __future__ import annotations

import math

import numpy as np
import pytest

from imagesieve_server.analysis.sample_size import (analyse, bootstrap, evaluate, fit_curve,
                                                    images_for_target, percentile_interval, select_fit)

SIZES = np.array([250, 500, 1000, 1750, 2500.0])
TRUE = {
    "power_law": (0.35, 0.12),
    "inverse_power_law": (0.97, 3.0, 0.5),
    "exp_approach": (0.93, 0.45, 1 / 700),
}
NOISE = 0.004  # std of one repeat's accuracy


def noisy(family, params, seed, repeats=5, sizes=SIZES, noise=NOISE):
    rng = np.random.default_rng(seed)
    return evaluate(family, params, sizes)[:, None] + rng.normal(0, noise, (len(sizes), repeats))


@pytest.mark.parametrize("family", list(TRUE))
def test_fit_recovers_known_parameters(family):
    p = TRUE[family]
    sizes = np.geomspace(200, 20000, 12)
    acc = noisy(family, p, seed=1, repeats=10, sizes=sizes, noise=0.002).mean(axis=1)
    fit = fit_curve(family, sizes, acc)
    assert fit.family == family
    assert fit.rmse < 0.002
    np.testing.assert_allclose(fit.params, p, rtol=0.15)
    # and the curve itself, including 2x beyond the data, within half a point
    xs = np.geomspace(200, 40000, 30)
    assert np.max(np.abs(fit.predict(xs) - evaluate(family, p, xs))) < 0.005


@pytest.mark.parametrize("family", list(TRUE))
def test_images_for_target_inverts_the_curve(family):
    p = TRUE[family]
    for x in (300.0, 2000.0, 7000.0):
        t = float(evaluate(family, p, x))
        assert images_for_target(family, p, t) == pytest.approx(x, rel=1e-9)


def test_power_law_is_unbounded():
    fit = fit_curve("power_law", SIZES, noisy("power_law", TRUE["power_law"], 0).mean(axis=1))
    assert math.isinf(fit.ceiling)
    # it predicts more than 100% accuracy eventually, and any target is "reachable"
    assert fit.predict(1e9) > 1.0
    assert math.isfinite(fit.images_for(0.999))


def test_nearly_flat_curves_need_infinitely_many_images_not_an_overflow():
    """A flat learning curve (accuracy barely moving with size) inverts to a
    number beyond float range: the answer is 'unreachable', not a crash."""
    from imagesieve_server.analysis.sample_size.curves import images_for_target
    assert images_for_target("power_law", (0.5, 1e-4), 0.95) == math.inf
    assert images_for_target("inverse_power_law", (0.99, 0.5, 1e-4), 0.95) == math.inf


@pytest.mark.parametrize("family", ["inverse_power_law", "exp_approach"])
def test_bounded_families_have_a_ceiling(family):
    fit = fit_curve(family, SIZES, noisy(family, TRUE[family], 0).mean(axis=1))
    assert fit.ceiling == pytest.approx(TRUE[family][0], abs=0.02)
    assert fit.ceiling <= 1.0
    assert math.isinf(fit.images_for(fit.ceiling + 1e-6))
    assert fit.predict(1e12) <= fit.ceiling + 1e-12


def test_target_above_ceiling_gives_a_plain_answer():
    acc = noisy("inverse_power_law", TRUE["inverse_power_law"], 3)
    res = analyse(SIZES, acc, target=0.995, n_boot=30, seed=0)
    assert res.chosen == "inverse_power_law"
    assert math.isinf(res.images_needed)
    assert "above the ceiling" in res.answer
    assert f"{res.fit.ceiling:.1%}" in res.answer
    d = res.to_dict()
    assert d["images_needed"] is None  # JSON has no inf


def test_reachable_target_gives_number_and_interval():
    p = TRUE["exp_approach"]
    acc = noisy("exp_approach", p, 4)
    target = 0.925  # beyond the measured sizes
    res = analyse(SIZES, acc, target=target, n_boot=100, seed=0)
    truth = images_for_target("exp_approach", p, target)
    assert res.chosen == "exp_approach"
    assert res.images_needed > SIZES[-1]
    assert res.images_needed_low <= res.images_needed <= res.images_needed_high
    assert res.images_needed == pytest.approx(truth, rel=0.25)
    assert "interval" in res.answer and "extrapolation" in res.answer


@pytest.mark.parametrize("family", list(TRUE))
def test_selection_picks_the_generating_family(family):
    """Asserted: the generating family is chosen in at least 7 of 10 noisy
    draws (seen here: 85-100%)."""
    hits = sum(select_fit(SIZES, noisy(family, TRUE[family], seed)).chosen == family for seed in range(10))
    assert hits >= 7, hits


def test_selection_reports_holdout_errors_for_every_family():
    sel = select_fit(SIZES, noisy("exp_approach", TRUE["exp_approach"], 0))
    assert set(sel.holdout_errors) == set(TRUE) == set(sel.fits)
    assert sel.holdout_errors[sel.chosen] == min(sel.holdout_errors.values())
    # the unbounded power law extrapolates a saturating curve badly
    assert sel.holdout_errors["power_law"] > 3 * sel.holdout_errors["exp_approach"]


def test_bootstrap_interval_covers_the_truth_in_most_trials():
    """95% percentile interval of the prediction at 2x the largest size, 20
    independent noisy sweeps (5 repeats per size). With only 5 repeats the
    percentile bootstrap runs a little narrow (seen here: 87-90% coverage);
    asserted: at least 14 of 20 (70%)."""
    family, p = "inverse_power_law", TRUE["inverse_power_law"]
    x2 = 2 * SIZES[-1]
    truth = float(evaluate(family, p, x2))
    covered = 0
    for trial in range(20):
        b = bootstrap(SIZES, noisy(family, p, 100 + trial), x_eval=[x2], n_boot=100, seed=trial, family=family)
        lo, hi = percentile_interval(b.predictions[:, 0], 0.95)
        covered += lo <= truth <= hi
    assert covered >= 14, covered


def split_outcomes(family, p, seed, n_test=300, repeats=5, repeat_noise=0.002):
    """(K, R, M) per-image outcomes on one test split drawn from a population
    whose accuracy at x images is the curve: image i is right when its
    difficulty d_i ~ U(0, 1) lies below the curve (plus a little per-repeat
    noise). A small split is easy or hard as a whole: its accuracy misses
    the population's by ~2 points while the repeats agree to ~0.2."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0, 1, n_test)
    level = evaluate(family, p, SIZES)[:, None] + rng.normal(0, repeat_noise, (len(SIZES), repeats))
    correct = d[None, None, :] < level[:, :, None]
    return correct.mean(axis=2), correct


def test_bootstrap_resampling_the_test_split_covers_another_split():
    """Population accuracy at 2x the largest size (what another test split
    measures on average), 20 sweeps each scored on its own 300-image split:
    resampling only the repeats gives intervals a few tenths of a point wide
    that miss it most of the time; resampling the test images too covers it
    (asserted >= 15 of 20; seen 19, against 2 without, with intervals 6.7
    points wide against 0.4)."""
    family, p = "inverse_power_law", TRUE["inverse_power_law"]
    x2 = 2 * SIZES[-1]
    truth = float(evaluate(family, p, x2))
    covered = {False: 0, True: 0}
    widths = {False: [], True: []}
    for trial in range(20):
        acc, correct = split_outcomes(family, p, 500 + trial)
        for with_test in (False, True):
            b = bootstrap(SIZES, acc, x_eval=[x2], n_boot=100, seed=trial, family=family,
                          test_correct=correct if with_test else None)
            lo, hi = percentile_interval(b.predictions[:, 0], 0.95)
            covered[with_test] += lo <= truth <= hi
            widths[with_test].append(hi - lo)
    assert covered[True] >= 15, covered
    assert covered[False] < covered[True], covered
    assert np.median(widths[True]) > 3 * np.median(widths[False]), widths


def test_predictions_and_intervals_stay_within_unit():
    """A power law close to 100% runs past it when extrapolated; the
    accuracy predicted at a size, and its interval, are fractions."""
    acc = noisy("power_law", (0.6, 0.06), 7)           # 0.84 .. 0.96 measured; 1.27 at 100x
    res = analyse(SIZES, acc, at=[SIZES[-1], 100 * SIZES[-1]], n_boot=60, seed=0, families=("power_law",))
    assert float(res.fit.predict(100 * SIZES[-1])) > 1
    assert np.all((0 <= res.at_low) & (res.at_low <= res.at_accuracy) & (res.at_accuracy <= res.at_high)
                  & (res.at_high <= 1))
    assert res.at_accuracy[1] == 1.0
    assert "measured range" in res.answer and "100.0x extrapolation" in res.answer
    below = analyse(SIZES, acc, at=[10], n_boot=20, seed=0, families=("power_law",))
    assert "below the sizes measured" in below.answer
    assert math.isnan(res.images_needed) and res.target is None
    with pytest.raises(ValueError, match="target accuracy, sizes to predict"):
        analyse(SIZES, acc)
    with pytest.raises(ValueError, match="whole numbers"):
        analyse(SIZES, acc, at=[2.5])


def test_percentile_interval_keeps_infinity():
    v = np.r_[np.arange(90.0), np.full(10, np.inf)]
    lo, hi = percentile_interval(v, 0.95)
    assert lo == pytest.approx(2.0) and math.isinf(hi)
    assert all(math.isnan(x) for x in percentile_interval([np.nan], 0.9))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown curve family"):
        fit_curve("cubic", SIZES, SIZES / 3000)
    with pytest.raises(ValueError, match="distinct sizes"):
        fit_curve("exp_approach", [10, 20], [0.5, 0.6])
    with pytest.raises(ValueError, match="> 0"):
        fit_curve("power_law", [0, 20], [0.5, 0.6])
    with pytest.raises(ValueError, match="strictly increasing"):
        select_fit([100, 50, 200], np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        select_fit(SIZES, np.full((5, 2), 1.5))
    with pytest.raises(ValueError, match="target"):
        analyse(SIZES, noisy("power_law", TRUE["power_law"], 0), target=1.2)
