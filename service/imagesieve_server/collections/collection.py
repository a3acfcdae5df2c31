"""One collection: check, add, search and remove images, durably.

Layout of a collection folder::

    store.sqlite    the record of truth and write-ahead log (see store.py)
    index.snapshot  FAISS index + the log position it covers, replaced atomically

An add is acknowledged only after its SQLite transaction commits; the index
is brought up to date from the log when the collection opens, so kill -9 at
any instant loses nothing acknowledged. A snapshot that fails after a commit
(disk full) does not un-acknowledge the rows: it is logged and retried later.
A snapshot that cannot be read at open is rebuilt from the log. All methods
are thread-safe; a check with ``add_if_unique`` is atomic with respect to
every other call; a call on a closed (dropped) collection is ABORTED.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import contextlib
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..analysis.duplicates import verify
from ..analysis.duplicates.pair_memo import PairMemo
from ..analysis.duplicates.find import (CANDIDATE_THRESHOLD, LAYOUT_K, LAYOUT_MIN, LAYOUT_SIDE, RAW_RANK,
                                        STREAM_CANDIDATE_K, coarse_layouts, layout_turns, raw_threshold_of)
from ..engine.signature import SIGNATURE_BYTES, STORED_SIZES, upgrade
from ..index import faiss_index as fi
from ..index.faiss_index import index_memory_bytes
from .store import NO_DESCRIPTORS, NO_SPACE, CollectionError, Store, storage_error

log = logging.getLogger("imagesieve.collections")

SNAPSHOT = "index.snapshot"
# After a failed automatic snapshot (disk full), adds do not retry it before
# this many seconds: each attempt serializes the whole index.
SNAPSHOT_RETRY_S = 30.0
# Raw cosine verdicts (verification off): 0.75 suits photos (bench/dup_quality.py, "stage 1").
# Tiny or glyph-like images pair up far more easily: verified verdicts (the default) judge
# each candidate against its look-alikes instead (analysis.duplicates.verify), and a
# collection created without a threshold measures its own for raw ones (raw_threshold).
DEFAULT_THRESHOLD = 0.75
RAW_SAMPLE = 512         # stored images whose neighbours measure a raw threshold from the data
DERIVED_KEPT = 4          # derived results a collection keeps (``keep_derived``)
LAYOUT_RETRY_S = 60.0     # after a failed build of the coarse-layout index, checks go without it this long
# Removed images hidden in an HNSW graph (Collection._without) may be this share of it
# before it is rebuilt in the background: a rebuild costs O(N), so removals cost O(1)
# each, amortized; searches meanwhile walk the hidden nodes too (their candidate list
# is widened by the number hidden: faiss_index.Excluded).
COMPACT_SHARE = 0.1
COMPACT_RETRY_S = 60.0   # after a failed rebuild, removals do not start another for this long
# A collection's coarse-layout index is built inside the first verified check
# up to this many images (~0.2 s), in the background above it.
LAYOUT_INDEX_INLINE = 20_000


class Verdict(enum.IntEnum):  # values match imagesieve.v1.Verdict
    UNIQUE = 1
    NEAR_DUPLICATE = 2
    EXACT_DUPLICATE = 3


@dataclasses.dataclass
class NewImage:
    key: str
    sha256: str                 # of the encoded bytes
    vector: np.ndarray          # (D,) float32, unit L2 norm
    label: str = ""
    split: str = ""
    width: int = 0
    height: int = 0
    signature: np.ndarray | None = None   # (SIGNATURE_BYTES,) uint8, engine.signature


@dataclasses.dataclass
class Neighbor:
    key: str
    cosine: float
    label: str = ""
    split: str = ""
    agreement: float = float("nan")   # stage 2: layout agreement (NaN: not verified)
    verified: bool = False            # stage 2 says: the same picture
    keypoint_inliers: int = 0         # stage 2: keypoints one transform maps onto each other
    matched_blur_px: float = 0.0      # stage 2: blur given to the sharper image (0: compared as they are)


STAGE2_FIELDS = ("agreement", "verified", "keypoint_inliers", "matched_blur_px")   # of a Neighbor


@dataclasses.dataclass
class AddOutcome:
    key: str
    id: int = -1
    added: bool = False
    exact_duplicate_of: str = ""
    error: CollectionError | None = None


@dataclasses.dataclass
class CheckOutcome:
    key: str
    verdict: Verdict
    neighbors: list[Neighbor]
    added: bool = False
    error: CollectionError | None = None


@dataclasses.dataclass
class StoredImages:
    """A collection's images, aligned: ids (N,) int64, keys, labels, splits and
    sha256 (N lists) and vectors (N, D) float32."""
    ids: np.ndarray
    keys: list[str]
    labels: list[str]
    splits: list[str]
    sha256: list[str]
    vectors: np.ndarray
    signatures: np.ndarray | None = None   # (N, SIGNATURE_BYTES) uint8, when every image has one


@dataclasses.dataclass
class CollectionInfo:
    name: str
    num_images: int
    dim: int
    model: str
    index_kind: str
    structure: str
    threshold: float
    images_per_label: dict          # the MAX_COUNTS_LISTED most frequent labels
    images_per_split: dict          # ...and splits
    index_bytes: int
    last_snapshot_unix_s: float
    distinct_labels: int = 0
    distinct_splits: int = 0


#: Labels (and splits) a collection's info lists, the most frequent first: a
#: collection of 40,000 images with one label each answered 13.4 MB a stats
#: call (a probe: 128 unread answers took the server from 0.8 to 6.4 GB).
MAX_COUNTS_LISTED = 1000


def most_frequent(counts: dict, limit: int = MAX_COUNTS_LISTED) -> dict:
    """The ``limit`` largest entries of ``counts`` (ties by key)."""
    if len(counts) <= limit:
        return dict(counts)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])


INDEX_KINDS = ("auto", *fi.KINDS)
# IVF kinds need enough vectors to train their lists; below this a collection
# asking for IVF is served exactly (flat) and re-indexed once it has them.
IVF_MIN_TRAIN = 20_000


def effective_kind(kind: str, n_vectors: int, dim: int | None = None, memory_bytes: int | None = None) -> str:
    """The index structure a collection of ``kind`` uses at ``n_vectors``:
    "auto" follows faiss_index.choose_kind (exact while small, IVF when
    large, IVF-PQ when ``dim``-d float vectors would not fit
    ``memory_bytes``, default :func:`index_memory_bytes`); IVF kinds stay
    exact until they can be trained."""
    if kind == "auto":
        return fi.choose_kind(n_vectors, dim, memory_bytes if memory_bytes is not None else
                              (index_memory_bytes() if dim else None))
    if kind in ("ivf_flat", "ivf_pq") and n_vectors < IVF_MIN_TRAIN:
        return "flat"
    return kind


def build_index(kind: str, dim: int, n_expected: int, batches, sample, report=None):
    """A FAISS index of ``kind`` for ``n_expected`` vectors holding every
    (ids (B,), vectors (B, D)) of ``batches``; IVF kinds are first trained
    on ``sample(count)`` ((<= count, D): faiss_index.training_points),
    calling ``report`` between k-means iterations (faiss_index.train_index). Its
    memory is the index and one batch: a compressed index of 10M vectors
    builds in the memory its codes take, not the 40 GB of their floats."""
    index = fi.make_index(kind, dim, n_expected=max(n_expected, 1))
    if fi.needs_training(index):
        fi.train_index(index, sample(fi.training_points(index)), report=report)
    for ids, vectors in batches:
        if len(ids):
            fi.add(index, vectors, ids)
    return index


def read_snapshot(raw: bytes, dim: int):
    """(index, max_id, removal_seq, hidden ids) from a snapshot file's
    bytes: an 8-byte header length, a JSON header, the FAISS index. Hidden
    ids were removed from the store but are still in the (HNSW) index, left
    out of its searches (``Collection._excluded``). Raises (ValueError,
    KeyError, RuntimeError, ...) on any damage."""
    if len(raw) < 8:
        raise ValueError(f"{len(raw)} bytes, shorter than its header")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f"a header of {n} bytes in {len(raw)}")
    header = json.loads(raw[8:8 + n])
    index = fi.deserialize(raw[8 + n:])
    if index.d != dim:
        raise ValueError(f"a {index.d}-d index for {dim}-d vectors")
    if header.get("ntotal", index.ntotal) != index.ntotal:
        raise ValueError(f"{index.ntotal} vectors where the header says {header['ntotal']}")
    hidden = np.asarray(header.get("hidden", []), np.int64)
    if hidden.ndim != 1:
        raise ValueError("its hidden ids are not a list")
    return index, int(header["max_id"]), int(header["removal_seq"]), hidden


def _finite(v) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


class Collection:
    """Use ``Collection.create`` or ``Collection.open``; ``close()`` when done."""

    def __init__(self, path: Path, store: Store, snapshot_every: int = 10_000,
                 alignment_pool: verify.AlignmentPool | None = None):
        self.path = path
        # Where a check's candidates are aligned (stage 2): worker processes
        # shared by the server's collections, or (None) the calling thread.
        self.alignment_pool = alignment_pool
        self.store = store
        self.name = store.get_setting("name")
        self.dim = int(store.get_setting("dim"))
        self.model = store.get_setting("model")
        self.index_kind = store.get_setting("index_kind", "flat")
        self.threshold = float(store.get_setting("threshold", DEFAULT_THRESHOLD))
        # Created without a threshold: raw-cosine checks use one measured on the collection's
        # own images (raw_threshold). A store of an earlier version keeps its fixed one (it
        # stored 0.75 for "none" and for an explicit 0.75 alike).
        self.threshold_from_data = bool(store.get_setting("threshold_from_data", False))
        measured = store.get_setting("raw_threshold_measured")      # [cosine, reason, images measured]
        self._raw_threshold: tuple[float, str, int] | None = tuple(measured) if measured else None
        # Checks' verdicts since the collection was opened, by (verdict name, method) - see
        # count_verdict: a gate that turns away an implausible share shows in /metrics.
        # Every key from the start: a scrape iterates it while checks count (no key ever inserted).
        self.verdicts: collections.Counter[tuple[str, str]] = collections.Counter(
            {(v.name.lower(), m): 0 for v in Verdict for m in ("verified", "raw_cosine")})
        self._verdicts_lock = threading.Lock()    # not the collection's: the event loop counts too
        self.snapshot_every = snapshot_every
        self._lock = threading.RLock()
        self._since_snapshot = 0
        # Adds and removes so far, and the store's counts as of some number of them (info()).
        self._changes = 0
        self._counted: tuple[int, tuple[int, dict, dict, int, int]] | None = None
        self._snapshot_retry_at = 0.0
        self.last_snapshot = 0.0
        # Snapshots are taken (serialized) under the lock and written without it, one
        # write at a time; an older one never replaces a newer one (see snapshot).
        self._snapshot_writing = threading.Lock()
        self._snapshots_taken = 0
        self._snapshot_written = 0
        self._snapshots_in_flight = 0       # taken, not yet written or failed: no automatic one meanwhile
        # [changes, index, taken, header, bytes (None once written)] of the latest one taken:
        # a state is serialized once, and whoever asks for it writes it if it is not yet written.
        self._latest_taken: list | None = None
        self._reindexing: threading.Thread | None = None
        self._retry_reindex_at = 0            # size before which a failed re-index is not tried again
        self._layouts = None     # the coarse layouts' index, built on first use (_layout_index)
        self._layouts_building: threading.Thread | None = None
        self._layouts_retry_at = 0.0
        self._closing = threading.Event()      # stops a background build
        # Costly results derived from the stored images (a job's duplicate
        # verification), keyed by a digest of exactly what they were
        # computed from: a repeated job on an unchanged collection reuses
        # them. The newest DERIVED_KEPT.
        self._derived: collections.OrderedDict[bytes, object] = collections.OrderedDict()
        # Removed from the store but still in an HNSW graph (FAISS cannot delete
        # from one): left out of every search, and the graph rebuilt in the
        # background once they are COMPACT_SHARE of it (see remove).
        self._excluded: fi.Excluded | None = None
        self._compact_retry_at = 0.0
        self.index, rebuilt = self._load_index()
        if rebuilt:
            self._try_snapshot()     # replace the damaged file now, not at the next trigger
        self._maybe_reindex()
        self._maybe_compact()        # hidden ids a crash or a stop left past the share

    def derived(self, key: bytes):
        """A result stored by ``keep_derived`` under ``key``, or None."""
        with self._lock:
            return self._derived.get(key)

    def keep_derived(self, key: bytes, value) -> None:
        with self._lock:
            self._derived[key] = value
            self._derived.move_to_end(key)
            while len(self._derived) > DERIVED_KEPT:
                self._derived.popitem(last=False)

    # -- lifecycle ----------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, name: str, dim: int, model: str, index_kind: str = "auto",
               threshold: float = 0.0, **kw) -> "Collection":
        if not 0 <= threshold <= 1:
            raise CollectionError(f"threshold must be a cosine in (0, 1], got {threshold}", "INVALID_ARGUMENT")
        if index_kind not in INDEX_KINDS:
            raise CollectionError(f"index kind must be one of {INDEX_KINDS}, got {index_kind!r}",
                                  "INVALID_ARGUMENT")
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise CollectionError(f"a folder for collection {name!r} exists", "ALREADY_EXISTS") from None
        except OSError as e:
            raise storage_error(e, f"cannot create collection {name!r}") from e
        return cls.open(path, settings=dict(name=name, dim=int(dim), model=model, index_kind=index_kind,
                                            threshold=float(threshold or DEFAULT_THRESHOLD),
                                            threshold_from_data=not threshold, created=time.time()),
                        **kw)

    @classmethod
    def open(cls, path: str | os.PathLike, settings: dict | None = None, **kw) -> "Collection":
        """Open (or, with ``settings``, initialise) the collection at ``path``;
        the store is closed again if anything fails."""
        path = Path(path)
        if settings is None and not (path / "store.sqlite").exists():
            raise CollectionError(f"no collection at {path}", "NOT_FOUND")
        store = Store(path / "store.sqlite")
        try:
            if settings is not None:
                store.set_settings(**settings)
            if store.get_setting("name") is None or store.get_setting("dim") is None:
                raise CollectionError(f"{path} holds no collection settings", "DATA_LOSS")
            return cls(path, store, **kw)
        except BaseException:
            store.close()
            raise

    @property
    def closing(self) -> bool:
        """Whether the collection is being (or was) closed or dropped: long
        jobs over its images stop when they next report progress."""
        return self._closing.is_set()

    def close(self, snapshot: bool = True) -> None:
        """Snapshot what changed (a failure is logged: the log keeps every
        row) and close the store; calls still queued then get ABORTED."""
        self._closing.set()
        for worker in (self._reindexing, self._layouts_building):
            if worker is not None:
                worker.join()
        with self._lock:
            if self.store.closed:
                return
            if snapshot and self._since_snapshot:
                self._try_snapshot()
            with self._snapshot_writing:    # a write begun without the lock ends first; none starts after
                self.store.close()

    # -- snapshot and replay ------------------------------------------------
    def _load_index(self):
        """(index, rebuilt): the snapshot plus the log past it. A snapshot that
        cannot be read, or that does not match the log, is rebuilt from the
        log (the record of truth) with a warning: it is only a cache."""
        snap = self.path / SNAPSHOT
        if snap.exists():
            try:
                index, max_id, removal_seq, hidden = read_snapshot(snap.read_bytes(), self.dim)
                if max_id > self.store.max_id():
                    raise ValueError(f"it covers rows up to id {max_id}, past the store's {self.store.max_id()}")
                index = self._without(index, hidden)
                index, self._since_snapshot = self._replay(index, max_id, removal_seq)
                if index.ntotal - self._hidden_count() != self.store.count():
                    raise ValueError(f"it holds {index.ntotal - self._hidden_count()} vectors after replay, "
                                     f"the store {self.store.count()}")
                self.last_snapshot = snap.stat().st_mtime
                return index, False
            except CollectionError:
                raise                  # the store itself failed: not the snapshot's fault
            except Exception as e:  # noqa: BLE001 - any damage to a cache file means: rebuild it
                log.warning("collection %r: index snapshot %s is damaged (%s: %s); rebuilding the index "
                            "from the store", self.name, snap, type(e).__name__, e)
        self._excluded = None                 # whatever a damaged snapshot's replay had hidden
        n = self.store.count()
        if effective_kind(self.index_kind, n, self.dim) == "ivf_pq":
            # Too large for float vectors: rebuilt compressed, a batch at a time.
            self._since_snapshot = 1          # not on disk yet
            return self._build("ivf_pq", n, self.store.max_id()), snap.exists()
        index = fi.make_index("hnsw" if self.index_kind == "hnsw" else "flat", self.dim)
        # Every row still stored, and no removal to replay: removed rows are gone from the store.
        index, self._since_snapshot = self._replay(index, 0, self.store.max_removal_seq())
        return index, snap.exists()

    def _build(self, kind: str, n: int, max_id: int):
        """An index of ``kind`` over the stored rows up to ``max_id`` (about
        ``n`` of them), trained on a random sample, filled a batch at a time;
        CollectionError ABORTED between k-means iterations and batches once
        the collection closes (a drop or a shutdown does not wait for a whole
        background build)."""
        def unless_closing(*_):
            if self._closing.is_set():
                raise CollectionError(f"collection {self.name!r} is closing", "ABORTED")

        def batches():
            for batch in self.store.rows_after(0, up_to=max_id):
                unless_closing()
                yield batch
        return build_index(kind, self.dim, n, batches(), self.store.sample_vectors, report=unless_closing)

    def _replay(self, index, max_id: int, removal_seq: int):
        """(index, changes replayed): adds after ``max_id``, removals after ``removal_seq``."""
        replayed = 0
        for ids, vectors in self.store.rows_after(max_id):     # the log past the snapshot
            fi.add(index, vectors, ids)
            replayed += len(ids)
        gone = self.store.removals_after(removal_seq)
        if gone:
            index = self._without(index, gone)
        return index, replayed + len(gone)

    def _without(self, index, gone, held: bool = False):
        """``index`` without the vectors of ids ``gone``: removed from it
        where FAISS can (flat, IVF), else (HNSW, which it would rebuild:
        seconds for 10,000 vectors, under the lock, for every RemoveImages
        call: a probe stalled every collection call for 5-20 s with
        one-key removals) added to the ids its searches leave out
        (``self._excluded``, which belongs to the index being returned).
        ``held``: every id of ``gone`` is in ``index`` (not checked)."""
        gone = np.asarray(gone, np.int64)
        if self._excluded is not None and self._excluded.index is not index:
            self._excluded = None         # another index's (a rebuilt one starts with none hidden)
        if fi.removes_in_place(index):
            return fi.remove_ids(index, gone) if gone.size else index
        if not held and gone.size:
            gone = gone[np.isin(gone, fi.ids_of(index))]
        if gone.size:
            if self._excluded is None:
                self._excluded = fi.Excluded(index)
            self._excluded.add(gone)
        return index

    def _hidden_count(self) -> int:
        excluded = self._excluded          # one read: a compaction may swap it meanwhile
        return len(excluded) if excluded is not None else 0

    # -- re-indexing without downtime -------------------------------------
    @property
    def structure(self) -> str:
        """The FAISS structure serving now ("flat", "ivf_flat", ...)."""
        return fi.index_kind(self.index)

    def _maybe_reindex(self) -> None:
        # Only ever upgrades: from exact search once the size calls for IVF,
        # and to compressed codes once float vectors would not fit.
        want = effective_kind(self.index_kind, int(self.index.ntotal), self.dim)
        upgrade = (self.structure == "flat" and want != "flat") or (self.structure == "ivf_flat" and want == "ivf_pq")
        if upgrade and self._reindexing is None and self.index.ntotal >= self._retry_reindex_at:
            self._reindexing = threading.Thread(target=self._reindex_in_background, args=(want,),
                                                name=f"reindex-{self.name}", daemon=True)
            self._reindexing.start()

    def _reindex_in_background(self, kind: str) -> None:
        n = int(self.index.ntotal)
        try:
            self.reindex(kind)
        except CollectionError as e:     # dropped meanwhile (ABORTED), or the store failed
            (log.info if e.code == "ABORTED" else log.warning)("collection %r: re-indexing as %s stopped: %s",
                                                               self.name, kind, e)
        except (ValueError, RuntimeError, MemoryError) as e:
            # e.g. too few rows left to train after removals: the old index keeps
            # serving; tried again once the collection has grown by a tenth.
            self._retry_reindex_at = int(n * 1.1) + 1
            log.warning("collection %r: re-indexing as %s failed (%s: %s); the %s index keeps serving",
                        self.name, kind, type(e).__name__, e, self.structure)

    def reindex(self, kind: str | None = None) -> str:
        """Rebuild the index as ``kind`` (default: what the collection's size
        calls for) while the old one keeps serving; then swap it in, with
        the adds and removals that happened meanwhile, and snapshot."""
        kind = kind or effective_kind(self.index_kind, int(self.index.ntotal), self.dim)
        try:
            with self._lock:
                max_id, removal_seq = self.store.max_id(), self.store.max_removal_seq()
                n = int(self.index.ntotal)
            index = self._build(kind, n, max_id)                          # the slow part, unlocked
            with self._lock:
                if self._closing.is_set():
                    raise CollectionError(f"collection {self.name!r} is closing", "ABORTED")
                for more_ids, more in self.store.rows_after(max_id):
                    fi.add(index, more, more_ids)
                index = self._without(index, self.store.removals_after(removal_seq))
                self.index = index
                self._since_snapshot = max(self._since_snapshot, 1)    # the new structure is not on disk yet
            self._try_snapshot()
            return kind
        finally:
            self._reindexing = None

    def snapshot(self) -> Path:
        """Write the index and the log position it covers to one file,
        atomically (temp file, fsync, rename, fsync folder). A failed write
        raises (RESOURCE_EXHAUSTED when the disk is full, else INTERNAL) and
        leaves the previous snapshot intact. With nothing added or removed
        since the last one, that one is the answer (8 clients asking in a
        loop rewrote a 400 MB index each time, under the lock: other
        collections' calls waited 8-11 s, a probe).

        The index is serialized under the collection's lock and written to
        disk without it (unless the caller holds it): a 37 MB collection's
        writes, in a loop, held its checks at p50 0.84 s (a twenty-fourth
        probe); the disk's time is the collection's no longer. The log
        position in the file is the serialized index's, so a snapshot that
        lags the collection is replayed forward on load like any other; an
        older one never replaces a newer one. A state is serialized once
        (its bytes are kept until written, for whoever asks next), and no
        automatic snapshot starts while one is in flight (_snapshot_due):
        8 threads adding while one was written each serialized the whole
        index again (a review)."""
        return self._snapshot(claimed=False)

    def _snapshot(self, claimed: bool) -> Path:
        """:meth:`snapshot`; ``claimed``: the caller holds one of
        ``_snapshots_in_flight`` (see _snapshot_due), given back here."""
        target = self.path / SNAPSHOT
        held = claimed          # an in-flight count this call gives back
        try:
            with self._lock:
                if not self._since_snapshot and target.is_file():
                    return target
                since, changes, index = self._since_snapshot, self._changes, self.index
                latest = self._latest_taken
                # This state serialized already: its bytes wait to be written, or it is on disk.
                if (latest is None or latest[0] != changes or latest[1] is not index
                        or (latest[4] is None and not target.is_file())):
                    header = {"max_id": self.store.max_id(), "removal_seq": self.store.max_removal_seq(),
                              "ntotal": int(self.index.ntotal), "time": time.time()}
                    if self._hidden_count():
                        header["hidden"] = self._excluded.ids.tolist()
                    self._snapshots_taken += 1
                    latest = self._latest_taken = [changes, index, self._snapshots_taken,
                                                   json.dumps(header).encode(), fi.serialize(self.index)]
                    if not held:
                        self._snapshots_in_flight += 1
                        held = True
                taken, header, data = latest[2:]
            with self._snapshot_writing:
                if taken > self._snapshot_written and not self.store.closed:
                    self._write_snapshot(target, header, data)
                    self._snapshot_written = taken
                    latest[4] = None                    # written: its bytes are not kept
        finally:
            if held:
                with self._lock:
                    self._snapshots_in_flight -= 1
        with self._lock:
            if self._changes == changes and self.index is index:
                self._since_snapshot = 0
            else:       # what changed meanwhile is not on disk (a new index structure counts 1)
                self._since_snapshot = max(1, self._since_snapshot - since)
            self._snapshot_retry_at = 0.0
            self.last_snapshot = time.time()
        return target

    def _write_snapshot(self, target: Path, header: bytes, data) -> None:
        tmp = target.with_name(target.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(struct.pack("<Q", len(header)))
                f.write(header)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            dir_fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                if tmp.is_file():
                    tmp.unlink()
            full, no_fd = e.errno in NO_SPACE, e.errno in NO_DESCRIPTORS
            raise CollectionError(f"snapshot of {self.name} failed: {e}; previous snapshot kept"
                                  + ("; the disk is full: free space, then retry" if full else "")
                                  + ("; the server has no file descriptor left: retry later" if no_fd else ""),
                                  "RESOURCE_EXHAUSTED" if full or no_fd else "INTERNAL") from e

    def _try_snapshot(self, claimed: bool = False) -> bool:
        """Snapshot, logging a failure instead of raising: the caller's rows
        are committed (acknowledged) and the log alone can rebuild the
        index, so a full disk must not turn them into errors. Automatic
        retries wait SNAPSHOT_RETRY_S; close() and snapshot() try again.
        ``claimed``: as :meth:`_snapshot`'s."""
        try:
            self._snapshot(claimed)
            return True
        except CollectionError as e:
            with self._lock:
                self._snapshot_retry_at = time.monotonic() + SNAPSHOT_RETRY_S
                self._since_snapshot = max(self._since_snapshot, 1)
            log.warning("collection %r: %s; the committed rows are safe in the store, the snapshot "
                        "will be retried", self.name, e)
            return False

    def _snapshot_due(self) -> bool:
        """Whether enough changed for an automatic snapshot (asked under the
        lock; the caller takes it after letting the lock go, with
        ``_try_snapshot(claimed=True)``). True claims it: no other is due
        until it has been written or has failed."""
        due = (self._since_snapshot >= self.snapshot_every and not self._snapshots_in_flight
               and time.monotonic() >= self._snapshot_retry_at)
        if due:
            self._snapshots_in_flight += 1
        return due

    # -- queries ------------------------------------------------------------
    def _check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        v = v[None] if v.ndim == 1 else v
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise CollectionError(f"vectors must have {self.dim} dimensions, got shape {v.shape}",
                                  "INVALID_ARGUMENT")
        return v

    def search(self, vectors: np.ndarray, k: int = 5) -> list[list[Neighbor]]:
        """Nearest stored images for each row of vectors (M, D): k neighbours,
        best first, cosine similarity."""
        v = self._check_vectors(vectors)
        with self._lock:
            if self.index.ntotal == 0 or k <= 0:
                return [[] for _ in range(len(v))]
            sims, ids = self._nearest(v, k)
            meta = self.store.metadata(sorted({int(i) for i in ids.ravel() if i >= 0}))
        return [[Neighbor(meta[i][0], float(s), meta[i][1], meta[i][2])
                 for s, i in zip(srow, irow) if i >= 0 and i in meta] for srow, irow in zip(sims, ids)]

    def _nearest(self, v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(cosines, ids) (M, <= k) of the stored images nearest to ``v``
        (M, D); a compressed index's candidates re-ranked by the stored full
        vectors. Call with the lock held, on a non-empty index."""
        k = min(k, int(self.index.ntotal))
        if fi.is_lossy(self.index):
            return fi.search_reranked(self.index, v, k, self.store.vectors_for_ids)
        return fi.search(self.index, v, k, self._excluded)

    def raw_threshold(self) -> tuple[float, str]:
        """(cosine, reason): where a raw-cosine check calls an image a near
        duplicate. The threshold the collection was created with; created
        without one, the collection's own, as FindDuplicates derives one
        (find.raw_threshold): a fixed 0.75 turned away 93% of a stream of
        Fashion-MNIST thumbnails and 42% of one artist's clip art
        (bench/stream_gate.py). Measured on up to RAW_SAMPLE stored images'
        RAW_RANK-th nearest neighbours, and again whenever the collection
        has doubled since (kept in its settings across restarts)."""
        if not self.threshold_from_data:
            return self.threshold, f"{self.threshold:.3f}, the collection's own setting"
        with self._lock:
            n = int(self.index.ntotal)
            measured = self._raw_threshold
            if measured is None or n >= 2 * measured[2] or measured[2] <= RAW_RANK < n:
                look_alike = np.zeros(0, np.float32)
                if n > RAW_RANK:
                    sample = self.store.sample_vectors(RAW_SAMPLE, seed=n)
                    # The RAW_RANK-th neighbour besides the image itself (rank 0); cosines only.
                    sims, ids = self._nearest(sample, RAW_RANK + 1)
                    look_alike = sims[ids[:, RAW_RANK] >= 0, RAW_RANK].astype(np.float32)
                self._raw_threshold = measured = (*raw_threshold_of(look_alike), n)
                try:
                    self.store.set_settings(raw_threshold_measured=list(measured))
                except CollectionError:      # a full disk: measured again after a restart
                    log.warning("collection %s: could not keep its measured raw threshold", self.name)
            return measured[0], measured[1]

    def _reported_threshold(self) -> float:
        """The raw threshold as last measured (info(): without measuring)."""
        if not self.threshold_from_data:
            return self.threshold
        return self._raw_threshold[0] if self._raw_threshold is not None else DEFAULT_THRESHOLD

    @property
    def threshold_asked(self) -> float:
        """The raw threshold for a job over the whole collection
        (FindDuplicates): 0 (find_duplicates derives one from all the
        images) when the collection was created without one."""
        return 0.0 if self.threshold_from_data else self.threshold

    def count_verdict(self, verdict: Verdict, verified: bool) -> None:
        """One more check answered ``verdict`` (``verified``: by stage 2,
        else by raw cosine). The servicer answers exact duplicates itself
        (by content hash, before any embedding) and counts them here too."""
        with self._verdicts_lock:
            self.verdicts[(verdict.name.lower(), "verified" if verified else "raw_cosine")] += 1

    def twin(self, sha256: str) -> Neighbor | None:
        """The stored image with these exact bytes (same content hash), as a
        neighbour at cosine 1 with its label and split; None if there is none."""
        row = self.store.image_with_sha256(sha256)
        return None if row is None else Neighbor(row[0], 1.0, row[1], row[2], agreement=1.0, verified=True)

    def _layout_index(self):
        """Every stored image's coarse layout (find.coarse_layouts: 64 floats,
        256 bytes an image) in an exact inner-product index by image id: a
        check's second source of candidates, as in FindDuplicates; kept by
        add and remove once built. Built from the stored signatures on the
        first verified check: at once up to LAYOUT_INDEX_INLINE images, else
        in a background thread (reading a million signatures takes a while,
        and a check must not wait for it; until it is ready, checks have the
        embedding's candidates alone). None while it is being built, and for
        LAYOUT_RETRY_S after a build failed (logged). Call with the lock held."""
        if (self._layouts is None and self._layouts_building is None and not self.store.closed
                and time.monotonic() >= self._layouts_retry_at):
            if self.store.count() <= LAYOUT_INDEX_INLINE:
                try:
                    self._layouts = self._catch_up(*self._read_layouts())
                except Exception:  # noqa: BLE001 - the check goes on with the embedding's candidates
                    self._layouts_failed()
            else:
                self._layouts_building = threading.Thread(target=self._build_layouts, daemon=True,
                                                          name=f"layouts-{self.name}")
                self._layouts_building.start()
        return self._layouts

    def _layouts_failed(self) -> None:
        log.exception("collection %s: could not build its coarse-layout index; checks use the embedding's "
                      "candidates alone for %.0f s", self.name, LAYOUT_RETRY_S)
        self._layouts_retry_at = time.monotonic() + LAYOUT_RETRY_S

    def _read_layouts(self, stop: threading.Event | None = None):
        """(index of the layouts stored up to now, the last image id and
        removal it holds), or None when ``stop`` is set: read without the lock."""
        last_id, last_removal = self.store.max_id(), self.store.max_removal_seq()
        index = fi.make_index("flat", LAYOUT_SIDE * LAYOUT_SIDE)
        for ids, blobs in self.store.signatures_after(0, up_to=last_id):
            if stop is not None and stop.is_set():
                return None
            self._add_layouts(index, ids, blobs)
        return index, last_id, last_removal

    def _catch_up(self, index, last_id: int, last_removal: int):
        """``index`` with the adds and removes since it was read (lock held)."""
        for ids, blobs in self.store.signatures_after(last_id):
            self._add_layouts(index, ids, blobs)
        gone = self.store.removals_after(last_removal)
        return fi.remove_ids(index, np.asarray(gone, np.int64)) if gone else index

    def _build_layouts(self) -> None:
        try:
            read = self._read_layouts(self._closing)
            with self._lock:
                if read is not None and not self.store.closed:
                    self._layouts = self._catch_up(*read)
        except Exception:  # noqa: BLE001 - checks go on with the embedding's candidates
            with self._lock:
                if not self.store.closed:
                    self._layouts_failed()
        finally:
            self._layouts_building = None

    @staticmethod
    def _add_layouts(index, ids: np.ndarray, blobs: list[bytes]) -> None:
        # A row of another length (a damaged store) has no layout rather than stopping the others.
        ok = [i for i, b in enumerate(blobs) if len(b) in STORED_SIZES]
        if len(ok) < len(blobs):
            log.warning("%d stored layout signatures of an unknown length left out of the layout index",
                        len(blobs) - len(ok))
        if not ok:
            return
        coarse = coarse_layouts(np.stack([upgrade(blobs[i]) for i in ok]))
        has = coarse.any(axis=1)                 # flat thumbnails correlate with nothing
        fi.add(index, coarse[has], np.asarray(ids, np.int64)[ok][has])

    def _layout_neighbors(self, image: NewImage, known: set[str], min_cosine: float) -> list[Neighbor]:
        """The stored images among the new image's LAYOUT_K nearest by coarse
        layout (correlation >= LAYOUT_MIN) that are not in ``known`` (keys)
        and have cosine >= ``min_cosine``: the copies a blur or a pixelation
        hid from the embedding."""
        index = self._layout_index()
        coarse = coarse_layouts(upgrade(image.signature)[None])
        if index is None or index.ntotal == 0 or not coarse.any():
            return []
        # Each stored image by its best view of the new one's (upright, turned, upside
        # down), as the batch search does up to FLAT_MAX images (upright only above).
        views = layout_turns(coarse)[:, 0] if index.ntotal <= fi.FLAT_MAX else coarse
        corr, ids = fi.search(index, views, min(LAYOUT_K, int(index.ntotal)))
        best: dict[int, float] = {}
        for i, r in zip(ids.ravel().tolist(), corr.ravel().tolist()):
            if i >= 0 and r >= LAYOUT_MIN and r > best.get(i, -np.inf):
                best[i] = r
        ids = sorted(best, key=best.get, reverse=True)[:LAYOUT_K]
        if not ids:
            return []
        meta = self.store.metadata(ids)
        ids = [i for i in ids if i in meta and meta[i][0] not in known]
        if not ids:
            return []
        cosine = self.store.vectors_for_ids(ids) @ np.asarray(image.vector, np.float32)
        return [Neighbor(meta[i][0], float(c), meta[i][1], meta[i][2]) for i, c in zip(ids, cosine)
                if c >= min_cosine]

    def _verify(self, image: NewImage, neighbors: list[Neighbor], floor: float, layout_floor: float = -1.0,
                aligned: PairMemo | None = None) -> tuple[bool, tuple | None]:
        """Stage 2 for a new image against its stored neighbours (the same
        rule as FindDuplicates: analysis.duplicates.verify): marks each
        candidate's ``agreement``/``verified`` and appends the verified ones
        that only the layouts proposed to ``neighbors``; returns (any
        verified, the new image's look-alike pack (agreement, cosine) to
        store with it). Candidates: neighbours at cosine >= ``floor``, at
        most STREAM_CANDIDATE_K, whatever k a caller asked for (each costs
        milliseconds of alignment, so a large k must not buy a stall), and up
        to LAYOUT_K more by coarse layout (at cosine >= ``layout_floor``).
        ``aligned``: a memo of this image's evidence against stored
        signatures, read and filled: a check judged again aligns only the
        candidates it has not aligned."""
        above = [n for n in neighbors if n.cosine >= floor]
        cands = above[:STREAM_CANDIDATE_K]
        # Neighbours come most similar first: with fewer above the floor than it takes and
        # one below, every other stored image lies below the floor.
        sparse = (floor if len(above) < STREAM_CANDIDATE_K and len(above) < len(neighbors)
                  else float("nan"))
        with self._lock:        # the candidates under the lock; their alignment without it (see check)
            by_layout = self._layout_neighbors(image, {n.key for n in cands}, layout_floor)
            stored = self.store.layouts_for_keys([n.key for n in cands + by_layout])
        cands = [n for n in cands if n.key in stored]
        by_layout = [n for n in by_layout if n.key in stored]
        if not cands and not by_layout:
            return False, (float("nan"), float("nan"))
        # Stored files with one signature (identical files) are one candidate, aligned and
        # judged once: as look-alikes of the new image they would be its own original.
        first: dict[bytes, Neighbor] = {}
        all_cands, all_by_layout = cands + by_layout, by_layout
        judged_as = [first.setdefault(bytes(stored[n.key][0]), n) for n in all_cands]
        n_embedded = len(cands)
        cands = [n for n, judged in zip(cands, judged_as) if judged is n]
        by_layout = [n for n, judged in zip(by_layout, judged_as[n_embedded:]) if judged is n]
        everyone = cands + by_layout
        m = len(everyone)
        layout_only = np.r_[np.zeros(len(cands), bool), np.ones(len(by_layout), bool)]
        sigs = np.stack([upgrade(image.signature)] + [upgrade(stored[n.key][0]) for n in everyone])
        a, b = np.zeros(m, np.int64), np.arange(1, m + 1, dtype=np.int64)
        profiled = verify.one_dimensional(sigs)
        ev = self._aligned(sigs, a, b, profiled[a] | profiled[b], aligned)
        g = ev.agreement
        for n, v, k, blur in zip(everyone, g.tolist(), ev.keypoint_inliers.tolist(), ev.matched_blur_px.tolist()):
            n.agreement, n.keypoint_inliers, n.matched_blur_px = v, k, blur
        c = np.array([n.cosine for n in everyone], np.float32)
        nan = float("nan")
        # The stored images' look-alike levels as they were when each was added;
        # the new image's (NaN) taken from its embedding's candidates, without those found the same.
        stored_g = [nan] + [stored[n.key][1] if stored[n.key][1] is not None else nan for n in everyone]
        stored_c = [nan] + [stored[n.key][2] if stored[n.key][2] is not None else nan for n in everyone]
        profile = verify.profile_pairs(m + 1, a, b, profiled, ev)
        # As judged (a warp's gain where it counts), for the verdicts and the new image's pack alike.
        counted = verify.counted_agreement(m + 1, a, b, g, ev.warp_gain)
        ok, _ = verify.verified_pairs(m + 1, a, b, counted, c, np.array(stored_g), np.array(stored_c),
                                      layout_only=layout_only, profile=profile, keypoint_inliers=ev.keypoint_inliers,
                                      uninformative=verify.uninformative_matches(ev, layout_only & (c < floor)),
                                      near_identical=verify.near_identical_matches(ev, c),
                                      sparse_cosine=np.r_[sparse, np.full(m, np.nan)].astype(np.float32))
        look = ~ok & ~layout_only & ~profile
        own_g = verify.neighbourhood_typical(m + 1, a[look], b[look], counted[look])[0]
        own_c = verify.neighbourhood_typical(m + 1, a[look], b[look], c[look])[0]
        for n, v in zip(everyone, ok):
            n.verified = bool(v)
        for n, judged in zip(all_cands, judged_as):
            for field in STAGE2_FIELDS:
                setattr(n, field, getattr(judged, field))
        listed = {n.key: n for n in neighbors}
        for n in all_by_layout:
            if n.verified:                 # the answer: a copy the embedding ranked low or not at all
                if n.key in listed:
                    for field in STAGE2_FIELDS:    # its verdict and evidence; the embedding's cosine stays
                        setattr(listed[n.key], field, getattr(n, field))
                else:
                    neighbors.append(n)
        return bool(ok.any()), (float(own_g), float(own_c))

    def _aligned(self, sigs: np.ndarray, a: np.ndarray, b: np.ndarray, profiled: np.ndarray,
                 memo: PairMemo | None) -> "verify.PairEvidence":
        """Evidence of the pairs (a, b) of ``sigs`` (the new image first, then
        the stored candidates'), those in ``memo`` read from it and the rest
        aligned and kept in it (an alignment depends on its two signatures
        alone)."""
        if memo is None:
            return verify.verify_pairs(sigs, a, b, pool=self.alignment_pool, profiled=profiled)
        return memo.verify(sigs, a, b, pool=self.alignment_pool, profiled=profiled)

    def check(self, image: NewImage, k: int = 5, threshold: float = 0.0,
              add_if_unique: bool = False, verify_layout: bool = True) -> CheckOutcome:
        """Exact duplicate (same content hash), near duplicate or unique; with
        add_if_unique, a unique image is added in the same atomic step.

        Near duplicate: with ``verify_layout`` (and a signature on both
        sides), some candidate among the nearest stored images (cosine >=
        ``threshold`` or CANDIDATE_THRESHOLD; by coarse layout, at any
        cosine unless ``threshold`` is given) is verified as the same picture
        (stage 2); otherwise (raw cosine) the nearest cosine is >=
        ``threshold`` (0 = the collection's).

        The candidates are aligned without the collection's lock: held
        through a check's alignments (tens of milliseconds an image), it
        kept every other call of the collection waiting, and their threads,
        which the server shares, from everyone else (a twenty-fourth probe).
        An add_if_unique whose collection changed meanwhile is judged again
        holding the lock, so two copies checked at once cannot both be added;
        that judgement aligns only candidates the first did not (under many
        concurrent adds it ran nearly every time, and realigned all of them
        under the lock: bench/soak.py's checks of two images, p50 21 s)."""
        verified = verify_layout and image.signature is not None
        if not add_if_unique:
            verdict, neighbors, _ = self._judge(image, k, threshold, verified)
            self.count_verdict(verdict, verified)
            return CheckOutcome(image.key, verdict, neighbors[:max(k, 1)], False)
        changes = self._changes
        aligned = PairMemo()
        verdict, neighbors, pack = self._judge(image, k, threshold, verified, aligned)
        outcome, snapshot_due = None, False
        with self._lock:
            if self._changes != changes:
                verdict, neighbors, pack = self._judge(image, k, threshold, verified, aligned)
            self.count_verdict(verdict, verified)
            if verdict == Verdict.UNIQUE:
                (outcome,), snapshot_due = self._add([image], packs=[pack])
        if snapshot_due:
            self._try_snapshot(claimed=True)
        if outcome is not None and outcome.error:
            return CheckOutcome(image.key, verdict, neighbors[:max(k, 1)], False, outcome.error)
        return CheckOutcome(image.key, verdict, neighbors[:max(k, 1)], outcome is not None and outcome.added)

    def _judge(self, image: NewImage, k: int, threshold: float, verified: bool, aligned: PairMemo | None = None
               ) -> tuple[Verdict, list[Neighbor], tuple | None]:
        """(verdict, neighbours, the image's look-alike pack) of a
        check (see check), nothing counted or added. Searches take the lock
        themselves; alignment runs without it unless the caller holds it."""
        neighbors = self.search(image.vector, max(k, STREAM_CANDIDATE_K if verified else 1))[0]
        twin = self.twin(image.sha256)
        pack = None
        if twin is not None:
            verdict = Verdict.EXACT_DUPLICATE
            # identical bytes embed identically: the twin leads, at cosine 1
            neighbors = [twin] + [n for n in neighbors if n.key != twin.key]
        elif verified:
            # A threshold asked for bounds the layouts' candidates too (as in FindDuplicates).
            near, pack = self._verify(image, neighbors, threshold or CANDIDATE_THRESHOLD, threshold or -1.0, aligned)
            verdict = Verdict.NEAR_DUPLICATE if near else Verdict.UNIQUE
            # The verified neighbours first, the strongest evidence first: they are
            # the answer (by cosine, a turned copy's look-alike led its own
            # original; by agreement alone, a crop confirmed by 150 keypoints
            # would follow a look-alike the layouts passed).
            neighbors.sort(key=lambda n: (not n.verified, -(n.agreement + n.keypoint_inliers / 100)
                                          if n.verified else 0.0, -n.cosine))
        elif neighbors and neighbors[0].cosine >= (threshold or self.raw_threshold()[0]):
            verdict = Verdict.NEAR_DUPLICATE
        else:
            verdict = Verdict.UNIQUE
        return verdict, neighbors, pack

    # -- mutations ----------------------------------------------------------
    def add(self, images: list[NewImage], skip_exact_duplicates: bool = False,
            packs: list[tuple | None] | None = None) -> list[AddOutcome]:
        """Add images durably (committed before return). A key already present
        fails that item (ALREADY_EXISTS); the others are added. Every image
        whose bytes are already stored (or earlier in ``images``) names that
        image in ``exact_duplicate_of``, added or not: with
        ``skip_exact_duplicates`` it is not added. ``packs``: per image, its
        look-alikes' (agreement, cosine) from a check, stored with its
        signature."""
        outcomes, snapshot_due = self._add(images, skip_exact_duplicates, packs)
        if snapshot_due:        # written without the lock (see snapshot), before the add returns
            self._try_snapshot(claimed=True)
        return outcomes

    def _add(self, images: list[NewImage], skip_exact_duplicates: bool = False,
             packs: list[tuple | None] | None = None) -> tuple[list[AddOutcome], bool]:
        """:meth:`add`'s outcomes, and whether an automatic snapshot is due."""
        outcomes, rows, pending, layouts = [], [], [], []
        packs = packs or [None] * len(images)
        snapshot_due = False
        with self._lock:
            seen_keys: set[str] = set()
            seen_sha: dict[str, str] = {}
            for im, pack in zip(images, packs):
                out = AddOutcome(im.key)
                outcomes.append(out)
                if not im.key:
                    out.error = CollectionError("an image needs a key to be added", "INVALID_ARGUMENT")
                    continue
                vec = self._check_vectors(im.vector)[0]
                size = None if im.signature is None else np.asarray(im.signature).size
                if size is not None and size not in STORED_SIZES:
                    out.error = CollectionError(f"a layout signature has {SIGNATURE_BYTES} bytes (or an older "
                                                f"{STORED_SIZES[1:]}), got {size}",
                                                "INVALID_ARGUMENT")
                    continue
                if im.key in seen_keys or self.store.has_key(im.key):
                    out.error = CollectionError(f"key {im.key!r} already in {self.name}", "ALREADY_EXISTS")
                    continue
                dup = self.store.key_for_sha256(im.sha256) or seen_sha.get(im.sha256)
                if dup is not None:
                    out.exact_duplicate_of = dup
                    if skip_exact_duplicates:
                        continue
                seen_keys.add(im.key)
                seen_sha.setdefault(im.sha256, im.key)
                rows.append((im.key, im.label, im.split, im.sha256, im.width, im.height, vec))
                layouts.append(None if im.signature is None else
                               (np.asarray(im.signature, np.uint8).tobytes(),
                                *(_finite(v) for v in (pack or (None, None)))))
                pending.append(out)
            if rows:
                try:
                    ids = self.store.insert(rows, layouts)
                except CollectionError as e:      # nothing stored: a full disk is RESOURCE_EXHAUSTED
                    for out in pending:
                        out.error = CollectionError(f"could not store {out.key!r}: {e}", e.code)
                    return outcomes, False
                fi.add(self.index, np.stack([r[-1] for r in rows]), np.asarray(ids, np.int64))
                if self._layouts is not None:
                    with_layout = [(i, lay[0]) for i, lay in zip(ids, layouts) if lay is not None]
                    if with_layout:
                        self._add_layouts(self._layouts, np.array([i for i, _ in with_layout], np.int64),
                                          [b for _, b in with_layout])
                for out, i in zip(pending, ids):
                    out.id, out.added = i, True
                self._since_snapshot += len(ids)
                self._changes += 1
                self._maybe_reindex()
                snapshot_due = self._snapshot_due()     # last: a claim must reach _try_snapshot
        return outcomes, snapshot_due

    def remove(self, keys: list[str]) -> int:
        """Remove the images of ``keys`` (absent ones ignored); how many were.
        From an HNSW index they are hidden (see _without), and once hidden
        ones are COMPACT_SHARE of it, it is rebuilt in the background."""
        with self._lock:
            ids = self.store.delete_keys(keys)
            snapshot_due = False
            if ids:
                self.index = self._without(self.index, ids, held=True)    # stored rows are all indexed
                if self._layouts is not None:
                    self._layouts = fi.remove_ids(self._layouts, np.asarray(ids, np.int64))
                self._since_snapshot += len(ids)
                self._changes += 1
                self._maybe_compact()
                snapshot_due = self._snapshot_due()     # last: a claim must reach _try_snapshot
        if snapshot_due:
            self._try_snapshot(claimed=True)
        return len(ids)

    def _maybe_compact(self) -> None:
        hidden = self._hidden_count()
        if (hidden and hidden >= COMPACT_SHARE * int(self.index.ntotal) and self._reindexing is None
                and not self._closing.is_set() and time.monotonic() >= self._compact_retry_at):
            self._reindexing = threading.Thread(target=self._compact_in_background,
                                                name=f"compact-{self.name}", daemon=True)
            self._reindexing.start()

    def _compact_in_background(self) -> None:
        try:
            self.reindex("hnsw")
        except CollectionError as e:     # closing or dropped meanwhile (ABORTED), or the store failed
            (log.info if e.code == "ABORTED" else log.warning)("collection %r: rebuilding its graph without "
                                                               "removed images stopped: %s", self.name, e)
        except (ValueError, RuntimeError, MemoryError) as e:
            # Not tried again by every removal: searches keep leaving the removed out meanwhile.
            self._compact_retry_at = time.monotonic() + COMPACT_RETRY_S
            log.warning("collection %r: rebuilding its graph without %d removed images failed (%s: %s); "
                        "tried again in %.0f s", self.name, self._hidden_count(), type(e).__name__, e,
                        COMPACT_RETRY_S)

    @property
    def indexed(self) -> int:
        """Vectors its searches can find (an HNSW index's hidden ones left out)."""
        return int(self.index.ntotal) - self._hidden_count()

    # -- whole-collection access ------------------------------------------
    def all_images(self, with_signatures: bool = False, report: Callable | None = None,
                   page: int = 4096) -> StoredImages:
        """Every image stored when the call began, with its metadata and
        vector (images removed meanwhile may be left out). With
        ``with_signatures``, also their layout signatures when every image
        has one (images added by an older version have none: then None).

        Read a page of ``page`` images at a time, each page (images and their
        layouts, one consistent view) under the lock, into arrays made once:
        one read of 100,000 images held the lock 9 s (every check of the
        collection waited) and the rows twice over. ``report(stage, done,
        total)`` is called between pages (it may raise to stop the read)."""
        with self._lock:
            total, last = self.store.count(), self.store.max_id()
        ids = np.zeros(total, np.int64)
        vectors = np.zeros((total, self.dim), np.float32)
        signatures = np.zeros((total, SIGNATURE_BYTES), np.uint8) if with_signatures else None
        keys, labels, splits, sha = [], [], [], []
        n, after, every_signature = 0, 0, with_signatures
        while n < total:
            with self._lock:
                rows = next(self.store.images_after(after, batch=min(page, total - n), up_to=last), [])
                layouts = (self.store.layouts_for_keys([r[1] for r in rows])
                           if every_signature and rows else {})
            if not rows:
                break
            after = rows[-1][0]
            every_signature = every_signature and len(layouts) == len(rows)
            for r in rows:
                ids[n] = r[0]
                keys.append(r[1]), labels.append(r[2]), splits.append(r[3]), sha.append(r[4])
                vectors[n] = np.frombuffer(r[5], np.float32)
                if every_signature:
                    signatures[n] = upgrade(layouts[r[1]][0])
                n += 1
            if report is not None:
                report("loading vectors", n, total)
        return StoredImages(ids[:n], keys, labels, splits, sha, vectors[:n],
                            signatures[:n] if every_signature else None)

    @property
    def index_bytes(self) -> int:
        """Memory of the FAISS index, bytes (cheap, without the lock: from its
        size and parameters, ``faiss_index.memory_bytes``)."""
        return fi.memory_bytes(self.index)

    def _counts(self) -> tuple[int, dict, dict, int, int]:
        """(images, per label, per split (the most frequent: see
        MAX_COUNTS_LISTED), distinct labels, distinct splits), counted again only after an add or
        a remove, and outside the collection's lock: at 100,000 images the
        three scans take ~0.1 s, and six clients asking for stats in a loop
        held every check of the collection 0.7 s. Without the collection's
        lock at all (see info): a count tagged with a number of changes that
        moved on meanwhile is only counted again next time."""
        changes, counted = self._changes, self._counted
        if counted is not None and counted[0] == changes:
            return counted[1]
        per_label, per_split = self.store.counts_by("label"), self.store.counts_by("split")
        counts = (self.store.count(), most_frequent(per_label), most_frequent(per_split),
                  len(per_label), len(per_split))
        self._counted = (changes, counts)
        return counts

    def info(self) -> CollectionInfo:
        """The collection's figures, read without its lock (the store's own
        is held only for its counts): stats waiting for a lock that a
        snapshot or a check held took threads the whole server shares, and
        other collections' stats and checks waited seconds for them (a
        twenty-fourth probe)."""
        num_images, per_label, per_split, labels, splits = self._counts()
        try:
            last_snapshot = (self.path / SNAPSHOT).stat().st_mtime
        except FileNotFoundError:
            # None yet, or the collection dropped since this call began: a drop removes
            # the folder, and a check-then-stat answered INTERNAL to Create and
            # SnapshotCollection calls racing DropCollection (1 run in 4 of the race test).
            last_snapshot = 0.0
        return CollectionInfo(
            name=self.name, num_images=num_images, dim=self.dim, model=self.model,
            index_kind=self.index_kind, structure=self.structure, threshold=self._reported_threshold(),
            images_per_label=dict(per_label), images_per_split=dict(per_split),
            index_bytes=self.index_bytes,
            last_snapshot_unix_s=last_snapshot,
            distinct_labels=labels, distinct_splits=splits)
