"""The SQLite store: the collection's record of truth and its write-ahead log.

Every acknowledged add is a committed row (journal_mode=WAL, synchronous=FULL:
durable at commit, survives kill -9 and power loss). The FAISS index is a
snapshot derived from these rows: on open, rows added and removals logged
after the snapshot are replayed into it.
"""
from __future__ import annotations

import json
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
    signature BLOB NOT NULL,          -- engine.signature: 2,306 bytes
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


class Store:
    """Thread-safe access to one collection's SQLite file."""

    def __init__(self, path: Path):
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- settings -----------------------------------------------------------
    def get_setting(self, name: str, default=None):
        row = self._db.execute("SELECT value FROM settings WHERE name=?", (name,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_settings(self, **values) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO settings(name, value) VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in values.items()])
            self._db.execute("COMMIT")

    # -- images -------------------------------------------------------------
    def insert(self, rows: list[tuple[str, str, str, str, int, int, np.ndarray]],
               layouts: list[tuple | None] | None = None) -> list[int]:
        """Insert (key, label, split, sha256, width, height, vector) rows in one
        durable transaction; returns their ids. ``layouts``: per row None or
        (signature bytes, pack_agreement, pack_cosine). Raises
        sqlite3.IntegrityError (nothing inserted) if a key exists."""
        layouts = layouts or [None] * len(rows)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                ids = []
                for (key, label, split, sha, w, h, vec), layout in zip(rows, layouts):
                    cur = self._db.execute(
                        "INSERT INTO images(key, label, split, sha256, width, height, vector) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (key, label, split, sha, w, h, np.asarray(vec, np.float32).tobytes()))
                    ids.append(cur.lastrowid)
                    if layout is not None:
                        self._db.execute("INSERT INTO layouts VALUES (?, ?, ?, ?)", (cur.lastrowid, *layout))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return ids

    def delete_keys(self, keys: list[str]) -> list[int]:
        """Delete by key, logging each removal; returns the removed ids."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                ids = []
                for key in keys:
                    row = self._db.execute("SELECT id FROM images WHERE key=?", (key,)).fetchone()
                    if row:
                        self._db.execute("DELETE FROM images WHERE id=?", row)
                        self._db.execute("DELETE FROM layouts WHERE image_id=?", row)
                        self._db.execute("INSERT INTO removals(id) VALUES (?)", row)
                        ids.append(row[0])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return ids

    def key_for_sha256(self, sha: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT key FROM images WHERE sha256=? LIMIT 1", (sha,)).fetchone()
        return row[0] if row else None

    def image_with_sha256(self, sha: str) -> tuple[str, str, str] | None:
        """(key, label, split) of a stored image with these content bytes."""
        with self._lock:
            return self._db.execute("SELECT key, label, split FROM images WHERE sha256=? LIMIT 1",
                                    (sha,)).fetchone()

    def id_for_key(self, key: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT id FROM images WHERE key=?", (key,)).fetchone()
        return row[0] if row else -1

    def layouts_for_keys(self, keys: list[str]) -> dict[str, tuple[bytes, float | None, float | None]]:
        """key -> (signature bytes, pack_agreement, pack_cosine) of the given
        keys that have a stored layout signature."""
        out = {}
        keys = list(keys)
        with self._lock:
            for s in range(0, len(keys), 900):     # under SQLite's bound on variables
                part = keys[s:s + 900]
                q = ("SELECT i.key, l.signature, l.pack_agreement, l.pack_cosine FROM images i "
                     f"JOIN layouts l ON l.image_id = i.id WHERE i.key IN ({','.join('?' * len(part))})")
                out.update((r[0], r[1:]) for r in self._db.execute(q, part))
        return out

    def has_key(self, key: str) -> bool:
        return self.id_for_key(key) >= 0

    def metadata(self, ids: list[int]) -> dict[int, tuple[str, str, str]]:
        """id -> (key, label, split) for the given ids."""
        if not ids:
            return {}
        with self._lock:
            q = f"SELECT id, key, label, split FROM images WHERE id IN ({','.join('?' * len(ids))})"
            return {r[0]: r[1:] for r in self._db.execute(q, [int(i) for i in ids])}

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def counts_by(self, column: str) -> dict[str, int]:
        if column not in ("label", "split"):
            raise ValueError(column)
        with self._lock:
            return dict(self._db.execute(f"SELECT {column}, COUNT(*) FROM images GROUP BY {column}"))

    def max_id(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence "
                                    "WHERE name='images'").fetchone()[0]

    def max_removal_seq(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM removals").fetchone()[0]

    def rows_after(self, after_id: int, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids (B,) int64, vectors (B, D) float32) of rows with id > after_id."""
        last = after_id
        while True:
            with self._lock:
                rows = self._db.execute("SELECT id, vector FROM images WHERE id > ? ORDER BY id LIMIT ?",
                                        (last, batch)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield (np.array([r[0] for r in rows], np.int64),
                   np.stack([np.frombuffer(r[1], np.float32) for r in rows]))

    def images_after(self, after_id: int = 0, batch: int = 4096) -> Iterator[list[tuple]]:
        """Yield batches of (id, key, label, split, sha256, vector bytes) rows
        with id > after_id, by id: metadata and vectors read together."""
        last = after_id
        while True:
            with self._lock:
                rows = self._db.execute("SELECT id, key, label, split, sha256, vector FROM images "
                                        "WHERE id > ? ORDER BY id LIMIT ?", (last, batch)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield rows

    def removals_after(self, seq: int) -> list[int]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM removals WHERE seq > ?", (seq,))]

    # -- annotations (several labels per image, one per annotator) ----------
    def add_annotations(self, rows: list[tuple[str, str, str]]) -> list[str]:
        """Store (key, annotator, label) rows in one transaction; an
        annotator's new label replaces their old one. Returns one error
        message per row ('' when stored)."""
        errors = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key, annotator, label in rows:
                    row = self._db.execute("SELECT id FROM images WHERE key=?", (key,)).fetchone()
                    if not (key and annotator and label):
                        errors.append("key, annotator and label are all required")
                    elif row is None:
                        errors.append(f"no image with key {key!r}")
                    else:
                        self._db.execute("INSERT OR REPLACE INTO annotations VALUES (?, ?, ?)",
                                         (row[0], annotator, label))
                        errors.append("")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return errors

    def annotations(self) -> list[tuple[int, str, str]]:
        """(image id, annotator, label) for every stored annotation."""
        with self._lock:
            return self._db.execute("SELECT image_id, annotator, label FROM annotations "
                                    "WHERE image_id IN (SELECT id FROM images) ORDER BY image_id").fetchall()
