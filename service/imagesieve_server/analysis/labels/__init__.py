"""Which labels are wrong: cleanlab-style modules named for their question.

- ``predict``: out-of-fold and in-sample predicted probabilities.
- ``rank``: per-item scores (self-confidence, normalized margin, labelfix,
  neighbour agreement via FAISS).
- ``count``: the confident joint and the estimated noise rate.
- ``filter``: the top fraction to review; duplicates with different labels.
- ``score``: ``score_labels`` composes them (methods "out_of_fold", "labelfix").
"""
from .score import (DEFAULT_CLASSIFIER, DEFAULT_METHOD, METHODS, RANKINGS, LabelScores, DEFAULT_NEIGHBOR_WEIGHT,
                    score_labels)

__all__ = ["DEFAULT_CLASSIFIER", "DEFAULT_METHOD", "METHODS", "RANKINGS", "LabelScores", "DEFAULT_NEIGHBOR_WEIGHT",
           "score_labels"]
