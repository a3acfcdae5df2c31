"""Runs an exported embedding model with ONNX Runtime.

One executor per runtime (as clip-as-service does): this one is ONNX Runtime
with the best execution provider present (TensorRT, CUDA, else CPU). It knows
nothing of images: (N, 3, S, S) float32 in, unit vectors out.
"""
from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from imagesieve_models.manifest import sha256_file

from .executor import ModelExecutor, l2_normalize

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


class OnnxExecutor(ModelExecutor):
    """Embedding model on ONNX Runtime.

    Parameters
    ----------
    manifest_path : path of the model's manifest (.json beside the .onnx).
    providers : execution providers in preference order; None = best present.
    intra_op_threads : threads for one inference; 0 = one per CPU core.
    verify_sha256 : refuse an ONNX file whose digest differs from the manifest.
    memory_pattern : ONNX Runtime's per-shape memory plans (its default, on).
        Off here: batches come in every size from 1 to the batch limit, and
        each new size planned and kept blocks of its own (``bench/ort_memory.py``).
    """

    def __init__(self, manifest_path: str | os.PathLike, providers: list[str] | None = None,
                 intra_op_threads: int = 0, verify_sha256: bool = True, memory_pattern: bool = False):
        super().__init__(manifest_path)
        onnx_path = self.manifest.onnx_path(self.manifest_path)
        if verify_sha256 and sha256_file(onnx_path) != self.manifest.sha256:
            raise ValueError(f"{onnx_path} does not match the sha256 in its manifest; re-export it")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = intra_op_threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.enable_mem_pattern = memory_pattern
        # No busy-waiting between runs: ORT's threads otherwise spin on the
        # cores the decoders and stage-2 alignment workers need (a streaming
        # check: 43.5 -> 31.4 ms p50 with 2 alignment workers on 2 cores),
        # and embedding throughput did not drop (170.9/166.1 vs 172.7/178.1 img/s).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=select_providers(providers))
        self.providers = self.session.get_providers()
        self._outputs = [o.name for o in self.session.get_outputs()]
        self.has_logits = "logits" in self._outputs

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
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
