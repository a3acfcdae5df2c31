"""The embedding engine, usable without gRPC:
decode (``decode``) -> preprocess (``preprocess``) -> model (``executor``: ONNX
Runtime in ``onnx_executor``, PyTorch in ``torch_executor``) -> L2 normalize,
composed by ``pipeline.Embedder``; ``batcher`` batches across concurrent
callers for the server; ``process_decode`` decodes in worker processes."""
from .decode import DecodeError, DecodeLimits, decode_image

__all__ = ["DecodeError", "DecodeLimits", "decode_image", "Embedder", "ImageEmbedding", "PreparedImage"]


def __getattr__(name: str):
    # The pipeline (and ONNX Runtime with it) on first use: a decoding worker
    # process imports this package and needs none of it.
    if name in ("Embedder", "ImageEmbedding", "PreparedImage"):
        from . import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
