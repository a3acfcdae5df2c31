"""ScoreLabels as a long job: load the labelled embeddings (a collection, or
inline images embedded with streaming progress), then score their labels in a worker thread (``analysis.labels``), then one
result event. Bad requests raise ValueError (the servicer maps it to
INVALID_ARGUMENT); closing the iterator cancels the work."""
from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import AsyncIterator

import numpy as np
from imagesieve.v1 import analysis_pb2

from ..analysis.classifiers import check_embedding_classifier, pixels_and_embeddings, pixels_unused_because
from ..analysis.labels import DEFAULT_CLASSIFIER, DEFAULT_METHOD, METHODS, score_labels
from ..analysis.labels.predict import check_folds
from ..checks import duplicates, label_conflicts
from ..engine.signature import thumbnails
from .labelled_vectors import (LabelledVectors, LabelledVectorsLoad, check_inline_count, check_inline_images,
                               check_labels, check_seed)
from .result_parts import result_parts
from .runner import JobSlot, run_job

DEFAULT_TOP_FRACTION = 0.01
DEFAULT_FOLDS = 5
NEIGHBORS = 10


@dataclasses.dataclass(frozen=True)
class ScoreLabelsParams:
    method: str
    top_fraction: float
    folds: int
    classifier: str
    seed: int
    pixels: bool = False


def validate_request(request: analysis_pb2.ScoreLabelsRequest) -> ScoreLabelsParams:
    """Defaults for unset fields; ValueError with a clear message for bad
    ones. Inline images: their number first (O(1)), then each image and the
    labels, all before any embedding (the folds are checked on the data,
    ``check_data``)."""
    if request.source.WhichOneof("source") == "inline":
        check_inline_count(request.source.inline.images, "ScoreLabels")
    method = request.method or DEFAULT_METHOD
    if method not in METHODS:
        raise ValueError(f"unknown method {request.method[:64]!r}; choose from {METHODS}")
    top = request.top_fraction or DEFAULT_TOP_FRACTION
    if not (0.0 < top <= 1.0) or math.isnan(top):
        raise ValueError(f"top_fraction must be in (0, 1], got {request.top_fraction}")
    folds = request.folds or DEFAULT_FOLDS
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {request.folds}")
    # "cnn" alone is not offered; `pixels` adds one on the stored thumbnails to the classifier.
    classifier = check_embedding_classifier(request.classifier or DEFAULT_CLASSIFIER)
    params = ScoreLabelsParams(method, float(top), int(folds), classifier, check_seed(request.seed), request.pixels)
    if request.source.WhichOneof("source") == "inline":   # fail before embedding
        images = request.source.inline.images
        check_inline_images(images, "ScoreLabels")
        check_labels([im.label for im in images])
    return params


def class_indices(labels: list[str]) -> tuple[list[str], np.ndarray]:
    """(sorted class names, (N,) int64 class index per label)."""
    class_names = sorted(set(labels))
    index = {name: i for i, name in enumerate(class_names)}
    return class_names, np.array([index[label] for label in labels], dtype=np.int64)


def check_label_folds(labels: list[str], params: ScoreLabelsParams) -> None:
    """out_of_fold: the folds this request would deal must each hold an image
    and train on 2 classes (``check_folds``; the same folds the job deals)."""
    if params.method == "out_of_fold":
        check_folds(class_indices(labels)[1], params.folds, params.seed)


def build_result(keys: list[str], class_names: list[str], labels: np.ndarray, scores,
                 conflicting: np.ndarray) -> analysis_pb2.ScoreLabelsResult:
    """ScoreLabelsResult from ``analysis.labels.LabelScores`` and the
    (K, 2) positions of the copies with different labels."""
    def one(i: int) -> analysis_pb2.LabelScore:
        agree = scores.neighbor_agreement[i]
        return analysis_pb2.LabelScore(
            key=keys[i], given_label=class_names[labels[i]],
            suggested_label=class_names[scores.suggested[i]],
            suggested_probability=float(scores.suggested_probability[i]), score=float(scores.scores[i]),
            neighbor_agreement=float(agree) if np.isfinite(agree) else 0.0)

    noise = [analysis_pb2.ClassPairNoise(given_label=class_names[g], true_label=class_names[t],
                                         count=int(round(scores.joint[g, t])))
             for g in range(len(class_names)) for t in range(len(class_names))
             if g != t and round(scores.joint[g, t]) > 0]
    noise.sort(key=lambda p: -p.count)
    conflicts = [analysis_pb2.LabelConflict(key_a=keys[a], key_b=keys[b], label_a=class_names[labels[a]],
                                            label_b=class_names[labels[b]])
                 for a, b in np.asarray(conflicting, dtype=np.int64).reshape(-1, 2).tolist()]
    return analysis_pb2.ScoreLabelsResult(
        scores=[one(i) for i in range(len(keys))], suspects=[one(int(i)) for i in scores.suspects],
        noise=noise, estimated_noise_rate=scores.noise_rate, conflicting_duplicates=conflicts)


def pixel_classifier(params: ScoreLabelsParams, data: LabelledVectors):
    """(what to score, ``classifier(check)``, a note): the embeddings and the
    classifier's name; with ``pixels``, row indices and a pixel CNN averaged
    with it (``check()`` runs after each of its mini-batches and raises to
    cancel), when torch is here and every image has its thumbnail; else the
    embeddings and a note saying why not."""
    named = lambda check: params.classifier  # noqa: E731
    if not params.pixels:
        return data.vectors, named, ""
    why = pixels_unused_because(len(data.vectors))
    if why:
        return data.vectors, named, f"pixels not used: {why}; scored on embeddings alone"
    if data.signatures is None:
        return (data.vectors, named, "pixels not used: some images were stored without layout "
                "thumbnails (added by an older version); scored on embeddings alone")
    pixels, vectors, name = thumbnails(data.signatures), data.vectors, params.classifier
    return (np.arange(len(vectors))[:, None], lambda check: pixels_and_embeddings(pixels, vectors, name, check=check),
            f"scored by a small CNN on the pixels (48x48 gray thumbnails) averaged with {name} on the embeddings")


def conflicting_duplicates(data: LabelledVectors, collection, report=None) -> np.ndarray:
    """(K, 2) positions of the copies of one picture with different labels:
    the duplicates check on these images with the settings FindDuplicates
    uses (verified when every image has its layout signature, else the
    collection's raw-cosine threshold), refined by ``checks.label_conflicts``
    (one definition, whichever RPC asks)."""
    raw = data.signatures is None
    params = duplicates.Params(threshold=collection.threshold if raw and collection is not None else 0.0,
                               verify=not raw)
    sha = data.sha256 or [""] * len(data.keys)
    found = duplicates.run(data.vectors, data.keys, data.labels, data.splits, sha, data.signatures, params,
                           report=report, alignment_pool=None if collection is None else collection.alignment_pool)
    return label_conflicts.conflicting_pairs(found)


def check_data(data: LabelledVectors, params: ScoreLabelsParams) -> None:
    check_labels(data.labels)
    check_label_folds(data.labels, params)


async def score_labels_events(request: analysis_pb2.ScoreLabelsRequest, engine, collections=None,
                              reader=None) -> AsyncIterator[analysis_pb2.ScoreLabelsEvent]:
    """Progress events (stage "embedding" or "loading collection", then
    "fold k/K" or "train on all", "neighbours"), then one result event.
    ``engine``: a started AsyncEmbedder; ``collections``: a CollectionManager;
    ``reader``: the server's ImageReader for inline images (None: bytes only)."""
    params = validate_request(request)
    with JobSlot() as slot:        # one analysis slot from the first embedding to the end (JobsBusy)
        # Signatures and hashes always: the copies with different labels are the duplicates check's.
        load = LabelledVectorsLoad(analysis_pb2.ScoreLabelsEvent, request.source, engine, collections, "ScoreLabels",
                                   reader, with_signatures=True)
        async for event in load:
            yield event
        data = load.data
        await asyncio.to_thread(check_data, data, params)      # O(N log N): off the event loop
        class_names, labels = class_indices(data.labels)
        vectors = data.vectors

        scored, classifier, note = pixel_classifier(params, data)

        source = request.source
        collection = collections.get(source.collection) if source.WhichOneof("source") == "collection" else None

        def work(reporter):
            scores = score_labels(scored, labels, method=params.method, classifier=classifier(reporter.check),
                                  folds=params.folds, seed=params.seed, top_fraction=params.top_fraction,
                                  neighbors=NEIGHBORS, neighbor_vectors=vectors, report=reporter.report)
            return scores, conflicting_duplicates(data, collection, reporter.report)

        async for kind, value in run_job(work, slot):
            if kind == "progress":
                yield analysis_pb2.ScoreLabelsEvent(progress=value)
            else:
                result = build_result(data.keys, class_names, labels, *value)
                result.note = note
                for part in result_parts(result):
                    yield analysis_pb2.ScoreLabelsEvent(result=part)
