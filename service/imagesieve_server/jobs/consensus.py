"""AnalyseConsensus as a long job over a collection: its stored embeddings
and the annotations added with AddAnnotations (``analysis.consensus``)."""
from __future__ import annotations

import asyncio

import numpy as np

from imagesieve.v1 import consensus_pb2

from ..analysis.consensus import analyse_consensus, majority_vote
from ..analysis.consensus.aggregate import AGGREGATORS
from ..analysis.labels.predict import out_of_fold_probabilities
from ..collections import Collection
from .runner import run_job

FOLDS = 5


def annotation_matrix(collection: Collection):
    """(ids (N,), keys, annotators, classes, labels (N, M) int with -1 for
    missing) over the collection's annotated images."""
    rows = collection.store.annotations()
    if not rows:
        raise ValueError(f"collection {collection.name!r} has no annotations; add them with AddAnnotations")
    ids = sorted({r[0] for r in rows})
    annotators = sorted({r[1] for r in rows})
    classes = sorted({r[2] for r in rows})
    pos = {i: n for n, i in enumerate(ids)}
    col = {a: n for n, a in enumerate(annotators)}
    cls = {c: n for n, c in enumerate(classes)}
    labels = np.full((len(ids), len(annotators)), -1, dtype=np.int64)
    for image_id, annotator, label in rows:
        labels[pos[image_id], col[annotator]] = cls[label]
    keys = collection.store.metadata(ids)
    return np.asarray(ids, np.int64), [keys[i][0] for i in ids], annotators, classes, labels


def consensus_message(keys, annotators, classes, labels, res, model_label) -> consensus_pb2.ConsensusResult:
    rank = {int(i): r + 1 for r, i in enumerate(res.review)}
    images = [consensus_pb2.ImageConsensus(
        key=keys[i], consensus=classes[res.consensus[i]], quality=float(res.quality[i]),
        agreement=float(res.agreement[i]), num_labels=int(res.num_labels[i]),
        labels={annotators[j]: classes[labels[i, j]] for j in range(len(annotators)) if labels[i, j] >= 0},
        model_label=classes[model_label[i]] if model_label is not None else "", review_rank=rank.get(i, 0))
        for i in range(len(keys))]
    st = res.annotators
    reliability = [consensus_pb2.AnnotatorReliability(
        annotator=a, num_labels=int(st.num_labels[j]),
        agreement_with_consensus=float(np.nan_to_num(st.agreement_with_consensus[j])),
        estimated_accuracy=float(np.nan_to_num(st.estimated_accuracy[j]))) for j, a in enumerate(annotators)]
    pairs = [consensus_pb2.AmbiguousClassPair(class_a=classes[p.a], class_b=classes[p.b], score=float(p.score),
                                              suggestion=p.suggestion) for p in res.pairs]
    return consensus_pb2.ConsensusResult(images=images, annotators=reliability,
                                         krippendorff_alpha=float(np.nan_to_num(res.alpha)), pairs=pairs,
                                         method=res.method, review_queue=[keys[int(i)] for i in res.review])


async def consensus_events(collection: Collection, request):
    method = request.method or "dawid_skene"
    if method not in AGGREGATORS:
        raise ValueError(f"unknown method {request.method!r}; choose from {AGGREGATORS}")
    ids, keys, annotators, classes, labels = await asyncio.to_thread(annotation_matrix, collection)
    if len(classes) < 2:
        raise ValueError(f"need at least 2 classes among the annotations, found {len(classes)}")
    if method == "crowdlab" and request.no_model:
        raise ValueError("crowdlab needs the model (no_model must be false)")

    def work(reporter):
        probs = None
        if not request.no_model:
            reporter.report("out-of-fold model", 0, 1)
            im = collection.all_images()
            where = {int(i): n for n, i in enumerate(im.ids.tolist())}
            x = im.vectors[[where[int(i)] for i in ids]]
            mv = majority_vote(labels, len(classes)).consensus
            probs = out_of_fold_probabilities(x, mv, "logreg", folds=min(FOLDS, len(mv)), seed=request.seed,
                                              num_classes=len(classes))
        reporter.report("consensus", 0, 1)
        res = analyse_consensus(labels, len(classes), probs, method=method, class_names=classes)
        return consensus_message(keys, annotators, classes, labels, res,
                                 None if probs is None else probs.argmax(axis=1))

    async for kind, value in run_job(work):
        if kind == "progress":
            yield consensus_pb2.ConsensusEvent(progress=value)
        else:
            yield consensus_pb2.ConsensusEvent(result=value)
