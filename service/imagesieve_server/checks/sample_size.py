"""Are there enough images? The classifier is trained on growing stratified
subsets of the training images, its accuracy measured on a test split, a
learning curve fitted and extrapolated (``analysis.sample_size``): the
images needed for a target accuracy and the accuracy at other sizes, with
an interval. The audit, the SampleSizeSweep job and the ``samplesize``
command run this one check with one ``Params``: the same classifier (and
the same fallback for large sets), whichever asks. It flags no image; its
answer is ``details`` (``analysis.sample_size.run.SampleSizeReport``)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..analysis import classifiers as _classifiers
from ..analysis.classifiers import EMBEDDING_CLASSIFIERS
from ..analysis.defaults import LABELS_CLASSIFIER, LARGE_SWEEP, SWEEP_CLASSIFIER
from ..analysis.sample_size import run as _run, sweep as _sweep
from ..analysis.sample_size.run import DEFAULT_BOOTSTRAP, report_from_sweep, sweep_on_labels
from ..analysis.sample_size.sweep import DEFAULT_FRACTIONS, DEFAULT_REPEATS, DEFAULT_TEST_FRACTION, SweepResult
from . import memo
from .base import CheckInputs, CheckResult, why_labels_unusable

NAME = "sample_size"
TITLE = "How many images are enough"
MIN_IMAGES = 100
# The code that decides a sweep: an edit to it is a new key for a kept sweep (``memo``).
_CODE = memo.code_version(_sweep, _run, _classifiers)


@dataclasses.dataclass(frozen=True)
class Params:
    """``target``: accuracy in (0, 1) whose images needed to find (None:
    not asked); ``at``: training sizes whose accuracy to predict (None: all
    the training images and twice as many); ``classifier``: one of
    ``EMBEDDING_CLASSIFIERS``, None = SWEEP_CLASSIFIER, or LABELS_CLASSIFIER
    above LARGE_SWEEP training images (said in a note); ``fractions`` of
    the training images swept, ``repeats`` a size, ``test_fraction`` held
    out when no test split is given, ``bootstrap`` refits for the interval."""
    target: float | None = 0.95
    at: tuple[int, ...] | None = None
    classifier: str | None = None
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    repeats: int = DEFAULT_REPEATS
    test_fraction: float = DEFAULT_TEST_FRACTION
    bootstrap: int = DEFAULT_BOOTSTRAP
    seed: int = 0

    def __post_init__(self):
        if self.target is not None and not 0 < self.target < 1:
            raise ValueError(f"target accuracy must lie in (0, 1), got {self.target}")
        if self.classifier is not None and self.classifier not in EMBEDDING_CLASSIFIERS:
            raise ValueError(f"unknown classifier {self.classifier!r}; choose from {EMBEDDING_CLASSIFIERS}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")


def classifier_for(params: Params, n_train: int) -> tuple[str, str]:
    """(the classifier a sweep of ``n_train`` training images uses, a note or '')."""
    if params.classifier is not None:
        return params.classifier, ""
    if n_train > LARGE_SWEEP:
        return LABELS_CLASSIFIER, (f"{LABELS_CLASSIFIER} instead of {SWEEP_CLASSIFIER} ({n_train:,} training images, "
                                   f"above {LARGE_SWEEP:,}); a linear discriminant saturates early, so the answer "
                                   "understates what more images give")
    return SWEEP_CLASSIFIER, ""


def run(vectors: np.ndarray, labels, splits=None, params: Params | None = None, *, report=None,
        title: str = "How many images are enough?", cache: Path | None = None) -> CheckResult:
    """The sweep over N images: ``vectors`` (N, D), ``labels`` N class
    names (every one set), ``splits`` N strings ("test" marks the test
    split; None or none: ``params.test_fraction`` is held out). Fewer than
    MIN_IMAGES images or unlabelled ones: nothing measured, a note says why.
    ``title``: the plot's, "{classifier}" replaced by the classifier used.
    ``cache``: a folder (the embedding store) where the sweep is kept,
    keyed by its exact inputs (``memo``): the same images, labels, splits
    and parameters read it back instead of refitting.
    ValueError when the sweep cannot run (e.g. every image in test)."""
    p = params or Params()
    n = len(labels)
    why = f"{n} images, it needs at least {MIN_IMAGES}" if n < MIN_IMAGES else why_labels_unusable(labels)
    if why:
        return CheckResult(NAME, TITLE, 0, {}, [f"sample-size sweep skipped: {why}"])
    is_test = None if splits is None else np.array([s == "test" for s in splits], dtype=bool)
    if is_test is not None and not is_test.any():
        is_test = None
    n_train = int((~is_test).sum()) if is_test is not None else int(round(n * (1 - p.test_fraction)))
    classifier, note = classifier_for(p, n_train)
    labels = np.asarray(labels)
    key = memo.digest(NAME, _CODE, np.ascontiguousarray(vectors, dtype=np.float32), labels.astype(str),
                      is_test if is_test is not None else p.test_fraction, tuple(p.fractions), p.repeats,
                      classifier, p.seed)
    def answer(sweep):
        return report_from_sweep(sweep, target=p.target, at=None if p.at is None else list(p.at), seed=p.seed,
                                 n_boot=p.bootstrap, report=report, title=title.replace("{classifier}", classifier))

    rep = None
    sweep = _sweep_from_arrays(memo.load(cache, NAME, key), len(p.fractions), p.repeats)
    if sweep is not None:
        try:
            rep = answer(sweep)
        except ValueError:       # a kept sweep that cannot be answered: computed again, not an error
            sweep = None
    kept = sweep is not None
    if not kept:
        sweep = sweep_on_labels(vectors, labels, is_test=is_test, fractions=p.fractions, repeats=p.repeats,
                                test_fraction=p.test_fraction, classifier=classifier, seed=p.seed, report=report)
        memo.save(cache, NAME, key, _sweep_arrays(sweep))
        rep = answer(sweep)
    notes = [note] if note else []
    if kept:
        notes.append(f"the sweep's {len(sweep.sizes) * sweep.accuracies.shape[1]} classifier fits were read "
                     f"from {Path(cache) / 'results'} (the same images, labels and parameters)")
    return CheckResult(NAME, TITLE, n, {}, notes, details=rep)


def _sweep_arrays(sweep: SweepResult) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(sweep, f.name)) for f in dataclasses.fields(sweep)
            if getattr(sweep, f.name) is not None}


def _sweep_from_arrays(arrays: dict[str, np.ndarray] | None, sizes: int, repeats: int) -> SweepResult | None:
    """The kept sweep of ``sizes`` sizes and ``repeats`` repeats, or None
    (nothing kept, or arrays of other shapes: computed again)."""
    if arrays is None:
        return None
    scalar = {"n_train": int, "n_test": int, "test_source": str, "classifier": str}
    try:
        sweep = SweepResult(**{name: scalar[name](a) if name in scalar else a for name, a in arrays.items()})
    except (TypeError, ValueError):
        return None
    k, c = sizes, len(np.atleast_1d(sweep.classes))
    shapes_ok = (np.shape(sweep.sizes) == (k,) and np.shape(sweep.fractions) == (k,)
                 and np.shape(sweep.accuracies) == (k, repeats) and np.shape(sweep.per_class) == (k, c)
                 and (sweep.test_correct is None or np.shape(sweep.test_correct) == (k, repeats, sweep.n_test)))
    return sweep if shapes_ok and np.all(np.diff(sweep.sizes) > 0) else None


def from_inputs(inputs: CheckInputs, params: Params | None = None) -> CheckResult:
    return run(inputs.vectors, list(inputs.labels), list(inputs.splits), params, report=inputs.report,
               cache=inputs.store)
