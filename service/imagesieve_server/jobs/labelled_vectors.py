"""Where the analyses' labelled embeddings come from: a collection (vectors
already stored, nothing to embed) or images sent inline (encoded bytes, or a
server path read through the server's ImageReader and its allowed roots;
embedded here, with progress). Shared by ScoreLabels and SampleSizeSweep."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, AsyncIterator

import numpy as np

from imagesieve.v1 import analysis_pb2, common_pb2

from ..collections.store import clipped
from ..engine.signature import SIGNATURE_BYTES

if TYPE_CHECKING:
    from ..servicers.common import ImageReader

EMBED_CHUNK = 64
# Images one ScoreLabels / SampleSizeSweep request may send inline. Checked
# before any work: 7.5M tiny items in a 60 MB message took 3 GB and ended in
# a MemoryError. Larger sets go into a collection (AddImages), once.
MAX_INLINE_IMAGES = 20_000
FAILURES_SHOWN = 5


@dataclasses.dataclass
class LabelledVectors:
    keys: list[str]
    labels: list[str]
    splits: list[str]
    vectors: np.ndarray          # (N, D) float32, unit rows
    signatures: np.ndarray | None = None   # (N, SIGNATURE_BYTES) uint8 when asked for and every image has one
    sha256: list[str] | None = None        # (N) hex of the encoded bytes, when asked for (signatures too)
    skipped: list[common_pb2.SkippedImage] = dataclasses.field(default_factory=list)  # left out, input order


def check_inline_count(images, method: str) -> None:
    """At most MAX_INLINE_IMAGES (ValueError naming the limit). O(1): before
    anything walks the images."""
    if len(images) > MAX_INLINE_IMAGES:
        raise ValueError(f"{method} got {len(images)} inline images, above the limit of {MAX_INLINE_IMAGES} "
                         "a request: add them to a collection (AddImages) and analyse the collection")


def check_inline_images(images, method: str) -> None:
    """Inline images: at most MAX_INLINE_IMAGES, each with a source (encoded
    bytes in `data`, or a `server_path`), a label, a key no other has (or
    none), and key, label and split within the per-item text limits
    (ValueError)."""
    from ..servicers.common import text_problem  # here: servicers import the jobs
    check_inline_count(images, method)
    keys = set()
    for i, im in enumerate(images):
        name = clipped(im.key) if im.key else f"#{i}"
        problem = text_problem(im)
        if problem is not None:
            raise ValueError(f"image {name}: {problem}")
        if im.key in keys:       # the answers name images by key: two alike could not be told apart
            raise ValueError(f"image {name}: a second image with this key (keys must be unique)")
        if im.key:
            keys.add(im.key)
        if im.WhichOneof("source") is None:
            raise ValueError(f"image {name}: {method} needs encoded bytes in `data` or a `server_path`")
        if not im.label:
            raise ValueError(f"image {name}: missing label")


MAX_SEED = 2**31 - 1      # the requests' seed is an int32


def check_seed(seed: int) -> int:
    """A request's seed: 0..MAX_SEED (ValueError in our words, not numpy's)."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in 0..{MAX_SEED}, got {seed}")
    return int(seed)


# Classes an analysis of labels takes: its noise counts and per-class answers
# are class x class (a probe: 6,000 one-image classes, 4.9 s of the event loop
# and 2.3 GB; 20,000 were allowed). As AnalyseConsensus's MAX_CLASSES.
MAX_LABEL_CLASSES = 1_000


def check_labels(labels: list[str], minimum: int = 2) -> None:
    distinct = len(set(labels))
    if distinct < minimum:
        raise ValueError(f"need at least {minimum} distinct labels, got {distinct}")
    if distinct > MAX_LABEL_CLASSES:
        raise ValueError(f"{distinct} distinct labels (classes), above the limit of {MAX_LABEL_CLASSES}: "
                         "analyse a subset, or merge rare classes")


def default_reader(engine) -> ImageReader:
    """A reader with no allowed roots: bytes pass, every server path is refused."""
    from ..paths import PathPolicy
    from ..servicers.common import ImageReader  # here: servicers import the jobs
    return ImageReader(engine, PathPolicy())


async def load_labelled_vectors(source: analysis_pb2.LabelledSource, engine, collections, method: str,
                                reader: ImageReader | None = None, with_signatures: bool = False
                                ) -> AsyncIterator[common_pb2.JobProgress | LabelledVectors]:
    """Yield JobProgress while embedding, then one LabelledVectors. Raises
    ValueError for a bad source (unknown collection: CollectionError). An
    inline image that cannot be read or embedded is left out (listed in
    ``skipped`` with its error) and the job goes on without it, unless more
    than half of the images read so far failed: then embedding stops after
    that chunk, with a ValueError naming the first few (a request of
    millions of broken items must not cost minutes). ``reader`` turns each
    inline image into bytes (the server's, with its allowed roots; None: no
    server paths allowed). ``with_signatures``: the layout signatures too
    (the stored ones of a collection: None when some image has none) and the
    content hashes (what the duplicates check needs). Callers embedding
    inline images hold their job's slot (``runner.JobSlot``) while iterating."""
    which = source.WhichOneof("source")
    if which == "collection":
        if collections is None:
            raise ValueError("this server has no collections")
        c = collections.get(source.collection)
        yield common_pb2.JobProgress(stage="loading collection", done=0, total=0)
        im = await asyncio.to_thread(c.all_images, with_signatures)
        missing = sum(1 for label in im.labels if not label)
        if missing:
            raise ValueError(f"{missing} of {len(im.keys)} images in collection {source.collection!r} "
                             f"have no label; {method} needs a label for every image")
        yield LabelledVectors(im.keys, im.labels, im.splits, im.vectors, im.signatures,
                              list(im.sha256) if with_signatures else None)
        return
    if which != "inline":
        raise ValueError(f"{method} needs a source: a collection or inline images with labels")
    check_inline_images(source.inline.images, method)
    images = list(source.inline.images)
    reader = reader or default_reader(engine)
    keys = [im.key or str(i) for i, im in enumerate(images)]
    vectors = np.zeros((len(images), engine.embedder.dim), dtype=np.float32)
    signatures = np.zeros((len(images), SIGNATURE_BYTES), np.uint8) if with_signatures else None
    sha = [""] * len(images)
    ok = np.zeros(len(images), bool)
    skipped: list[common_pb2.SkippedImage] = []
    start = time.perf_counter()
    yield common_pb2.JobProgress(stage="embedding", done=0, total=len(images))
    from ..servicers.common import gather_bounded  # here: servicers import the jobs
    for lo in range(0, len(images), EMBED_CHUNK):
        chunk = images[lo:lo + EMBED_CHUNK]
        embedded = await gather_bounded(reader.embed(im, with_signature=with_signatures, with_hash=with_signatures)
                                        for im in chunk)
        for j, (r, err, digest) in enumerate(embedded):
            if err is not None:
                skipped.append(common_pb2.SkippedImage(key=keys[lo + j], error=err))
            else:
                ok[lo + j] = True
                vectors[lo + j] = r.vector
                if signatures is not None:
                    signatures[lo + j] = r.signature
                    sha[lo + j] = digest
        done = lo + len(chunk)
        if 2 * len(skipped) > done:       # mostly broken: stop before embedding the rest
            shown = _first_few([f"{clipped(s.key)} ({clipped(s.error.message, 240)})" for s in skipped])
            raise ValueError(f"{len(skipped)} image(s) could not be embedded: {shown} (stopped after "
                             f"the first {done} of {len(images)} images: more than half failed)")
        elapsed = time.perf_counter() - start
        yield common_pb2.JobProgress(stage="embedding", done=done, total=len(images), elapsed_s=elapsed,
                                     eta_s=elapsed / done * (len(images) - done),
                                     message=f"{len(skipped)} skipped" if skipped else "")
    keep = np.flatnonzero(ok)
    yield LabelledVectors([keys[i] for i in keep], [images[i].label for i in keep],
                          [images[i].split.lower() for i in keep], vectors[keep],
                          None if signatures is None else signatures[keep],
                          [sha[i] for i in keep] if with_signatures else None, skipped)


def skipped_note(skipped: list[common_pb2.SkippedImage]) -> list[str]:
    """A result note on the images a job went on without ([] when none)."""
    if not skipped:
        return []
    shown = _first_few([clipped(s.key) for s in skipped])
    return [f"{len(skipped)} image(s) left out, they could not be read or decoded: {shown} (see `skipped`)"]


def _first_few(names: list[str]) -> str:
    """The first FAILURES_SHOWN of ``names``, then how many more."""
    more = f" and {len(names) - FAILURES_SHOWN} more" if len(names) > FAILURES_SHOWN else ""
    return ", ".join(names[:FAILURES_SHOWN]) + more


class LabelledVectorsLoad:
    """:func:`load_labelled_vectors` for a job's event stream: iterating
    yields ``event(progress=...)`` messages; afterwards ``data`` holds the
    LabelledVectors. ``async for e in (load := LabelledVectorsLoad(...)):
    yield e`` then ``load.data``."""

    def __init__(self, event, source, engine, collections, method: str, reader: ImageReader | None = None,
                 with_signatures: bool = False):
        self.event, self.data = event, None
        self._args = (source, engine, collections, method, reader, with_signatures)

    async def __aiter__(self):
        async for item in load_labelled_vectors(*self._args):
            if isinstance(item, LabelledVectors):
                self.data = item
            else:
                yield self.event(progress=item)
