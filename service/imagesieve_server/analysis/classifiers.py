"""Classifiers on embeddings, shared by the label-noise scorer and the
sample-size sweep (the same family for both, so their numbers agree).

Every classifier is a scikit-learn style estimator: ``fit(X (N, D), y (N,) int)``,
``predict_proba(X) -> (N, C)``, ``predict(X) -> (N,)``, ``classes_``.

- "logreg": standardized logistic regression.
- "mlp": standardized one-hidden-layer MLP (early stopping).
- "ensemble": the mean of the logreg and mlp probabilities.
- "cnn": a small convolutional network on the *pixels* (X (N, H, W) or
  (N, C, H, W), or (N, S*S) gray squares); needs torch, imported only when fitted.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

CLASSIFIERS = ("logreg", "mlp", "ensemble", "cnn")


def make_classifier(name: str = "logreg", seed: int = 0, max_iter: int = 300):
    """A fresh, unfitted classifier by name (see CLASSIFIERS)."""
    if name == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=max_iter, random_state=seed))
    if name == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3,
                                                             early_stopping=True, max_iter=max_iter,
                                                             random_state=seed))
    if name == "ensemble":
        return EnsembleClassifier([make_classifier("logreg", seed, max_iter),
                                   make_classifier("mlp", seed, max_iter)])
    if name == "cnn":
        return SmallCNN(seed=seed)
    raise ValueError(f"unknown classifier {name!r}; choose from {CLASSIFIERS}")


class EnsembleClassifier:
    """Mean of the members' predict_proba over the union of their classes."""

    def __init__(self, members):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = members

    def fit(self, X, y):
        for m in self.members:
            m.fit(X, y)
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        out = np.zeros((len(X), len(self.classes_)))
        for m in self.members:
            cols = np.searchsorted(self.classes_, m.classes_)
            out[:, cols] += m.predict_proba(X)
        return out / len(self.members)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class SmallCNN:
    """Two conv blocks (32, 64 channels, BatchNorm, ReLU, 2x2 max-pool), a
    128-unit hidden layer and dropout; AdamW with a one-cycle schedule.
    Inputs uint8 (scaled by 1/255) or float; images of any size."""

    def __init__(self, seed: int = 0, epochs: int = 3, batch_size: int = 128, lr: float = 3e-3,
                 weight_decay: float = 1e-4, threads: int | None = None):
        if epochs < 1 or batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        self.seed, self.epochs, self.batch_size, self.lr = seed, epochs, batch_size, lr
        self.weight_decay, self.threads = weight_decay, threads

    @staticmethod
    def _images(X) -> np.ndarray:
        X = np.asarray(X)
        scale = 1.0 / 255.0 if X.dtype == np.uint8 else 1.0
        if X.ndim == 2:
            side = int(math.isqrt(X.shape[1]))
            if side * side != X.shape[1]:
                raise ValueError(f"cnn: (N, D) input needs D a square number of gray pixels, got {X.shape}")
            X = X.reshape(len(X), 1, side, side)
        elif X.ndim == 3:
            X = X[:, None]
        elif X.ndim != 4:
            raise ValueError(f"cnn: expected images (N, H, W) or (N, C, H, W), got {X.shape}")
        return X.astype(np.float32) * np.float32(scale)

    def _net(self, in_ch: int, num_classes: int):
        from torch import nn

        return nn.Sequential(
            nn.Conv2d(in_ch, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7), nn.Flatten(),
            nn.Linear(64 * 49, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, num_classes))

    def fit(self, X, y):
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        x = self._images(X)
        self.classes_, y_idx = np.unique(np.asarray(y), return_inverse=True)
        self.mean_, self.std_ = float(x.mean()), float(x.std() + 1e-6)
        xt = torch.from_numpy((x - self.mean_) / self.std_)
        yt = torch.from_numpy(y_idx.astype(np.int64))
        self.net_ = self._net(x.shape[1], len(self.classes_))
        steps = self.epochs * math.ceil(len(x) / self.batch_size)
        opt = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=steps)
        loss_fn = torch.nn.CrossEntropyLoss()
        self.net_.train()
        for _ in range(self.epochs):
            order = torch.from_numpy(rng.permutation(len(x)))
            for start in range(0, len(x), self.batch_size):
                b = order[start:start + self.batch_size]
                if len(b) < 2:  # BatchNorm needs 2+
                    continue
                opt.zero_grad()
                loss_fn(self.net_(xt[b]), yt[b]).backward()
                opt.step()
                sched.step()
        return self

    def predict_proba(self, X) -> np.ndarray:
        import torch

        x = torch.from_numpy((self._images(X) - self.mean_) / self.std_)
        self.net_.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(x), 1024):
                out.append(torch.softmax(self.net_(x[start:start + 1024]), dim=1).numpy())
        return np.concatenate(out).astype(np.float64)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
