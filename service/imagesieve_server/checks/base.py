"""What every check returns: per kind of issue, the flagged images worst
first with their scores, the threshold that flagged them and why."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class CheckInputs:
    """What the audit has for N images, for any check to take what it needs.
    ``ok``: (N,) bool, embedded; ``properties``: (N, engine.properties.COUNT)
    float32 or None; ``sizes``: (N, 2) width, height (0 = unknown);
    ``knn_similarity``: (N,) mean cosine to the nearest images, NaN where
    not embedded, or None."""
    ok: np.ndarray
    sizes: np.ndarray
    properties: np.ndarray | None = None
    knn_similarity: np.ndarray | None = None


@dataclasses.dataclass
class FlaggedImages:
    """One kind of issue. ``positions``: (M,) int64 image positions, worst
    first; ``scores``: (M,) float32, the measured value of each (the unit
    is the issue's ``unit``); ``threshold``: the value beyond which an image
    is flagged; ``reason``: how that threshold was chosen, in words."""
    kind: str
    description: str
    unit: str
    positions: np.ndarray
    scores: np.ndarray
    threshold: float
    reason: str

    @property
    def count(self) -> int:
        return int(len(self.positions))


@dataclasses.dataclass
class CheckResult:
    """A check's answer: ``issues`` by kind (every kind it looks for, flagged
    or not); ``measured``: images it could judge; ``notes``: why a kind was
    not judged, in words."""
    name: str
    title: str
    measured: int
    issues: dict[str, FlaggedImages]
    notes: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> dict:
        """{kind: count} plus ``measured``: what a summary line or card shows."""
        return {"measured": self.measured, **{k: v.count for k, v in self.issues.items()}}

    @property
    def flagged(self) -> int:
        """Images with at least one issue."""
        if not self.issues:
            return 0
        return int(np.unique(np.concatenate([v.positions for v in self.issues.values()])).size)
