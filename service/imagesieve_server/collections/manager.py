"""Named collections under one data folder."""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import sqlite3
import threading
import uuid
from pathlib import Path

from .collection import Collection, CollectionError
from .store import quoted

log = logging.getLogger("imagesieve.collections")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A dropped collection's folder is first renamed to this (not a valid name,
# so never loaded), then deleted: a crash mid-delete cannot resurrect half of it.
TRASH_PREFIX = ".dropped-"


def load_problem(e: BaseException) -> str:
    """Why a collection could not be loaded, for ListCollections and logs."""
    return str(e) if isinstance(e, CollectionError) else f"{type(e).__name__}: {e}"


# Each open collection holds 3 file descriptors (SQLite's file, WAL and
# shared memory) for the server's life: without a cap, ~6,400 creates used up
# a 20,000-descriptor limit, and the server then refused new connections,
# after a restart too.
DEFAULT_MAX_COLLECTIONS = 1000


def _cut_short(path: Path) -> bool:
    """A folder whose store has no settings and no rows: a create that failed
    before its settings were written (e.g. out of descriptors, when even
    removing the folder failed). Not a collection, and it would block its name."""
    try:
        db = sqlite3.connect(f"file:{path / 'store.sqlite'}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                return True
            if "settings" not in tables or db.execute("SELECT COUNT(*) FROM settings").fetchone()[0]:
                return False
            return not any(db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in tables
                           if not t.startswith("sqlite_"))
        finally:
            db.close()
    except sqlite3.Error:
        return False        # damaged, not empty: loaded as failed, for a person to look at


class DataDirInUse(OSError):
    """Another process serves this data folder."""


LOCK_NAME = "server.lock"


def lock_data_dir(data_dir: Path) -> int | None:
    """Hold an exclusive lock on ``data_dir`` for this process's life (the
    descriptor returned; closing it releases the lock, and so does the
    process's death, kill -9 included). Two servers on one folder would each
    index only their own adds (a check on one misses the other's images) and
    one's start-up could remove a create the other has under way. Raises
    DataDirInUse naming the holder's pid; None where the file system has no
    locks (a warning: nothing is protected there)."""
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise DataDirInUse(f"data folder {data_dir} is in use by another imagesieve server"
                               f"{f' (pid {holder})' if holder else ''}: stop it, or give this one "
                               "another --data-dir") from None
        log.warning("cannot lock %s (%s): nothing stops a second server from using it", data_dir, e)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class CollectionManager:
    """Opens every collection under ``data_dir/collections`` at start (each
    replays its log), creates and drops them. Thread-safe.

    A collection that cannot be loaded (a damaged store) does not stop the
    others: it is listed in ``failed()`` with the reason, and every call
    naming it gets FAILED_PRECONDITION until it is dropped."""

    def __init__(self, data_dir: str | Path, model: str, dim: int, snapshot_every: int = 10_000,
                 alignment_pool=None, max_collections: int = DEFAULT_MAX_COLLECTIONS):
        self.root = Path(data_dir) / "collections"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_data_dir(Path(data_dir))     # before anything is loaded or removed
        self.model, self.dim, self.snapshot_every = model, dim, snapshot_every
        self.max_collections = max_collections
        self.alignment_pool = alignment_pool        # verify.AlignmentPool for the collections' checks
        self._lock = threading.Lock()
        self._open: dict[str, Collection] = {}
        self._failed: dict[str, str] = {}
        self._busy: set[str] = set()          # names being dropped (their folder still on disk)
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(TRASH_PREFIX):
                shutil.rmtree(path, ignore_errors=True)     # a drop interrupted by a crash
            elif (path / "store.sqlite").exists():
                if _cut_short(path):
                    log.warning("removing %s: the remains of a create cut short (no settings, no images)", path)
                    shutil.rmtree(path, ignore_errors=True)
                    continue
                self._load(path)

    def _load(self, path: Path) -> None:
        try:
            self._open[path.name] = Collection.open(path, snapshot_every=self.snapshot_every,
                                                 alignment_pool=self.alignment_pool)
        except Exception as e:  # noqa: BLE001 - one damaged collection must not stop the server
            self._failed[path.name] = load_problem(e)
            log.warning("collection %r cannot be loaded and is unavailable until dropped: %s",
                        path.name, self._failed[path.name])

    @staticmethod
    def validate_name(name: str) -> str:
        if not NAME_RE.fullmatch(name or ""):
            raise CollectionError(f"invalid collection name {quoted(name or '')}: use 1-64 letters, digits, "
                                  "'_', '-', '.' starting with a letter or digit", "INVALID_ARGUMENT")
        return name

    def _unavailable(self, name: str) -> CollectionError:
        return CollectionError(f"collection {name!r} could not be loaded: {self._failed[name]}; "
                               "drop it to start over", "FAILED_PRECONDITION")

    def create(self, name: str, index_kind: str = "auto", threshold: float = 0.0,
               exist_ok: bool = False) -> Collection:
        self.validate_name(name)
        with self._lock:
            if name in self._open:
                if exist_ok:
                    return self._open[name]
                raise CollectionError(f"collection {name!r} exists", "ALREADY_EXISTS")
            if name in self._failed:
                raise self._unavailable(name) if exist_ok else \
                    CollectionError(f"collection {name!r} exists (but could not be loaded)", "ALREADY_EXISTS")
            if name in self._busy:
                raise CollectionError(f"collection {name!r} is being dropped; retry", "ABORTED")
            if len(self._open) + len(self._failed) >= self.max_collections:
                raise CollectionError(f"the server holds its limit of {self.max_collections} collections "
                                      "(--max-collections); drop one first", "RESOURCE_EXHAUSTED")
            path = self.root / name
            if path.exists() and not (path / "store.sqlite").exists():
                shutil.rmtree(path, ignore_errors=True)      # the remains of a create cut short
            try:
                c = Collection.create(path, name, self.dim, self.model, index_kind, threshold,
                                      snapshot_every=self.snapshot_every, alignment_pool=self.alignment_pool)
            except CollectionError as e:
                if e.code != "ALREADY_EXISTS":
                    shutil.rmtree(path, ignore_errors=True)  # no half-made collection left behind
                raise
            self._open[name] = c
            return c

    def get(self, name: str) -> Collection:
        with self._lock:
            c = self._open.get(name)
            if c is None and name in self._failed:
                raise self._unavailable(name)
        if c is None:
            raise CollectionError(f"no collection named {quoted(name)}", "NOT_FOUND")
        if c.model != self.model or c.dim != self.dim:
            raise CollectionError(f"collection {name!r} holds {c.model} ({c.dim}-d) vectors but the server "
                                  f"runs {self.model} ({self.dim}-d)")
        return c

    def names(self) -> list[str]:
        """The collections that are serving."""
        with self._lock:
            return sorted(self._open)

    def failed(self) -> dict[str, str]:
        """name -> why it could not be loaded."""
        with self._lock:
            return dict(self._failed)

    def drop(self, name: str) -> bool:
        """Close and delete a collection (a failed one too). Calls still on
        it get ABORTED; a create of the same name meanwhile gets ABORTED."""
        with self._lock:
            c = self._open.pop(name, None)
            failed = self._failed.pop(name, None)
            if c is None and failed is None:
                return False
            self._busy.add(name)
        try:
            if c is not None:
                c.close(snapshot=False)       # waits for the call holding it, if any
            trash = self.root / f"{TRASH_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(self.root / name, trash)
            except FileNotFoundError:
                return True
            except OSError:
                trash = self.root / name
            shutil.rmtree(trash, ignore_errors=True)
            return True
        finally:
            with self._lock:
                self._busy.discard(name)

    def close(self) -> None:
        with self._lock:
            open_now = list(self._open.values())
            self._open.clear()
        for c in open_now:
            try:
                c.close()
            except Exception as e:  # noqa: BLE001 - one failing close must not keep the others open
                log.warning("collection %r did not close cleanly: %s", c.name, e)
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)            # the folder is free for another server
