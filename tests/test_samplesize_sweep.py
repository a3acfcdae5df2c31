"""The subset sweep on a small real dataset (scikit-learn's digits, 1,797
8x8 images) and the plot it leads to."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imagesieve_server.analysis.sample_size import run_sweep
from imagesieve_server.analysis.sample_size.run import sample_size_report
from imagesieve_server.analysis.sample_size.sweep import stratified_subset


def test_sweep_on_digits_accuracy_increases_with_size(digits):
    X, y = digits
    calls = []
    res = run_sweep(X, y, fractions=(0.05, 0.1, 0.2, 0.35, 0.5), repeats=3, seed=0,
                    report=lambda stage, done, total: calls.append((stage, done, total)))
    assert res.accuracies.shape == (5, 3)
    assert res.per_class.shape == (5, 10)
    assert list(res.classes) == list(range(10))
    assert res.n_test == round(0.2 * len(y)) and res.n_train == len(y) - res.n_test
    assert "held out" in res.test_source
    assert list(res.sizes) == [round(f * res.n_train) for f in (0.05, 0.1, 0.2, 0.35, 0.5)]
    assert np.all(np.diff(res.means) > 0), res.means
    assert res.means[0] > 0.5 and res.means[-1] > 0.9
    assert calls[-1] == ("fit", 15, 15) and len(calls) == 15


def test_sweep_with_a_given_test_split(digits):
    X, y = digits
    res = run_sweep(X[:1200], y[:1200], X_test=X[1200:], y_test=y[1200:], fractions=(0.1, 0.3), repeats=2)
    assert res.n_train == 1200 and res.n_test == len(y) - 1200
    assert "given" in res.test_source
    assert res.means[1] > res.means[0]


def test_sweep_with_test_rows_marked_in_place_equals_the_copied_split(digits):
    """is_test marks the test rows of X (no copies): same answer as X_test/y_test."""
    X, y = digits
    is_test = np.zeros(len(y), bool)
    is_test[1200:] = True
    marked = run_sweep(X, y, is_test=is_test, fractions=(0.1, 0.3), repeats=2, classifier="lda")
    copied = run_sweep(X[:1200], y[:1200], X_test=X[1200:], y_test=y[1200:], fractions=(0.1, 0.3), repeats=2,
                       classifier="lda")
    np.testing.assert_array_equal(marked.accuracies, copied.accuracies)
    assert marked.n_train == 1200 and marked.n_test == len(y) - 1200
    with pytest.raises(ValueError, match="not both"):
        run_sweep(X, y, is_test=is_test, X_test=X[:5], y_test=y[:5])
    with pytest.raises(ValueError, match="is_test"):
        run_sweep(X, y, is_test=np.ones(len(y), bool))


def test_stratified_subset_keeps_proportions_and_every_class():
    y = np.r_[np.zeros(900, int), np.ones(90, int), np.full(10, 2)]
    idx = stratified_subset(y, 100, np.random.default_rng(0))
    assert len(idx) == 100 == len(set(idx.tolist()))
    counts = np.bincount(y[idx], minlength=3)
    assert counts[0] == 90 and counts[1] == 9 and counts[2] == 1
    assert np.bincount(y[stratified_subset(y, 3, np.random.default_rng(1))]).tolist() == [1, 1, 1]


def test_sweep_rejects_bad_parameters(digits):
    X, y = digits
    with pytest.raises(ValueError, match="strictly increasing"):
        run_sweep(X, y, fractions=(0.5, 0.2))
    with pytest.raises(ValueError, match="fewer images than classes"):
        run_sweep(X[:100], y[:100], fractions=(0.01, 0.5))
    with pytest.raises(ValueError, match="repeats"):
        run_sweep(X, y, repeats=0)
    with pytest.raises(ValueError, match="X_test"):
        run_sweep(X, y, X_test=X[:5])
    with pytest.raises(ValueError, match="unknown classifier"):
        run_sweep(X, y, classifier="svm", fractions=(0.1, 0.2), repeats=1)


def test_report_and_plot_on_digits(digits):
    X, y = digits
    labels = np.array([f"digit{v}" for v in y])
    stages = set()
    rep = sample_size_report(X, labels, target=0.97, repeats=3, n_boot=50, seed=0,
                             report=lambda s, d, t: stages.add(s))
    assert stages == {"fit", "bootstrap", "plot"}
    a = rep.analysis
    assert a.chosen in a.fits and len(a.fits) == 3
    assert a.answer
    png = Image.open(io.BytesIO(rep.plot_png))
    png.load()
    assert png.format == "PNG" and png.size[0] >= 400
    assert rep.plot_svg.lstrip().startswith("<?xml") and "<svg" in rep.plot_svg
    d = rep.to_dict()
    assert set(d["points"][0]["per_class_accuracy"]) == {f"digit{v}" for v in range(10)}
    assert len(d["points"][0]["accuracies"]) == 3


def test_the_check_keeps_its_sweep_for_the_same_inputs_only(digits, tmp_path):
    """A sweep kept in the store is read back for the same vectors, labels,
    splits and parameters (no classifier fitted, the same answer); a
    changed label or parameter is a new key, and a damaged file is refitted."""
    from imagesieve_server.checks import sample_size

    X, y = digits
    labels = [f"digit{v}" for v in y]
    params = sample_size.Params(target=0.97, repeats=2, bootstrap=30)

    def run(labels, params=params):
        fits = []
        found = sample_size.run(X, labels, None, params, cache=tmp_path,
                                report=lambda s, d, t: fits.append(d) if s == "fit" else None)
        return found, len(fits)

    first, fitted = run(labels)
    assert fitted == 10 and len(list((tmp_path / "results").glob("sample_size-*.npz"))) == 1
    mine = next((tmp_path / "results").glob("sample_size-*.npz"))        # this input's kept sweep
    again, refitted = run(labels)
    assert refitted == 0 and any("read from" in n for n in again.notes)
    np.testing.assert_array_equal(again.details.sweep.accuracies, first.details.sweep.accuracies)
    np.testing.assert_array_equal(again.details.sweep.test_correct, first.details.sweep.test_correct)
    assert again.details.to_dict() == first.details.to_dict()
    flipped = list(labels)
    flipped[0] = "digit9" if flipped[0] != "digit9" else "digit8"
    assert run(flipped)[1] == 10
    assert run(labels, sample_size.Params(target=0.97, repeats=2, bootstrap=30, seed=1))[1] == 10
    # A damaged file (not a zip, empty, cut short) is computed again, never an error.
    whole = {k: k.read_bytes() for k in (tmp_path / "results").glob("sample_size-*.npz")}
    for damage in (lambda b: b"not a zip", lambda b: b"", lambda b: b[: len(b) // 2]):
        for kept, data in whole.items():
            kept.write_bytes(damage(data))
        assert run(labels)[1] == 10
    # A whole file under the right key whose arrays do not fit (other shapes, sizes not
    # increasing): computed again too.
    from imagesieve_server.checks import memo
    mine.write_bytes(whole[mine])
    with np.load(mine) as z:
        arrays = {name: z[name] for name in z.files}
    key = str(arrays.pop("_key"))
    for bad in ({"accuracies": arrays["accuracies"][:2, :2]}, {"sizes": arrays["sizes"][::-1].copy()}):
        memo.save(tmp_path, "sample_size", key, {**arrays, **bad})
        found, fitted = run(labels)
        assert fitted == 10 and found.details.to_dict() == first.details.to_dict()
