"""``analyse_consensus``: the composition used by the CLI and the benchmark.

Steps: majority vote (ties by the model) -> the chosen aggregator
("dawid_skene" by default, chosen by bench/consensus.py; "crowdlab";
"majority") -> per-image agreement and quality -> per-annotator stats ->
Krippendorff's alpha -> the confident joint of the consensus against the
model -> ambiguous class pairs -> the review queue.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..labels.count import confident_joint
from .aggregate import AGGREGATORS, Aggregate, crowdlab, dawid_skene, majority_vote
from .agreement import fleiss_kappa, item_agreement, krippendorff_alpha, label_counts
from .ambiguity import AmbiguousPair, ambiguous_pairs
from .annotators import AnnotatorStats, annotator_stats
from .validate import check_labels, check_probs


@dataclasses.dataclass
class ConsensusResult:
    method: str
    consensus: np.ndarray         # (N,) int
    quality: np.ndarray           # (N,) posterior probability of the consensus label
    posterior: np.ndarray         # (N, K)
    agreement: np.ndarray         # (N,) fraction of the image's labels equal to the consensus
    num_labels: np.ndarray        # (N,) labels per image
    majority: np.ndarray          # (N,) plain majority vote (ties by the model when given)
    annotators: AnnotatorStats
    alpha: float                  # Krippendorff's alpha (nominal)
    fleiss_kappa: float           # NaN unless every image has the same number (>= 2) of labels
    joint: np.ndarray | None      # (K, K) calibrated confident joint [consensus, model], None without a model
    pairs: list[AmbiguousPair]
    review: np.ndarray            # indices to review, worst first
    aggregate: Aggregate


def review_order(quality, agreement, num_labels, weak: float = 0.7, include_all: bool = False) -> np.ndarray:
    """Indices of images to review, worst first: annotators disagree
    (agreement < 1) or the consensus is weak (quality < ``weak``). Ranked by
    the review score (quality + agreement) / 2 ascending (a confident
    consensus over a split vote still ranks above a unanimous one), then
    quality, then more labels first (a split among many annotators is the
    clearer case of ambiguity). include_all ranks every image.
    quality, agreement, num_labels: (N,) each; agreement NaN counts as 1."""
    q = np.asarray(quality, dtype=np.float64)
    ag = np.asarray(agreement, dtype=np.float64)
    nl = np.asarray(num_labels)
    if not (q.shape == ag.shape == nl.shape) or q.ndim != 1:
        raise ValueError("quality, agreement and num_labels must be 1-D of the same length")
    ag0 = np.where(np.isnan(ag), 1.0, ag)
    order = np.lexsort((-nl, q, (q + ag0) / 2.0))
    if include_all:
        return order
    flagged = (ag0 < 1.0) | (q < weak)
    return order[flagged[order]]


def analyse_consensus(labels, num_classes: int | None = None, pred_probs=None, method: str = "dawid_skene",
                      class_names=None, weak: float = 0.7, model_weight: float = 1.0,
                      min_pair_rate: float = 0.1, merge_rate: float = 0.3, top_pairs: int = 10) -> ConsensusResult:
    """labels (N, M) int, -1 = missing; pred_probs (N, K) out-of-fold or None.
    crowdlab needs pred_probs; dawid_skene uses them as each image's prior."""
    if method not in AGGREGATORS:
        raise ValueError(f"unknown method {method!r}; choose from {AGGREGATORS}")
    a, k = check_labels(labels, num_classes)
    p = None if pred_probs is None else check_probs(pred_probs, len(a), k)
    if method == "crowdlab" and p is None:
        raise ValueError("crowdlab needs pred_probs")
    mv = majority_vote(a, k, p)
    if method == "majority":
        agg = mv
    elif method == "dawid_skene":
        agg = dawid_skene(a, k, p, model_weight=model_weight)
    else:
        agg = crowdlab(a, p, k)
    counts = label_counts(a, k)
    nl = counts.sum(axis=1)
    agreement = item_agreement(a, agg.consensus, k)
    stats = annotator_stats(a, agg.posterior, agg.consensus, k)
    alpha = krippendorff_alpha(a, k)
    try:
        kappa = fleiss_kappa(counts)
    except ValueError:
        kappa = float("nan")
    joint = None
    if p is not None and (agg.consensus >= 0).all():
        joint = confident_joint(agg.consensus, p, calibrate=True)
    pairs = ambiguous_pairs(a, k, joint, class_names, min_rate=min_pair_rate, merge_rate=merge_rate, top=top_pairs)
    review = review_order(agg.quality, agreement, nl, weak=weak)
    return ConsensusResult(agg.method, agg.consensus, agg.quality, agg.posterior, agreement, nl, mv.consensus,
                           stats, alpha, kappa, joint, pairs, review, agg)
