"""What every check returns: per kind of issue, the flagged images (or
pairs of images) worst first with their scores, the threshold that flagged
them and why."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import numpy as np


@dataclasses.dataclass
class CheckInputs:
    """What the audit has for N images, for any check to take what it needs.
    ``ok``: (N,) bool, embedded; ``properties``: (N, engine.properties.COUNT)
    float32 or None; ``sizes``: (N, 2) width, height (0 = unknown);
    ``knn_similarity``: (N,) mean cosine to the nearest images, NaN where
    not embedded, or None. The duplicates check's inputs, over the
    embedded images only (``ok_index`` maps them back): ``vectors`` (N_ok,
    D) unit float32, ``keys``, ``labels``, ``splits`` (N_ok strings each),
    ``sha256`` (N_ok,), ``signatures`` (N_ok, SIGNATURE_BYTES) uint8 or
    None (raw cosine), ``knn`` (sims, ids) (N_ok, k) each from a kNN pass
    already made, ``label_evidence`` the labels' neighbour evidence from that
    pass (``analysis.labels.rank.NeighborEvidence``), ``pixels`` (N_ok, H, W)
    uint8 thumbnails or None, ``report(stage, done, total)`` for progress. ``results``:
    the checks already run, by name (leakage and label conflicts read the
    duplicates'). ``store``: the embedding store's folder, where a check
    may keep a costly result for later commands (``memo``), or None.
    ``region_cosines``: partial matches compared where they were found, from
    the embedded images' pixels (``analysis.duplicates.region.image_cosines``), or None."""
    ok: np.ndarray
    sizes: np.ndarray
    properties: np.ndarray | None = None
    knn_similarity: np.ndarray | None = None
    vectors: np.ndarray | None = None
    keys: Sequence[str] = ()
    labels: Sequence[str] = ()
    splits: Sequence[str] = ()
    sha256: np.ndarray | None = None
    signatures: np.ndarray | None = None
    knn: tuple[np.ndarray, np.ndarray] | None = None
    label_evidence: object | None = None
    pixels: np.ndarray | None = None
    report: Callable | None = None
    store: Path | None = None
    region_cosines: Callable | None = None
    results: dict = dataclasses.field(default_factory=dict)

    @property
    def ok_index(self) -> np.ndarray:
        """(N_ok,) positions among all N images of the embedded ones."""
        return np.flatnonzero(self.ok)


@dataclasses.dataclass
class FlaggedImages:
    """One kind of issue. ``positions``: (M,) int64 image positions, worst
    first; ``scores``: (M,) float32, the measured value of each (the unit
    is the issue's ``unit``); ``threshold``: the value beyond which an image
    is flagged; ``reason``: how that threshold was chosen, in words;
    ``evidence``: more (M,) columns by name (e.g. the suggested label)."""
    kind: str
    description: str
    unit: str
    positions: np.ndarray
    scores: np.ndarray
    threshold: float
    reason: str
    evidence: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(len(self.positions))


@dataclasses.dataclass
class FlaggedPairs:
    """One kind of issue between two images. ``a``, ``b``: (M,) int64 image
    positions, most severe first; ``scores``: (M,) float32 in ``unit``
    (what they are ordered by); ``evidence``: more (M,) columns by name
    (why each pair was flagged: cosine, stage 2's agreement...);
    ``threshold`` and ``reason``: what flags a pair, in numbers and words;
    ``threshold_unit``: what ``threshold`` bounds when that is not ``unit``
    (verified duplicates: ordered by agreement, candidates by cosine)."""
    kind: str
    description: str
    unit: str
    a: np.ndarray
    b: np.ndarray
    scores: np.ndarray
    threshold: float
    reason: str
    evidence: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    threshold_unit: str = ""

    @property
    def count(self) -> int:
        return int(len(self.a))

    @property
    def positions(self) -> np.ndarray:
        """The images in some flagged pair, each once."""
        return np.unique(np.r_[self.a, self.b]).astype(np.int64)


def why_labels_unusable(labels) -> str | None:
    """Why N class names cannot train a classifier (some unset, or one class
    only), in words a user can act on; None when they can."""
    labels = list(labels)
    missing = sum(1 for label in labels if not label)
    if missing:
        return f"{missing} of {len(labels)} images have no label"
    classes = set(labels)
    if len(classes) < 2:
        only = f" ({next(iter(classes))!r})" if classes else ""
        return (f"every image is in one class{only}, and a classifier needs at least 2 (an audit of a folder "
                "takes each image's class from the first folder level below it)")
    return None


@dataclasses.dataclass
class CheckResult:
    """A check's answer: ``issues`` by kind (every kind it looks for, flagged
    or not), of single images or of pairs (:class:`FlaggedPairs`);
    ``measured``: images it could judge; ``notes``: why a kind was not
    judged, in words; ``details``: the analysis' own result object for
    callers that render more of it (the duplicates' groups and evidence),
    or None."""
    name: str
    title: str
    measured: int
    issues: dict[str, FlaggedImages | FlaggedPairs]
    notes: list[str] = dataclasses.field(default_factory=list)
    details: object | None = None

    def summary(self) -> dict:
        """{kind: count} plus ``measured``: what a summary line or card shows."""
        return {"measured": self.measured, **{k: v.count for k, v in self.issues.items()}}

    @property
    def flagged(self) -> int:
        """Images with at least one issue."""
        if not self.issues:
            return 0
        return int(np.unique(np.concatenate([v.positions for v in self.issues.values()])).size)
