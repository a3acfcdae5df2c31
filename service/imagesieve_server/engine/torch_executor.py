"""Runs the embedding model eagerly in PyTorch, on a CUDA GPU when present.

The second runtime beside ``OnnxExecutor`` (one executor per runtime, as
clip-as-service has): same contract, unit vectors and logits out, so the
pipeline, batcher and server are unchanged; it takes uint8 pixels and
normalizes them on its device (``input_kind = "pixels"``). It exists
for GPU hosts whose ONNX Runtime has no CUDA provider (the CUDA build of ONNX
Runtime is a separate ~250 MB package tied to one CUDA major version), where
PyTorch's own CUDA build is usually installed already.

It rebuilds the manifest's model from the same pretrained weights that the
ONNX file was exported from (``imagesieve_models.sources``; needs the
``export`` extra: torch, and torchvision for the torchvision models) and
refuses to run if the rebuilt source differs from the one the manifest names.
The embedding path of a default install never imports this module.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from .executor import ModelExecutor, l2_normalize

DTYPES = ("float32", "float16", "bfloat16")


class TorchExecutor(ModelExecutor):
    """Embedding model on PyTorch.

    Parameters
    ----------
    manifest_path : path of the model's manifest (.json beside the .onnx).
    device : "cuda", "cuda:1", "cpu"...; None = "cuda" when available, else "cpu".
    dtype : compute precision on the device; outputs are float32 either way.
        "float16"/"bfloat16" need a CUDA device. Measured on an H200 against
        ONNX Runtime's vectors (bench/gpu.py): float16's worst cosine 0.9997,
        bfloat16's 0.986 (too far for duplicate thresholds).
    weights : local weights file for the source model (else the package cache).
    """

    def __init__(self, manifest_path: str | os.PathLike, device: str | None = None,
                 dtype: str = "float32", weights: str | None = None):
        import torch

        from imagesieve_models.sources import SOURCES

        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        super().__init__(manifest_path)
        if self.manifest.name not in SOURCES:
            raise ValueError(f"no torch source for model {self.manifest.name!r}; have {sorted(SOURCES)}")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        if dtype != "float32" and self.device.type != "cuda":
            raise ValueError(f"dtype {dtype} needs a CUDA device, got {device}")
        src = SOURCES[self.manifest.name](weights)
        if src.source != self.manifest.source:
            # Different weights would give vectors that do not match stored ones.
            raise ValueError(f"rebuilt model is {src.source!r}, the manifest's is {self.manifest.source!r}")
        self._torch = torch
        self._dtype = getattr(torch, dtype)
        module = src.module.eval().to(self.device, self._dtype)
        if self.device.type == "cuda":
            module = module.to(memory_format=torch.channels_last)  # cuDNN's fast layout for convs
            torch.backends.cudnn.benchmark = True
        self.module = module
        # Normalization runs here, on the device: the pipeline sends uint8
        # pixels (a quarter of float32's bytes) and the host skips the float
        # conversion. Channels-last pixels (N, S, S, 3) are the NHWC layout
        # that cuDNN prefers, so the permute below moves no memory.
        self.input_kind = "pixels"
        m = self.manifest
        self._mean = torch.tensor(m.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._scale = (1 / torch.tensor(m.std, dtype=torch.float32, device=self.device)).view(1, 3, 1, 1)
        # One page-locked staging buffer, reused, for the host-to-GPU copy (a
        # fresh pin_memory() a batch measured the same: 2,847 vs 2,708 img/s
        # on two H200 machines; this spares an allocation a batch).
        self._pinned = None
        self._lock = threading.Lock()
        self.providers = [f"torch:{self.device}:{dtype}"]
        self.has_logits = self.manifest.num_classes > 0

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """batch: (N, S, S, 3) uint8 pixels, or (N, 3, S, S) float32 already
        normalized -> (unit embeddings (N, D) float32, logits (N, C) or None)."""
        torch = self._torch
        pixels = batch.dtype == np.uint8
        if pixels and (batch.ndim != 4 or batch.shape[-1] != 3):
            raise ValueError(f"pixels must be (N, S, S, 3) uint8, got {batch.shape}")
        x = torch.from_numpy(np.ascontiguousarray(batch if pixels else batch.astype(np.float32, copy=False)))
        with self._lock, torch.inference_mode():
            if self.device.type == "cuda":
                x = self._to_device(x)
            emb, logits = self._forward(x, pixels)
        return l2_normalize(emb), logits if self.has_logits else None

    def run_device(self, pixels) -> tuple[np.ndarray, np.ndarray | None]:
        """pixels: (N, S, S, 3) uint8 torch tensor already on this executor's
        device (``gpu_decode``'s output: no host round trip) -> as ``run``."""
        torch = self._torch
        if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"pixels must be (N, S, S, 3) uint8, got {tuple(pixels.shape)} {pixels.dtype}")
        if pixels.device.type != self.device.type or (self.device.index is not None
                                                      and pixels.device.index != self.device.index):
            raise ValueError(f"pixels are on {pixels.device}, this executor runs on {self.device}")
        with self._lock, torch.inference_mode():
            emb, logits = self._forward(pixels, True)
        return l2_normalize(emb), logits if self.has_logits else None

    def _forward(self, x, pixels: bool) -> tuple[np.ndarray, np.ndarray]:
        """x on the device (pixels (N, S, S, 3) uint8, or normalized (N, 3, S,
        S)) -> (raw embeddings, logits) as float32 host arrays."""
        torch = self._torch
        if pixels:
            x = (x.permute(0, 3, 1, 2).float() - self._mean) * self._scale
        x = x.to(self._dtype, memory_format=torch.channels_last if self.device.type == "cuda"
                 else torch.contiguous_format)
        emb, logits = self.module(x)
        # .cpu() waits for the GPU, so the staging buffer (or a registered
        # host buffer) is free again on return.
        return emb.float().cpu().numpy(), logits.float().cpu().numpy()

    def _to_device(self, x):
        """Straight from ``x`` when its memory is page-locked (a buffer given
        to ``register_host_memory``), else through the reused page-locked
        buffer (grown when a batch is larger)."""
        if x.is_pinned():
            return x.to(self.device, non_blocking=True)
        if self._pinned is None or self._pinned.numel() < x.numel() or self._pinned.dtype != x.dtype:
            self._pinned = self._torch.empty(x.numel(), dtype=x.dtype, pin_memory=True)
        staged = self._pinned[:x.numel()].view(x.shape)
        staged.copy_(x)
        return staged.to(self.device, non_blocking=True)

    def register_host_memory(self, array: np.ndarray):
        """Page-lock ``array``'s memory in place (``cudaHostRegister``): the
        shared-memory batch buffers of ``process_decode``, so that a batch
        read from them is copied to the GPU asynchronously with no staging
        copy. Returns a function that unregisters it (call it before the
        memory is unmapped), or None when this executor is not on CUDA or
        the driver refuses (then batches go through the staging buffer, as
        before)."""
        if self.device.type != "cuda" or array.nbytes == 0:
            return None
        cudart = self._torch.cuda.cudart()
        ptr = array.ctypes.data
        try:
            if int(cudart.cudaHostRegister(ptr, array.nbytes, 0)) != 0:    # 0: cudaSuccess
                return None
        except Exception:  # noqa: BLE001 - an optional speed-up: without it the staging copy is used
            return None

        def unregister() -> None:
            cudart.cudaHostUnregister(ptr)
        return unregister
