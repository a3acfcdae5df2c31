"""Runs an exported embedding model with ONNX Runtime.

One executor per runtime (as clip-as-service does): this one is ONNX Runtime
with the best execution provider present (TensorRT, CUDA, else CPU). It knows
nothing of images: (N, 3, S, S) float32 in, unit vectors out.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from imagesieve_models.manifest import ModelManifest, sha256_file

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def select_providers(requested: list[str] | None = None) -> list[str]:
    """The requested providers that this ONNX Runtime build has, in order;
    by default the fastest present. CPU is always last as a fallback."""
    available = set(ort.get_available_providers())
    wanted = requested or list(PREFERRED_PROVIDERS)
    unknown = [p for p in wanted if p not in available]
    if requested and unknown:
        raise ValueError(f"execution providers {unknown} are not available; have {sorted(available)}")
    chosen = [p for p in wanted if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of x (N, D) scaled to unit L2 norm, float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


class OnnxExecutor:
    """Embedding model on ONNX Runtime.

    Parameters
    ----------
    manifest_path : path of the model's manifest (.json beside the .onnx).
    providers : execution providers in preference order; None = best present.
    intra_op_threads : threads for one inference; 0 = one per CPU core.
    verify_sha256 : refuse an ONNX file whose digest differs from the manifest.
    """

    def __init__(self, manifest_path: str | os.PathLike, providers: list[str] | None = None,
                 intra_op_threads: int = 0, verify_sha256: bool = True):
        self.manifest_path = Path(manifest_path)
        self.manifest = ModelManifest.load(self.manifest_path)
        onnx_path = self.manifest.onnx_path(self.manifest_path)
        if verify_sha256 and sha256_file(onnx_path) != self.manifest.sha256:
            raise ValueError(f"{onnx_path} does not match the sha256 in its manifest; re-export it")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = intra_op_threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=select_providers(providers))
        self.providers = self.session.get_providers()
        self._outputs = [o.name for o in self.session.get_outputs()]
        self.has_logits = "logits" in self._outputs
        self.class_names = self.manifest.class_names(self.manifest_path)

    @property
    def dim(self) -> int:
        return self.manifest.embedding_dim

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """batch (N, 3, S, S) float32 -> (unit embeddings (N, D) float32,
        logits (N, C) float32 or None)."""
        outs = self.session.run(None, {"input": np.ascontiguousarray(batch, dtype=np.float32)})
        named = dict(zip(self._outputs, outs))
        return l2_normalize(named["embedding"]), named.get("logits")


def softmax_top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """logits (N, C) -> (indices (N, k), probabilities (N, k)), best first."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    k = min(k, p.shape[1])
    idx = np.argsort(-p, axis=1)[:, :k]
    return idx, np.take_along_axis(p, idx, axis=1)
