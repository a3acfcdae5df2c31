"""scikit-learn's MLPClassifier for sets of any size. Its own module: it
imports scikit-learn (~1 s), which ``classifiers`` imports only when a
classifier that needs it is made."""
from __future__ import annotations

import math

import numpy as np
from sklearn.neural_network import MLPClassifier


class SmallSetMLP(MLPClassifier):
    """An MLPClassifier that holds out its early-stopping tenth only where a
    stratified tenth can hold every class and leave every class in training:
    on 8 images of 2 classes scikit-learn's split failed in its own words
    ("The test_size = 1 should be greater or equal to the number of classes
    = 2", a twenty-second probe); scikit-learn also wants two validation
    images. Otherwise it trains on every image for max_iter epochs."""

    def fit(self, X, y):
        _, counts = np.unique(y, return_counts=True)
        held = math.ceil(self.validation_fraction * len(y))
        wanted = self.early_stopping
        self.early_stopping = bool(wanted and counts.min() >= 2 and max(2, len(counts)) <= held <= len(y) - len(counts))
        try:
            return super().fit(X, y)
        finally:
            self.early_stopping = wanted
