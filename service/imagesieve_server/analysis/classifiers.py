"""Classifiers on embeddings, shared by the label-noise scorer and the
sample-size sweep (the same family for both, so their numbers agree).

Every classifier is a scikit-learn estimator: ``fit(X (N, D), y (N,) int)``,
``predict_proba(X) -> (N, C)``.
"""
from __future__ import annotations

from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

CLASSIFIERS = ("logreg", "mlp")


def make_classifier(name: str = "logreg", seed: int = 0, max_iter: int = 300):
    """A fresh, unfitted classifier by name ("logreg" or "mlp")."""
    if name == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=max_iter, random_state=seed))
    if name == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3,
                                                             early_stopping=True, max_iter=max_iter,
                                                             random_state=seed))
    raise ValueError(f"unknown classifier {name!r}; choose from {CLASSIFIERS}")
