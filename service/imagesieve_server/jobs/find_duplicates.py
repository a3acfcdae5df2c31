"""FindDuplicates: compose the duplicate analyses over a whole collection.

Pairs (exact range search, or an approximate kNN graph for very large
collections), then groups, leakage across splits, label conflicts and exact
(same-bytes) pairs. Never an N x N matrix.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from imagesieve.v1 import common_pb2, duplicates_pb2

from ..analysis.duplicates.groups import (bounded_groups, connected_components, group_min_similarity,
                                          groups_from_labels)
from ..analysis.duplicates.leakage import cross_split_pairs, label_conflicts
from ..analysis.duplicates.pairs import knn_graph_pairs, pairs_above_threshold
from ..collections import Collection, CollectionError
from .runner import run_job

GROUPINGS = ("bounded", "centre", "components")


@dataclasses.dataclass
class DuplicateReport:
    """Pairs as positions into ``keys`` (a < b), with per-pair flags, and
    groups as position arrays with their lowest internal cosine."""
    keys: list[str]
    threshold: float
    a: np.ndarray
    b: np.ndarray
    cosine: np.ndarray
    exact: np.ndarray
    cross_split: np.ndarray
    labels_disagree: np.ndarray
    groups: list[np.ndarray]
    group_min_cosine: np.ndarray


def find_duplicates(vectors: np.ndarray, keys: list[str], labels: list[str], splits: list[str],
                    sha256: list[str], threshold: float, approximate: bool = False, knn_k: int = 16,
                    grouping: str = "bounded", report: Callable | None = None) -> DuplicateReport:
    """vectors (N, D) unit float32 and N-long metadata lists -> DuplicateReport."""
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
    sha = np.asarray(sha256, dtype=object)
    return DuplicateReport(
        keys=keys, threshold=threshold, a=a, b=b, cosine=sim,
        exact=sha[a] == sha[b] if len(a) else np.zeros(0, bool),
        cross_split=cross_split_pairs(a, b, np.asarray(splits, dtype=object), unknown=""),
        labels_disagree=label_conflicts(a, b, np.asarray(labels, dtype=object), unknown=""),
        groups=groups, group_min_cosine=group_min_similarity(vectors, groups))


def report_message(r: DuplicateReport) -> duplicates_pb2.FindDuplicatesResult:
    k = r.keys
    return duplicates_pb2.FindDuplicatesResult(
        pairs=[duplicates_pb2.DuplicatePair(key_a=k[i], key_b=k[j], cosine=float(s), exact=bool(e),
                                            cross_split=bool(c), labels_disagree=bool(d))
               for i, j, s, e, c, d in zip(r.a.tolist(), r.b.tolist(), r.cosine.tolist(), r.exact,
                                           r.cross_split, r.labels_disagree)],
        groups=[duplicates_pb2.DuplicateGroup(keys=[k[i] for i in g.tolist()], min_internal_cosine=float(m))
                for g, m in zip(r.groups, r.group_min_cosine)],
        num_images=len(k), threshold=r.threshold)


async def find_duplicates_events(collection: Collection, request):
    """Yield FindDuplicatesEvent messages: progress, then the result."""
    threshold = request.threshold or collection.threshold
    if not 0 < threshold <= 1:
        raise CollectionError(f"threshold must be a cosine in (0, 1], got {threshold}", "INVALID_ARGUMENT")
    grouping = request.grouping or "bounded"
    if grouping not in GROUPINGS:
        raise CollectionError(f"grouping must be one of {GROUPINGS}, got {grouping!r}", "INVALID_ARGUMENT")

    def work(reporter):
        reporter.report("loading vectors", 0, 0)
        ids, vectors = collection.all_vectors()
        meta = {r[0]: r[1:] for r in collection.store.all_records()}   # id -> key, label, split, sha
        rows = [meta[i] for i in ids.tolist()]
        return find_duplicates(vectors, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                               [r[3] for r in rows], threshold, request.approximate, request.knn_k or 16,
                               grouping, report=reporter.report)

    async for kind, value in run_job(work):
        if kind == "progress":
            yield duplicates_pb2.FindDuplicatesEvent(progress=common_pb2.JobProgress(**value))
        else:
            yield duplicates_pb2.FindDuplicatesEvent(result=report_message(value))
