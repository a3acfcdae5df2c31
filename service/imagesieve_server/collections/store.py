"""The SQLite store: the collection's record of truth and its write-ahead log.

Every acknowledged add is a committed row (journal_mode=WAL, synchronous=FULL:
durable at commit, survives kill -9 and power loss). The FAISS index is a
snapshot derived from these rows: on open, rows added and removals logged
after the snapshot are replayed into it.

Every failure leaves here as a ``CollectionError`` with a deliberate status
code (``storage_error``): a full disk is RESOURCE_EXHAUSTED, a damaged file
DATA_LOSS, a store closed under a call (dropped, server stopping) ABORTED.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL DEFAULT '',
    split TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL DEFAULT 0,
    height INTEGER NOT NULL DEFAULT 0,
    vector BLOB NOT NULL,
    added_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE INDEX IF NOT EXISTS images_sha256 ON images(sha256);
CREATE TABLE IF NOT EXISTS removals (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layouts (
    image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    signature BLOB NOT NULL,          -- engine.signature: 7,996 bytes (2,594 before the keypoints, 2,306 before the opacity bits)
    pack_agreement REAL,              -- the image's look-alikes when it was added (verify.py)
    pack_cosine REAL
);
CREATE TABLE IF NOT EXISTS annotations (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    annotator TEXT NOT NULL,
    label TEXT NOT NULL,
    PRIMARY KEY (image_id, annotator)
);
"""


QUOTE_CHARS = 64


def clipped(text: str, limit: int = QUOTE_CHARS) -> str:
    """Client text for an error message, cut to its first ``limit``
    characters plus an ellipsis: a 10,000-character name must not come back
    whole (the answer's metadata would pass the client's limit and the error
    would turn into RESOURCE_EXHAUSTED)."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "…"


def quoted(text: str, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of ``clipped(text)``."""
    return repr(clipped(text, limit))


class CollectionError(Exception):
    """``code`` is a grpc.StatusCode name."""

    def __init__(self, message: str, code: str = "FAILED_PRECONDITION"):
        super().__init__(message)
        self.code = code


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)


def out_of_descriptors(e: BaseException) -> bool:
    """The process (or the host) has no file descriptor left: EMFILE/ENFILE,
    or SQLite's "unable to open database file" (it hides the errno) while
    this process holds nearly all it may."""
    if isinstance(e, OSError) and e.errno in NO_DESCRIPTORS:
        return True
    if not (getattr(e, "sqlite_errorname", "") or "").startswith("SQLITE_CANTOPEN"):
        return False
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return soft != resource.RLIM_INFINITY and len(os.listdir("/proc/self/fd")) >= soft - 32
    except OSError as again:        # listing /proc/self/fd itself needs a descriptor
        return again.errno in NO_DESCRIPTORS


def storage_error(e: BaseException, what: str) -> CollectionError:
    """A storage failure as the CollectionError a caller can act on: a full
    disk (SQLITE_FULL, ENOSPC) is RESOURCE_EXHAUSTED, not an internal fault,
    so clients back off instead of retrying into it."""
    if isinstance(e, CollectionError):
        return e
    name = getattr(e, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_FULL") or "database or disk is full" in str(e) \
            or (isinstance(e, OSError) and e.errno in NO_SPACE):
        return CollectionError(f"{what}: the disk is full ({e}); free space, then retry", "RESOURCE_EXHAUSTED")
    if out_of_descriptors(e):
        return CollectionError(f"{what}: the server has no file descriptor left ({e}); retry later",
                               "RESOURCE_EXHAUSTED")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return CollectionError(f"{what}: the store is damaged ({e})", "DATA_LOSS")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return CollectionError(f"{what}: the store is busy ({e}); retry", "UNAVAILABLE")
    if isinstance(e, sqlite3.IntegrityError):
        return CollectionError(f"{what}: {e}", "ALREADY_EXISTS")
    if isinstance(e, sqlite3.ProgrammingError) and "closed" in str(e):
        return CollectionError(f"{what}: the collection was closed during the call", "ABORTED")
    return CollectionError(f"{what}: {e}", "INTERNAL")


class Store:
    """Thread-safe access to one collection's SQLite file."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as e:
            self.close()
            raise storage_error(e, f"cannot open {path}") from e
        try:
            # Annotations of images removed before removals took them along
            # (foreign_keys is off: the cascade never fired) would count
            # against MAX_ANNOTATIONS forever; a full disk only postpones it.
            self._db.execute("DELETE FROM annotations WHERE image_id NOT IN (SELECT id FROM images)")
        except sqlite3.Error:
            pass

    def close(self) -> None:
        """Idempotent; later calls raise ABORTED (a drop or shutdown that
        overtook them) instead of sqlite's "closed database"."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @property
    def closed(self) -> bool:
        return self._db is None

    @contextlib.contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with failures translated."""
        with self._lock:
            if self._db is None:
                raise CollectionError(f"the collection at {self.path.parent.name!r} was closed during the call "
                                      "(dropped, or the server is stopping)", "ABORTED")
            try:
                yield self._db
            except (sqlite3.Error, OSError) as e:
                raise storage_error(e, f"store {self.path.parent.name!r}") from e

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT. On failure, roll back only what is
        still open: SQLite ends the transaction itself on SQLITE_FULL, and a
        second ROLLBACK would hide the real error behind "no transaction"."""
        with self._using() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise

    # -- settings -----------------------------------------------------------
    def get_setting(self, name: str, default=None):
        with self._using() as db:
            row = db.execute("SELECT value FROM settings WHERE name=?", (name,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_settings(self, **values) -> None:
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO settings(name, value) VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in values.items()])

    # -- images -------------------------------------------------------------
    def insert(self, rows: list[tuple[str, str, str, str, int, int, np.ndarray]],
               layouts: list[tuple | None] | None = None) -> list[int]:
        """Insert (key, label, split, sha256, width, height, vector) rows in one
        durable transaction; returns their ids. ``layouts``: per row None or
        (signature bytes, pack_agreement, pack_cosine). Raises CollectionError
        (nothing inserted): ALREADY_EXISTS if a key exists, RESOURCE_EXHAUSTED
        when the disk is full."""
        layouts = layouts or [None] * len(rows)
        with self._transaction() as db:
            ids = []
            for (key, label, split, sha, w, h, vec), layout in zip(rows, layouts):
                cur = db.execute(
                    "INSERT INTO images(key, label, split, sha256, width, height, vector) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, label, split, sha, w, h, np.asarray(vec, np.float32).tobytes()))
                ids.append(cur.lastrowid)
                if layout is not None:
                    db.execute("INSERT INTO layouts VALUES (?, ?, ?, ?)", (cur.lastrowid, *layout))
        return ids

    def delete_keys(self, keys: list[str]) -> list[int]:
        """Delete by key, logging each removal; returns the removed ids."""
        with self._transaction() as db:
            ids = []
            for key in keys:
                row = db.execute("SELECT id FROM images WHERE key=?", (key,)).fetchone()
                if row:
                    db.execute("DELETE FROM images WHERE id=?", row)
                    db.execute("DELETE FROM layouts WHERE image_id=?", row)
                    # foreign_keys is off (the cascade never fires): an image's annotations go with it
                    db.execute("DELETE FROM annotations WHERE image_id=?", row)
                    db.execute("INSERT INTO removals(id) VALUES (?)", row)
                    ids.append(row[0])
        return ids

    def key_for_sha256(self, sha: str) -> str | None:
        with self._using() as db:
            row = db.execute("SELECT key FROM images WHERE sha256=? LIMIT 1", (sha,)).fetchone()
        return row[0] if row else None

    def image_with_sha256(self, sha: str) -> tuple[str, str, str] | None:
        """(key, label, split) of a stored image with these content bytes."""
        with self._using() as db:
            return db.execute("SELECT key, label, split FROM images WHERE sha256=? LIMIT 1", (sha,)).fetchone()

    def id_for_key(self, key: str) -> int:
        with self._using() as db:
            row = db.execute("SELECT id FROM images WHERE key=?", (key,)).fetchone()
        return row[0] if row else -1

    def layouts_for_keys(self, keys: list[str]) -> dict[str, tuple[bytes, float | None, float | None]]:
        """key -> (signature bytes, pack_agreement, pack_cosine) of the given
        keys that have a stored layout signature."""
        out = {}
        keys = list(keys)
        with self._using() as db:
            for s in range(0, len(keys), 900):     # under SQLite's bound on variables
                part = keys[s:s + 900]
                q = ("SELECT i.key, l.signature, l.pack_agreement, l.pack_cosine FROM images i "
                     f"JOIN layouts l ON l.image_id = i.id WHERE i.key IN ({','.join('?' * len(part))})")
                out.update((r[0], r[1:]) for r in db.execute(q, part))
        return out

    def has_key(self, key: str) -> bool:
        return self.id_for_key(key) >= 0

    def metadata(self, ids: list[int]) -> dict[int, tuple[str, str, str]]:
        """id -> (key, label, split) for the given ids."""
        ids = [int(i) for i in ids]
        out = {}
        with self._using() as db:
            for s in range(0, len(ids), 900):     # under SQLite's bound on variables
                part = ids[s:s + 900]
                q = f"SELECT id, key, label, split FROM images WHERE id IN ({','.join('?' * len(part))})"
                out.update((r[0], r[1:]) for r in db.execute(q, part))
        return out

    def count(self) -> int:
        with self._using() as db:
            return db.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def counts_by(self, column: str) -> dict[str, int]:
        if column not in ("label", "split"):
            raise ValueError(column)
        with self._using() as db:
            return dict(db.execute(f"SELECT {column}, COUNT(*) FROM images GROUP BY {column}"))

    def max_id(self) -> int:
        with self._using() as db:
            return db.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence "
                              "WHERE name='images'").fetchone()[0]

    def max_removal_seq(self) -> int:
        with self._using() as db:
            return db.execute("SELECT COALESCE(MAX(seq), 0) FROM removals").fetchone()[0]

    def _pages(self, columns: str, table: str, id_column: str, after_id: int, batch: int,
               up_to: int | None = None) -> Iterator[list[tuple]]:
        """Rows of ``table`` with ``after_id`` < id (<= ``up_to``), by id, in
        pages of ``batch``; each page read in its own short transaction (the
        id is the first column)."""
        last = after_id
        bound = "" if up_to is None else f" AND {id_column} <= {int(up_to)}"
        while True:
            with self._using() as db:
                rows = db.execute(f"SELECT {columns} FROM {table} WHERE {id_column} > ?{bound} "
                                  f"ORDER BY {id_column} LIMIT ?", (last, batch)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield rows

    def rows_after(self, after_id: int, up_to: int | None = None, batch: int = 4096
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids (B,) int64, vectors (B, D) float32) of rows with after_id < id (<= ``up_to``)."""
        for rows in self._pages("id, vector", "images", "id", after_id, batch, up_to):
            yield (np.array([r[0] for r in rows], np.int64),
                   np.stack([np.frombuffer(r[1], np.float32) for r in rows]))

    @functools.cached_property
    def dim(self) -> int:
        """The vectors' dimension (a setting written once, at creation)."""
        return int(self.get_setting("dim"))

    def vectors_for_ids(self, ids) -> np.ndarray:
        """(P, D) float32 vectors of rows ``ids`` (P,), in that order; a row
        of NaN for an id not stored (removed meanwhile). The full vectors
        that re-rank a compressed index's candidates."""
        ids = np.asarray(ids, np.int64).ravel()
        out = np.full((ids.size, self.dim), np.nan, np.float32)
        rows: dict[int, list[int]] = {}
        for row, i in enumerate(ids.tolist()):
            rows.setdefault(i, []).append(row)
        with self._using() as db:
            for s in range(0, ids.size, 500):
                part = ids[s:s + 500].tolist()
                q = f"SELECT id, vector FROM images WHERE id IN ({','.join('?' * len(part))})"
                for i, blob in db.execute(q, part):
                    out[rows[i]] = np.frombuffer(blob, np.float32)     # written straight in: no copy of blobs
        return out

    def sample_vectors(self, count: int, seed: int = 0) -> np.ndarray:
        """(<= count, D) float32 vectors of rows drawn at random (by id, so
        without reading the whole table): an index's training sample."""
        top = self.max_id()
        if top == 0 or count <= 0:
            return np.zeros((0, self.dim), np.float32)
        rng = np.random.default_rng(seed)
        if count * 1.3 >= top:
            want = np.arange(1, top + 1, dtype=np.int64)
        else:
            want = np.unique(rng.integers(1, top + 1, int(count * 1.3) + 16))
        v = self.vectors_for_ids(want)
        found = np.flatnonzero(np.isfinite(v[:, 0]))
        if found.size > count:                  # a random subset, not the lowest ids
            found = np.sort(rng.choice(found, count, replace=False))
        return v[found]

    def images_after(self, after_id: int = 0, batch: int = 4096, up_to: int | None = None
                     ) -> Iterator[list[tuple]]:
        """Yield batches of (id, key, label, split, sha256, vector bytes) rows
        with after_id < id (<= ``up_to``), by id: metadata and vectors read together."""
        yield from self._pages("id, key, label, split, sha256, vector", "images", "id", after_id, batch, up_to)

    def signatures_after(self, after_id: int = 0, up_to: int | None = None, batch: int = 4096
                         ) -> Iterator[tuple[np.ndarray, list[bytes]]]:
        """Yield (image ids (B,) int64, their layout signatures' bytes) of the
        images with after_id < id (<= ``up_to``) that have one, by id."""
        for rows in self._pages("image_id, signature", "layouts", "image_id", after_id, batch, up_to):
            yield np.array([r[0] for r in rows], np.int64), [r[1] for r in rows]

    def removals_after(self, seq: int) -> list[int]:
        with self._using() as db:
            return [r[0] for r in db.execute("SELECT id FROM removals WHERE seq > ?", (seq,))]

    # -- annotations (several labels per image, one per annotator) ----------
    def add_annotations(self, rows: list[tuple[str, str, str]], max_total: int | None = None
                        ) -> list[tuple[str, str]]:
        """Store (key, annotator, label) rows in one transaction; an
        annotator's new label replaces their old one. Returns one (status
        code name, message) per row, ('', '') when stored: INVALID_ARGUMENT
        for a missing field, one longer than its limit (MAX_ANNOTATION_BYTES,
        UTF-8) or a key not in the collection; RESOURCE_EXHAUSTED, with
        ``max_total``, for a new annotation beyond that many in the
        collection (more than an analysis reads would only fill the disk:
        four 20 s floods stored 7.2 million, a twelfth probe)."""
        errors = []
        with self._transaction() as db:
            total = db.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] if max_total is not None else 0
            for key, annotator, label in rows:
                problem = annotation_problem(key, annotator, label)
                if problem:
                    errors.append(("INVALID_ARGUMENT", problem))
                    continue
                row = db.execute("SELECT id FROM images WHERE key=?", (key,)).fetchone()
                if row is None:
                    errors.append(("INVALID_ARGUMENT", f"no image with key {quoted(key)}"))
                    continue
                if max_total is not None and db.execute(
                        "SELECT 1 FROM annotations WHERE image_id=? AND annotator=?", (row[0], annotator)
                        ).fetchone() is None:
                    if total >= max_total:
                        errors.append(("RESOURCE_EXHAUSTED", f"the collection holds {total} annotations, the most it "
                                       f"keeps ({max_total}, what an analysis reads); remove images first"))
                        continue
                    total += 1
                db.execute("INSERT OR REPLACE INTO annotations VALUES (?, ?, ?)", (row[0], annotator, label))
                errors.append(("", ""))
        return errors

    def annotations(self) -> list[tuple[int, str, str]]:
        """(image id, annotator, label) for every stored annotation."""
        with self._using() as db:
            return db.execute("SELECT image_id, annotator, label FROM annotations "
                              "WHERE image_id IN (SELECT id FROM images) ORDER BY image_id").fetchall()

    def annotation_summary(self) -> AnnotationSummary:
        """How large an analysis of the stored annotations would be, counted
        by SQLite (nothing loaded into Python)."""
        with self._using() as db:
            row = db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT image_id), COUNT(DISTINCT annotator), COUNT(DISTINCT label), "
                "COALESCE(SUM(LENGTH(CAST(annotator AS BLOB)) + LENGTH(CAST(label AS BLOB))), 0) "
                "FROM annotations WHERE image_id IN (SELECT id FROM images)").fetchone()
        return AnnotationSummary(*row)

    def annotation_batches(self, batch: int = 50_000) -> Iterator[list[tuple[int, str, str]]]:
        """Yield the stored annotations as batches of (image id, annotator,
        label), the store lock held only while a batch is read. An annotation
        replaced meanwhile may come twice (its newer label last)."""
        last = 0
        while True:
            with self._using() as db:
                rows = db.execute("SELECT rowid, image_id, annotator, label FROM annotations "
                                  "WHERE rowid > ? AND image_id IN (SELECT id FROM images) "
                                  "ORDER BY rowid LIMIT ?", (last, batch)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [r[1:] for r in rows]


# Per-annotation text limits (UTF-8 bytes), as for an Image's key and label.
MAX_ANNOTATION_KEY_BYTES = 1024
MAX_ANNOTATION_BYTES = 256          # annotator, label


def annotation_problem(key: str, annotator: str, label: str) -> str:
    """Why an annotation cannot be stored ('' when it can), before any lookup."""
    if not (key and annotator and label):
        return "key, annotator and label are all required"
    for field, text, limit in (("key", key, MAX_ANNOTATION_KEY_BYTES), ("annotator", annotator, MAX_ANNOTATION_BYTES),
                               ("label", label, MAX_ANNOTATION_BYTES)):
        size = len(text.encode())
        if size > limit:
            return f"{field} is {size} bytes, above the limit of {limit}"
    return ""


@dataclasses.dataclass(frozen=True)
class AnnotationSummary:
    annotations: int
    images: int
    annotators: int
    classes: int
    text_bytes: int          # annotator and label bytes over all annotations
