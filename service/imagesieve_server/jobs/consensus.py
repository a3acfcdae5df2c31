"""AnalyseConsensus as a long job over a collection: its stored embeddings
and the annotations added with AddAnnotations (``analysis.consensus``).

The analysis works on dense arrays (images x annotators labels, images x
classes posteriors, annotators x classes x classes confusions): their size
is counted by SQLite before anything is loaded, and a collection whose
annotations would pass MAX_CELLS (or MAX_ANNOTATIONS, MAX_CLASSES, MAX_ANNOTATORS) is
refused with RESOURCE_EXHAUSTED. Loading and the matrix are built inside
the job (``run_job``), so the analysis slot bounds them too."""
from __future__ import annotations

import asyncio

import numpy as np

from imagesieve.v1 import consensus_pb2

from ..checks import consensus
from ..collections import Collection, CollectionError
from .labelled_vectors import check_seed
from .result_parts import lazy_parts
from .runner import run_job

# Bounds on one analysis (peak ~1 GB, about a minute at the largest): cells
# of each dense array, annotations read, distinct labels (classes), and
# annotators: the analysis and its answer take ~0.6 ms an annotator in loops
# no cancellation reaches (a probe: 200,000 annotators of 10 images, a job
# cancelled at once kept its slot and a core 30 s; a million were allowed).
# CIFAR-10H, among the largest real annotator sets, has 2,571.
MAX_CELLS = 10_000_000
MAX_ANNOTATIONS = 1_000_000
MAX_CLASSES = 1_000
MAX_ANNOTATORS = 10_000
LOAD_BATCH = 50_000


def size_problem(images: int, annotators: int, classes: int, annotations: int) -> str:
    """Why an analysis of this size is refused ('' when it is not)."""
    if annotations > MAX_ANNOTATIONS:
        return f"{annotations} annotations, above the limit of {MAX_ANNOTATIONS} an analysis reads"
    if classes > MAX_CLASSES:
        return f"{classes} distinct labels (classes), above the limit of {MAX_CLASSES}"
    for what, cells in ((f"{images} images x {annotators} annotators", images * annotators),
                        (f"{images} images x {classes} classes", images * classes),
                        (f"{annotators} annotators x {classes} x {classes} classes", annotators * classes * classes)):
        if cells > MAX_CELLS:
            return f"{what} = {cells} cells, above the limit of {MAX_CELLS}"
    if annotators > MAX_ANNOTATORS:
        return f"{annotators} annotators, above the limit of {MAX_ANNOTATORS}"
    return ""


def check_size(collection: Collection, images: int, annotators: int, classes: int, annotations: int) -> None:
    problem = size_problem(images, annotators, classes, annotations)
    if problem:
        raise CollectionError(
            f"the annotations of collection {collection.name!r} are too many to analyse at once: {problem}. "
            "Analyse a subset in a collection of its own (fewer images, annotators or classes)",
            "RESOURCE_EXHAUSTED")


def _codes(values: list, codes: dict) -> np.ndarray:
    return np.fromiter((codes.setdefault(v, len(codes)) for v in values), np.int64, len(values))


def _ranked(codes: dict) -> tuple[list, np.ndarray]:
    """(values sorted, rank of each code)."""
    values = list(codes)
    order = sorted(range(len(values)), key=values.__getitem__)
    rank = np.empty(len(values), np.int64)
    rank[order] = np.arange(len(values))
    return [values[i] for i in order], rank


def annotation_matrix(collection: Collection, report=None):
    """(ids (N,), keys, annotators, classes, labels (N, M) int with -1 for
    missing) over the collection's annotated images, read in batches (no
    list of every row). CollectionError RESOURCE_EXHAUSTED above the bounds,
    before the matrix is allocated."""
    store = collection.store
    summary = store.annotation_summary()
    if not summary.annotations:
        raise ValueError(f"collection {collection.name!r} has no annotations; add them with AddAnnotations")
    check_size(collection, summary.images, summary.annotators, summary.classes, summary.annotations)
    img_codes: dict = {}
    ann_codes: dict = {}
    cls_codes: dict = {}
    parts, read = [], 0
    for batch in store.annotation_batches(LOAD_BATCH):
        image_ids, annotators, labels = zip(*batch)
        parts.append((_codes(image_ids, img_codes), _codes(annotators, ann_codes), _codes(labels, cls_codes)))
        read += len(batch)
        # Annotations added since the count: still within the bounds?
        check_size(collection, len(img_codes), len(ann_codes), len(cls_codes), read)
        if report:
            report("loading annotations", read, max(read, summary.annotations))
    if not parts:
        raise ValueError(f"collection {collection.name!r} has no annotations; add them with AddAnnotations")
    ids, img_rank = _ranked(img_codes)
    annotators, ann_rank = _ranked(ann_codes)
    classes, cls_rank = _ranked(cls_codes)
    meta = store.metadata(ids)
    labels = np.full((len(ids), len(annotators)), -1, dtype=np.int64)
    for i, a, c in parts:                 # in row order: a replaced annotation's newer label lands last
        labels[img_rank[i], ann_rank[a]] = cls_rank[c]
    present = np.array([i in meta for i in ids], dtype=bool)
    if not present.all():                 # removed while being read
        labels = labels[present]
        ids = [i for i, p in zip(ids, present) if p]
    return np.asarray(ids, np.int64), [meta[i][0] for i in ids], annotators, classes, labels


def consensus_lists(keys, annotators, classes, labels, res, model_label
                    ) -> tuple[consensus_pb2.ConsensusResult, list]:
    """The answer as ``result_parts.lazy_parts`` builds it: the head and its
    lists (images, annotators, ambiguous pairs, review queue), each item made
    when its part is (a collection at the annotation cap answered ~500 MB)."""
    rank = {int(i): r + 1 for r, i in enumerate(res.review)}
    rows, cols = np.nonzero(labels >= 0)              # by image: each image's labels, not all M columns
    starts = np.searchsorted(rows, np.arange(len(keys) + 1))
    given = labels[rows, cols].tolist()
    cols = cols.tolist()

    def image(i: int) -> consensus_pb2.ImageConsensus:
        return consensus_pb2.ImageConsensus(
            key=keys[i], consensus=classes[res.consensus[i]], quality=float(res.quality[i]),
            agreement=float(res.agreement[i]), num_labels=int(res.num_labels[i]),
            labels={annotators[cols[p]]: classes[given[p]] for p in range(starts[i], starts[i + 1])},
            model_label=classes[model_label[i]] if model_label is not None else "", review_rank=rank.get(i, 0))

    st = res.annotators

    def reliability(j: int) -> consensus_pb2.AnnotatorReliability:
        return consensus_pb2.AnnotatorReliability(
            annotator=annotators[j], num_labels=int(st.num_labels[j]),
            agreement_with_consensus=float(np.nan_to_num(st.agreement_with_consensus[j])),
            estimated_accuracy=float(np.nan_to_num(st.estimated_accuracy[j])))

    def pair(k: int) -> consensus_pb2.AmbiguousClassPair:
        p = res.pairs[k]
        return consensus_pb2.AmbiguousClassPair(class_a=classes[p.a], class_b=classes[p.b], score=float(p.score),
                                                suggestion=p.suggestion)

    review = [int(i) for i in res.review]
    head = consensus_pb2.ConsensusResult(krippendorff_alpha=float(np.nan_to_num(res.alpha)), method=res.method)
    return head, [("images", len(keys), image), ("annotators", len(annotators), reliability),
                  ("pairs", len(res.pairs), pair), ("review_queue", len(review), lambda r: keys[review[r]])]


# A server's annotation reads and writes at once (ConsensusServicer): they wait
# on an asyncio semaphore rather than on a thread, since each holds a thread
# of asyncio's default executor (which every collection call shares, 6 on 2
# cores) and its store's lock for up to ~0.5 s, and 8-16 at once stalled
# other clients' calls for 1-3 s (a twelfth probe).
ANNOTATION_IO = 2


async def consensus_events(collection: Collection, request, io_slots: asyncio.Semaphore):
    params = consensus.Params(method=request.method or "dawid_skene", model=not request.no_model,
                              seed=check_seed(request.seed))
    # Counted by SQLite: a hopeless request fails before it waits for a slot.
    async with io_slots:
        summary = await asyncio.to_thread(collection.store.annotation_summary)
    if not summary.annotations:
        raise ValueError(f"collection {collection.name!r} has no annotations; add them with AddAnnotations")
    check_size(collection, summary.images, summary.annotators, summary.classes, summary.annotations)
    if summary.classes < 2:
        raise ValueError(f"need at least 2 classes among the annotations, found {summary.classes}")

    def work(reporter):
        reporter.report("loading annotations", 0, summary.annotations)
        ids, keys, annotators, classes, labels = annotation_matrix(collection, reporter.report)
        if len(classes) < 2:
            raise ValueError(f"need at least 2 classes among the annotations, found {len(classes)}")
        x = None
        if params.model:
            im = collection.all_images()
            where = {int(i): n for n, i in enumerate(im.ids.tolist())}
            if any(int(i) not in where for i in ids):
                raise CollectionError("images were removed during the analysis; retry", "ABORTED")
            x = im.vectors[[where[int(i)] for i in ids]]
        found = consensus.run(labels, len(classes), x, params, class_names=classes, report=reporter.report,
                              without_model="set no_model")
        return consensus_lists(keys, annotators, classes, labels, found.details.result, found.details.model_label)

    async for kind, value in run_job(work):
        if kind == "progress":
            yield consensus_pb2.ConsensusEvent(progress=value)
        else:
            # Built a part at a time, off the event loop (result_parts.lazy_parts).
            async for part in lazy_parts(*value):
                yield consensus_pb2.ConsensusEvent(result=part)
