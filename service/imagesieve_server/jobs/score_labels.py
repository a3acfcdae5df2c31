"""ScoreLabels as a long job: embed the inline images (streaming progress),
then score their labels in a worker thread (``analysis.labels``), then one
result event. Bad requests raise ValueError (the servicer maps it to
INVALID_ARGUMENT); closing the iterator cancels the work."""
from __future__ import annotations

import dataclasses
import math
import time
from typing import AsyncIterator

import numpy as np
from imagesieve.v1 import analysis_pb2, common_pb2

from ..analysis.classifiers import CLASSIFIERS
from ..analysis.labels import METHODS, score_labels
from .runner import run_job

DEFAULT_METHOD = "out_of_fold"
DEFAULT_TOP_FRACTION = 0.01
DEFAULT_FOLDS = 5
DEFAULT_CLASSIFIER = "logreg"
NEIGHBORS = 10
# Blend of the k-NN label distribution into the out-of-fold probabilities: +4.6 points
# precision at 3% on MNIST-5k embeddings (2 seeds), +0.7 with a pixel CNN (bench/labelfix_table.py).
NEIGHBOR_WEIGHT = 0.2
EMBED_CHUNK = 64
# Classifiers that work on embeddings ("cnn" needs pixels of one size).
SERVICE_CLASSIFIERS = tuple(c for c in CLASSIFIERS if c != "cnn")


@dataclasses.dataclass(frozen=True)
class ScoreLabelsParams:
    method: str
    top_fraction: float
    folds: int
    classifier: str
    seed: int


def validate_request(request: analysis_pb2.ScoreLabelsRequest) -> ScoreLabelsParams:
    """Defaults for unset fields; ValueError with a clear message for bad ones."""
    which = request.source.WhichOneof("source")
    if which == "collection":
        raise ValueError("ScoreLabels over a collection is not available yet (collections do not exist "
                         "in this server); send the images inline with their labels")
    if which != "inline":
        raise ValueError("ScoreLabels needs source.inline images with labels")
    method = request.method or DEFAULT_METHOD
    if method not in METHODS:
        raise ValueError(f"unknown method {request.method!r}; choose from {METHODS}")
    top = request.top_fraction or DEFAULT_TOP_FRACTION
    if not (0.0 < top <= 1.0) or math.isnan(top):
        raise ValueError(f"top_fraction must be in (0, 1], got {request.top_fraction}")
    folds = request.folds or DEFAULT_FOLDS
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {request.folds}")
    classifier = request.classifier or DEFAULT_CLASSIFIER
    if classifier not in SERVICE_CLASSIFIERS:
        raise ValueError(f"unknown classifier {request.classifier!r}; choose from {SERVICE_CLASSIFIERS}")
    images = request.source.inline.images
    for i, im in enumerate(images):
        name = im.key or f"#{i}"
        if im.WhichOneof("source") != "data":
            raise ValueError(f"image {name}: ScoreLabels takes encoded bytes in `data` "
                             "(server_path is not supported here)")
        if not im.label:
            raise ValueError(f"image {name}: missing label")
    distinct = len({im.label for im in images})
    if distinct < 2:
        raise ValueError(f"need at least 2 distinct labels to score labels, got {distinct}")
    if method == "out_of_fold" and folds > len(images):
        raise ValueError(f"folds ({folds}) cannot exceed the number of images ({len(images)})")
    return ScoreLabelsParams(method, float(top), int(folds), classifier, int(request.seed))


def _progress(stage: str, done: int, total: int, elapsed: float, eta: float = -1.0,
              message: str = "") -> analysis_pb2.ScoreLabelsEvent:
    return analysis_pb2.ScoreLabelsEvent(progress=common_pb2.JobProgress(
        stage=stage, done=done, total=total, elapsed_s=elapsed, eta_s=eta, message=message))


def build_result(keys: list[str], class_names: list[str], labels: np.ndarray, scores) -> analysis_pb2.ScoreLabelsResult:
    """ScoreLabelsResult from ``analysis.labels.LabelScores``."""
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
    return analysis_pb2.ScoreLabelsResult(
        scores=[one(i) for i in range(len(keys))], suspects=[one(int(i)) for i in scores.suspects],
        noise=noise, estimated_noise_rate=scores.noise_rate)


async def score_labels_events(request: analysis_pb2.ScoreLabelsRequest,
                              engine) -> AsyncIterator[analysis_pb2.ScoreLabelsEvent]:
    """Progress events (stage "embedding", then "fold k/K" or "train on all",
    "neighbours"), then one result event. ``engine``: a started AsyncEmbedder."""
    params = validate_request(request)
    images = list(request.source.inline.images)
    keys = [im.key or str(i) for i, im in enumerate(images)]
    class_names = sorted({im.label for im in images})
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[im.label] for im in images], dtype=np.int64)

    start = time.perf_counter()
    vectors = np.zeros((len(images), engine.embedder.dim), dtype=np.float32)
    failed: list[str] = []
    yield _progress("embedding", 0, len(images), 0.0)
    for lo in range(0, len(images), EMBED_CHUNK):
        chunk = images[lo:lo + EMBED_CHUNK]
        results = await engine.embed_many([im.data for im in chunk])
        for j, r in enumerate(results):
            if r.error is not None or r.vector is None:
                failed.append(f"{keys[lo + j]} ({r.error})")
            else:
                vectors[lo + j] = r.vector
        done = lo + len(chunk)
        elapsed = time.perf_counter() - start
        yield _progress("embedding", done, len(images), elapsed,
                        elapsed / done * (len(images) - done))
    if failed:
        shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise ValueError(f"{len(failed)} image(s) could not be embedded: {shown}")

    def work(reporter):
        return score_labels(vectors, labels, method=params.method, classifier=params.classifier,
                            folds=params.folds, seed=params.seed, top_fraction=params.top_fraction,
                            neighbors=NEIGHBORS, neighbor_weight=NEIGHBOR_WEIGHT, report=reporter.report)

    async for kind, value in run_job(work):
        if kind == "progress":
            yield _progress(value["stage"], value["done"], value["total"], value["elapsed_s"],
                            value["eta_s"], value["message"])
        else:
            yield analysis_pb2.ScoreLabelsEvent(result=build_result(keys, class_names, labels, value))
