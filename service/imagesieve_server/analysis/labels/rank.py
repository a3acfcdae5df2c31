"""Per-item label-quality scores, lower = more likely mislabeled.

Inputs: ``labels`` (N,) int in [0, C); ``pred_probs`` (N, C) rows summing to 1.
All scores are (N,) float64 in [0, 1].
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..neighbors import knn, knn_chunks, mean_found_similarity


def _check(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    if pred_probs.ndim != 2:
        raise ValueError(f"pred_probs must be (N, C), got shape {pred_probs.shape}")
    if labels.shape != (pred_probs.shape[0],):
        raise ValueError(f"labels must be ({pred_probs.shape[0]},), got shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= pred_probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {pred_probs.shape[1]})")
    return labels.astype(np.int64), pred_probs


def self_confidence(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """p[i, labels[i]]: the predicted probability of the given label."""
    labels, p = _check(labels, pred_probs)
    return p[np.arange(len(labels)), labels]


def labelfix_score(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """<one_hot(labels[i]), p[i]> (Muller & Markert 2019, step 3). Numerically
    equal to self-confidence; written as the paper's inner product."""
    labels, p = _check(labels, pred_probs)
    one_hot = np.eye(p.shape[1])[labels]
    return np.einsum("nc,nc->n", one_hot, p)


def normalized_margin(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """(p[i, y] - max_{k != y} p[i, k] + 1) / 2, in [0, 1] (cleanlab's definition)."""
    labels, p = _check(labels, pred_probs)
    idx = np.arange(len(labels))
    given = p[idx, labels]
    other = p.copy()
    other[idx, labels] = -np.inf
    return (given - other.max(axis=1) + 1.0) / 2.0


def nearest_neighbors(vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest other items by cosine similarity (``neighbors.knn``:
    FAISS brute force on L2-normalized float32 rows; memory O(N*k), never an
    N x N matrix; the vectors are copied only when not already unit norm).

    vectors: (N, D). Returns (indices (N, k') int64, similarities (N, k')
    float32), k' = min(k, N - 1), self excluded, most similar first."""
    x = _unit_rows(vectors)
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sims, idx = knn(x, int(k))
    return idx, sims


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """(N, D) float32 C-contiguous unit rows; a copy only when needed."""
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1))
    if len(x) < 2:
        raise ValueError("need at least 2 items for neighbours")
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    if np.abs(norms - 1.0).max() > 1e-3:
        x = x / np.maximum(norms, 1e-12)[:, None]
    return x


@dataclasses.dataclass
class NeighborEvidence:
    """What each item's k nearest neighbours say about its label.
    label_distribution (N, C) float64: fraction of neighbours per label;
    agreement (N,): fraction sharing the item's label; mean_similarity (N,)
    float32: mean cosine to the neighbours (low = isolated, for outliers)."""
    label_distribution: np.ndarray
    agreement: np.ndarray
    mean_similarity: np.ndarray


def neighbor_evidence(vectors: np.ndarray, labels: np.ndarray, k: int, num_classes: int,
                      report=None) -> NeighborEvidence:
    """:class:`NeighborEvidence` from one chunked kNN pass (``neighbors.knn_chunks``):
    the (N, k) neighbour lists are reduced chunk by chunk, never held whole.
    vectors: (N, D); labels: (N,) int in [0, num_classes).
    ``report(stage, done, total)``, if given, is called after each chunk."""
    x = _unit_rows(vectors)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(x),):
        raise ValueError(f"labels must be ({len(x)},), got {labels.shape}")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return evidence_from_knn(knn_chunks(x, int(k)), labels, num_classes, report)


def evidence_from_knn(chunks, labels: np.ndarray, num_classes: int, report=None) -> NeighborEvidence:
    """Reduce kNN answers ``chunks`` (an iterable of (start, sims (b, k),
    ids (b, k)) covering rows 0..N-1 in order, as ``neighbors.knn_chunks``
    yields) to :class:`NeighborEvidence`. An id of -1 (an approximate index
    found fewer than k) is not counted."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    dist = np.zeros((n, num_classes))
    agreement = np.empty(n)
    mean_sim = np.empty(n, dtype=np.float32)
    for s, sims, idx in chunks:
        e = s + len(idx)
        dist[s:e] = neighbor_label_distribution(idx, labels, num_classes)
        agreement[s:e] = neighbor_agreement(idx, labels, labels[s:e])
        mean_sim[s:e] = mean_found_similarity(sims, idx)
        if report is not None:
            report("nearest neighbours", e, n)
    return NeighborEvidence(dist, agreement, mean_sim)


def neighbor_label_distribution(neighbor_idx: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, C): fraction of each item's neighbours carrying each label.
    neighbor_idx (N, k) indexes ``labels``; -1 (not found) is not counted."""
    labels = np.asarray(labels, dtype=np.int64)
    neighbor_idx = np.asarray(neighbor_idx)
    valid = neighbor_idx >= 0
    out = np.zeros((len(neighbor_idx), num_classes))
    np.add.at(out, (np.nonzero(valid)[0], labels[neighbor_idx[valid]]), 1.0)
    return out / np.maximum(valid.sum(axis=1), 1)[:, None]


def neighbor_agreement(neighbor_idx: np.ndarray, labels: np.ndarray,
                       own_labels: np.ndarray | None = None) -> np.ndarray:
    """(N,): fraction of item i's neighbours whose label equals its own.
    neighbor_idx (N, k) indexes ``labels``; the items' own labels are
    ``own_labels`` (N,), by default ``labels`` itself; -1 is not counted."""
    labels = np.asarray(labels, dtype=np.int64)
    own = labels if own_labels is None else np.asarray(own_labels, dtype=np.int64)
    neighbor_idx = np.asarray(neighbor_idx)
    if neighbor_idx.ndim != 2 or neighbor_idx.shape[0] != len(own):
        raise ValueError(f"neighbor_idx must be ({len(own)}, k), got {neighbor_idx.shape}")
    valid = neighbor_idx >= 0
    same = (labels[np.where(valid, neighbor_idx, 0)] == own[:, None]) & valid
    return same.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def blend_with_neighbors(pred_probs: np.ndarray, neighbor_dist: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) * pred_probs + weight * neighbour label distribution, (N, C).
    weight in [0, 1]; 0 leaves the classifier's probabilities unchanged."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"neighbour weight must be in [0, 1], got {weight}")
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    if neighbor_dist.shape != pred_probs.shape:
        raise ValueError(f"shapes differ: {pred_probs.shape} vs {neighbor_dist.shape}")
    out = np.multiply(pred_probs, 1.0 - weight)       # one (N, C) result, one temporary
    out += weight * neighbor_dist
    return out


RANKERS = {"self_confidence": self_confidence, "normalized_margin": normalized_margin,
           "labelfix": labelfix_score}
