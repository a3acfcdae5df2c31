"""Agreement among annotators.

- ``krippendorff_alpha``: Krippendorff's alpha for nominal data; any number
  of annotators per image, missing labels allowed (Krippendorff, "Computing
  Krippendorff's Alpha-Reliability", 2011). 1 = perfect agreement, 0 = what
  chance gives, < 0 = systematic disagreement. This is the dataset-level
  agreement imagesieve reports.
- ``fleiss_kappa``: Fleiss' kappa, for the same number of ratings per image.
- ``item_agreement``: per image, the fraction of its labels equal to a given
  (consensus) label.
"""
from __future__ import annotations

import numpy as np

from .validate import check_labels


def label_counts(labels, num_classes: int | None = None) -> np.ndarray:
    """(N, K) int: how many annotators gave image i class k. labels: (N, M), -1 = missing."""
    a, k = check_labels(labels, num_classes)
    counts = np.zeros((a.shape[0], k), dtype=np.int64)
    rows, cols = np.nonzero(a >= 0)
    np.add.at(counts, (rows, a[rows, cols]), 1)
    return counts


def coincidence_matrix(labels, num_classes: int | None = None) -> np.ndarray:
    """(K, K) float: Krippendorff's coincidences o[c, k] = sum over images with
    m_u >= 2 labels of (number of ordered pairs of *different* annotators
    labelling c and k) / (m_u - 1). Symmetric; sums to the number of pairable labels."""
    counts = label_counts(labels, num_classes).astype(np.float64)
    m = counts.sum(axis=1)
    keep = m >= 2
    c, w = counts[keep], 1.0 / (m[keep] - 1.0)
    o = (w[:, None] * c).T @ c          # sum_u w_u c_uc c_uk, as one BLAS product (not an N*K*K loop)
    o -= np.diag((w[:, None] * c).sum(axis=0))
    return o


def krippendorff_alpha(labels, num_classes: int | None = None) -> float:
    """Krippendorff's alpha, nominal metric. labels: (N, M) int, -1 = missing.

    alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k, with o the
    coincidence matrix, n_c its row sums, n its total (images with fewer than
    2 labels do not count). NaN when it is undefined: fewer than 2 pairable
    labels, or every pairable label in one class (no expected disagreement)."""
    o = coincidence_matrix(labels, num_classes)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n < 2:
        return float("nan")
    observed = o.sum() - np.trace(o)
    expected = n_c.sum() ** 2 - (n_c ** 2).sum()
    if expected <= 0:
        return float("nan")
    return float(1.0 - (n - 1.0) * observed / expected)


def fleiss_kappa(counts) -> float:
    """Fleiss' kappa from an (N, K) table: counts[i, k] = raters putting image i
    in class k; every row must have the same total n >= 2. NaN when chance
    agreement is 1 (one class only)."""
    t = np.asarray(counts)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"counts must be 2-D (N images, K classes), got shape {t.shape}")
    if (t < 0).any():
        raise ValueError("counts must be non-negative")
    t = t.astype(np.float64)
    n = t.sum(axis=1)
    if not np.allclose(n, n[0]) or n[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings per image; "
                         "use krippendorff_alpha for missing labels")
    r = n[0]
    p_i = ((t ** 2).sum(axis=1) - r) / (r * (r - 1))
    p_bar = p_i.mean()
    p_j = t.sum(axis=0) / t.sum()
    p_e = (p_j ** 2).sum()
    if p_e >= 1.0:
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def item_agreement(labels, consensus, num_classes: int | None = None) -> np.ndarray:
    """(N,) float: fraction of image i's labels equal to consensus[i]; NaN for an unlabelled image."""
    a, _ = check_labels(labels, num_classes)
    consensus = np.asarray(consensus)
    if consensus.shape != (a.shape[0],):
        raise ValueError(f"consensus must have shape ({a.shape[0]},), got {consensus.shape}")
    m = (a >= 0).sum(axis=1)
    agree = ((a == consensus[:, None]) & (a >= 0)).sum(axis=1)
    return np.divide(agree, m, out=np.full(len(m), np.nan), where=m > 0)
