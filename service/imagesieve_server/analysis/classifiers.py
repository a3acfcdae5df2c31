"""Classifiers on embeddings, shared by the label-noise scorer and the
sample-size sweep (the same family for both, so their numbers agree).

Every classifier is a scikit-learn style estimator: ``fit(X (N, D), y (N,) int)``,
``predict_proba(X) -> (N, C)``, ``predict(X) -> (N,)``, ``classes_``.

- "logreg": standardized logistic regression.
- "mlp": standardized one-hidden-layer MLP (early stopping).
- "ensemble": the mean of the logreg and mlp probabilities.
- "lda": linear discriminant analysis with a shrunk shared covariance, fitted
  from sufficient statistics in row chunks (no copy of X, memory O(D^2)
  whatever N): what the batch audit uses.
- "cnn": a small convolutional network on the *pixels* (X (N, H, W) or
  (N, C, H, W), or (N, S*S) gray squares); needs torch, imported only when fitted.
- ``PixelsAndEmbeddings``: the mean of that CNN's probabilities and an
  embedding classifier's, for callers that hold pixels (the strongest label
  scorer measured on digits; README, "Mislabeled images"). The service's
  pixels are the images' layout-signature thumbnails (48x48 gray, frames
  trimmed), kept wherever the vectors are.
"""
from __future__ import annotations

import math

import numpy as np

CLASSIFIERS = ("logreg", "mlp", "ensemble", "lda", "cnn")
#: The classifiers that take embeddings (N, D); "cnn" needs pixels.
EMBEDDING_CLASSIFIERS = tuple(c for c in CLASSIFIERS if c != "cnn")


def check_embedding_classifier(name: str) -> str:
    """``name`` if it is a classifier on embeddings, else ValueError listing them."""
    if name not in EMBEDDING_CLASSIFIERS:
        raise ValueError(f"unknown classifier {str(name)[:64]!r}; choose from {EMBEDDING_CLASSIFIERS}")
    return name


def make_classifier(name: str = "logreg", seed: int = 0, max_iter: int = 300):
    """A fresh, unfitted classifier by name (see CLASSIFIERS)."""
    # scikit-learn is imported here, not at module level: importing it costs
    # ~1 s, and the batch audit's default classifier ("lda") does not need it.
    if name == "lda":
        return ShrunkLDA()
    if name == "cnn":
        return SmallCNN(seed=seed)
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; choose from {CLASSIFIERS}")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .small_set_mlp import SmallSetMLP

    if name == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=max_iter, random_state=seed))
    if name == "mlp":
        return make_pipeline(StandardScaler(), SmallSetMLP(hidden_layer_sizes=(256,), alpha=1e-3, early_stopping=True,
                                                         max_iter=max_iter, random_state=seed))
    return EnsembleClassifier([make_classifier("logreg", seed, max_iter),
                               make_classifier("mlp", seed, max_iter)])


PIXELS_NEED_TORCH = "the pixel CNN needs torch on this host (pip install 'imagesieve-server[train]')"
#: Fewer labelled images than this and the pixel CNN is left out: on fresh flip seeds
#: it lowered precision at 3% on 400 digits (0.717 -> 0.650) and raised it on 1,797
#: (0.852 -> 0.878) and MNIST-5k (0.913 -> 0.952) (README, "Mislabeled images").
MIN_PIXEL_IMAGES = 1000


def pixels_unused_because(n_images: int) -> str:
    """Why the pixel CNN cannot help here ('' when it can): torch missing, or
    too few images for a CNN to learn more than noise."""
    if not torch_available():
        return PIXELS_NEED_TORCH
    if n_images < MIN_PIXEL_IMAGES:
        return (f"the pixel CNN needs at least {MIN_PIXEL_IMAGES:,} labelled images (here {n_images:,}): "
                "with fewer it added noise")
    return ""


def torch_available() -> bool:
    """Whether the optional torch extra is installed (the pixel CNN needs it).
    Looked up, not imported: an import takes a second, and a server asks on
    its event loop."""
    import importlib.util
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


class PixelsAndEmbeddings:
    """Mean of a pixel CNN's and an embedding classifier's probabilities.
    pixels (N, H, W) or (N, C, H, W) uint8; embeddings (N, D). ``X`` in
    fit/predict_proba is (M, 1) row indices into both, so the fold and
    subset machinery that works on embeddings works unchanged."""

    def __init__(self, pixels: np.ndarray, embeddings: np.ndarray, embedding_classifier: str = "lda",
                 seed: int = 0, epochs: int = 3, check=None):
        if len(pixels) != len(embeddings):
            raise ValueError(f"{len(pixels)} pixel images for {len(embeddings)} embeddings")
        self.pixels, self.embeddings = pixels, embeddings
        self.cnn = SmallCNN(seed=seed, epochs=epochs, check=check)
        self.other = make_classifier(embedding_classifier, seed)

    def fit(self, X, y):
        rows = np.asarray(X).reshape(-1)
        self.cnn.fit(self.pixels[rows], y)
        self.other.fit(self.embeddings[rows], y)
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict_proba(self, X) -> np.ndarray:
        rows = np.asarray(X).reshape(-1)
        return (self.cnn.predict_proba(self.pixels[rows]) + self.other.predict_proba(self.embeddings[rows])) / 2

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def pixels_and_embeddings(pixels: np.ndarray, embeddings: np.ndarray, embedding_classifier: str = "lda",
                          epochs: int = 3, check=None):
    """``factory(seed)`` of :class:`PixelsAndEmbeddings` for the label scorer
    (which scores row indices (N, 1)); like a named classifier it needs two
    classes in every fold's training images (``train_classes``)."""
    def factory(seed: int) -> PixelsAndEmbeddings:
        return PixelsAndEmbeddings(pixels, embeddings, embedding_classifier, seed, epochs, check)
    factory.train_classes = 2
    return factory


def fit_on_rows(est, X: np.ndarray, y: np.ndarray, rows: np.ndarray | None):
    """Fit ``est`` on ``X[rows]``, ``y[rows]`` (all rows when None) without
    copying the rows when the estimator can (``fit_rows``, e.g. ShrunkLDA);
    other estimators get the gathered copy."""
    if hasattr(est, "fit_rows"):
        return est.fit_rows(X, y, rows)
    return est.fit(X, y) if rows is None else est.fit(X[rows], np.asarray(y)[rows])


def predict_proba_on_rows(est, X: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """``est.predict_proba(X[rows])``, without the copy where the estimator can."""
    if hasattr(est, "predict_proba_rows"):
        return est.predict_proba_rows(X, rows)
    return est.predict_proba(X if rows is None else X[rows])


class ShrunkLDA:
    """Linear discriminant analysis: one Gaussian per class, all sharing a
    covariance that is shrunk toward its diagonal,
    ``S' = (1 - shrinkage) * S + shrinkage * diag(S)``.

    Fitted from sufficient statistics (class counts, class sums and the D x D
    scatter) accumulated over chunks of ``chunk_rows`` rows, so fitting on a
    subset of rows (a fold, a sweep subset) reads those rows in place: memory
    is O(D^2 + chunk_rows * D) whatever N, one pass over the rows.
    Probabilities are the softmax of the linear discriminants, float64.

    shrinkage in [0, 1]; 0.1 was the best of {0.1, 0.3, sklearn's Ledoit-Wolf}
    for out-of-fold label scoring on MNIST-5k MobileNetV1 embeddings (3% flipped:
    precision 1.00 / 1.00 / 0.94 at 1 / 2 / 3%, against 0.98 / 0.97 / 0.88 for
    logistic regression, and ~35x faster).
    """

    def __init__(self, shrinkage: float = 0.1, chunk_rows: int = 1024):
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.shrinkage, self.chunk_rows = shrinkage, chunk_rows

    def _chunks(self, X: np.ndarray, rows: np.ndarray | None):
        n = len(X) if rows is None else len(rows)
        for s in range(0, n, self.chunk_rows):
            e = min(s + self.chunk_rows, n)
            block = X[s:e] if rows is None else X[rows[s:e]]
            yield s, e, np.asarray(block, dtype=np.float32).reshape(e - s, -1)

    def fit(self, X, y):
        return self.fit_rows(X, y, None)

    def fit_rows(self, X, y, rows: np.ndarray | None):
        """Fit on ``X[rows]`` (X (N, D); y (N,) labels of any sortable dtype)."""
        X, y = np.asarray(X), np.asarray(y)
        if X.ndim != 2 or y.shape != (len(X),):
            raise ValueError(f"X must be (N, D) and y (N,), got {X.shape} and {y.shape}")
        rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        y_fit = y if rows is None else y[rows]
        self.classes_, codes = np.unique(y_fit, return_inverse=True)
        c, d = len(self.classes_), X.shape[1]
        if c < 2:
            raise ValueError("lda needs at least 2 classes")
        counts = np.bincount(codes, minlength=c).astype(np.float64)
        sums = np.zeros((c, d))
        scatter = np.zeros((d, d))
        for s, e, xc in self._chunks(X, rows):
            onehot = np.zeros((e - s, c), dtype=np.float32)
            onehot[np.arange(e - s), codes[s:e]] = 1.0
            sums += onehot.T @ xc
            scatter += xc.T @ xc
        n = counts.sum()
        means = sums / counts[:, None]
        cov = (scatter - (means.T * counts) @ means) / n          # pooled within-class, biased
        diag = np.diag(cov).copy()
        cov *= 1.0 - self.shrinkage
        # A tiny ridge keeps constant features (zero variance) solvable.
        cov[np.diag_indices(d)] = diag + 1e-6 * max(float(diag.mean()), 1e-12)
        # One BLAS thread: OpenBLAS' threaded LU of a 1024 x 1024 matrix ran
        # 5-10x slower than the serial one on 2 shared cores.
        from threadpoolctl import threadpool_limits
        with threadpool_limits(1, user_api="blas"):
            w = np.linalg.solve(cov, means.T)                      # (D, C)
        self.coef_ = np.ascontiguousarray(w.T.astype(np.float32))  # (C, D)
        self.intercept_ = -0.5 * np.einsum("cd,dc->c", means, w) + np.log(counts / n)
        return self

    def decision_function_rows(self, X, rows: np.ndarray | None) -> np.ndarray:
        X = np.asarray(X)
        n = len(X) if rows is None else len(rows)
        out = np.empty((n, len(self.classes_)))
        for s, e, xc in self._chunks(X, rows):
            out[s:e] = xc @ self.coef_.T
        return out + self.intercept_

    def predict_proba_rows(self, X, rows: np.ndarray | None) -> np.ndarray:
        z = self.decision_function_rows(X, rows)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        return z / z.sum(axis=1, keepdims=True)

    def predict_proba(self, X) -> np.ndarray:
        """(N, C) float64 class probabilities, columns in ``classes_`` order."""
        return self.predict_proba_rows(X, None)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function_rows(X, None).argmax(axis=1)]


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
                 weight_decay: float = 1e-4, threads: int | None = None, check=None):
        if epochs < 1 or batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        self.seed, self.epochs, self.batch_size, self.lr = seed, epochs, batch_size, lr
        self.weight_decay, self.threads = weight_decay, threads
        self.check = check      # called after every mini-batch; raises to stop (a cancelled job)

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
                if self.check is not None:
                    self.check()
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
