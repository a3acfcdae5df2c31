"""Which images are far from all others? The mean cosine of each image's
embedding to its nearest neighbours (computed once by the audit's kNN pass,
``analysis.outliers.knn_similarity``), as a robust z-score of isolation
(``analysis.outliers.outlier_scores``): an image far below its data set's
typical neighbourhood is off-topic, corrupt in a way decoding missed, or a
rare kind worth a look."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..analysis.outliers import flag_outliers, outlier_scores
from .base import CheckInputs, CheckResult, FlaggedImages

NAME = "outliers"
TITLE = "Outliers"


@dataclasses.dataclass(frozen=True)
class Params:
    """``z``: robust z-score of isolation at or above which an image is an
    outlier (> 0); ``max_fraction``: at most this share of the images is
    flagged, the most isolated first (0 < f <= 1)."""
    z: float = 3.5
    max_fraction: float = 0.01

    def __post_init__(self):
        if not self.z > 0:
            raise ValueError(f"z must be > 0; got {self.z}")
        if not 0 < self.max_fraction <= 1:
            raise ValueError(f"max_fraction must be in (0, 1]; got {self.max_fraction}")


def run(knn_similarity: np.ndarray, params: Params | None = None) -> CheckResult:
    """``knn_similarity``: (N,) mean cosine of each image to its nearest
    neighbours, NaN where not measured (a failed image). Positions in the
    result index these N rows; scores are robust z-scores."""
    p = params or Params()
    sim = np.asarray(knn_similarity, np.float32)
    if sim.ndim != 1:
        raise ValueError(f"knn_similarity must be (N,); got {sim.shape}")
    idx = np.flatnonzero(np.isfinite(sim))
    z = outlier_scores(sim[idx]) if len(idx) else np.zeros(0, np.float32)
    flagged = flag_outliers(z, p.z, p.max_fraction) if len(idx) else np.zeros(0, np.int64)
    issue = FlaggedImages("isolated", "far from all other images", "robust z of isolation", idx[flagged],
                          z[flagged].astype(np.float32), p.z,
                          f"robust z-score of the mean cosine to the nearest images at or above {p.z:g} "
                          f"(at most {p.max_fraction:.0%} of the images and at least one, the most isolated first)")
    notes = [] if len(idx) >= 3 else [f"{len(idx)} images measured: too few to tell an outlier"]
    return CheckResult(NAME, TITLE, int(len(idx)), {"isolated": issue}, notes)


def from_inputs(inputs: CheckInputs, params: Params | None = None) -> CheckResult:
    """:func:`run` on the audit's kNN similarities (none: nothing measured)."""
    n = len(inputs.ok)
    sim = np.full(n, np.nan, np.float32) if inputs.knn_similarity is None else inputs.knn_similarity
    return run(sim, params)
