"""Predicted class probabilities for every labelled item: out-of-fold
(K-fold, each item predicted by a model that never saw it, as cleanlab) or
in-sample (one model trained on everything and asked about the same items,
as the labelfix paper). Both return (N, C) float64 rows summing to 1.

``classifier`` is a name for ``analysis.classifiers.make_classifier``
("logreg", "mlp", "ensemble", "cnn") or a callable ``seed -> estimator``
(scikit-learn style ``fit`` / ``predict_proba`` / ``classes_``).
``report(stage, done, total)`` is called between steps (it may raise to
cancel, e.g. ``jobs.runner.JobCancelled``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..classifiers import fit_on_rows, make_classifier, predict_proba_on_rows

Report = Callable[[str, int, int], None]


def validate_labels(X: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Check X (N, ...) and labels (N,) int in [0, C); return (labels as int64, C)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {labels.shape}")
    if len(X) != len(labels):
        raise ValueError(f"X has {len(X)} rows but labels has {len(labels)}")
    if len(labels) == 0:
        raise ValueError("no items to score")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0:
        raise ValueError("labels must be >= 0")
    c = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.max() >= c:
        raise ValueError(f"label {labels.max()} out of range for {c} classes")
    if len(np.unique(labels)) < 2:
        raise ValueError("need at least 2 distinct classes to score labels")
    return labels.astype(np.int64), c


def _factory(classifier) -> Callable[[int], object]:
    if callable(classifier):
        return classifier
    if isinstance(classifier, str):
        make_classifier(classifier, 0)  # validates the name early (cheap: unfitted)
        return lambda seed: make_classifier(classifier, seed)
    raise ValueError(f"classifier must be a name or a callable seed -> estimator, got {classifier!r}")


def _proba_full(est, X: np.ndarray, rows: np.ndarray | None, num_classes: int) -> np.ndarray:
    """predict_proba of X[rows] mapped onto all C columns (a fold may lack a class)."""
    p = np.asarray(predict_proba_on_rows(est, X, rows), dtype=np.float64)
    classes = np.asarray(getattr(est, "classes_", np.arange(p.shape[1])))
    out = np.zeros((len(p), num_classes))
    out[:, classes.astype(int)] = p
    s = out.sum(axis=1, keepdims=True)
    return out / np.where(s > 0, s, 1.0)


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """(N,) fold number in [0, folds) per item, from scikit-learn's
    ``StratifiedKFold`` (shuffled, seeded): every fold gets its share of each
    class. A class smaller than ``folds`` is simply absent from some folds
    (scikit-learn's warning about it is silenced: ``check_folds`` says what
    matters); its items are still each predicted by a model that never saw
    them. Needs ``folds`` <= the largest class (``check_folds`` says so),
    or ``folds`` = N: leave-one-out, each item a fold of its own."""
    import warnings

    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    if folds == len(labels):
        return np.arange(len(labels), dtype=np.int64)
    fold_of = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=int(seed) % 2**32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for k, (_, test) in enumerate(splitter.split(np.zeros((len(labels), 1)), labels)):
            fold_of[test] = k
    return fold_of


def check_folds(labels: np.ndarray, folds: int, seed: int = 0, train_classes: int = 2) -> np.ndarray:
    """The stratified folds of ``labels`` (N,) int, if out-of-fold scoring
    can work with them; else ValueError saying why and what to ask for:
    ``folds`` in [2, N], no fold without an image to predict, and every
    fold's training images in at least ``train_classes`` classes (2 for
    every named classifier; a 1-NN callable can do with 1)."""
    labels = np.asarray(labels)
    n = len(labels)
    folds = int(folds)
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if folds > n:
        raise ValueError(f"folds ({folds}) cannot exceed the number of images ({n})")
    classes, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    if sizes.max() < folds < n:     # folds = n is leave-one-out
        fewer = (f"use at most {int(sizes.max())} folds (the size of the largest class)" if sizes.max() >= 2 else
                 f"every class has one image, so only leave-one-out ({n} folds) can be stratified")
        raise ValueError(f"folds ({folds}) is too many for these {n} images in {len(classes)} classes: "
                         f"stratified folds need a class with at least as many images as folds; {fewer}")
    fold_of = stratified_folds(labels, folds, seed)
    # A class of 2 or more images is dealt into 2 or more folds, so it is in
    # every fold's training images; a class of one image is missing from its fold's.
    spread = int((sizes >= 2).sum())
    single = sizes[inverse] == 1
    alone = np.bincount(fold_of[single], minlength=folds)
    if train_classes >= 2 and len(classes) >= 2 and (spread + int(single.sum()) - alone < 2).any():
        raise ValueError(f"with {folds} folds, a fold's training images would all be of one class (classes of "
                         f"one image cannot train the fold that holds them; class sizes here: "
                         f"{sorted(sizes.tolist(), reverse=True)[:10]}): out-of-fold scoring needs at least 2 "
                         "classes with 2 or more images each, or the single images spread over other folds")
    return fold_of


def out_of_fold_probabilities(X: np.ndarray, labels: np.ndarray, classifier="logreg", folds: int = 5,
                              seed: int = 0, report: Report | None = None,
                              num_classes: int | None = None) -> np.ndarray:
    """(N, C) probabilities, row i predicted by a model trained on the other folds.

    X: (N, D) features (or (N, H, W) images for "cnn"); labels: (N,) int.
    Folds are stratified; ``folds`` in [2, N] and as ``check_folds`` allows."""
    labels, c = validate_labels(X, labels, num_classes)
    factory = _factory(classifier)
    folds = int(folds)
    fold_of = check_folds(labels, folds, seed,
                          train_classes=getattr(classifier, "train_classes", 2 if isinstance(classifier, str) else 1))
    probs = np.zeros((len(labels), c))
    for k in range(folds):
        if report:
            report("folds", k, folds)     # one progress line: "folds 2/5"
        test = np.flatnonzero(fold_of == k)
        train = np.flatnonzero(fold_of != k)
        est = factory(seed + k)
        fit_on_rows(est, X, labels, train)
        probs[test] = _proba_full(est, X, test, c)
    if report:
        report("folds", folds, folds)
    return probs


def in_sample_probabilities(X: np.ndarray, labels: np.ndarray, classifier="logreg", seed: int = 0,
                            report: Report | None = None, num_classes: int | None = None) -> np.ndarray:
    """(N, C) probabilities from one model trained on all N items and asked
    about the same N items (the labelfix paper's steps 1-2)."""
    labels, c = validate_labels(X, labels, num_classes)
    est = _factory(classifier)(seed)
    if report:
        report("train on all", 0, 1)
    fit_on_rows(est, X, labels, None)
    probs = _proba_full(est, X, None, c)
    if report:
        report("train on all", 1, 1)
    return probs
