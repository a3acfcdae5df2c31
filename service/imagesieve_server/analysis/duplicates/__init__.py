"""Which images are near duplicates: cleanlab-style modules named for their
question, pure functions on numpy arrays of L2-normalized embeddings.

- ``pairs``: all pairs above a cosine threshold (exact range search, or an
  approximate kNN graph for very large N); never an N x N matrix.
- ``groups``: connected components, groups bounded so they do not chain
  unrelated images, each group's lowest internal similarity.
- ``leakage``: pairs across splits (train vs test), pairs whose labels differ.
- ``calibrate``: recall and false-pair rate per threshold; a suggested one.
"""
from .calibrate import ThresholdRow, false_pairs_per_1k, rate_for_per_1k, suggest_threshold, threshold_table
from .groups import (bounded_groups, connected_components, group_min_similarity,
                     groups_from_labels)
from .leakage import cross_split_pairs, label_conflicts, leaked_items
from .pairs import knn_graph_pairs, pairs_above_threshold, pca_reduce

__all__ = ["ThresholdRow", "bounded_groups", "connected_components", "cross_split_pairs",
           "group_min_similarity", "groups_from_labels", "knn_graph_pairs", "label_conflicts",
           "leaked_items", "pairs_above_threshold", "pca_reduce", "suggest_threshold",
           "threshold_table", "false_pairs_per_1k", "rate_for_per_1k"]
