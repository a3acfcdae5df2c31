"""Consensus labels from several annotators (and optionally a model).

Every aggregator takes ``labels`` (N, M) int (-1 = missing) and optional
``pred_probs`` (N, K) out-of-fold model probabilities, and returns an
``Aggregate``: a consensus label and a posterior (N, K) whose value at the
consensus label is the image's quality score (higher = surer).

- ``majority_vote``: most frequent label; ties go to the model's most
  probable tied class when pred_probs is given, else to the most frequent
  class overall (then the lowest index).
- ``dawid_skene``: Dawid & Skene (1979) EM: each annotator has a K x K
  confusion matrix; posterior ∝ prior_i(k) * prod_j pi_j[k, l_ij]. With
  pred_probs the prior of image i is the model's probabilities (tempered by
  ``model_weight``), so the model is one more, per-image, source of evidence
  and the annotators' reliabilities are learned jointly.
- ``crowdlab``: CROWDLAB (Goh, Tkachenko, Mueller, "CROWDLAB: Supervised
  learning to infer consensus labels and quality scores for data with
  multiple annotators", 2022; cleanlab.multiannotator): a weighted average
  of the model's probabilities and each annotator's vote, weights from
  agreement measured against the majority vote.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .agreement import label_counts
from .validate import check_labels, check_probs

AGGREGATORS = ("majority", "dawid_skene", "crowdlab")


@dataclasses.dataclass
class Aggregate:
    method: str
    consensus: np.ndarray          # (N,) int in [0, K); -1 where nothing at all is known
    posterior: np.ndarray          # (N, K) rows sum to 1 (uniform where nothing is known)
    quality: np.ndarray            # (N,) posterior at the consensus label
    annotator_weights: np.ndarray | None = None   # (M,) CROWDLAB weights
    confusions: np.ndarray | None = None          # (M, K, K) Dawid-Skene pi_j[true, given]
    model_weight: float = float("nan")            # CROWDLAB model weight / DS prior temperature
    iterations: int = 0


def _finish(method: str, posterior: np.ndarray, known: np.ndarray, **kw) -> Aggregate:
    consensus = np.where(known, posterior.argmax(axis=1), -1)
    quality = np.where(known, posterior.max(axis=1), 0.0)
    return Aggregate(method, consensus.astype(np.int64), posterior, quality, **kw)


def majority_vote(labels, num_classes: int | None = None, pred_probs=None) -> Aggregate:
    """labels (N, M) -> consensus by plurality. posterior = vote fractions
    (the model's probabilities for an image nobody labelled)."""
    a, k = check_labels(labels, num_classes)
    counts = label_counts(a, k).astype(np.float64)
    m = counts.sum(axis=1)
    if pred_probs is not None:
        p = check_probs(pred_probs, len(a), k)
        tie = p
    else:
        p = None
        overall = counts.sum(axis=0)
        tie = np.broadcast_to(overall / overall.sum(), counts.shape)
    top = counts == counts.max(axis=1, keepdims=True)
    # rank among tied classes by `tie`, then by lowest index (argmax takes the first)
    score = np.where(top, tie + 1.0, -1.0)
    consensus = score.argmax(axis=1)
    posterior = np.divide(counts, m[:, None], out=np.full(counts.shape, 1.0 / k), where=m[:, None] > 0)
    if p is not None:
        posterior[m == 0] = p[m == 0]
    known = (m > 0) | (p is not None)
    quality = np.where(known, posterior[np.arange(len(a)), consensus], 0.0)
    return Aggregate("majority", np.where(known, consensus, -1).astype(np.int64), posterior, quality)


def dawid_skene(labels, num_classes: int | None = None, pred_probs=None, model_weight: float = 1.0,
                max_iter: int = 100, tol: float = 1e-5, smoothing: float = 1.0) -> Aggregate:
    """Dawid-Skene EM. labels (N, M), pred_probs (N, K) or None.

    Initialised from the vote fractions (times the model's probabilities when
    given). M-step: pi_j[k, l] = (sum_i T_ik [l_ij = l] + prior) / row total,
    with ``smoothing`` pseudo-counts per row (half on the diagonal, half spread
    over all K: annotators start a little better than chance). E-step: T_ik ∝
    prior_i(k) * prod_j pi_j[k, l_ij], with prior_i = pred_probs_i ** model_weight
    (renormalized) when given, else the class frequencies of T.
    model_weight 0 ignores the model."""
    a, k = check_labels(labels, num_classes)
    n, m_ann = a.shape
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if smoothing < 0 or model_weight < 0:
        raise ValueError("smoothing and model_weight must be >= 0")
    counts = label_counts(a, k).astype(np.float64)
    log_model = None
    if pred_probs is not None and model_weight > 0:
        p = check_probs(pred_probs, n, k)
        log_model = model_weight * np.log(np.clip(p, 1e-6, None))
        log_model -= log_model.max(axis=1, keepdims=True)
    elif pred_probs is not None:
        check_probs(pred_probs, n, k)
    t = counts + 1e-3
    if log_model is not None:
        t = t * np.exp(log_model)
    t /= t.sum(axis=1, keepdims=True)
    # Sparse: the labels' (annotator j, given l) cells, G <= number of labels.
    # pi_j[true, l] = (C[(j, l), true] + pseudo[true, l]) / (R[j, true] + smoothing),
    # C the T mass of the images j labelled l, R that of all images j
    # labelled; the E-step needs pi only at the labels' cells. Each step is a
    # sparse product, O(labels x K): no loop over annotators (100,000 of them,
    # each masking all N images, took minutes) and no (M, K, K) array but the last.
    from scipy import sparse

    img, ann = np.nonzero(a >= 0)
    cells, cell_of = np.unique(ann * k + a[img, ann], return_inverse=True)
    cell_ann, cell_given = cells // k, cells % k
    ones = np.ones(len(img))
    by_cell = sparse.csr_matrix((ones, (cell_of.reshape(-1), img)), shape=(len(cells), n))
    by_image = by_cell.T.tocsr()
    by_annotator = sparse.csr_matrix((ones, (ann, img)), shape=(m_ann, n))
    pseudo = smoothing * (0.5 * np.eye(k) + 0.5 / k)
    pseudo_at = pseudo[:, cell_given].T                       # (G, K): pseudo[true, l] of each cell
    it = 0
    for it in range(1, max_iter + 1):
        mass = np.asarray(by_cell @ t)                        # (G, K)
        rows = np.asarray(by_annotator @ t) + smoothing       # (M, K): cm row sums
        if log_model is not None:
            log_t = log_model.copy()
        else:
            rho = t.sum(axis=0) + 1.0
            log_t = np.tile(np.log(rho / rho.sum()), (n, 1))
        # log_t[i, true] += log pi_j[true, l_ij] over image i's labels
        log_t += by_image @ (np.log(mass + pseudo_at) - np.log(rows[cell_ann]))
        log_t -= log_t.max(axis=1, keepdims=True)
        new = np.exp(log_t)
        new /= new.sum(axis=1, keepdims=True)
        delta = np.abs(new - t).max()
        t = new
        if delta < tol:
            break
    conf = np.broadcast_to(pseudo, (m_ann, k, k)).copy()      # the last M-step's pi, whole
    conf[cell_ann, :, cell_given] += mass
    conf /= rows[:, :, None]
    known = (counts.sum(axis=1) > 0) | (log_model is not None)
    t[~known] = 1.0 / k
    return _finish("dawid_skene", t, known, confusions=conf,
                   model_weight=float(model_weight) if log_model is not None else float("nan"), iterations=it)


def _annotator_agreement(a: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(M,) for each annotator: mean, over images it labelled that others also
    labelled, of the fraction of the other annotators who gave the same label (NaN if none)."""
    n_lab = counts.sum(axis=1)
    out = np.full(a.shape[1], np.nan)
    for j in range(a.shape[1]):
        rows = np.flatnonzero((a[:, j] >= 0) & (n_lab >= 2))
        if len(rows):
            same = counts[rows, a[rows, j]] - 1.0
            out[j] = float(np.mean(same / (n_lab[rows] - 1.0)))
    return out


def crowdlab(labels, pred_probs, num_classes: int | None = None, eps: float = 1e-3) -> Aggregate:
    """CROWDLAB (cleanlab.multiannotator's ensemble). labels (N, M), pred_probs (N, K), required.

    With the majority vote y~ (ties by the model): A_M = accuracy of
    argmax(pred_probs) against y~, A_MLC = share of the most common class in
    y~; model weight w_M = (1 - (1 - A_M) / (1 - A_MLC)) * sqrt(mean labels per
    image); annotator weight w_j = 1 - (1 - a_j) / (1 - A_MLC), a_j its
    agreement with the other annotators; a vote for class c counts as the
    likelihood P at c and (1 - P) / (K - 1) elsewhere, P = mean agreement on
    images with >= 2 labels. posterior_i = (w_M p_i + sum_j w_j L_ij) / (w_M + sum_j w_j).
    Weights are clipped below at ``eps``."""
    a, k = check_labels(labels, num_classes)
    p = check_probs(pred_probs, len(a), k)
    if k < 2:
        raise ValueError("CROWDLAB needs at least 2 classes")
    counts = label_counts(a, k).astype(np.float64)
    n_lab = counts.sum(axis=1)
    mv = majority_vote(a, k, p).consensus
    mlc = np.bincount(mv, minlength=k).max() / len(mv)
    acc_model = float(np.mean(p.argmax(axis=1) == mv))
    denom = max(1.0 - mlc, eps)
    w_model = max(1.0 - (1.0 - acc_model) / denom, eps) * np.sqrt(n_lab.mean())
    agree = _annotator_agreement(a, counts)
    multi = n_lab >= 2
    if multi.any():
        per_item = (counts[multi] * (counts[multi] - 1)).sum(axis=1) / (n_lab[multi] * (n_lab[multi] - 1))
        big_p = float(np.clip(per_item.mean(), 1.0 / k + eps, 1.0 - eps))
    else:
        big_p = 1.0 - eps
    agree = np.where(np.isnan(agree), big_p, agree)
    w_ann = np.maximum(1.0 - (1.0 - agree) / denom, eps)
    num = w_model * p
    den = np.full(len(a), w_model)
    off = (1.0 - big_p) / (k - 1)
    for j in range(a.shape[1]):
        rows = np.flatnonzero(a[:, j] >= 0)
        num[rows] += w_ann[j] * off
        num[rows, a[rows, j]] += w_ann[j] * (big_p - off)
        den[rows] += w_ann[j]
    post = num / den[:, None]
    return _finish("crowdlab", post, np.ones(len(a), bool), annotator_weights=w_ann, model_weight=float(w_model))
