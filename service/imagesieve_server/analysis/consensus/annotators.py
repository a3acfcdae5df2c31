"""Per-annotator reliability: agreement with the consensus and estimated accuracy."""
from __future__ import annotations

import dataclasses

import numpy as np

from .agreement import label_counts
from .aggregate import _annotator_agreement
from .validate import check_labels, check_probs


@dataclasses.dataclass
class AnnotatorStats:
    num_labels: np.ndarray            # (M,) images each annotator labelled
    agreement_with_consensus: np.ndarray  # (M,) fraction of its labels equal to the consensus (NaN: none)
    agreement_with_others: np.ndarray     # (M,) mean fraction of other annotators agreeing (NaN: never overlapped)
    estimated_accuracy: np.ndarray        # (M,) mean posterior probability that its label is the true one


def annotator_stats(labels, posterior, consensus=None, num_classes: int | None = None) -> AnnotatorStats:
    """labels (N, M) int (-1 missing); posterior (N, K) from an aggregator;
    consensus (N,) (default argmax of posterior; -1 entries are skipped).

    estimated_accuracy[j] = mean over the images j labelled of posterior[i, l_ij]
    (for Dawid-Skene this equals the diagonal of j's confusion matrix weighted
    by the classes of the images it saw)."""
    a, k = check_labels(labels, num_classes)
    post = check_probs(posterior, len(a), k)
    cons = post.argmax(axis=1) if consensus is None else np.asarray(consensus)
    if cons.shape != (len(a),):
        raise ValueError(f"consensus must have shape ({len(a)},), got {cons.shape}")
    m = a.shape[1]
    num = (a >= 0).sum(axis=0)
    agree_c = np.full(m, np.nan)
    acc = np.full(m, np.nan)
    for j in range(m):
        rows = np.flatnonzero(a[:, j] >= 0)
        if len(rows) == 0:
            continue
        known = rows[cons[rows] >= 0]
        if len(known):
            agree_c[j] = float(np.mean(a[known, j] == cons[known]))
        acc[j] = float(np.mean(post[rows, a[rows, j]]))
    others = _annotator_agreement(a, label_counts(a, k).astype(np.float64))
    return AnnotatorStats(num.astype(np.int64), agree_c, others, acc)
