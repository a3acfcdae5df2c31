"""SampleSizeSweep as a long job: load the labelled embeddings (a collection,
or inline images embedded with streaming progress), run the sweep, fits and bootstrap in a worker thread
(the sample-size check, ``checks.sample_size``), then one result event with the plot. Bad
requests raise ValueError (map to INVALID_ARGUMENT); closing the iterator
cancels the work between fits."""
from __future__ import annotations

import dataclasses
import math
from typing import AsyncIterator

import numpy as np
from imagesieve.v1 import analysis_pb2

from ..analysis.classifiers import check_embedding_classifier
from ..analysis.sample_size.run import DEFAULT_BOOTSTRAP, SampleSizeReport
from ..analysis.sample_size.sweep import DEFAULT_FRACTIONS, DEFAULT_REPEATS, DEFAULT_TEST_FRACTION
from ..checks import sample_size
from .labelled_vectors import (LabelledVectorsLoad, check_inline_count, check_inline_images, check_labels,
                               check_seed, skipped_note)
from .result_parts import result_parts
from .runner import JobSlot, run_job

MAX_REPEATS = 100
MAX_AT_SIZES = 16
MAX_FRACTIONS = 32          # subset sizes a sweep trains at (each x repeats fits; a learning curve needs ~6)
MAX_AT_IMAGES = 10**12


@dataclasses.dataclass(frozen=True)
class SampleSizeParams:
    fractions: tuple[float, ...]
    repeats: int
    test_fraction: float
    target: float | None
    at_sizes: tuple[int, ...]
    classifier: str | None
    seed: int


def validate_request(request: analysis_pb2.SampleSizeRequest) -> SampleSizeParams:
    """Defaults for unset fields; ValueError with a clear message for bad
    ones. Inline images: their number first (O(1)), then each image and the
    labels, all before any embedding."""
    if request.source.WhichOneof("source") == "inline":
        check_inline_count(request.source.inline.images, "SampleSizeSweep")
    fractions = tuple(request.fractions) or DEFAULT_FRACTIONS
    if (not 2 <= len(fractions) <= MAX_FRACTIONS or any(not (0 < f <= 1) or math.isnan(f) for f in fractions)
            or any(b <= a for a, b in zip(fractions, fractions[1:]))):
        raise ValueError(f"fractions must be 2 to {MAX_FRACTIONS} values in (0, 1], strictly increasing; got "
                         f"{list(fractions)[:MAX_FRACTIONS + 1]}")
    repeats = request.repeats or DEFAULT_REPEATS
    if not 1 <= repeats <= MAX_REPEATS:
        raise ValueError(f"repeats must be in 1..{MAX_REPEATS}, got {request.repeats}")
    test_fraction = request.test_fraction or DEFAULT_TEST_FRACTION
    if not 0 < test_fraction < 1 or math.isnan(test_fraction):
        raise ValueError(f"test_fraction must lie in (0, 1), got {request.test_fraction}")
    target = request.target_accuracy or None     # 0 = not asked
    if target is not None and (not 0 < target < 1 or math.isnan(target)):
        raise ValueError(f"target_accuracy must lie in (0, 1) (e.g. 0.95), got {request.target_accuracy}")
    at_sizes = tuple(int(n) for n in request.at_sizes)
    if len(at_sizes) > MAX_AT_SIZES or any(not 1 <= n <= MAX_AT_IMAGES for n in at_sizes):
        raise ValueError(f"at_sizes must be at most {MAX_AT_SIZES} sizes in 1..{MAX_AT_IMAGES:.0e} images; "
                         f"got {list(at_sizes)[:MAX_AT_SIZES + 1]}")
    # "cnn" is not offered: it needs pixels, the service holds embeddings. Unset: the check's default
    # (checks.sample_size: the same classifier, and fallback for large sets, as the audit and samplesize).
    classifier = check_embedding_classifier(request.classifier) if request.classifier else None
    params = SampleSizeParams(tuple(float(f) for f in fractions), int(repeats), float(test_fraction),
                              target, at_sizes, classifier, check_seed(request.seed))
    if request.source.WhichOneof("source") == "inline":   # fail before embedding
        images = request.source.inline.images
        check_inline_images(images, "SampleSizeSweep")
        check_data([im.label for im in images], [im.split.lower() for im in images], params)
    return params


def check_data(labels: list[str], splits: list[str], params: SampleSizeParams) -> None:
    """A hopeless request fails here, not after minutes of fitting."""
    check_labels(labels)
    n_given_test = sum(s == "test" for s in splits)
    n = len(labels)
    if n_given_test == n:
        raise ValueError(f"every one of the {n} images is in the test split: none is left to train on (leave "
                         "the split empty to hold out test_fraction, or mark the training images)")
    n_train = n - n_given_test if n_given_test else n - round(params.test_fraction * n)
    train_classes = len({l for l, s in zip(labels, splits) if not n_given_test or s != "test"})
    if round(params.fractions[0] * n_train) < train_classes:
        raise ValueError(f"the smallest subset ({params.fractions[0]:.0%} of {n_train} training images) has "
                         f"fewer images than classes ({train_classes}); use larger fractions or more images")




def build_result(rep: SampleSizeReport) -> analysis_pb2.SampleSizeResult:
    """SampleSizeResult from a ``SampleSizeReport``; images_needed and its
    bounds are 0 where infinite (target above the ceiling) or not asked,
    `answer` says why."""
    a = rep.analysis
    finite = lambda v: float(v) if math.isfinite(v) else 0.0  # noqa: E731
    points = [analysis_pb2.SweepPoint(num_images=int(n), mean_accuracy=float(m), std_accuracy=float(s),
                                      per_class_accuracy=rep.per_class(k))
              for k, (n, m, s) in enumerate(zip(a.sizes, a.means, a.stds))]
    fits = [analysis_pb2.CurveFit(name=f.family, params=list(f.params), ceiling=f.ceiling,
                                  holdout_error=a.holdout_errors.get(f.family, math.inf))
            for f in a.fits.values()]
    answer = a.answer + f" Test split: {rep.sweep.test_source}; classifier {rep.sweep.classifier}."
    return analysis_pb2.SampleSizeResult(
        points=points, fits=fits, chosen_fit=a.chosen, target_accuracy=a.target or 0.0,
        images_needed=finite(a.images_needed), images_needed_low=finite(a.images_needed_low),
        images_needed_high=finite(a.images_needed_high), answer=answer,
        plot_png=rep.plot_png, plot_svg=rep.plot_svg,
        accuracy_at=[analysis_pb2.AccuracyAt(num_images=int(n), accuracy=float(v), low=finite(lo), high=finite(hi))
                     for n, v, lo, hi in zip(a.at_sizes, a.at_accuracy, a.at_low, a.at_high)])


async def sample_size_events(request: analysis_pb2.SampleSizeRequest, engine, collections=None,
                             reader=None) -> AsyncIterator[analysis_pb2.SampleSizeEvent]:
    """Progress events (stage "embedding" or "loading collection", then "fit"
    per trained classifier, "bootstrap", "plot"), then one result event.
    ``engine``: a started AsyncEmbedder; ``collections``: a CollectionManager;
    ``reader``: the server's ImageReader for inline images (None: bytes only).
    Images whose split is "test" form the test split; when none is,
    ``test_fraction`` is held out (stated in the answer)."""
    params = validate_request(request)
    with await JobSlot.wait() as slot:   # one analysis slot from the first embedding to the end (JobsBusy)
        load = LabelledVectorsLoad(analysis_pb2.SampleSizeEvent, request.source, engine, collections, "SampleSizeSweep", reader)
        async for event in load:
            yield event
        data = load.data
        check_data(data.labels, data.splits, params)
        vectors = data.vectors
        labels = np.array(data.labels)
        is_test = np.array([s == "test" for s in data.splits], dtype=bool)

        def work(reporter):
            found = sample_size.run(vectors, list(labels), ["test" if t else "" for t in is_test], sample_size.Params(
                target=params.target, at=params.at_sizes or None, classifier=params.classifier,
                fractions=params.fractions, repeats=params.repeats, test_fraction=params.test_fraction,
                bootstrap=DEFAULT_BOOTSTRAP, seed=params.seed), report=reporter.report)
            if found.details is None:
                raise ValueError("; ".join(found.notes))
            return found.details

        async for kind, value in run_job(work, slot):
            if kind == "progress":
                yield analysis_pb2.SampleSizeEvent(progress=value)
            else:
                result = build_result(value)
                result.skipped.extend(data.skipped)
                result.answer = " ".join([result.answer, *(n + "." for n in skipped_note(data.skipped))])
                for part in result_parts(result):
                    yield analysis_pb2.SampleSizeEvent(result=part)
