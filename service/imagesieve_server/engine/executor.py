"""What every model runtime shares: the manifest it was built from, and the
contract: a batch of images (normalized floats or uint8 pixels, see
``INPUT_KINDS``) in -> unit embeddings (N, D) and logits out.

One executor per runtime (as clip-as-service has): ``OnnxExecutor`` (ONNX
Runtime) and ``TorchExecutor`` (PyTorch). They know nothing of images;
decoding and preprocessing come before them, the same for both.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from imagesieve_models.manifest import ModelManifest


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of x (N, D) scaled to unit L2 norm, float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


#: What ``run`` takes: "normalized" (N, 3, S, S) float32, or "pixels"
#: (N, S, S, 3) uint8 that the executor normalizes itself (on a GPU that
#: spares the host a float conversion and sends a quarter of the bytes).
INPUT_KINDS = ("normalized", "pixels")


class ModelExecutor:
    """Base of the runtimes. Subclasses set ``providers`` (what runs the
    model, for GetModelInfo), ``has_logits`` and ``input_kind``, and
    implement ``run``."""

    providers: list[str]
    has_logits: bool
    input_kind: str = "normalized"

    def __init__(self, manifest_path: str | os.PathLike):
        self.manifest_path = Path(manifest_path)
        self.manifest = ModelManifest.load(self.manifest_path)

    @functools.cached_property
    def class_names(self) -> list[str]:
        return self.manifest.class_names(self.manifest_path)

    @property
    def dim(self) -> int:
        return self.manifest.embedding_dim

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """batch (as ``input_kind`` says) -> (unit embeddings (N, D) float32,
        logits (N, C) float32 or None)."""
        raise NotImplementedError

    def register_host_memory(self, array: np.ndarray):
        """Page-lock ``array`` for faster copies to this runtime's device;
        returns the function that undoes it, or None (here: nothing to do)."""
        return None
