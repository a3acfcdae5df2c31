"""FindDuplicates as a long job over a collection's stored vectors (the
duplicates check, ``checks.duplicates``), with progress, then the result
message."""
from __future__ import annotations

import dataclasses

from imagesieve.v1 import duplicates_pb2

from ..analysis.duplicates.find import DuplicateReport
from ..analysis.duplicates.pairs import TooManyPairs
from ..analysis.duplicates.verify import aligned_as
from ..checks import duplicates
from ..collections import Collection, CollectionError
from ..engine import owners
from .result_parts import lazy_parts
from .runner import run_job

# Neighbours an image: a verified search aligns every candidate pair (ms each),
# so the request may not ask for an unbounded number of them.
MAX_KNN_K = 64
# Pairs one answer may hold by default (~1 KB each on their way out: keys,
# evidence, groups; the server's --max-pairs): N near-identical images make
# N^2/2 pairs by raw cosine, and 3,000 blank images took a server to 4.7 GB.
# The other methods find at most knn_k (+ layout) pairs an image.
MAX_PAIRS = 500_000


def report_lists(r: DuplicateReport) -> tuple[duplicates_pb2.FindDuplicatesResult, list]:
    """The answer as ``result_parts.lazy_parts`` builds it: the head (every
    singular field and the warnings) and its pairs and groups, each made when
    its part is, from the report's arrays (no list of 500,000 tuples kept
    while an answer waits to be read)."""
    k, ev = r.keys, r.evidence

    def pair(i: int) -> duplicates_pb2.DuplicatePair:
        p = duplicates_pb2.DuplicatePair(key_a=k[int(r.a[i])], key_b=k[int(r.b[i])], cosine=float(r.cosine[i]),
                                         exact=bool(r.exact[i]), cross_split=bool(r.cross_split[i]),
                                         labels_disagree=bool(r.labels_disagree[i]))
        if ev is not None:
            p.agreement, p.matched_area, p.mirrored = float(ev.agreement[i]), float(ev.matched_area[i]), \
                bool(ev.mirrored[i])
            p.turned_degrees, p.inverted = int(ev.turned[i]), bool(ev.inverted[i])
            p.keypoint_inliers, p.matched_blur_px = int(ev.keypoint_inliers[i]), float(ev.matched_blur_px[i])
        return p

    def group(j: int) -> duplicates_pb2.DuplicateGroup:
        return duplicates_pb2.DuplicateGroup(keys=[k[i] for i in r.groups[j].tolist()],
                                             min_internal_cosine=float(r.group_min_cosine[j]))

    head = duplicates_pb2.FindDuplicatesResult(num_images=len(k), threshold=r.threshold, method=r.method,
                                               threshold_reason=r.threshold_reason, warnings=r.warnings)
    return head, [("pairs", len(r.a), pair), ("groups", len(r.groups), group)]


async def find_duplicates_events(collection: Collection, request, max_pairs: int = MAX_PAIRS):
    """Yield FindDuplicatesEvent messages: progress, then the result;
    ``max_pairs``: the answer's bound (the server's ``--max-pairs``)."""
    if not 0 <= request.knn_k <= MAX_KNN_K:
        raise CollectionError(f"knn_k must be in 0..{MAX_KNN_K}, got {request.knn_k}", "INVALID_ARGUMENT")
    try:
        params = duplicates.Params(threshold=request.threshold, verify=not request.raw_cosine,
                                   knn_k=request.knn_k, grouping=request.grouping or "bounded",
                                   approximate=request.approximate, max_pairs=max_pairs)
    except ValueError as e:
        raise CollectionError(str(e), "INVALID_ARGUMENT") from None

    owner = owners.current()

    def work(reporter):
        def report(stage, done, total=0, message=""):
            # A collection dropped mid-job (a tenth probe: a verified search ran 43 s more
            # and answered OK for a name that then held another collection).
            if collection.closing:
                raise CollectionError(f"collection {collection.name!r} was dropped or closed during the search",
                                      "ABORTED")
            reporter.report(stage, done, total, message)

        report("loading vectors", 0, 0)
        # A page at a time: checks of the collection go on, and a cancel stops the read.
        im = collection.all_images(with_signatures=params.verify, report=report)
        p = params
        if not p.threshold and im.signatures is None:      # raw cosine: the collection's threshold
            p = dataclasses.replace(p, threshold=collection.threshold_asked)
        try:
            # A server without workers aligns in the job's thread (--verify-workers 0 or 1), as its
            # caller's (the workers it shares go to the client that has used them least).
            found = aligned_as(owner, duplicates.run, im.vectors, im.keys, im.labels, im.splits, im.sha256,
                               im.signatures, p, report=report, alignment_pool=collection.alignment_pool,
                               store=collection.path,
                               processes=False if collection.alignment_pool is None else None).details.report
        except TooManyPairs as e:
            raise CollectionError(f"{e}: raise the threshold, or ask for approximate (at most knn_k pairs an "
                                  "image) or verified pairs", "FAILED_PRECONDITION") from None
        return report_lists(found)        # on the job's thread

    async for kind, value in run_job(work):
        if kind == "progress":
            yield duplicates_pb2.FindDuplicatesEvent(progress=value)
        else:
            # Built a part at a time, off the event loop (result_parts.lazy_parts).
            async for part in lazy_parts(*value):
                yield duplicates_pb2.FindDuplicatesEvent(result=part)
