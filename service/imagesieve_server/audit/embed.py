"""The audit's embedding stage: decide what needs embedding (new or changed
files), embed it with one of three backends, store it in shards.

Backends, all yielding ``Embedded`` in input order:
- ``InProcessBackend``: the engine in this process (no server needed);
- ``ServerBackend``: a running imagesieve server (``--server ADDR``);
- ``RayBackend``: Ray Data ``map_batches`` on a Ray cluster (``--ray ADDRESS``),
  each worker loading the ONNX model once.
"""
from __future__ import annotations

import errno
from array import array
from typing import Iterable, Iterator

import numpy as np

from imagesieve.files import UnreadFile, read_regular
from imagesieve.progress import Progress

from .memory import trim_free_heap
from .store import Embedded, EmbeddingStore, change_stamp, sha256_bytes

TRIM_EVERY = 1024     # images between heap trims (a few ms each)
# Images to embed from which the in-process backend decodes in worker
# processes (their ~1 s start is then under 3% of the stage on 2 cores).
PROCESS_DECODE_MIN = 256
# An audit reads files from the user's own disk: a large wallpaper or scan
# (an 8K PNG is 50-100 MB) is data, not an attack, and the decoder's pixel
# and raster limits bound what decoding it costs; this bounds the read.
MAX_FILE_MB = 512


def read_image_file(path: str, max_bytes: int = MAX_FILE_MB << 20) -> tuple[bytes, str, int, int, str]:
    """(bytes, sha256, size, change stamp (``store.change_stamp``), error).
    An unreadable file, or one larger than ``max_bytes`` (not read), gives
    empty bytes and its error; it fails alone."""
    if not path:
        return b"", "", 0, 0, "INVALID_ARGUMENT: an empty path"
    if "://" in path:
        return b"", "", 0, 0, "INVALID_ARGUMENT: a URL, not a file: the audit reads local files (download it first)"
    try:
        data, st = read_regular(path, max_bytes)
    except UnreadFile as e:
        # A manifest may name anything: a FIFO would block the read forever, /dev/zero never end.
        if e.errno == errno.EINVAL:
            return b"", "", 0, change_stamp(e.stat), "INVALID_ARGUMENT: not a regular file"
        return (b"", "", e.size, change_stamp(e.stat),
                f"RESOURCE_EXHAUSTED: file is {e.size} bytes, above the audit's limit of {max_bytes} "
                "(--max-image-mb)")
    except OSError as e:
        return b"", "", 0, 0, f"cannot read: {e.strerror or e}"
    return data, sha256_bytes(data), st.st_size, change_stamp(st), ""


def plan(store: EmbeddingStore, paths) -> np.ndarray:
    """Positions in ``paths`` of the images that need embedding: never seen,
    or changed content. (N,) int64."""
    todo = array("q")
    for i, p in enumerate(paths):
        try:
            current = store.is_current(p)
        except OSError:
            current = None          # vanished: embed again, it will fail alone
        if current is None:
            todo.append(i)
        elif current is False:
            data, sha, *_ = read_image_file(p)
            if not store.same_content(p, sha):
                todo.append(i)
    return np.frombuffer(todo, dtype=np.int64) if len(todo) else np.zeros(0, np.int64)


def _embed_files(paths: Iterable[str], embed_bytes, max_bytes: int = MAX_FILE_MB << 20) -> Iterator[Embedded]:
    """Read each file once (for its bytes, hash, size and mtime; files over
    ``max_bytes`` fail alone, unread) and pair it with the answer of
    ``embed_bytes``: an iterator of (vector, width, height, error,
    signature, properties) per input, in order."""
    meta: list[tuple | None] = []

    def files():
        for p in paths:
            data, sha, size, mtime, err = read_image_file(p, max_bytes)
            meta.append((p, sha, size, mtime, err))
            yield data

    for i, (vector, width, height, error, signature, properties) in enumerate(embed_bytes(files())):
        p, sha, size, mtime, err = meta[i]
        meta[i] = None
        if err or error:
            yield Embedded(p, sha, size, mtime, None, error=err or error)
        else:
            yield Embedded(p, sha, size, mtime, vector, width, height, signature=signature, properties=properties)


class InProcessBackend:
    """The engine in this process. ``decode_processes``: decoding worker
    processes (``engine.process_decode``); None = one per core when at least
    ``PROCESS_DECODE_MIN`` images are to be embedded, threads below; 0 =
    threads always."""
    name = "in-process"

    def __init__(self, model: str | None = None, max_batch_size: int = 32, runtime: str = "onnx",
                 max_image_mb: int = MAX_FILE_MB, decode_processes: int | None = None,
                 max_pixels: int | None = None):
        from ..engine import DecodeLimits, Embedder
        if max_image_mb < 1:
            raise ValueError(f"max_image_mb must be >= 1; got {max_image_mb}")
        self.max_pixels = DecodeLimits.max_pixels if max_pixels is None else max_pixels   # the server's default
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1; got {max_pixels}")
        if decode_processes is not None and decode_processes < 0:
            raise ValueError(f"decode_processes must be >= 0; got {decode_processes}")
        self.max_bytes = max_image_mb << 20
        self.decode_processes = decode_processes
        self.embedder = Embedder.from_model(model, runtime=runtime, max_batch_size=max_batch_size,
                                            # Local files, trusted: the raster may be as large as the pixels ask.
                                            limits=DecodeLimits(max_bytes=self.max_bytes, max_pixels=self.max_pixels,
                                                                max_raster_bytes=max(DecodeLimits.max_raster_bytes,
                                                                                     4 * self.max_pixels)),
                                            decode_processes=decode_processes or 0)
        self.model, self.dim = self.embedder.executor.manifest.name, self.embedder.dim

    def embed(self, paths: Iterable[str], count: int | None = None) -> Iterator[Embedded]:
        """``count``: how many ``paths`` there are, when known (the default
        decodes in processes from ``PROCESS_DECODE_MIN``)."""
        if self.decode_processes is None:
            in_processes = count is not None and count >= PROCESS_DECODE_MIN
        else:
            in_processes = self.decode_processes > 0
        return _embed_files(paths, lambda data: (
            (r.vector, r.width, r.height, "" if r.ok else f"{r.error.code}: {r.error}", r.signature, r.properties)
            for r in self.embedder.embed(data, with_signatures=True, in_processes=in_processes)), self.max_bytes)

    def close(self) -> None:
        """Stop the decoders and drop the model: its ONNX Runtime session and
        arenas held ~440 MiB that the analyses after embedding do not need."""
        if self.embedder is not None:
            self.embedder.close()
            self.embedder = None


class ServerBackend:
    name = "server"

    def __init__(self, address: str, **client_options):
        from imagesieve import Client
        self.client = Client(address, **client_options)
        self.client.wait_ready(30, fail_fast=True)
        info = self.client.model_info()
        self.model, self.dim = info.name, info.dim

    def embed(self, paths: Iterable[str], count: int | None = None) -> Iterator[Embedded]:
        # The server answers vectors and layout signatures from one decode.
        def answers(data):
            for r in self.client.embed_stream(data, with_layout_signature=True):
                yield (r.vector, r.width, r.height, "" if r.ok else f"{r.error.code}: {r.error.message}",
                       np.frombuffer(r.signature, np.uint8) if r.ok and r.signature else None, r.properties)
        return _embed_files(paths, answers)

    def close(self) -> None:
        self.client.close()


def embed_stage(store: EmbeddingStore, backend, paths, todo: np.ndarray | None = None) -> dict:
    """Embed what ``plan`` says (``todo``, when the caller has planned
    already: a changed file is hashed once), with a progress line; returns
    counts. ``paths``: a sequence of str (a list or ``columns.PackedStrings``)."""
    todo = plan(store, paths) if todo is None else todo
    failed = 0
    try:
        with Progress(len(todo), f"embedding ({backend.name})") as bar:
            for n, item in enumerate(backend.embed((paths[int(i)] for i in todo), count=len(todo)), 1):
                store.put(item)
                failed += bool(item.error)
                bar.update(ok=not item.error)
                if n % TRIM_EVERY == 0:
                    trim_free_heap()    # keeps the decoding threads' freed memory from piling up
    finally:
        store.flush()          # also on Ctrl-C: what was embedded stays embedded
    return {"images": len(paths), "embedded_now": len(todo) - failed, "failed_now": failed,
            "reused": len(paths) - len(todo)}


def embedded_line(counts: dict) -> str:
    """``embed_stage``'s counts for a person: "3 embedded now, 1 failed, 10 reused"."""
    failed = f", {counts['failed_now']} failed" if counts["failed_now"] else ""
    return f"{counts['embedded_now']} embedded now{failed}, {counts['reused']} reused"
