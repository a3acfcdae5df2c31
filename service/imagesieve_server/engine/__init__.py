"""The embedding engine, usable without gRPC:
decode (``decode``) -> preprocess (``preprocess``) -> model (``executor``: ONNX
Runtime in ``onnx_executor``, PyTorch in ``torch_executor``) -> L2 normalize,
composed by ``pipeline.Embedder``; ``batcher`` batches across concurrent
callers for the server."""
from .decode import DecodeError, DecodeLimits, decode_image
from .pipeline import Embedder, ImageEmbedding, PreparedImage

__all__ = ["DecodeError", "DecodeLimits", "decode_image", "Embedder", "ImageEmbedding", "PreparedImage"]
