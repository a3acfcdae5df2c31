"""Pretrained image models for imagesieve: export to ONNX and describe them.

`manifest` is light (stdlib only) and is what the server reads. The exporters
(`export`, `sources`) need the ``export`` extra (torch, onnx) and are never
imported by the running service.
"""
from .manifest import ModelManifest, default_model_dir, find_model

__all__ = ["ModelManifest", "default_model_dir", "find_model"]
