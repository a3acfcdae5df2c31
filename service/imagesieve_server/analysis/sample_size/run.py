"""The whole sample-size analysis on embeddings, shared by the gRPC job and
the CLI: sweep -> fits, selection, bootstrap -> plot."""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from .analyse import SampleSizeAnalysis, analyse, check_at_sizes
from .plot import plot_learning_curve
from .sweep import DEFAULT_CLASSIFIER, DEFAULT_FRACTIONS, DEFAULT_REPEATS, DEFAULT_TEST_FRACTION, SweepResult, run_sweep

DEFAULT_BOOTSTRAP = 200


@dataclasses.dataclass
class SampleSizeReport:
    sweep: SweepResult
    analysis: SampleSizeAnalysis
    plot_png: bytes
    plot_svg: str

    def per_class(self, k: int) -> dict[str, float]:
        """Size index k -> {label: mean per-class test accuracy} (classes absent from the test split omitted)."""
        return {str(c): float(v) for c, v in zip(self.sweep.classes, self.sweep.per_class[k])
                if np.isfinite(v)}

    def to_dict(self) -> dict:
        d = self.analysis.to_dict()
        for k, p in enumerate(d["points"]):
            p["fraction"] = float(self.sweep.fractions[k])
            p["accuracies"] = [float(a) for a in self.sweep.accuracies[k]]
            p["per_class_accuracy"] = self.per_class(k)
        d.update(classifier=self.sweep.classifier, n_train=self.sweep.n_train, n_test=self.sweep.n_test,
                 test_source=self.sweep.test_source)
        return d


def sample_size_report(X, labels, *, is_test=None, target: float | None = None, at=None,
                       fractions: Sequence[float] = DEFAULT_FRACTIONS, repeats: int = DEFAULT_REPEATS,
                       test_fraction: float = DEFAULT_TEST_FRACTION, classifier: str = DEFAULT_CLASSIFIER,
                       seed: int = 0, n_boot: int = DEFAULT_BOOTSTRAP,
                       report: Callable[[str, int, int], None] | None = None,
                       title: str = "How many images are enough?") -> SampleSizeReport:
    """X (N, D) embeddings; labels (N,) class names; is_test (N,) bool marks
    a given test split (None or all False: hold out ``test_fraction``).
    target: accuracy whose images needed to find (None: not asked); at:
    training sizes (images) whose accuracy to predict (None: all the
    training images and twice as many; (): none).
    ``report(stage, done, total)`` gets stages "fit", "bootstrap", "plot".
    The same as ``report_from_sweep(sweep_on_labels(...), ...)``."""
    if target is not None and not 0 < target < 1:
        raise ValueError(f"target accuracy must lie in (0, 1), got {target}")
    at = None if at is None else check_at_sizes(at)      # before the costly sweep
    sweep = sweep_on_labels(X, labels, is_test=is_test, fractions=fractions, repeats=repeats,
                            test_fraction=test_fraction, classifier=classifier, seed=seed, report=report)
    return report_from_sweep(sweep, target=target, at=at, seed=seed, n_boot=n_boot, report=report, title=title)


def sweep_on_labels(X, labels, *, is_test=None, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                    repeats: int = DEFAULT_REPEATS, test_fraction: float = DEFAULT_TEST_FRACTION,
                    classifier: str = DEFAULT_CLASSIFIER, seed: int = 0,
                    report: Callable[[str, int, int], None] | None = None) -> SweepResult:
    """The costly half (``sweep.run_sweep``, one classifier fit per size and
    repeat) on a given test split (``is_test``) or a held-out
    ``test_fraction``; classes with no test image are named in
    ``test_source``."""
    X = np.asarray(X)
    labels = np.asarray(labels)
    if is_test is not None and np.any(is_test):
        is_test = np.asarray(is_test, dtype=bool)
        if is_test.shape != labels.shape:
            raise ValueError("is_test must have one flag per image")
        if np.all(is_test):
            raise ValueError("every image is in the test split; nothing left to train on")
        missing = sorted(set(labels[~is_test].tolist()) - set(labels[is_test].tolist()))
        sweep = run_sweep(X, labels, is_test=is_test, fractions=fractions, repeats=repeats, classifier=classifier,
                          seed=seed, report=report)
        if missing:
            sweep.test_source += f"; classes without test images: {', '.join(map(str, missing))}"
        return sweep
    return run_sweep(X, labels, test_fraction=test_fraction, fractions=fractions, repeats=repeats,
                     classifier=classifier, seed=seed, report=report)


def report_from_sweep(sweep: SweepResult, *, target: float | None = None, at=None, seed: int = 0,
                      n_boot: int = DEFAULT_BOOTSTRAP, report: Callable[[str, int, int], None] | None = None,
                      title: str = "How many images are enough?") -> SampleSizeReport:
    """The cheap half: learning curves fitted to a sweep, the target and
    ``at`` sizes answered with a bootstrap interval, the plot."""
    if target is not None and not 0 < target < 1:
        raise ValueError(f"target accuracy must lie in (0, 1), got {target}")
    at = None if at is None else check_at_sizes(at)

    def boot_report(stage, done, total):        # every 10th replicate: 200 events are too many
        if report is not None and (done % 10 == 0 or done == total):
            report(stage, done, total)
    if at is None:
        at = np.array([sweep.n_train, 2 * sweep.n_train], float)
    result = analyse(sweep.sizes, sweep.accuracies, target, at=at, n_boot=n_boot, seed=seed,
                     test_correct=sweep.test_correct, report=boot_report)
    if report is not None:
        report("plot", 0, 1)
    png, svg = plot_learning_curve(result, title=title)
    return SampleSizeReport(sweep, result, png, svg)
