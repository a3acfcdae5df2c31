"""Embeddings of an audit on disk: sharded .npy files plus a SQLite index,
so an interrupted audit resumes without embedding any image twice, and a
changed file (new content hash) is embedded again.

    OUT/embeddings/index.sqlite        path -> sha256, size, change stamp, shard, row, error
    OUT/embeddings/shard-00000.npy     (rows, D) float32 unit vectors
    OUT/embeddings/layout-00000.npy    (rows, SIGNATURE_BYTES) uint8 layout signatures
    OUT/embeddings/properties-00000.npy (rows, properties.COUNT) float32 image properties

A shard is written (temp file, fsync, rename) before its rows are committed
to the index, so the index never points at a missing row. Reading memory-maps
the shards: memory grows with the vectors, never with the images' pixels.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import sqlite3
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..engine import properties as image_props
from ..engine.signature import SIGNATURE_BYTES, upgrade

MAPPED_SHARDS = 4
#: The shard and row of an image that failed: it has none (stores before this kept a zero row).
FAILED_SHARD = -1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    shard INTEGER NOT NULL, row INTEGER NOT NULL, width INTEGER, height INTEGER, error TEXT
);
"""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def change_stamp(st: os.stat_result) -> int:
    """What the ``mtime_ns`` column holds: the later of a file's modification
    and status-change times. ``touch -d`` can put an old mtime back on new
    bytes of the same size (a resumed audit then reused the old embedding);
    it cannot set the ctime. A copied or extracted dataset gets new ctimes:
    its files are hashed once again (not embedded) and the stamps refreshed."""
    return max(st.st_mtime_ns, st.st_ctime_ns)


class LoadedEmbeddings(NamedTuple):
    """What ``EmbeddingStore.load`` reads, aligned with the paths asked for."""
    vectors: np.ndarray              # (N, D) float32
    sha256: np.ndarray               # (N,) S64 hex
    errors: list[str]                # '' where the image embedded
    sizes: np.ndarray                # (N, 2) int32 width, height
    signatures: np.ndarray | None    # (N, SIGNATURE_BYTES) uint8, None if a shard predates them
    properties: np.ndarray | None = None   # (N, properties.COUNT) float32, NaN rows: not measured


@dataclasses.dataclass
class Embedded:
    """One image's outcome, ready to store."""
    path: str
    sha256: str
    size: int
    mtime_ns: int
    vector: np.ndarray | None
    width: int = 0
    height: int = 0
    error: str = ""
    signature: np.ndarray | None = None     # (SIGNATURE_BYTES,) uint8, engine.signature
    properties: np.ndarray | None = None    # (properties.COUNT,) float32, engine.properties


def stored_model(root: str | os.PathLike) -> tuple[str, int] | None:
    """(model name, dim) of the embeddings under ``root``, or None when it
    holds none yet: read without loading any model."""
    db_path = Path(root) / "index.sqlite"
    if not db_path.exists():
        return None
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT name, value FROM meta"))
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return (meta["model"], int(meta["dim"])) if "model" in meta and "dim" in meta else None


class StoreInUse(ValueError):
    """Another process has the store open (an audit or a command writing it)."""


class EmbeddingStore:
    """Keys are absolute paths (rows stored before under the path as given
    are still found by it). One process at a time: a second one gets
    StoreInUse, as two writers would number their shards alike and each
    overwrite the other's vectors."""

    def __init__(self, root: str | os.PathLike, model: str, dim: int, shard_size: int = 1024):
        import fcntl
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.dim, self.shard_size = dim, shard_size
        self._lock = open(self.root / ".lock", "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise StoreInUse(f"{self.root} is in use by another imagesieve process (an audit or a command "
                             "embedding into it); wait for it to finish, or use another folder") from None
        self.db = sqlite3.connect(str(self.root / "index.sqlite"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        stored = dict(self.db.execute("SELECT name, value FROM meta"))
        if stored and (stored.get("model"), int(stored.get("dim", 0))) != (model, dim):
            raise ValueError(f"{self.root} holds {stored.get('model')} ({stored.get('dim')}-d) embeddings; "
                             f"this audit uses {model} ({dim}-d): use another --out folder")
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('model', ?), ('dim', ?)", (model, str(dim)))
        self._next_shard = 1 + (self.db.execute("SELECT COALESCE(MAX(shard), -1) FROM items").fetchone()[0])
        self._pending: list[Embedded] = []

    def close(self) -> None:
        try:
            self.flush()
            self.db.close()
        finally:
            self._lock.close()          # releases the lock

    def _row(self, columns: str, path: str):
        """The stored row of ``path``: under its absolute path, else (stored
        before keys were absolute) under the path as given."""
        key = os.path.abspath(path)
        row = self.db.execute(f"SELECT {columns} FROM items WHERE path=?", (key,)).fetchone()
        if row is None and key != path:
            row = self.db.execute(f"SELECT {columns} FROM items WHERE path=?", (path,)).fetchone()
        return row

    # -- what needs embedding -------------------------------------------
    def is_current(self, path: str) -> bool | None:
        """True: stored and unchanged (same size and change stamp); False: stored
        but the file changed on disk (check its hash); None: never seen, or
        stored as a failure (tried again: the limit or the server that
        refused it may have changed, a permission been fixed)."""
        row = self._row("size, mtime_ns, error", path)
        if row is None or row[2]:
            return None
        st = os.stat(path)
        return (st.st_size, change_stamp(st)) == tuple(row[:2])

    def same_content(self, path: str, sha: str) -> bool:
        """After a change of size or stamp: same bytes (then refresh the stat)?"""
        row = self._row("sha256", path)
        if row is None or not sha or row[0] != sha:
            return False
        st = os.stat(path)
        self.db.execute("UPDATE items SET size=?, mtime_ns=? WHERE path IN (?, ?)",
                        (st.st_size, change_stamp(st), os.path.abspath(path), path))
        return True

    # -- writing ------------------------------------------------------------
    def put(self, item: Embedded) -> None:
        self._pending.append(item)
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows as one shard, then index them, atomically."""
        if not self._pending:
            return
        shard = self._next_shard
        # Failed images take no row (FAILED_SHARD): a row is a vector and a signature,
        # ~12 KB, and a folder of a million broken files would have stored 12 GB of zeros.
        embedded = [it for it in self._pending if not it.error]
        vectors = np.zeros((len(embedded), self.dim), dtype=np.float32)
        signatures = np.zeros((len(embedded), SIGNATURE_BYTES), dtype=np.uint8)
        # NaN: not measured (an older server that sends none).
        props = np.full((len(embedded), image_props.COUNT), np.nan, dtype=np.float32)
        for i, it in enumerate(embedded):
            if it.vector is not None:
                vectors[i] = it.vector
            if it.signature is not None:
                signatures[i] = upgrade(it.signature)     # an older server sends 2,306 bytes: opaque
            if it.properties is not None and len(it.properties) == image_props.COUNT:
                props[i] = it.properties
        # Signatures and properties first: a shard whose vectors exist always has them.
        for name, arr in ((f"layout-{shard:05d}.npy", signatures), (f"properties-{shard:05d}.npy", props),
                          (f"shard-{shard:05d}.npy", vectors)) if embedded else ():
            final = self.root / name
            tmp = final.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                np.save(f, arr)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        rows = iter(range(len(embedded)))
        try:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(os.path.abspath(it.path), it.sha256, it.size, it.mtime_ns,
                  FAILED_SHARD if it.error else shard, FAILED_SHARD if it.error else next(rows),
                  it.width, it.height, it.error or None) for it in self._pending])
            self.db.execute("COMMIT")
        except BaseException:
            # Ctrl-C inside the insert left the transaction open, and the audit's
            # flush on its way out failed ("cannot start a transaction within a
            # transaction"): exit 1, the last shard unindexed. Undone, a flush
            # again writes the same shard whole.
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        self._next_shard += bool(embedded)
        self._pending = []

    # -- reading ------------------------------------------------------------
    def load(self, paths) -> LoadedEmbeddings:
        """For ``paths`` (a sequence of str) in order, one pass over the index:
        vectors (N, D) float32, sha256 (N,) ``S64`` hex bytes, error per path
        ('' when fine; one shared object, so the list costs a pointer an
        image), width/height (N, 2) int32, layout signatures (N,
        SIGNATURE_BYTES) uint8, None when some shard has none (embedded by
        an older version), and image properties (N, properties.COUNT)
        float32, NaN rows where not measured (failed, or a shard from before
        them). Nothing per image is held but these arrays."""
        n = len(paths)
        # A few shards mapped at a time: a mapped shard's touched pages count
        # in this process' resident memory until it is unmapped.
        shards: collections.OrderedDict[int, tuple] = collections.OrderedDict()
        vectors = np.zeros((n, self.dim), dtype=np.float32)
        sha = np.zeros(n, dtype="S64")
        errors: list[str] = [""] * n
        sizes = np.zeros((n, 2), dtype=np.int32)
        signatures: np.ndarray | None = np.zeros((n, SIGNATURE_BYTES), dtype=np.uint8)
        props = np.full((n, image_props.COUNT), np.nan, dtype=np.float32)
        for i, p in enumerate(paths):
            r = self._row("sha256, shard, row, width, height, error", p)
            if r is None:
                raise KeyError(f"{p} was never embedded")
            digest, shard, row, w, h, err = r
            sha[i] = digest.encode()
            sizes[i] = (w or 0, h or 0)
            if err:
                errors[i] = err
            if shard == FAILED_SHARD:        # no row: a zero vector (its pages never touched), NaN properties
                continue
            if shard not in shards:
                if len(shards) >= MAPPED_SHARDS:
                    shards.popitem(last=False)
                layout = self.root / f"layout-{shard:05d}.npy"
                measured = self.root / f"properties-{shard:05d}.npy"
                shards[shard] = (np.load(self.root / f"shard-{shard:05d}.npy", mmap_mode="r"),
                                 np.load(layout, mmap_mode="r") if layout.exists() else None,
                                 np.load(measured, mmap_mode="r") if measured.exists() else None)
            shards.move_to_end(shard)
            vec_shard, sig_shard, prop_shard = shards[shard]
            vectors[i] = vec_shard[row]
            if sig_shard is None:
                signatures = None
            elif signatures is not None:
                signatures[i] = upgrade(sig_shard[row])        # a shard from before the opacity bits: opaque
            if prop_shard is not None:          # a shard from before the properties: NaN, not measured
                props[i] = prop_shard[row]
        return LoadedEmbeddings(vectors, sha, errors, sizes, signatures, props)
