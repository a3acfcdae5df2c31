"""Several annotators per image: consensus, agreement, reliability, ambiguity.

Pure functions on numpy arrays. The common input is ``labels``: an (N, M)
int array, N images by M annotators, entry = class index in [0, K) or -1
where that annotator did not label that image; optionally ``pred_probs``:
(N, K) out-of-fold model probabilities (``analysis.labels.predict``).

- ``agreement``: per-class vote counts, Krippendorff's alpha (nominal, missing
  labels allowed), Fleiss' kappa, per-image agreement.
- ``aggregate``: majority vote, Dawid-Skene EM (optionally with the model's
  probabilities as each image's prior), CROWDLAB (cleanlab's multi-annotator
  weighted ensemble).
- ``annotators``: per-annotator agreement with consensus and estimated accuracy.
- ``ambiguity``: class pairs that annotators and the model confuse, with a
  plain suggestion (merge, or clarify the guideline).
- ``score``: ``analyse_consensus`` composes them.
"""
from .agreement import fleiss_kappa, krippendorff_alpha, label_counts, item_agreement
from .aggregate import AGGREGATORS, Aggregate, crowdlab, dawid_skene, majority_vote
from .annotators import AnnotatorStats, annotator_stats
from .ambiguity import AmbiguousPair, ambiguous_pairs, annotator_confusion
from .score import ConsensusResult, analyse_consensus, review_order

__all__ = ["AGGREGATORS", "Aggregate", "AmbiguousPair", "AnnotatorStats", "ConsensusResult",
           "ambiguous_pairs", "analyse_consensus", "annotator_confusion", "annotator_stats", "crowdlab",
           "dawid_skene", "fleiss_kappa", "item_agreement", "krippendorff_alpha", "label_counts",
           "majority_vote", "review_order"]
