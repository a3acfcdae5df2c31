"""The sample-size sweep: train on growing stratified subsets of the
training data, measure accuracy on an independent test split."""
from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Sequence

import numpy as np

from ..classifiers import fit_on_rows, make_classifier, predict_proba_on_rows
from ..defaults import SWEEP_CLASSIFIER as DEFAULT_CLASSIFIER

DEFAULT_FRACTIONS = (0.05, 0.10, 0.20, 0.35, 0.50)
DEFAULT_REPEATS = 5
DEFAULT_TEST_FRACTION = 0.2


@dataclasses.dataclass
class SweepResult:
    """sizes (K,) training images per subset; accuracies (K, R) test accuracy
    (fraction) of each repeat; test_correct (K, R, M) bool, whether each fit
    got each of the M test images right (what lets a bootstrap resample the
    test split too); per_class (K, C) mean over repeats of each
    class's test accuracy (recall), columns in ``classes`` order; classes (C,)
    the label values; n_train / n_test: pool and test sizes; test_source:
    how the test split was obtained (for reports)."""
    sizes: np.ndarray
    fractions: np.ndarray
    accuracies: np.ndarray
    per_class: np.ndarray
    classes: np.ndarray
    n_train: int
    n_test: int
    test_source: str
    classifier: str
    test_correct: np.ndarray | None = None

    @property
    def means(self) -> np.ndarray:
        return self.accuracies.mean(axis=1)

    @property
    def stds(self) -> np.ndarray:
        r = self.accuracies.shape[1]
        return self.accuracies.std(axis=1, ddof=1) if r > 1 else np.zeros(len(self.sizes))


def stratified_subset(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` rows of ``y`` (N,) drawn without replacement with class
    proportions kept (largest remainder), at least one per class. Requires
    n_classes <= n <= N."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if not len(classes) <= n <= len(y):
        raise ValueError(f"a stratified subset of {n} needs {len(classes)} <= n <= {len(y)}")
    quota = counts * (n / len(y))
    take = np.maximum(1, np.floor(quota).astype(int))
    take = np.minimum(take, counts)
    # hand out the remainder by largest fractional part, then trim any excess
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    i = 0
    while take.sum() < n:
        c = order[i % len(order)]
        if take[c] < counts[c]:
            take[c] += 1
        i += 1
    order = np.argsort(-take, kind="stable")
    i = 0
    while take.sum() > n:
        c = order[i % len(order)]
        if take[c] > 1:
            take[c] -= 1
        i += 1
    picked = [rng.choice(np.flatnonzero(inverse == c), size=take[c], replace=False)
              for c in range(len(classes))]
    return np.sort(np.concatenate(picked))


def run_sweep(X, y, *, X_test=None, y_test=None, is_test=None, test_fraction: float = DEFAULT_TEST_FRACTION,
              fractions: Sequence[float] = DEFAULT_FRACTIONS, repeats: int = DEFAULT_REPEATS,
              classifier: str = DEFAULT_CLASSIFIER, seed: int = 0,
              report: Callable[[str, int, int], None] | None = None) -> SweepResult:
    """Train ``classifier`` (``make_classifier(name, seed)``) on stratified
    subsets of the training data and score each on the test split.

    X : (N, D) float features (embeddings); y : (N,) class labels (any
        sortable dtype).
    X_test, y_test : (M, D), (M,) an independent test split; or
    is_test : (N,) bool, the rows of X that are the test split (no copies);
        when neither is given a stratified ``test_fraction`` of X is held out
        (seeded) and never trained on.
    fractions : subset sizes as fractions of the training pool, in (0, 1],
        strictly increasing, at least 2 (4 or more for curve selection).
    repeats : subsets drawn per size (different random subsets and seeds).
    report : optional ``report(stage, done, total)``, called after each fit;
        may raise to cancel.
    """
    # Rows are addressed by index, never gathered into copies (X can be a
    # million embeddings); only estimators without ``fit_rows`` copy a subset.
    X = np.asarray(X)
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"X must be (N, D) and y (N,), got {X.shape} and {y.shape}")
    fr = np.asarray(list(fractions), dtype=float)
    if fr.size < 2 or np.any(fr <= 0) or np.any(fr > 1) or np.any(np.diff(fr) <= 0):
        raise ValueError(f"fractions must be at least 2 values in (0, 1], strictly increasing; got {list(fr)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rng = np.random.default_rng(seed)
    if (X_test is None) != (y_test is None):
        raise ValueError("give both X_test and y_test, or neither")
    if is_test is not None and X_test is not None:
        raise ValueError("give a test split as X_test/y_test or as is_test, not both")
    if is_test is not None:
        is_test = np.asarray(is_test, dtype=bool)
        if is_test.shape != y.shape or is_test.all() or not is_test.any():
            raise ValueError("is_test must be (N,) bool with both test and training rows")
        train_rows, test_rows = np.flatnonzero(~is_test), np.flatnonzero(is_test)
        X_te, y_te = X, None
        test_source = f"given test split ({len(test_rows)} images)"
    elif X_test is None:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        n_test = int(round(test_fraction * len(y)))
        classes = np.unique(y)
        if n_test < len(classes) or len(y) - n_test < len(classes):
            raise ValueError(f"{len(y)} images are too few to hold out a {test_fraction:.0%} test split "
                             f"over {len(classes)} classes")
        test_idx = stratified_subset(y, n_test, rng)
        mask = np.ones(len(y), bool)
        mask[test_idx] = False
        train_rows = np.flatnonzero(mask)
        X_te, test_rows = X, test_idx
        test_source = f"held out: stratified {test_fraction:.0%} of the images ({n_test}), seed {seed}"
    else:
        X_te = np.asarray(X_test, dtype=np.float32)
        y_te = np.asarray(y_test)
        if X_te.ndim != 2 or X_te.shape[1] != X.shape[1] or len(X_te) != len(y_te) or len(y_te) == 0:
            raise ValueError(f"X_test must be (M, {X.shape[1]}) and y_test (M,), got {X_te.shape}, {y_te.shape}")
        train_rows, test_rows = np.arange(len(y)), None
        test_source = f"given test split ({len(y_te)} images)"
    y_tr = y[train_rows]
    y_te = y[test_rows] if test_rows is not None else y_te
    classes = np.unique(y_tr)
    if len(classes) < 2:
        raise ValueError("the training data needs at least 2 classes")
    sizes = np.round(fr * len(y_tr)).astype(int)
    if sizes[0] < len(classes):
        raise ValueError(f"the smallest subset ({fr[0]:.0%} of {len(y_tr)} = {sizes[0]} images) has fewer "
                         f"images than classes ({len(classes)}); use larger fractions or more images")
    if np.any(np.diff(sizes) <= 0):
        raise ValueError(f"fractions {list(fr)} give repeated subset sizes {list(sizes)} for {len(y_tr)} images")
    test_masks = [y_te == c for c in classes]
    acc = np.zeros((len(sizes), repeats))
    test_correct = np.zeros((len(sizes), repeats, len(y_te)), bool)
    per_class = np.zeros((len(sizes), len(classes)))
    total, done = len(sizes) * repeats, 0
    for k, n in enumerate(sizes):
        for r in range(repeats):
            idx = stratified_subset(y_tr, int(n), rng)
            # one seed per fit, kept in the range scikit-learn accepts (0 .. 2**32 - 1)
            model = make_classifier(classifier, seed=(seed * 1000 + k * repeats + r) % 2**32)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter on tiny subsets
                fit_on_rows(model, X, y, train_rows[idx])
                proba = predict_proba_on_rows(model, X_te, test_rows)
                pred = np.asarray(model.classes_)[np.asarray(proba).argmax(axis=1)]
            correct = pred == y_te
            test_correct[k, r] = correct
            acc[k, r] = correct.mean()
            per_class[k] += [correct[m].mean() if m.any() else np.nan for m in test_masks]
            done += 1
            if report is not None:
                report("fit", done, total)
    per_class /= repeats
    return SweepResult(sizes, fr, acc, per_class, classes, len(y_tr), len(y_te), test_source, classifier,
                       test_correct)
