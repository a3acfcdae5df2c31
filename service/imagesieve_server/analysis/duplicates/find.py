"""Which images are duplicates, over a whole set: pairs (exact range search or
an approximate kNN graph, never an N x N matrix), groups that do not chain
unrelated images, exact (same-bytes) pairs, leakage across splits and label
conflicts, composed from the modules of this package."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Callable

import numpy as np

from .groups import bounded_groups, connected_components, group_min_similarity, groups_from_labels
from .leakage import cross_split_pairs, label_conflicts
from .pairs import knn_graph_pairs, pairs_above_threshold

GROUPINGS = ("bounded", "centre", "components")


@dataclasses.dataclass
class DuplicateReport:
    """Pairs as positions into ``keys`` (a < b), with per-pair flags, and
    groups as position arrays with their lowest internal cosine."""
    keys: Sequence[str]
    threshold: float
    a: np.ndarray
    b: np.ndarray
    cosine: np.ndarray
    exact: np.ndarray
    cross_split: np.ndarray
    labels_disagree: np.ndarray
    groups: list[np.ndarray]
    group_min_cosine: np.ndarray


def find_duplicates(vectors: np.ndarray, keys: Sequence[str], labels: Sequence[str], splits: Sequence[str],
                    sha256, threshold: float, approximate: bool = False, knn_k: int = 16,
                    grouping: str = "bounded", report: Callable | None = None) -> DuplicateReport:
    """vectors (N, D) unit float32 and N-long metadata sequences (sha256: a
    list of str or an (N,) array) -> DuplicateReport."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    n = len(keys)
    if approximate:
        a, b, sim = knn_graph_pairs(vectors, threshold, k=knn_k, report=report)
    else:
        a, b, sim = pairs_above_threshold(vectors, threshold, report=report)
    if grouping == "components":
        labels_ = connected_components(n, a, b)
    else:
        labels_ = bounded_groups(n, a, b, sim, threshold, mode="complete" if grouping == "bounded" else "centre")
    groups = groups_from_labels(labels_)
    # An array stays as it is (the audit passes S64 bytes); a list becomes
    # an object array of the same str objects.
    sha = sha256 if isinstance(sha256, np.ndarray) else np.asarray(sha256, dtype=object)
    return DuplicateReport(
        keys=keys, threshold=threshold, a=a, b=b, cosine=sim,
        exact=sha[a] == sha[b] if len(a) else np.zeros(0, bool),
        cross_split=cross_split_pairs(a, b, np.asarray(splits, dtype=object), unknown=""),
        labels_disagree=label_conflicts(a, b, np.asarray(labels, dtype=object), unknown=""),
        groups=groups, group_min_cosine=group_min_similarity(vectors, groups))
