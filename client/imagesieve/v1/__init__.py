"""Generated gRPC stubs for imagesieve.v1 (see proto/generate.py)."""
