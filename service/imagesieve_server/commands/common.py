"""What the in-process commands share: fraction arguments ("1%" or 0.01),
reading a labelled source (naming the files left out) and embedding a list
of image files with a progress line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def parse_fraction(text: str) -> float:
    """"1%" -> 0.01, "0.01" -> 0.01; must lie in (0, 1] (argparse type)."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 1% or 0.01, got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1] or a percentage, got {text!r}")
    return value


def embed_paths(paths: list[Path], model: str, with_signatures: bool = False
                ) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """Files -> (vectors (N, D) float32, zero rows where failed; errors (N,),
    '' where the image embedded; with ``with_signatures`` their layout
    signatures (N, SIGNATURE_BYTES) uint8, zero rows where failed, else
    None). An unreadable or undecodable file, or one larger than the
    audit's MAX_FILE_MB, fails alone with its reason."""
    from imagesieve.progress import Progress
    from imagesieve_server.audit.embed import MAX_FILE_MB, read_image_file
    from imagesieve_server.engine import DecodeLimits, Embedder
    from imagesieve_server.engine.signature import SIGNATURE_BYTES

    embedder = Embedder.from_model(model, limits=DecodeLimits(max_bytes=MAX_FILE_MB << 20))
    try:
        vectors = np.zeros((len(paths), embedder.dim), dtype=np.float32)
        signatures = np.zeros((len(paths), SIGNATURE_BYTES), np.uint8) if with_signatures else None
        errors = [""] * len(paths)

        def files():
            for i, p in enumerate(paths):
                data, *_, errors[i] = read_image_file(str(p))
                yield data

        with Progress(len(paths), "embedding") as bar:
            for i, r in enumerate(embedder.embed(files(), with_signatures)):
                if not errors[i] and (r.error is not None or r.vector is None):
                    errors[i] = str(r.error or "no vector")     # else a read's reason (unreadable, too large) stands
                if not errors[i]:
                    vectors[i] = r.vector
                    if with_signatures:
                        signatures[i] = r.signature
                bar.update(ok=not errors[i])
    finally:
        embedder.close()
    return vectors, errors, signatures


def labelled_records(source):
    """``labelled_source.load_labelled_source(source)``, the image files it
    left out (formats not decoded) named on stderr. ValueError as it raises."""
    from collections import Counter

    from ..formats import skipped_note
    from ..labelled_source import load_labelled_source
    skipped: Counter = Counter()
    records = load_labelled_source(source, skipped)
    note = skipped_note(skipped)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return records
