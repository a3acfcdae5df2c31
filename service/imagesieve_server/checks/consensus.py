"""Which label is right when several annotators disagree? The labels of N
images by M annotators are combined (majority vote, Dawid-Skene or
CROWDLAB; ``analysis.consensus``), optionally with a classifier trained
out-of-fold on the majority vote as the model's opinion; the images whose
consensus is weak or disputed are flagged, worst first. The ``consensus``
command and the Consensus job run this one check with one ``Params``.

Not in ``CHECKS``: the audit's sources hold one label an image, and this
question needs several."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..analysis.classifiers import EMBEDDING_CLASSIFIERS
from ..analysis.consensus import analyse_consensus, majority_vote
from ..analysis.consensus.aggregate import AGGREGATORS
from ..analysis.consensus.score import ConsensusResult
from ..analysis.defaults import CONSENSUS_CLASSIFIER
from .base import CheckResult, FlaggedImages

NAME = "consensus"
TITLE = "Annotator consensus"
FOLDS = 5


@dataclasses.dataclass(frozen=True)
class Params:
    """``method``: one of AGGREGATORS; ``model``: train ``classifier`` on the
    embeddings (out-of-fold over at most ``folds`` folds, on the majority
    vote) as the model's opinion (crowdlab needs it); ``weak``: consensus
    quality (posterior probability) below which an image is reviewed;
    ``model_weight``: temperature of the model's probabilities as
    Dawid-Skene's prior (0 ignores the model)."""
    method: str = "dawid_skene"
    model: bool = True
    classifier: str = CONSENSUS_CLASSIFIER
    folds: int = FOLDS
    weak: float = 0.7
    model_weight: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.method not in AGGREGATORS:
            raise ValueError(f"unknown method {str(self.method)[:64]!r}; choose from {AGGREGATORS}")
        if self.method == "crowdlab" and not self.model:
            raise ValueError("crowdlab needs the model (the classifier's out-of-fold probabilities)")
        if self.classifier not in EMBEDDING_CLASSIFIERS:
            raise ValueError(f"unknown classifier {self.classifier!r}; choose from {EMBEDDING_CLASSIFIERS}")
        if self.model and self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        if not 0 <= self.weak <= 1:
            raise ValueError(f"weak must lie in [0, 1], got {self.weak}")
        if not self.model_weight >= 0:
            raise ValueError(f"model_weight must be >= 0, got {self.model_weight}")


@dataclasses.dataclass
class Consensus:
    """The analysis' result, the model's out-of-fold probabilities (N, K)
    and its label per image (N,) (None without a model), and what the model
    was, in words."""
    result: ConsensusResult
    probs: np.ndarray | None
    model_label: np.ndarray | None
    model_note: str


def model_folds(consensus: np.ndarray, folds: int = FOLDS, seed: int = 0) -> int:
    """The folds for the model's out-of-fold probabilities on the majority
    vote ``consensus`` (N,) int: ``folds``, fewer when the largest class is
    smaller; ValueError when no model can be trained on these labels."""
    from ..analysis.labels.predict import check_folds

    folds = max(2, min(folds, int(np.bincount(consensus).max())))
    check_folds(consensus, folds, seed)
    return folds


def run(labels: np.ndarray, num_classes: int, vectors: np.ndarray | None = None, params: Params | None = None,
        *, class_names=None, model_name: str = "embeddings", report=None,
        without_model: str = "do without the model") -> CheckResult:
    """``labels`` (N, M) int class indices, -1 where annotator m did not
    label image n; ``vectors`` (N, D) the images' embeddings (needed when
    ``params.model``). Flags the review queue (issue ``weak_consensus``:
    score the review score (quality + agreement) / 2, worst first); the
    whole answer is ``details`` (:class:`Consensus`). ValueError when the
    labels cannot be combined or the model asked for cannot be trained (it
    never falls back silently; the message ends with ``without_model``, the
    caller's words for turning the model off)."""
    from ..analysis.labels.predict import out_of_fold_probabilities

    p = params or Params()
    labels = np.asarray(labels)
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes among the annotations, found {num_classes}")
    probs, note = None, "not used"
    if p.model:
        if vectors is None or len(vectors) != len(labels):
            raise ValueError("the model needs one embedding per image")
        if report is not None:
            report("out-of-fold model", 0, 1)
        mv = majority_vote(labels, num_classes).consensus
        try:
            folds = model_folds(mv, p.folds, p.seed)
            probs = out_of_fold_probabilities(vectors, mv, p.classifier, folds=folds, seed=p.seed,
                                              num_classes=num_classes)
        except ValueError as e:
            raise ValueError(f"the model cannot be trained on these {len(mv)} images' majority labels ({e}); "
                             f"add annotations, or {without_model}") from None
        note = f"{p.classifier} on {model_name}, {folds}-fold out-of-fold, trained on the majority vote"
    if report is not None:
        report("consensus", 0, 1)
    res = analyse_consensus(labels, num_classes, probs, method=p.method, class_names=class_names, weak=p.weak,
                            model_weight=p.model_weight)
    review = np.asarray(res.review, np.int64)
    issue = FlaggedImages("weak_consensus", "annotators disagree or the consensus is weak", "review score",
                          review, ((res.quality[review] + res.agreement[review]) / 2).astype(np.float32),
                          p.weak, f"disagreement, or consensus quality below {p.weak}")
    return CheckResult(NAME, TITLE, len(labels), {"weak_consensus": issue},
                       details=Consensus(res, probs, None if probs is None else probs.argmax(axis=1), note))
