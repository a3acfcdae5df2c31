"""How many labels are wrong, per class pair: the confident joint
(Northcutt et al., "Confident Learning", 2021; cleanlab's ``count``).

Inputs: ``labels`` (N,) int in [0, C); ``pred_probs`` (N, C) out-of-fold.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .rank import _check


def per_class_thresholds(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """(C,): t_j = mean p[i, j] over items given label j (0 for an absent class)."""
    labels, p = _check(labels, pred_probs)
    c = p.shape[1]
    counts = np.bincount(labels, minlength=c)
    sums = np.zeros(c)
    np.add.at(sums, labels, p[np.arange(len(labels)), labels])
    return np.divide(sums, counts, out=np.zeros(c), where=counts > 0)


def confident_joint(labels: np.ndarray, pred_probs: np.ndarray, calibrate: bool = False) -> np.ndarray:
    """(C, C) counts C[given, true]. Item i counts in (labels[i], j*) where
    j* = argmax p[i, j] over the classes j with p[i, j] >= t_j; items above
    no threshold are not counted. With ``calibrate`` the rows are rescaled
    to the given-label counts (float; sums to N), as cleanlab does."""
    labels, p = _check(labels, pred_probs)
    c = p.shape[1]
    t = per_class_thresholds(labels, p)
    above = p >= t[None, :] - 1e-12
    masked = np.where(above, p, -np.inf)
    counted = above.any(axis=1)
    true = masked.argmax(axis=1)
    cj = np.zeros((c, c))
    np.add.at(cj, (labels[counted], true[counted]), 1.0)
    if not calibrate:
        return cj.astype(np.int64)
    label_counts = np.bincount(labels, minlength=c).astype(float)
    row = cj.sum(axis=1)
    cj = cj * np.divide(label_counts, row, out=np.zeros(c), where=row > 0)[:, None]
    total = cj.sum()
    return cj / total * label_counts.sum() if total > 0 else cj


def estimated_noise_rate(joint: np.ndarray) -> float:
    """Off-diagonal mass of a (C, C) joint: the estimated fraction of wrong labels."""
    joint = np.asarray(joint, dtype=np.float64)
    if joint.ndim != 2 or joint.shape[0] != joint.shape[1]:
        raise ValueError(f"joint must be square (C, C), got {joint.shape}")
    total = joint.sum()
    # max: the calibrated joint's float sums can leave -1e-17 (printed "-0.0%")
    return max(0.0, float((total - np.trace(joint)) / total)) if total > 0 else 0.0


def noise_pairs(joint: np.ndarray, min_count: float = 1.0) -> list[tuple[int, int, float]]:
    """Off-diagonal (given, true, count) with count >= min_count, largest first."""
    joint = np.asarray(joint)
    out = [(i, j, float(joint[i, j])) for i in range(joint.shape[0]) for j in range(joint.shape[1])
           if i != j and joint[i, j] >= min_count]
    return sorted(out, key=lambda t: (-t[2], t[0], t[1]))


#: How far (in Poisson standard deviations of the typical cell) a class
#: pair's confusion must rise, both ways, to count as ambiguity rather than
#: errors. Chosen on planted flips of scikit-learn's digits, MNIST-5k and
#: Fashion-MNIST (README, "Wrong or ambiguous"); on Fashion-MNIST (3-10% planted,
#: counted with a 20% blend) 2 moved the wrong share by up to 0.7 points, 4 by up to 1.5.
AMBIGUITY_Z = 3.0


@dataclasses.dataclass
class NoiseSplit:
    """The estimated wrong labels, split in two (fractions of all N items):
    ``wrong_rate``, the mass spread over class pairs as errors spread
    (confidently wrong labels), and ``ambiguous_rate``, the excess in class
    pairs confused both ways far beyond the typical pair (the class boundary
    is unclear, or labellers systematically swap the two: a person must
    look). ``pairs``: (a, b, excess items over both directions), a < b,
    largest first. ``note``: why no pair could be judged, or ''."""
    wrong_rate: float
    ambiguous_rate: float
    pairs: list[tuple[int, int, float]]
    note: str = ""

    def named_pairs(self, class_names) -> list[dict]:
        """``pairs`` by class name, as every answer writes them:
        [{"class_a", "class_b", "excess"}], largest first."""
        return [{"class_a": str(class_names[a]), "class_b": str(class_names[b]), "excess": round(x, 1)}
                for a, b, x in self.pairs]

    def describe(self, class_names) -> str:
        """One line for a person: the two shares and the ambiguous pairs by name."""
        total = self.wrong_rate + self.ambiguous_rate
        if self.note:
            return f"{total:.1%} of the labels disagree with the images ({self.note})"
        text = (f"{total:.1%} of the labels disagree with the images: "
                f"{self.wrong_rate:.1%} look wrong, {self.ambiguous_rate:.1%} fall in ambiguous class pairs")
        if self.pairs:
            text += " (" + ", ".join(f"{class_names[a]} / {class_names[b]} {x:.0f}" for a, b, x in self.pairs[:6])
            text += f", +{len(self.pairs) - 6} more)" if len(self.pairs) > 6 else ")"
        return text


def split_noise(joint: np.ndarray, z: float = AMBIGUITY_Z) -> NoiseSplit:
    """Split the off-diagonal mass of a (C, C) joint [given, true] (the
    calibrated confident joint) into wrong labels and ambiguous class pairs.

    Wrong labels land on any other class, so each given class's off-diagonal
    cells share a typical count: their median b_a. A cell is high when it
    exceeds b_a by more than ``z`` * sqrt(b_a + 1) (Poisson spread of such a
    count); a pair whose two cells are both high is ambiguous, and its
    excess over the typical cells is the ambiguous mass. A one-way excess
    (one class labelled as another, not back) stays counted as wrong. With
    fewer than 4 classes the median has too few cells: nothing is split."""
    joint = np.asarray(joint, dtype=np.float64)
    rate = estimated_noise_rate(joint)
    c = joint.shape[0]
    total = joint.sum()
    if c < 4 or total <= 0:
        return NoiseSplit(rate, 0.0, [], "fewer than 4 classes: wrong labels and ambiguous pairs cannot be told "
                          "apart" if c < 4 else "")
    off = ~np.eye(c, dtype=bool)
    typical = np.array([np.median(joint[a][off[a]]) for a in range(c)])
    excess = joint - typical[:, None]
    high = off & (excess > z * np.sqrt(typical[:, None] + 1.0))
    both = high & high.T
    pairs = sorted(((a, b, float(excess[a, b] + excess[b, a])) for a in range(c) for b in range(a + 1, c)
                    if both[a, b]), key=lambda t: (-t[2], t[0], t[1]))
    ambiguous = min(rate, float(excess[both].sum()) / total)
    return NoiseSplit(max(0.0, rate - ambiguous), ambiguous, pairs)
