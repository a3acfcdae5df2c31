"""Ambiguous classes: the class pairs that annotators and the model confuse.

Two sources of evidence, each turned into a pair rate in [0, 1]:
- annotator confusion: Krippendorff's coincidence matrix o (pairs of labels
  that two different annotators gave the same image);
  rate(a, b) = (o_ab + o_ba) / (n_a + n_b), n the coincidence row sums.
  Two classes that annotators cannot tell apart approach 0.5.
- the model: a (K, K) joint [given, true], e.g. the calibrated confident joint
  of the consensus labels and the out-of-fold probabilities
  (``analysis.labels.count.confident_joint``); rate(a, b) = (J_ab + J_ba) /
  (row_a + row_b).
A pair's score is the mean of the rates it has.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .agreement import coincidence_matrix
from .validate import check_labels


@dataclasses.dataclass
class AmbiguousPair:
    a: int
    b: int
    score: float                 # mean of the available rates
    annotator_rate: float        # NaN when no image had two labels in these classes
    model_rate: float            # NaN when no joint was given
    annotator_pairs: float       # o_ab + o_ba: label pairs split between a and b
    model_count: float           # J_ab + J_ba: images the joint moves between a and b
    suggestion: str


def annotator_confusion(labels, num_classes: int | None = None) -> np.ndarray:
    """(K, K) symmetric coincidence matrix of annotator label pairs (see ``agreement``)."""
    return coincidence_matrix(labels, num_classes)


def _pair_rates(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = mat.sum(axis=1)
    both = mat + mat.T
    tot = rows[:, None] + rows[None, :]
    return np.divide(both, tot, out=np.full(mat.shape, np.nan), where=tot > 0), both


def suggest(name_a: str, name_b: str, annotator_rate: float, model_rate: float,
            merge_rate: float = 0.3, min_rate: float = 0.1) -> str:
    """A plain sentence for one pair (either rate may be NaN).

    Both rates (or the only one) >= merge_rate: the classes look like one ->
    merge or redefine. The model's rate under half the annotators' (or under
    min_rate): the images differ, people do not see how -> clarify the
    guideline. The annotators' rate under half the model's: people agree ->
    no guideline change. Otherwise: clarify with examples."""
    fa, fm = bool(np.isfinite(annotator_rate)), bool(np.isfinite(model_rate))
    ann = f"annotators split {annotator_rate:.0%} of their label pairs" if fa else ""
    mod = f"the model moves {model_rate:.0%} of the images" if fm else ""
    evidence = "; ".join(s for s in (ann, mod) if s)
    rates = [r for r, f in ((annotator_rate, fa), (model_rate, fm)) if f]
    if rates and min(rates) >= merge_rate:
        return (f"merge '{name_a}' and '{name_b}', or redefine them so they can be told apart: "
                f"they look like one class ({evidence})")
    if fa and fm and (model_rate < 0.5 * annotator_rate or model_rate < min_rate <= annotator_rate):
        return (f"clarify the guideline for '{name_a}' vs '{name_b}': the model separates the images better "
                f"than the annotators do ({evidence}); add the deciding rule and example images of each")
    if fa and fm and (annotator_rate < 0.5 * model_rate or annotator_rate < min_rate <= model_rate):
        return (f"annotators mostly agree on '{name_a}' vs '{name_b}' but the model confuses them ({evidence}); "
                f"no guideline change needed, review the model's suspects")
    return (f"clarify the guideline for '{name_a}' vs '{name_b}' with example images of each "
            f"and the deciding rule ({evidence})")


def ambiguous_pairs(labels, num_classes: int | None = None, joint=None, class_names=None,
                    min_rate: float = 0.1, merge_rate: float = 0.3, top: int = 10) -> list[AmbiguousPair]:
    """Class pairs (a < b) with score >= min_rate, highest first, at most ``top``.

    labels (N, M) int, -1 missing; joint (K, K) [given, true] or None;
    class_names (K,) for the suggestions (default "0", "1", ...)."""
    a_lab, k = check_labels(labels, num_classes)
    if not 0 < min_rate <= merge_rate <= 1:
        raise ValueError("need 0 < min_rate <= merge_rate <= 1")
    if top < 0:
        raise ValueError("top must be >= 0")
    names = [str(i) for i in range(k)] if class_names is None else [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names for {k} classes")
    ann_rate, ann_both = _pair_rates(annotator_confusion(a_lab, k))
    if joint is not None:
        j = np.asarray(joint, dtype=np.float64)
        if j.shape != (k, k):
            raise ValueError(f"joint must have shape ({k}, {k}), got {j.shape}")
        if (j < 0).any() or not np.isfinite(j).all():
            raise ValueError("joint must be finite and non-negative")
        mod_rate, mod_both = _pair_rates(j)
    else:
        mod_rate, mod_both = np.full((k, k), np.nan), np.zeros((k, k))
    out = []
    for x in range(k):
        for y in range(x + 1, k):
            rates = [r for r in (ann_rate[x, y], mod_rate[x, y]) if np.isfinite(r)]
            if not rates:
                continue
            score = float(np.mean(rates))
            if score < min_rate:
                continue
            out.append(AmbiguousPair(x, y, score, float(ann_rate[x, y]), float(mod_rate[x, y]),
                                     float(ann_both[x, y]), float(mod_both[x, y]),
                                     suggest(names[x], names[y], float(ann_rate[x, y]), float(mod_rate[x, y]),
                                             merge_rate, min_rate)))
    out.sort(key=lambda p: (-p.score, p.a, p.b))
    return out[:top]
