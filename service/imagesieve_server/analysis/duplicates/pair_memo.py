"""Which candidate pairs were aligned before? Stage 2's evidence, kept.

A pair's evidence (``verify.PairEvidence``: the alignment of two layout
signatures and the match of their keypoints) depends on the two signatures
alone, and on the code that aligns them. So a pair aligned once is read, not
aligned again: an audit run again over a folder (a few images added, a
report wanted with other settings) aligned every candidate pair anew, and
alignment is most of its time (318 screenshots: 27 of its 33 s, embeddings
reused or not). A streaming check judged again under its collection's lock
reads what its first judgement aligned the same way.

Pairs are known by their two signatures' digests (8 bytes of BLAKE2b each,
in order: an alignment's turn and mirror read from the first image to the
second), kept sorted, so a lookup is a binary search over arrays: no
Python object a pair, whatever the number of pairs.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path

import numpy as np

from . import verify
from .verify import ACCEPT, PairEvidence

DIGEST_BYTES = 8
KEY = f"S{2 * DIGEST_BYTES}"        # a pair: its two images' digests, big-endian, side by side
#: A kept memo holds its last run's pairs, and of the others as many again
#: (or up to KEEP_MIN_PAIRS), those of the last run's images first: runs
#: over other subsets of one store (an audit, then ``labels`` on a part of
#: it; FindDuplicates and ScoreLabels on one collection) do not push each
#: other's pairs out, and the memo cannot grow without bound.
KEEP_MIN_PAIRS = 500_000


def signature_digests(signatures: np.ndarray) -> np.ndarray:
    """(N, SIGNATURE_BYTES) uint8 -> (N,) big-endian uint64: BLAKE2b of each row."""
    sig = np.ascontiguousarray(signatures, np.uint8)
    return np.frombuffer(b"".join(hashlib.blake2b(row.data, digest_size=DIGEST_BYTES).digest() for row in sig),
                         ">u8").copy()


def pair_keys(digests: np.ndarray, a, b) -> np.ndarray:
    """(P,) keys (KEY bytes) of pairs (a[i], b[i]) of images with ``digests``."""
    d = np.asarray(digests)
    sides = np.stack([d[np.asarray(a, np.int64)], d[np.asarray(b, np.int64)]], 1)
    return np.ascontiguousarray(sides, ">u8").view(KEY).ravel()


@functools.lru_cache(maxsize=1)
def verifier_version() -> str:
    """A digest of what decides a pair's evidence: the source of the modules
    that align and match (an edit to any is a new version), OpenCV's and
    numpy's versions, and the search's stop (``verify.ACCEPT``)."""
    import cv2

    from ...engine import keypoints, signature
    h = hashlib.sha256()
    for module in (verify, signature, keypoints):
        h.update(Path(module.__file__).read_bytes())
    h.update(f"|cv2 {cv2.__version__}|numpy {np.__version__}|accept {ACCEPT!r}".encode())
    return h.hexdigest()


@dataclasses.dataclass
class PairMemo:
    """Evidence of pairs by key (sorted unique ``keys`` (M,) KEY bytes, the
    ``evidence`` of those M pairs, and ``profile_judged`` (M,) bool: whether
    ``matched_profile`` was measured, see ``verify.verify_pairs``'s
    ``profiled``). :meth:`verify` reads the pairs it holds, aligns the
    others and keeps them; ``asked`` are the keys asked for since it was
    made and ``seen`` the digests of the images in them (a run's: what is
    worth keeping for the next, :meth:`kept_for_next`). ``aligned``: pairs
    aligned through it."""
    keys: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, KEY))
    evidence: PairEvidence = dataclasses.field(default_factory=lambda: PairEvidence.empty(0))
    profile_judged: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, bool))
    asked: list = dataclasses.field(default_factory=list)
    seen: list = dataclasses.field(default_factory=list)
    aligned: int = 0

    def __len__(self) -> int:
        return len(self.keys)

    def _rows(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found (P,) bool, the row of each found key)."""
        at = np.searchsorted(self.keys, keys)
        inside = np.minimum(at, max(len(self.keys) - 1, 0))
        found = (at < len(self.keys)) & (self.keys[inside] == keys) if len(self.keys) else np.zeros(len(keys), bool)
        return found, inside

    def verify(self, signatures, a, b, **verify_kwargs) -> PairEvidence:
        """``verify.verify_pairs(signatures, a, b, **verify_kwargs)``, the
        pairs held read instead of aligned (``profiled``, a (P,) argument,
        is passed on for the others alone; a pair held without its profile
        judged is aligned again where it is now asked for)."""
        sig = verify.check_signatures(signatures)
        a, b = np.asarray(a, np.int64).ravel(), np.asarray(b, np.int64).ravel()
        if verify_kwargs.get("stop_at", ACCEPT) != ACCEPT:
            raise ValueError("a PairMemo holds evidence searched to verify.ACCEPT only")
        profiled = verify_kwargs.pop("profiled", None)
        judged_now = np.ones(len(a), bool) if profiled is None else np.asarray(profiled, bool).ravel()
        # Only the images in pairs are hashed (a million signatures of ~8 KB: seconds).
        rows = np.unique(np.r_[a, b])
        digests = np.zeros(len(sig), ">u8")
        digests[rows] = signature_digests(sig[rows])
        keys = pair_keys(digests, a, b) if len(a) else np.zeros(0, KEY)
        self.asked.append(keys)
        self.seen.append(digests[rows])
        found, at = self._rows(keys)
        found &= self.profile_judged[at] | ~judged_now if len(self.keys) else found
        ev = PairEvidence.empty(len(a))
        if found.any():
            ev.put_where(found, self.evidence.take(at[found]))
        todo = ~found
        if todo.any():
            fresh = verify.verify_pairs(sig, a[todo], b[todo], **verify_kwargs,
                                        profiled=None if profiled is None else judged_now[todo])
            ev.put_where(todo, fresh)
            self.aligned += int(todo.sum())
            self._keep(keys[todo], fresh, judged_now[todo])
        return ev

    def _keep(self, keys: np.ndarray, evidence: PairEvidence, judged: np.ndarray) -> None:
        keys, first = np.unique(keys, return_index=True)
        found, at = self._rows(keys)
        old = np.ones(len(self.keys), bool)
        old[at[found]] = False          # held unjudged, judged now: the new evidence replaces it
        merged = np.concatenate([self.keys[old], keys])
        order = np.argsort(merged, kind="stable")
        self.keys = merged[order]
        self.evidence = self.evidence.take(old).concat(evidence.take(first)).take(order)
        self.profile_judged = np.concatenate([self.profile_judged[old], judged[first]])[order]

    def kept_for_next(self) -> "PairMemo":
        """A memo of the pairs asked for since this one was made, and of the
        others at most as many again (KEEP_MIN_PAIRS at least), those of
        images seen since first: see KEEP_MIN_PAIRS."""
        asked = np.unique(np.concatenate(self.asked)) if self.asked else np.zeros(0, KEY)
        found, at = self._rows(asked)
        keep = np.zeros(len(self.keys), bool)
        keep[at[found]] = True
        room = max(KEEP_MIN_PAIRS, 2 * int(keep.sum())) - int(keep.sum())
        others = np.flatnonzero(~keep)
        if room > 0 and len(others):
            seen = np.unique(np.concatenate(self.seen)) if self.seen else np.zeros(0, ">u8")
            sides = np.ascontiguousarray(self.keys[others]).view(">u8").reshape(-1, 2)
            ours = np.isin(sides, seen).all(axis=1)
            keep[others[np.argsort(~ours, kind="stable")[:room]]] = True
        return PairMemo(self.keys[keep], self.evidence.take(keep), self.profile_judged[keep])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"keys": self.keys, "profile_judged": self.profile_judged,
                **{f.name: getattr(self.evidence, f.name) for f in dataclasses.fields(PairEvidence)}}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray] | None) -> "PairMemo":
        """The memo ``to_arrays`` gave; an empty one from None or from arrays
        that do not fit (another layout of the evidence: aligned again)."""
        if not arrays:
            return cls()
        try:
            keys = np.asarray(arrays["keys"])
            judged = np.asarray(arrays["profile_judged"])
            fields = [np.asarray(arrays[f.name]) for f in dataclasses.fields(PairEvidence)]
        except KeyError:
            return cls()
        empty = PairEvidence.empty(0)
        if (keys.dtype != np.dtype(KEY) or keys.ndim != 1 or np.any(keys[1:] <= keys[:-1])
                or judged.dtype != bool or judged.shape != keys.shape
                or any(x.shape != keys.shape or x.dtype != getattr(empty, f.name).dtype
                       for x, f in zip(fields, dataclasses.fields(PairEvidence)))):
            return cls()
        return cls(keys, PairEvidence(*fields), judged)
