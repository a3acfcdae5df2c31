"""imagesieve server: the gRPC service over the embedding engine.

Layers, each testable alone: ``engine`` (decode -> preprocess -> ONNX model ->
normalize, and the dynamic batcher), ``servicers`` (thin gRPC adapters),
``server`` (wiring, health, reflection, shutdown)."""
