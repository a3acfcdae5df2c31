"""Which labels are likely wrong? Each image's label is scored by a
classifier that never saw it (out of fold, blended with its nearest
neighbours' labels; or labelfix's in-sample scoring), and the lowest-scoring
share is flagged (``analysis.labels``: ``predict``, ``rank``, ``count``,
``filter``). The audit, the ScoreLabels job and the ``labels`` command run
this one check with one ``Params``: the same folds, classifier and share,
whichever asks."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..analysis.classifiers import EMBEDDING_CLASSIFIERS, pixels_and_embeddings, pixels_unused_because
from ..analysis.defaults import LABELS_CLASSIFIER
from ..analysis.labels import DEFAULT_METHOD, DEFAULT_NEIGHBOR_WEIGHT, METHODS, LabelScores, score_labels
from .base import CheckInputs, CheckResult, FlaggedImages, why_labels_unusable

NAME = "label_issues"
TITLE = "Label issues"
NEEDS = "label scoring skipped"


@dataclasses.dataclass(frozen=True)
class Params:
    """``method``: "out_of_fold" (cleanlab's) or "labelfix" (in sample);
    ``classifier``: one of ``analysis.classifiers.EMBEDDING_CLASSIFIERS``;
    ``folds`` (>= 2): out-of-fold folds, fewer when the largest class is
    smaller (:func:`folds_for`); ``top_fraction`` in (0, 1]: the share
    flagged; ``neighbors`` (>= 0) and ``neighbor_weight`` in [0, 1]: the
    nearest images whose labels are blended in (out of fold only);
    ``pixels``: also train a small CNN on the images' thumbnails (when
    torch is here and there are enough images; else a note says why not)."""
    method: str = DEFAULT_METHOD
    classifier: str = LABELS_CLASSIFIER
    folds: int = 5
    top_fraction: float = 0.01
    neighbors: int = 10
    neighbor_weight: float = DEFAULT_NEIGHBOR_WEIGHT
    seed: int = 0
    pixels: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {METHODS}")
        if self.classifier not in EMBEDDING_CLASSIFIERS:
            raise ValueError(f"unknown classifier {self.classifier!r}; choose from {EMBEDDING_CLASSIFIERS}")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top fraction must be in (0, 1], got {self.top_fraction}")
        if self.neighbors < 0:
            raise ValueError(f"neighbors must be >= 0, got {self.neighbors}")
        if not 0 <= self.neighbor_weight <= 1:
            raise ValueError(f"neighbor_weight must be in [0, 1], got {self.neighbor_weight}")


@dataclasses.dataclass
class Scored:
    """A label check's ``details``: the scores (``analysis.labels.LabelScores``,
    positions index the images given), the class names, each image's class
    index, and what scored them (e.g. "lda", "cnn+lda")."""
    scores: LabelScores
    class_names: list[str]
    label_ids: np.ndarray
    scorer: str


def folds_for(label_ids: np.ndarray, folds: int) -> int:
    """``folds``, fewer when even the largest class has fewer images (at
    least 2): scikit-learn's stratified folds deal a class smaller than the
    folds into some of them, so one tiny class need not cut the folds (and
    the models' training share) for every other class."""
    return min(folds, max(2, int(np.bincount(label_ids).max())))


def lookalike_labels(names) -> list[list[str]]:
    """Groups of two or more distinct class names that are one name once
    Unicode-normalized (NFC) and case-folded ("Cat" / "cat", "café" typed
    two ways, as macOS writes folder names): likely one class split in two."""
    import unicodedata
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(unicodedata.normalize("NFC", name).casefold(), []).append(name)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def class_indices(labels) -> tuple[list[str], np.ndarray]:
    """(sorted class names, (N,) int64 class index per label)."""
    names = sorted(set(labels))
    index = {c: i for i, c in enumerate(names)}
    return names, np.array([index[v] for v in labels], dtype=np.int64)


def run(vectors: np.ndarray, labels, params: Params | None = None, *, pixels: np.ndarray | None = None,
        neighbor_evidence=None, report=None, check=None, positions: np.ndarray | None = None) -> CheckResult:
    """Label issues of N images: ``vectors`` (N, D) unit float32, ``labels``
    N strings (every one set, at least 2 classes; else nothing is judged and
    a note says why). ``pixels`` (N, H, W) uint8 for ``params.pixels``;
    ``neighbor_evidence``: a kNN pass already made (``rank.NeighborEvidence``
    over these class indices); ``check()`` runs between the CNN's batches
    (it raises to cancel). ``positions``: (N,) what each image is called in
    the result. ValueError when the data cannot be scored (a fold without
    two classes to train on)."""
    p = params or Params()
    n = len(labels)
    at = np.arange(n) if positions is None else np.asarray(positions)
    why = why_labels_unusable(labels) if n else "no images"
    if why:
        return CheckResult(NAME, TITLE, 0, {"suspects": _flagged(at[:0], np.zeros(0, np.float32), p, {})},
                           [f"{NEEDS}: {why}"])
    class_names, ids = class_indices(labels)
    scored, classifier, scorer, notes = vectors, p.classifier, p.classifier, []
    alike = lookalike_labels(class_names)
    if alike:
        shown = "; ".join(" / ".join(ascii(n) for n in g) for g in alike[:5])
        notes.append(f"{len(alike)} class names differ only in letter case or Unicode form ({shown}"
                     f"{'; ...' if len(alike) > 5 else ''}): they are scored as different classes, so their "
                     "images look mislabelled; give each class one spelling")
    if p.pixels:
        why = pixels_unused_because(n) or ("" if pixels is not None else "no thumbnails were kept for these images")
        if why:
            notes.append(f"pixels not used: {why}; scored on embeddings alone")
        else:
            classifier = pixels_and_embeddings(pixels, vectors, p.classifier, check=check)
            scored, scorer = np.arange(n)[:, None], f"cnn+{p.classifier}"
            notes.append(f"scored by a small CNN on the pixels averaged with {p.classifier} on the embeddings")
    folds = folds_for(ids, p.folds)
    if p.method == "out_of_fold" and folds < p.folds:
        notes.append(f"{folds} folds, not {p.folds}: the largest class has {int(np.bincount(ids).max())} images")
    s = score_labels(scored, ids, method=p.method, classifier=classifier, folds=folds, seed=p.seed,
                     top_fraction=p.top_fraction, neighbors=p.neighbors,
                     neighbor_weight=p.neighbor_weight if p.method == "out_of_fold" else 0.0,
                     neighbor_vectors=vectors, report=report, num_classes=len(class_names),
                     neighbor_evidence=neighbor_evidence)
    sus = s.suspects
    rank = np.empty(n, np.int64)
    rank[np.argsort(s.scores, kind="stable")] = np.arange(n)
    evidence = {"given": np.array([class_names[ids[i]] for i in sus.tolist()], dtype=object),
                "suggested": np.array([class_names[s.suggested[i]] for i in sus.tolist()], dtype=object),
                "suggested_probability": s.suggested_probability[sus].astype(np.float32),
                "rank_percentile": (100.0 * (rank[sus] + 1) / n).astype(np.float32),
                "ambiguous_pair": s.in_ambiguous_pair(ids)[sus]}
    return CheckResult(NAME, TITLE, n, {"suspects": _flagged(at[sus], s.scores[sus].astype(np.float32), p, evidence)},
                       notes, details=Scored(s, class_names, ids, scorer))


def _flagged(positions, scores, p: Params, evidence) -> FlaggedImages:
    unit = "labelfix score" if p.method == "labelfix" else "label quality (probability of the given label)"
    return FlaggedImages("suspects", "likely wrong labels", unit, np.asarray(positions, np.int64), scores,
                         float(scores.max()) if len(scores) else 0.0,
                         f"the lowest {p.top_fraction:.0%} by {unit}, scored {p.method.replace('_', ' ')} "
                         f"with {p.classifier}", evidence)


def from_inputs(inputs: CheckInputs, params: Params | None = None) -> CheckResult:
    """:func:`run` on the audit's embedded images (with its kNN evidence and
    thumbnails when it has them)."""
    return run(inputs.vectors, list(inputs.labels), params, pixels=inputs.pixels,
               neighbor_evidence=inputs.label_evidence, report=inputs.report, positions=inputs.ok_index)

