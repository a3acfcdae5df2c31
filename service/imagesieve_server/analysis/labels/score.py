"""Score every label and rank the suspects: the composition of predict,
rank, count and filter used by the gRPC job, the CLI and the benchmark.

Methods:
- "labelfix" (Muller & Markert, IJCNN 2019), its steps exactly: train a
  classifier on the whole set, predict the whole set, score =
  <one_hot(label), p>, lowest first. A classifier that can fit every
  training label (a flexible one, or LDA with fewer images than dimensions)
  memorizes the flipped ones.
- "out_of_fold" (default): K-fold out-of-fold probabilities (the item's own
  label never trained its prediction), optionally blended with the label
  distribution of its k nearest neighbours, ranked by self-confidence (or
  normalized margin); the confident joint estimates noise per class pair.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ..defaults import LABELS_CLASSIFIER
from . import count, filter as filt, predict, rank

METHODS = ("out_of_fold", "labelfix")
RANKINGS = ("self_confidence", "normalized_margin")
# The defaults of `imagesieve labels`, the audit and the ScoreLabels job, chosen by
# bench/labelfix_table.py on fresh flip seeds (100-104) of MNIST-5k and Fashion-MNIST's 10k
# test images, and on 400 and 1,797 of scikit-learn's digits, all on embeddings (README,
# "Mislabeled images"). Shrunk LDA out of fold with 20% neighbour labels had the best mean
# precision at 3% over the four (0.834; logistic regression 0.827 at 4-40 times the time).
# In-sample (labelfix) LDA was better on the two large sets (+1.0-1.4 points) but
# memorized a small one (400 images, 1024-d: 0-8% precision): not a default.
DEFAULT_METHOD = "out_of_fold"
DEFAULT_CLASSIFIER = LABELS_CLASSIFIER          # analysis.defaults: shown by the commands' help
DEFAULT_NEIGHBOR_WEIGHT = 0.2
# The noise estimate (the confident joint) counts from probabilities blended half and
# half with the neighbours' labels, whatever weight ranks: LDA's nearly one-hot
# probabilities count every error of the classifier as a wrong label. Chosen by
# bench/label_noise.py on planted flips of MNIST-5k, digits and Fashion-MNIST embeddings
# (3% planted: 3.69% -> 3.4% / 3.0% estimated) and confirmed on other features and seeds
# (PCA-50 of the pixels, flip seeds 200-201: MNIST-5k 5.5% -> 3.8%); README, "Wrong or ambiguous".
ESTIMATE_NEIGHBOR_WEIGHT = 0.5


@dataclasses.dataclass
class LabelScores:
    method: str
    pred_probs: np.ndarray           # (N, C) probabilities the scores came from
    scores: np.ndarray               # (N,) lower = more likely mislabeled
    suggested: np.ndarray            # (N,) int, argmax of pred_probs
    suggested_probability: np.ndarray  # (N,)
    neighbor_agreement: np.ndarray   # (N,) fraction of k neighbours with the same label (NaN: not computed)
    suspects: np.ndarray             # (M,) indices, worst first
    joint: np.ndarray                # (C, C) calibrated confident joint [given, true], float (counted
                                     # from probabilities blended 50/50 with the neighbours' labels)
    noise_rate: float                # estimated fraction of wrong labels
    noise_split: count.NoiseSplit    # that fraction as confidently wrong + ambiguous class pairs

    def in_ambiguous_pair(self, labels: np.ndarray) -> np.ndarray:
        """(N,) bool: the given label (``labels`` (N,) int) and the suggested
        one form an ambiguous class pair (``noise_split.pairs``)."""
        labels = np.asarray(labels)
        c = self.joint.shape[0]
        pair = np.zeros((c, c), bool)
        for a, b, _ in self.noise_split.pairs:
            pair[a, b] = pair[b, a] = True
        return pair[labels, self.suggested]


def score_labels(X: np.ndarray, labels: np.ndarray, method: str = DEFAULT_METHOD, classifier=DEFAULT_CLASSIFIER,
                 folds: int = 5, seed: int = 0, top_fraction: float = 0.01,
                 ranking: str = "self_confidence", neighbors: int = 10,
                 neighbor_weight: float = DEFAULT_NEIGHBOR_WEIGHT,
                 neighbor_vectors: np.ndarray | None = None,
                 report: Callable[[str, int, int], None] | None = None,
                 num_classes: int | None = None,
                 neighbor_evidence: rank.NeighborEvidence | None = None) -> LabelScores:
    """Score the labels of N items.

    X: (N, D) features for the classifier (or images for "cnn"); labels: (N,)
    int class indices. neighbor_vectors: (N, D') vectors for the k-NN evidence
    (default X when 2-D); neighbors=0 skips it. neighbor_weight in [0, 1]:
    weight of the neighbour label distribution blended into the probabilities
    before ranking (out_of_fold only; labelfix stays the paper's method);
    0 disables it.
    neighbor_evidence: a precomputed ``rank.neighbor_evidence`` (the batch
    audit shares one kNN pass with its outlier stage); it replaces
    neighbor_vectors / neighbors. (Copies of one picture with different
    labels: ``checks.label_conflicts``.)
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if ranking not in RANKINGS:
        raise ValueError(f"unknown ranking {ranking!r}; choose from {RANKINGS}")
    filt.top_count(1, top_fraction)  # validates the fraction
    if neighbors < 0:
        raise ValueError(f"neighbors must be >= 0, got {neighbors}")
    if not 0.0 <= neighbor_weight <= 1.0:
        raise ValueError(f"neighbor_weight must be in [0, 1], got {neighbor_weight}")
    labels, c = predict.validate_labels(X, labels, num_classes)
    n = len(labels)

    if method == "labelfix":
        probs = predict.in_sample_probabilities(X, labels, classifier, seed, report, c)
    else:
        probs = predict.out_of_fold_probabilities(X, labels, classifier, folds, seed, report, c)

    agreement = np.full(n, np.nan)
    ranked_probs = probs
    ev = neighbor_evidence
    if ev is None and neighbors > 0 and n >= 2:
        vecs = X if neighbor_vectors is None else neighbor_vectors
        if report:
            report("neighbours", 0, 1)
        ev = rank.neighbor_evidence(np.asarray(vecs).reshape(n, -1), labels, neighbors, c)
        if report:
            report("neighbours", 1, 1)
    if ev is not None:
        if ev.label_distribution.shape != (n, c):
            raise ValueError(f"neighbor_evidence is for {ev.label_distribution.shape}, not ({n}, {c})")
        agreement = ev.agreement
        if method == "out_of_fold" and neighbor_weight > 0:
            ranked_probs = rank.blend_with_neighbors(probs, ev.label_distribution, neighbor_weight)

    counted = ranked_probs
    if method == "out_of_fold" and ev is not None:
        counted = rank.blend_with_neighbors(probs, ev.label_distribution, ESTIMATE_NEIGHBOR_WEIGHT)
    joint = count.confident_joint(labels, counted, calibrate=True)
    counted = None
    if method == "labelfix":
        scores = rank.labelfix_score(labels, probs)
    else:
        probs = None            # the blended copy is all that is used from here on
        scores = rank.RANKERS[ranking](labels, ranked_probs)
    suggested = ranked_probs.argmax(axis=1)
    return LabelScores(method=method, pred_probs=ranked_probs, scores=scores, suggested=suggested,
                       suggested_probability=ranked_probs[np.arange(n), suggested],
                       neighbor_agreement=agreement, suspects=filt.top_fraction(scores, top_fraction),
                       joint=joint, noise_rate=count.estimated_noise_rate(joint),
                       noise_split=count.split_noise(joint))
