"""ScoreLabels as a long job: load the labelled embeddings (a collection, or
inline images embedded with streaming progress), then run the label check
(``checks.label_issues``) and the label conflicts (``checks.label_conflicts``)
in a worker thread, then one result event. Bad requests raise ValueError (the servicer maps it to
INVALID_ARGUMENT); closing the iterator cancels the work."""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
from typing import AsyncIterator

import numpy as np
from imagesieve.v1 import analysis_pb2

from ..analysis.labels import count
from ..analysis.labels.predict import check_folds
from ..analysis.duplicates.verify import aligned_as
from ..checks import duplicates, label_conflicts, label_issues
from ..engine import owners
from ..engine.signature import thumbnails
from .labelled_vectors import (LabelledVectors, LabelledVectorsLoad, check_inline_count, check_inline_images,
                               check_labels, check_seed, skipped_note)
from .result_parts import lazy_parts
from .runner import JobSlot, run_job

NEIGHBORS = 10


def validate_request(request: analysis_pb2.ScoreLabelsRequest) -> label_issues.Params:
    """The label check's Params (its defaults for unset fields); ValueError
    with a clear message for bad ones. Inline images: their number first
    (O(1)), then each image, the labels and their folds, all before any
    embedding (and the folds again on the data, ``check_data``: images that
    fail to embed are left out)."""
    if request.source.WhichOneof("source") == "inline":
        check_inline_count(request.source.inline.images, "ScoreLabels")
    top = request.top_fraction or label_issues.Params.top_fraction
    if not (0.0 < top <= 1.0) or math.isnan(top):
        raise ValueError(f"top_fraction must be in (0, 1], got {request.top_fraction}")
    # "cnn" alone is not offered; `pixels` adds one on the stored thumbnails to the classifier.
    params = label_issues.Params(method=request.method[:64] or label_issues.Params.method,
                                 classifier=request.classifier[:64] or label_issues.Params.classifier,
                                 folds=request.folds or label_issues.Params.folds, top_fraction=float(top),
                                 neighbors=NEIGHBORS, seed=check_seed(request.seed), pixels=request.pixels)
    if request.source.WhichOneof("source") == "inline":   # fail before embedding
        images = request.source.inline.images
        check_inline_images(images, "ScoreLabels")
        labels = [im.label for im in images]
        check_labels(labels)
        # With every image embedded or fewer: a probe's 400 one-image classes were refused
        # only after 8 s of embedding.
        check_label_folds(labels, params)
    return params


def check_label_folds(labels: list[str], params: label_issues.Params) -> None:
    """out_of_fold: the folds this request would deal must each hold an image
    and train on 2 classes (``check_folds``; the same folds the check deals)."""
    if params.method == "out_of_fold":
        ids = label_issues.class_indices(labels)[1]
        check_folds(ids, label_issues.folds_for(ids, params.folds), params.seed)


def result_lists(keys: list[str], class_names: list[str], labels: np.ndarray, scores, conflicting: np.ndarray
                 ) -> tuple[analysis_pb2.ScoreLabelsResult, list]:
    """The ScoreLabelsResult from ``analysis.labels.LabelScores`` and the
    (K, 2) positions of the copies with different labels, as
    ``result_parts.lazy_parts`` builds it: the head (the class-level fields)
    and its lists (a score for every image, the suspects, the conflicting
    copies), each item made when its part is (6,000 images under 1 KB keys
    answered 18.8 MB, built whole on the event loop, and a client with
    gRPC's default 4 MiB receive limit could not read it: a probe)."""
    ambiguous = scores.in_ambiguous_pair(labels)
    suspects = np.asarray(scores.suspects, np.int64)
    pairs = np.asarray(conflicting, dtype=np.int64).reshape(-1, 2)

    def one(i: int) -> analysis_pb2.LabelScore:
        i = int(i)
        agree = scores.neighbor_agreement[i]
        return analysis_pb2.LabelScore(
            key=keys[i], given_label=class_names[labels[i]],
            suggested_label=class_names[scores.suggested[i]],
            suggested_probability=float(scores.suggested_probability[i]), score=float(scores.scores[i]),
            neighbor_agreement=float(agree) if np.isfinite(agree) else 0.0, in_ambiguous_pair=bool(ambiguous[i]))

    def conflict(j: int) -> analysis_pb2.LabelConflict:
        a, b = int(pairs[j, 0]), int(pairs[j, 1])
        return analysis_pb2.LabelConflict(key_a=keys[a], key_b=keys[b], label_a=class_names[labels[a]],
                                          label_b=class_names[labels[b]])

    noise = [analysis_pb2.ClassPairNoise(given_label=class_names[g], true_label=class_names[t], count=round(c))
             for g, t, c in count.noise_pairs(scores.joint, min_count=0.5)]
    head = analysis_pb2.ScoreLabelsResult(
        noise=noise, estimated_noise_rate=scores.noise_rate,
        estimated_wrong_rate=scores.noise_split.wrong_rate, estimated_ambiguous_rate=scores.noise_split.ambiguous_rate,
        ambiguous_pairs=[analysis_pb2.ConfusedClassPair(**d) for d in scores.noise_split.named_pairs(class_names)])
    return head, [("scores", len(keys), one), ("suspects", len(suspects), lambda j: one(suspects[j])),
                  ("conflicting_duplicates", len(pairs), conflict)]


def conflicting_duplicates(data: LabelledVectors, collection, report=None, alignment_pool=None,
                           processes: bool | None = None) -> np.ndarray:
    """(K, 2) positions of the copies of one picture with different labels:
    the duplicates check on these images with the settings FindDuplicates
    uses (verified when every image has its layout signature, else the
    collection's raw-cosine threshold), refined by ``checks.label_conflicts``
    (one definition, whichever RPC asks). ``alignment_pool``, ``processes``:
    where stage 2 aligns (see ``checks.duplicates.run``)."""
    raw = data.signatures is None
    params = duplicates.Params(threshold=collection.threshold_asked if raw and collection is not None else 0.0,
                               verify=not raw)
    sha = data.sha256 or [""] * len(data.keys)
    # Verifying a collection's candidates is most of a ScoreLabels job (~1
    # minute for 1,000 digits on 2 cores): kept for the same images.
    key = None if collection is None or not data.sha256 else _digest("conflicts", params, data)
    if key is not None and (kept := collection.derived(key)) is not None:
        return kept.copy()
    found = duplicates.run(data.vectors, data.keys, data.labels, data.splits, sha, data.signatures, params,
                           report=report, alignment_pool=alignment_pool, processes=processes,
                           store=None if collection is None else collection.path)
    pairs = label_conflicts.conflicting_pairs(found)
    if key is not None:
        collection.keep_derived(key, pairs.copy())
    return pairs


def _digest(what: str, params, data: LabelledVectors) -> bytes:
    """What a result was computed from: its parameters and, per image, key,
    label, split and content hash (the collection's model embeds the same
    bytes the same way)."""
    # JSON: every string quoted and escaped, so no two inputs give one text.
    text = json.dumps([what, repr(params), data.keys, data.labels, data.splits, data.sha256])
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=32).digest()


def check_data(data: LabelledVectors, params: label_issues.Params) -> None:
    check_labels(data.labels)
    check_label_folds(data.labels, params)


async def score_labels_events(request: analysis_pb2.ScoreLabelsRequest, engine, collections=None,
                              reader=None) -> AsyncIterator[analysis_pb2.ScoreLabelsEvent]:
    """Progress events (stage "embedding" or "loading collection", then
    "folds" (done k of K) or "train on all", "neighbours"), then one result event.
    ``engine``: a started AsyncEmbedder; ``collections``: a CollectionManager;
    ``reader``: the server's ImageReader for inline images (None: bytes only)."""
    params = validate_request(request)
    with await JobSlot.wait() as slot:   # one analysis slot from the first embedding to the end (JobsBusy)
        # Signatures and hashes always: the copies with different labels are the duplicates check's.
        load = LabelledVectorsLoad(analysis_pb2.ScoreLabelsEvent, request.source, engine, collections, "ScoreLabels",
                                   reader, with_signatures=True)
        async for event in load:
            yield event
        data = load.data
        await asyncio.to_thread(check_data, data, params)      # O(N log N): off the event loop
        pixels = None
        if params.pixels and data.signatures is not None:
            pixels = thumbnails(data.signatures)
        source = request.source
        collection = collections.get(source.collection) if source.WhichOneof("source") == "collection" else None

        # The server's alignment workers, shared by time between clients, else the job's own thread.
        pool = None if collections is None else collections.alignment_pool
        owner = owners.current()

        def work(reporter):
            found = label_issues.run(data.vectors, data.labels, params, pixels=pixels, report=reporter.report,
                                     check=reporter.check)
            return found, aligned_as(owner, conflicting_duplicates, data, collection, reporter.report, pool,
                                     False if pool is None and collections is not None else None)

        async for kind, value in run_job(work, slot):
            if kind == "progress":
                yield analysis_pb2.ScoreLabelsEvent(progress=value)
            else:
                found, conflicts = value
                scored = found.details
                head, lists = await asyncio.to_thread(result_lists, data.keys, scored.class_names, scored.label_ids,
                                                      scored.scores, conflicts)
                head.note = "; ".join(found.notes + skipped_note(data.skipped))
                lists.append(("skipped", len(data.skipped), data.skipped.__getitem__))
                # Built a part at a time, off the event loop (result_parts.lazy_parts).
                async for part in lazy_parts(head, lists):
                    yield analysis_pb2.ScoreLabelsEvent(result=part)
