"""Which copies of one picture carry different labels? The duplicate pairs
(``checks.duplicates``: the one definition of "the same picture") whose two
images have different labels (images without a label conflict with none):
at least one of the two labels is wrong, or the classes overlap. The
ScoreLabels job and the ``labels`` command report these same pairs."""
from __future__ import annotations

import dataclasses

import numpy as np

from .base import CheckInputs, CheckResult
from .duplicates import NAME as DUPLICATES, refine

NAME = "label_conflicts"
TITLE = "Duplicates with different labels"


@dataclasses.dataclass(frozen=True)
class Params:
    """None of its own: it refines the duplicates check's pairs."""


def run(duplicates: CheckResult, params: Params | None = None) -> CheckResult:
    """The pairs of ``duplicates`` (a :mod:`checks.duplicates` result) whose
    images carry different labels, identical bytes first, then the most
    certain."""
    pairs = refine(duplicates, lambda d: d.labels_disagree, "different_labels",
                   "the same picture with two labels")
    return CheckResult(NAME, TITLE, duplicates.measured, {"different_labels": pairs})


def conflicting_pairs(duplicates: CheckResult) -> np.ndarray:
    """(K, 2) int64 image positions of :func:`run`'s pairs, in its order."""
    f = run(duplicates).issues["different_labels"]
    return np.stack([f.a, f.b], axis=1) if f.count else np.zeros((0, 2), np.int64)


def from_inputs(inputs: CheckInputs, params: Params | None = None) -> CheckResult:
    if DUPLICATES not in inputs.results:
        raise ValueError("the duplicates check did not run")
    return run(inputs.results[DUPLICATES], params)
