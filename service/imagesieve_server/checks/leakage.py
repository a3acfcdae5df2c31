"""Which test images have a copy in the training split? The duplicate pairs
(``checks.duplicates``: the one definition of "the same picture") whose two
images sit in different splits: a model scored on such a test image has
seen it in training."""
from __future__ import annotations

import dataclasses

from .base import CheckInputs, CheckResult
from .duplicates import NAME as DUPLICATES, refine

NAME = "leakage"
TITLE = "Train/test leakage"


@dataclasses.dataclass(frozen=True)
class Params:
    """None of its own: it refines the duplicates check's pairs."""


def run(duplicates: CheckResult, params: Params | None = None) -> CheckResult:
    """The pairs of ``duplicates`` (a :mod:`checks.duplicates` result) whose
    images sit in different splits (images without a split never leak),
    identical bytes first, then the most certain."""
    pairs = refine(duplicates, lambda d: d.cross_split, "cross_split", "the same picture in two splits")
    return CheckResult(NAME, TITLE, duplicates.measured, {"cross_split": pairs})


def from_inputs(inputs: CheckInputs, params: Params | None = None) -> CheckResult:
    if DUPLICATES not in inputs.results:
        raise ValueError("the duplicates check did not run")
    return run(inputs.results[DUPLICATES], params)
