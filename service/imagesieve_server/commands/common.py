"""What the in-process commands share: fraction arguments ("1%" or 0.01),
reading a labelled source (naming the files left out) and embedding a list
of image files with a progress line, into an embedding store that later
commands (and an audit's) reuse."""
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


def add_embeddings_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embeddings", default=None, metavar="DIR",
                        help="embedding store to reuse and keep: an audit's --out folder (or its embeddings/) "
                             "answers without embedding again; images not in it yet are embedded and added "
                             "(default: OUT/embeddings)")


def store_dir(embeddings: str | None, out: str | Path) -> Path:
    """The embedding store a command uses: ``--embeddings`` (an audit's
    output folder stands for its ``embeddings/``), else OUT/embeddings."""
    root = Path(embeddings) if embeddings else Path(out) / "embeddings"
    if (root / "embeddings" / "index.sqlite").exists():
        root = root / "embeddings"
    return root


def embed_paths(paths: list[Path], model: str, with_signatures: bool = False, store: Path | None = None
                ) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """Files -> (vectors (N, D) float32, zero rows where failed; errors (N,),
    '' where the image embedded; with ``with_signatures`` their layout
    signatures (N, SIGNATURE_BYTES) uint8, zero rows where failed, else
    None). An unreadable or undecodable file, or one larger than the
    audit's MAX_FILE_MB, fails alone with its reason. ``store``: an
    embedding store folder (``audit.store``): images already in it,
    unchanged, are read from it (no model is loaded when all are), the
    others embedded and added."""
    if store is not None:
        loaded = embed_into_store(paths, model, store, with_signatures)
        return loaded.vectors, loaded.errors, loaded.signatures if with_signatures else None
    from imagesieve.progress import Progress
    from imagesieve_server.audit.embed import MAX_FILE_MB, PROCESS_DECODE_MIN, read_image_file
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
            for i, r in enumerate(embedder.embed(files(), with_signatures,
                                                 in_processes=len(paths) >= PROCESS_DECODE_MIN)):
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


def embed_into_store(paths: list[Path], model: str, store: Path, with_signatures: bool = True):
    """Files -> ``audit.store.LoadedEmbeddings`` (vectors, content hashes,
    errors, sizes, signatures, properties) through the embedding store
    folder ``store``: images already in it, unchanged, are read from it (no
    model is loaded when all are), the others embedded and added.
    ``with_signatures``: a store written before layout signatures is
    refused. ValueError for a store that cannot be used."""
    import sqlite3

    from imagesieve_models.manifest import find_model
    try:
        find_model(model)            # a model that is not there is that, not a bad store
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    try:
        return _embed_into_store([str(p) for p in paths], model, with_signatures, store)
    except (sqlite3.DatabaseError, NotADirectoryError, FileExistsError, PermissionError) as e:
        # A damaged store or a path that is not a folder: one line, as for any bad argument.
        raise ValueError(f"cannot use {store} as an embedding store ({e}); name another --embeddings "
                         "folder") from e


def _embed_into_store(paths: list[str], model: str, with_signatures: bool, root: Path):
    from imagesieve_models.manifest import ModelManifest, find_model
    from imagesieve_server.audit.embed import InProcessBackend, embed_stage, embedded_line, plan
    from imagesieve_server.audit.store import EmbeddingStore, stored_model

    held = stored_model(root)
    if held is not None:
        name = ModelManifest.load(find_model(model)).name
        if held[0] != name:
            raise ValueError(f"{root} holds {held[0]} embeddings; this command uses {name} (--model): "
                             "use another --embeddings folder")
    store = None
    try:                             # the store is closed (its lock released) whatever fails
        store = EmbeddingStore(root, *held) if held is not None else None
        todo = plan(store, paths) if store is not None else None
        if todo is not None and not len(todo):
            print(f"embeddings: all {len(paths)} reused from {root}", file=sys.stderr)
        else:
            backend = InProcessBackend(model)
            try:
                store = store or EmbeddingStore(root, backend.model, backend.dim)
                counts = embed_stage(store, backend, paths, todo)
            finally:
                backend.close()
            print(f"embeddings: {embedded_line(counts)} from {root}",
                  file=sys.stderr)
        loaded = store.load(paths)
    finally:
        if store is not None:
            store.close()
    if with_signatures and loaded.signatures is None:
        raise ValueError(f"{root} was written by an older version without layout thumbnails; "
                         "use another --embeddings folder")
    return loaded


def duplicate_pairs(paths: list, loaded, store: Path, report=None) -> tuple[np.ndarray, np.ndarray, str]:
    """(a, b, where from): positions into ``paths`` of the duplicate pairs
    among the images that embedded (``loaded``: ``embed_into_store``'s
    answer, with signatures), as the duplicates check
    (``checks.duplicates``) defines them. When ``store`` is an audit's that
    covered exactly these images with exactly this content (path and
    SHA-256 each) and found its pairs with the check's defaults (verified,
    the threshold from the data), its pairs (``duplicate_pairs.parquet``):
    the same answer, without aligning every candidate again."""
    import os

    ok = np.array([not e for e in loaded.errors], bool)
    wanted = [os.path.abspath(str(p)) for p in paths]
    audit = Path(store).parent
    if _audit_pairs_are_the_checks(audit):
        import pyarrow.parquet as pq
        images = pq.read_table(audit / "images.parquet", columns=["path", "error", "sha256"]).to_pydict()
        audited = {(os.path.abspath(p), h) for p, e, h in zip(images["path"], images["error"], images["sha256"])
                   if not e}
        mine = {(p, h.decode() if isinstance(h, bytes) else str(h))
                for p, h, good in zip(wanted, loaded.sha256.tolist(), ok) if good}
        if audited == mine:
            where = {p: i for i, p in enumerate(wanted)}
            t = pq.read_table(audit / "duplicate_pairs.parquet", columns=["path_a", "path_b"]).to_pydict()
            a = np.array([where[os.path.abspath(p)] for p in t["path_a"]], np.int64)
            b = np.array([where[os.path.abspath(p)] for p in t["path_b"]], np.int64)
            return a, b, f"the audit's duplicate pairs ({audit / 'duplicate_pairs.parquet'})"
    from ..checks import duplicates
    idx = np.flatnonzero(ok)
    none = [""] * len(idx)
    found = duplicates.run(loaded.vectors[idx], [wanted[i] for i in idx], none, none, loaded.sha256[idx],
                           None if loaded.signatures is None else loaded.signatures[idx], report=report,
                           store=Path(store))
    d = found.details.report
    return idx[d.a], idx[d.b], "the duplicates check on these images"


def _audit_pairs_are_the_checks(audit: Path) -> bool:
    """An audit folder whose duplicate pairs the duplicates check with its
    defaults would find: verified, with the threshold from the data (not
    ``--raw-cosine`` or ``--threshold``)."""
    import json
    if not all((audit / f).exists() for f in ("duplicate_pairs.parquet", "images.parquet", "report.json")):
        return False
    try:
        summary = json.loads((audit / "report.json").read_text())["summary"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return summary.get("duplicate_method") == "verified" and summary.get("duplicate_threshold_asked") == 0
