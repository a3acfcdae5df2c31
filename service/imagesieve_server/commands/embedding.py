"""Embedding a list of image files in-process, with a progress line: what the
in-process analysis commands (labels, samplesize, consensus) share."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def embed_paths(paths: list[Path], model: str) -> tuple[np.ndarray, list[str]]:
    """Files -> (vectors (N, D) float32, zero rows where failed; errors (N,),
    '' where the image embedded). An unreadable or undecodable file fails alone."""
    from imagesieve.progress import Progress
    from imagesieve_server.engine import Embedder

    embedder = Embedder.from_model(model)
    try:
        vectors = np.zeros((len(paths), embedder.dim), dtype=np.float32)
        errors = [""] * len(paths)

        def read(p: Path) -> bytes:
            try:
                return p.read_bytes()
            except OSError:
                return b""  # becomes a per-image decode error

        with Progress(len(paths), "embedding") as bar:
            for i, r in enumerate(embedder.embed(read(p) for p in paths)):
                if r.error is not None or r.vector is None:
                    errors[i] = str(r.error or "no vector")
                else:
                    vectors[i] = r.vector
                bar.update(ok=not errors[i])
    finally:
        embedder.close()
    return vectors, errors
