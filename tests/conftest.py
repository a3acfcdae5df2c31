"""Shared fixtures: the real exported model, real photos, a real server on
loopback (a child process, as users run it)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imagesieve.local_server import LocalServer
from imagesieve.samples import imagenet_photos


@pytest.fixture(scope="session")
def manifest_path():
    from imagesieve_models.manifest import find_model
    return find_model("mobilenet_v1")  # FileNotFoundError names the export command


@pytest.fixture(scope="session")
def photos() -> list[tuple[bytes, int, str]]:
    """The 20 labelled ImageNet photos: (jpeg bytes, class index, file name)."""
    return [(p.read_bytes(), label, p.name) for p, label in imagenet_photos()]


@pytest.fixture(scope="session")
def embedder(manifest_path):
    from imagesieve_server.engine import Embedder
    e = Embedder.from_model(str(manifest_path), max_batch_size=8)
    yield e
    e.close()


@pytest.fixture(scope="session")
def server(manifest_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    with LocalServer(["--max-batch-size", "16", "--max-delay-ms", "5", "--allow-root", str(root),
                      "--max-images-per-request", "64"], model=str(manifest_path)) as srv:
        srv.allowed_root = root
        yield srv


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo_image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def digit_image(a: np.ndarray, size: int = 64, resample=Image.NEAREST) -> Image.Image:
    """A scikit-learn digit (8x8, values 0..16) as a size x size grayscale image."""
    return Image.fromarray((np.asarray(a).reshape(8, 8) * 255 / 16).astype(np.uint8)).resize((size, size), resample)


def digit_png(a: np.ndarray, size: int = 64, resample=Image.NEAREST) -> bytes:
    return encode(digit_image(a, size, resample), "PNG")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits: 1,797 real 8x8 images (X (N, 64) float32, y (N,) int)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target
