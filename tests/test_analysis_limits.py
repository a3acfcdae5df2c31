"""What one call may ask of the analyses and collections, against a real
server on loopback with the real model (raw stubs). Each test reproduces a
finding of an adversarial review: inline images with no limit (3 GB, then
INTERNAL), annotations with no limit (a 3 GB dense matrix built outside the
job slot), RemoveImages with 10M keys, scikit-learn's and numpy's words
for bad folds and seeds, an unknown index kind taken as "auto", and a
10,000-character name echoed whole."""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

import grpc
import pytest
from sklearn.datasets import load_digits

from conftest import digit_png
from imagesieve.local_server import LocalServer
from imagesieve.v1 import (analysis_pb2, analysis_pb2_grpc, collections_pb2, collections_pb2_grpc, common_pb2,
                           consensus_pb2, consensus_pb2_grpc)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
MB = 1 << 20


def stubs_for(address: str):
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 * MB),
                                                      ("grpc.max_receive_message_length", 64 * MB)])
    return channel, SimpleNamespace(analysis=analysis_pb2_grpc.AnalysisServiceStub(channel),
                                    collections=collections_pb2_grpc.CollectionServiceStub(channel),
                                    consensus=consensus_pb2_grpc.ConsensusServiceStub(channel))


@pytest.fixture(scope="module")
def stubs(server):
    channel, s = stubs_for(server.address)
    with channel:
        yield s


def inline(images) -> analysis_pb2.LabelledSource:
    return analysis_pb2.LabelledSource(inline=analysis_pb2.InlineImages(images=images))


def tiny(n: int) -> list[common_pb2.Image]:
    """n one-byte "images" labelled a / b (none decodes)."""
    return [common_pb2.Image(key=f"t{i}", data=b"x", label="ab"[i % 2]) for i in range(n)]


def photo_images(photos, n: int, labels=None) -> list[common_pb2.Image]:
    labels = labels or ["ab"[i % 2] for i in range(n)]
    return [common_pb2.Image(key=f"p{i}", data=photos[i][0], label=labels[i]) for i in range(n)]


def drain(call) -> tuple[list, grpc.RpcError | None]:
    """(events, the error that ended the stream or None)."""
    events = []
    try:
        for event in call:
            events.append(event)
    except grpc.RpcError as e:
        return events, e
    return events, None


def add_images(stubs, name: str, pngs: list[bytes], keys: list[str]) -> None:
    stubs.collections.CreateCollection(collections_pb2.CreateCollectionRequest(name=name), timeout=30)
    requests = [collections_pb2.AddImagesRequest(
        collection=name, images=[common_pb2.Image(key=k, data=d) for k, d in zip(keys[s:s + 64], pngs[s:s + 64])])
        for s in range(0, len(keys), 64)]
    answers = list(stubs.collections.AddImages(iter(requests), timeout=300))
    assert all(r.added for a in answers for r in a.results)


# -- inline images (ScoreLabels, SampleSizeSweep) ----------------------------

def test_inline_images_above_the_limit_are_refused_before_any_work(stubs):
    """20,001 one-byte images: refused at once, naming the limit and the way
    round it, before one is embedded (7.5M of them took 3 GB and ended INTERNAL)."""
    over = inline(tiny(20_001))
    for call, request in ((stubs.analysis.ScoreLabels, analysis_pb2.ScoreLabelsRequest(source=over, folds=2)),
                          (stubs.analysis.SampleSizeSweep,
                           analysis_pb2.SampleSizeRequest(source=over, target_accuracy=0.9))):
        start = time.perf_counter()
        events, error = drain(call(request, timeout=120))
        assert error is not None and error.code() == INVALID, error
        assert "20001 inline images" in error.details() and "limit of 20000" in error.details()
        assert "collection" in error.details()
        assert events == []                               # nothing embedded, not even started
        assert time.perf_counter() - start < 10


def test_inline_images_with_one_key_twice_are_refused(stubs):
    """The answers name images by key: two inline images with one key could
    not be told apart (a twelfth probe: ScoreLabels accepted them)."""
    images = tiny(6)
    images[4].key = images[1].key
    for call, request in ((stubs.analysis.ScoreLabels, analysis_pb2.ScoreLabelsRequest(source=inline(images),
                                                                                       folds=2)),
                          (stubs.analysis.SampleSizeSweep,
                           analysis_pb2.SampleSizeRequest(source=inline(images), target_accuracy=0.9))):
        events, error = drain(call(request, timeout=60))
        assert error is not None and error.code() == INVALID, error
        assert "t1" in error.details() and "keys must be unique" in error.details()
        assert events == []


def test_failing_inline_images_stop_the_job_after_the_first_chunk(stubs):
    """2,000 images that all fail: the job stops after the first chunk of 64
    and names a few (2M failing items ran 40 s of CPU)."""
    events, error = drain(stubs.analysis.ScoreLabels(
        analysis_pb2.ScoreLabelsRequest(source=inline(tiny(2000)), folds=2), timeout=120))
    assert error is not None and error.code() == INVALID, error
    details = error.details()
    assert details.startswith("64 image(s) could not be embedded: t0 ("), details
    assert "t4 (" in details and "t5 (" not in details and "and 59 more" in details
    assert "stopped after the first 64 of 2000 images" in details
    assert [e.progress.done for e in events] == [0]          # no chunk after the failing one


@pytest.fixture(scope="module")
def one_job_server(manifest_path, tmp_path_factory):
    """A server that runs one analysis job at a time (--max-jobs 1), refusing
    another at once (--job-wait-s 0) rather than letting it wait in line: the
    tests here see who holds the slot by who is refused."""
    root = tmp_path_factory.mktemp("one-job-root")
    with LocalServer(["--max-jobs", "1", "--job-wait-s", "0", "--allow-root", str(root), "--max-batch-size", "16",
                      "--max-delay-ms", "5"], model=str(manifest_path)) as srv:
        srv.allowed_root = root
        yield srv


def _release_fifo(fifo) -> None:
    """Let a reader blocked opening ``fifo`` go (it reads end of file)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:          # nobody is waiting on it (any more)
        pass


def test_inline_embedding_holds_the_jobs_one_slot(one_job_server, photos):
    """While a job embeds its inline images it holds its analysis slot: with
    --max-jobs 1 a second job is refused (RESOURCE_EXHAUSTED), not let in to
    embed alongside. Cancelled, the slot comes back; and a whole job (its
    embedding, then its fits) needs that one slot only."""
    fifo = one_job_server.allowed_root / "slow.jpg"
    os.mkfifo(fifo)                     # opening it blocks: the first job stays in its embedding
    channel, stubs = stubs_for(one_job_server.address)
    quick = analysis_pb2.ScoreLabelsRequest(source=inline(photo_images(photos, 12)), folds=2)
    slow = analysis_pb2.ScoreLabelsRequest(source=inline(
        [common_pb2.Image(key="slow", server_path=str(fifo), label="a")] + photo_images(photos, 4)), folds=2)
    with channel:
        first = stubs.analysis.ScoreLabels(slow, timeout=60)
        try:
            started = next(first)
            assert started.progress.stage == "embedding" and started.progress.done == 0
            for call, request in ((stubs.analysis.ScoreLabels, quick),
                                  (stubs.analysis.SampleSizeSweep, analysis_pb2.SampleSizeRequest(
                                      source=quick.source, target_accuracy=0.9, fractions=[0.5, 1.0]))):
                events, error = drain(call(request, timeout=60))
                assert error is not None and error.code() == EXHAUSTED, (error, events[-1:])
                assert "analysis job slots are in use" in error.details() and events == []
        finally:
            first.cancel()
            _release_fifo(fifo)
        deadline = time.monotonic() + 30
        while True:                      # the cancelled job's slot comes back
            events, error = drain(stubs.analysis.ScoreLabels(quick, timeout=60))
            if error is None or error.code() != EXHAUSTED or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert error is None, error
        result = events[-1].result
        assert len(result.scores) == 12
        assert {e.progress.stage for e in events[:-1]} >= {"embedding", "folds"}


def test_the_light_client_asks_a_refused_job_again(one_job_server, photos):
    """A job refused before its first event (every slot in use, the server
    refusing at once) did no work: the light client asks again for ~8 s
    (gRPC's own retries stop once the call's headers are sent, and the
    refusal comes after them: before, it asked once)."""
    import threading

    from imagesieve import Client
    fifo = one_job_server.allowed_root / "slow-again.jpg"
    os.mkfifo(fifo)
    channel, stubs = stubs_for(one_job_server.address)
    slow = analysis_pb2.ScoreLabelsRequest(source=inline(
        [common_pb2.Image(key="slow", server_path=str(fifo), label="a")] + photo_images(photos, 4)), folds=2)
    answers = []
    with channel:
        first = stubs.analysis.ScoreLabels(slow, timeout=60)
        try:
            assert next(first).progress.stage == "embedding"          # it holds the only slot
            with Client(one_job_server.address, timeout=60) as c:
                asking = threading.Thread(target=lambda: answers.append(
                    c.score_labels(images=[d for d, _, _ in photos[:6]], labels=["a", "b"] * 3, folds=2)))
                asking.start()
                time.sleep(1.0)                  # refused at least once meanwhile
                _release_fifo(fifo)              # the first job reads its FIFO's end and finishes
                drain(first)
                asking.join(30)
        finally:
            first.cancel()
            _release_fifo(fifo)
    assert len(answers) == 1 and len(answers[0].scores) == 6


def test_an_answer_nobody_reads_holds_no_analysis_slot(one_job_server, photos):
    """A job's slot is given back when its work ends, not when its answer has
    been sent: a client whose ScoreLabels answer (~400 KB: 1,000-byte keys,
    every image a suspect) sits unread behind HTTP/2 flow control (a 64 KB
    window, no BDP probing) held --max-jobs 1's only slot for as long as it
    kept the call open, and every other client's job was refused
    RESOURCE_EXHAUSTED (a fifteenth probe, with no CPU spent after the first
    seconds). Now the other client's job runs once the first one's work is
    done, while that answer still waits; and the answer, read at last, is
    whole (in parts of at most 4 MiB)."""
    labels = ["ab"[i % 2] for i in range(96)]
    images = [common_pb2.Image(key=f"{i:04d}" + "k" * 996, data=photos[i % len(photos)][0], label=labels[i])
              for i in range(96)]
    request = analysis_pb2.ScoreLabelsRequest(source=inline(images), folds=2, top_fraction=1.0)
    slow_reader = grpc.insecure_channel(one_job_server.address, options=[
        ("grpc.http2.bdp_probe", 0), ("grpc.max_send_message_length", 64 * MB)])
    channel, stubs = stubs_for(one_job_server.address)
    quick = analysis_pb2.ScoreLabelsRequest(source=inline(photo_images(photos, 12)), folds=2)
    with slow_reader, channel:
        unread = analysis_pb2_grpc.AnalysisServiceStub(slow_reader).ScoreLabels(request, timeout=120)
        assert next(unread).progress.stage == "embedding"      # it holds the slot; nothing more is read
        started = time.monotonic()
        outcomes = []
        while time.monotonic() - started < 60:
            events, error = drain(stubs.analysis.ScoreLabels(quick, timeout=60))
            outcomes.append("OK" if error is None else error.code().name)
            if error is None:
                break
            assert error.code() == EXHAUSTED, error
            time.sleep(0.5)
        assert outcomes[-1] == "OK", outcomes
        assert outcomes[0] == "RESOURCE_EXHAUSTED", outcomes     # the first job did hold the slot
        assert len(events[-1].result.scores) == 12
        result = analysis_pb2.ScoreLabelsResult()
        parts = 0
        for event in unread:                                    # read at last
            if event.HasField("result"):
                result.MergeFrom(event.result)
                parts += 1
        assert len(result.scores) == 96 and len(result.suspects) == 96, (len(result.scores), len(result.suspects))
        assert result.scores[5].key.startswith("0005") and parts >= 1


# -- folds and seeds ---------------------------------------------------------

def test_folds_that_cannot_work_are_refused_in_our_words(stubs, photos):
    """12 images, 6 a class, 12 folds: as the audit and `labels` do (one
    rule, ``checks.label_issues.folds_for``), 6 folds, and the note says so
    (before: scikit-learn's "Found array with 0 sample(s) ...
    StandardScaler"); 11 + 1 images with 2 folds: the single image's fold
    trains on one class (the solver's own complaint), refused in our words."""
    events, error = drain(stubs.analysis.ScoreLabels(
        analysis_pb2.ScoreLabelsRequest(source=inline(photo_images(photos, 12)), folds=12), timeout=120))
    assert error is None, error
    assert "6 folds, not 12: the largest class has 6 images" in events[-1].result.note
    assert {(e.progress.stage, e.progress.done, e.progress.total) for e in events[:-1]} >= {("folds", 6, 6)}
    events, error = drain(stubs.analysis.ScoreLabels(analysis_pb2.ScoreLabelsRequest(
        source=inline(photo_images(photos, 12, ["a"] * 11 + ["b"])), folds=2), timeout=120))
    assert error is not None and error.code() == INVALID, error
    assert "at least 2 classes with 2 or more images" in error.details(), error.details()
    assert "solver" not in error.details()


def test_seeds_are_checked_in_our_words_and_the_largest_works(stubs, photos):
    source = inline(photo_images(photos, 12))
    for call, request in ((stubs.analysis.ScoreLabels,
                           analysis_pb2.ScoreLabelsRequest(source=source, folds=2, seed=-2**31)),
                          (stubs.analysis.SampleSizeSweep,
                           analysis_pb2.SampleSizeRequest(source=source, target_accuracy=0.9, seed=-1))):
        events, error = drain(call(request, timeout=120))
        assert error is not None and error.code() == INVALID, error
        assert "seed must be in 0..2147483647" in error.details(), error.details()
        assert "non-negative" not in error.details() and events == []
    # The largest int32 seed: each fit's seed stays within scikit-learn's range
    # (it answered "random_state ... must be an int in the range [0, 4294967295]").
    hundred = [common_pb2.Image(key=f"p{i}", data=photos[i % len(photos)][0], label="ab"[i % 2]) for i in range(100)]
    events, error = drain(stubs.analysis.SampleSizeSweep(analysis_pb2.SampleSizeRequest(   # a sweep needs 100
        source=inline(hundred), target_accuracy=0.9,
        fractions=[0.5, 1.0], repeats=1, seed=2**31 - 1), timeout=300))
    assert error is None, error
    assert len(events[-1].result.points) == 2


# -- annotations and consensus -----------------------------------------------

@pytest.fixture(scope="module")
def two_images(stubs, photos):
    add_images(stubs, "limits-two", [photos[0][0], photos[1][0]], ["k0", "k1"])
    return "limits-two"


def test_add_annotations_limits(stubs, two_images):
    ann = consensus_pb2.Annotation
    many = consensus_pb2.AddAnnotationsRequest(
        collection=two_images, annotations=[ann(key="k0", annotator=f"a{i}", label="x") for i in range(100_001)])
    with pytest.raises(grpc.RpcError) as e:
        stubs.consensus.AddAnnotations(many, timeout=120)
    assert e.value.code() == INVALID and "100001 annotations" in e.value.details()
    assert "limit of 100000" in e.value.details()

    answer = stubs.consensus.AddAnnotations(consensus_pb2.AddAnnotationsRequest(collection=two_images, annotations=[
        ann(key="k0", annotator="ann", label="cat"),
        ann(key="k1", annotator="x" * 257, label="cat"),
        ann(key="k1", annotator="bea", label="é" * 129),             # 258 bytes
        ann(key="z" * 5000, annotator="ann", label="dog"),
        ann(key="y" * 500, annotator="ann", label="dog"),
        ann(key="k1", annotator="a" * 256, label="l" * 256),           # at the limits: stored
        ann(key="k1", annotator="ann", label="dog"),
    ]), timeout=60)
    assert answer.stored == 3 and list(answer.error_indices) == [1, 2, 3, 4]
    assert all(err.code == INVALID.value[0] for err in answer.errors)
    messages = [err.message for err in answer.errors]
    assert messages[0] == "annotator is 257 bytes, above the limit of 256"
    assert messages[1] == "label is 258 bytes, above the limit of 256"
    assert messages[2] == "key is 5000 bytes, above the limit of 1024"
    assert messages[3].startswith("no image with key 'yyyy") and len(messages[3]) < 100
    # a seed out of range: our words, not numpy's
    with pytest.raises(grpc.RpcError) as e:
        list(stubs.consensus.AnalyseConsensus(consensus_pb2.ConsensusRequest(collection=two_images, seed=-1),
                                              timeout=60))
    assert e.value.code() == INVALID and "seed must be in 0..2147483647" in e.value.details()


@pytest.fixture(scope="module")
def digit_collections(stubs):
    d = load_digits()
    pngs = [digit_png(d.images[i]) for i in range(300)]
    add_images(stubs, "limits-crowd", pngs[:200], [f"c{i}" for i in range(200)])
    add_images(stubs, "limits-classes", pngs[200:], [f"k{i}" for i in range(100)])
    return d.target


def annotate_and_analyse(stubs, collection: str, rows) -> tuple[list, grpc.RpcError | None, float]:
    """Store ``rows`` (every one must be stored), then AnalyseConsensus
    without a model: (events, the error that ended it, seconds it took)."""
    stored = stubs.consensus.AddAnnotations(
        consensus_pb2.AddAnnotationsRequest(collection=collection, annotations=rows), timeout=120)
    assert stored.stored == len(rows)
    start = time.perf_counter()
    events, error = drain(stubs.consensus.AnalyseConsensus(
        consensus_pb2.ConsensusRequest(collection=collection, no_model=True), timeout=60))
    return events, error, time.perf_counter() - start


def test_consensus_over_too_many_cells_is_refused_before_the_matrix(stubs, digit_collections):
    """200 images x 60,000 annotators (one label each): 12M cells of a dense
    matrix, refused at once (1,000,000 annotators took 3 GB and 79 s outside
    the job slot)."""
    y = digit_collections
    rows = [consensus_pb2.Annotation(key=f"c{i % 200}", annotator=f"w{i}", label=str(y[i % 200]))
            for i in range(60_000)]
    assert len(rows) == 60_000
    events, error, took = annotate_and_analyse(stubs, "limits-crowd", rows)
    assert error is not None and error.code() == EXHAUSTED, error
    assert "200 images x 60000 annotators = 12000000 cells, above the limit of 10000000" in error.details()
    assert took < 10 and events == []


def test_consensus_over_too_many_confusion_cells_is_refused(stubs, digit_collections):
    """100 images, 11 annotators, 1,000 distinct labels: 11 confusion
    matrices of 1,000 x 1,000, refused (a few more labels make gigabytes)."""
    rows = [consensus_pb2.Annotation(key=f"k{i % 100}", annotator=f"w{i // 100}", label=f"class-{i}")
            for i in range(1000)]
    rows += [consensus_pb2.Annotation(key=f"k{i}", annotator="w10", label="class-0") for i in range(100)]
    assert len(rows) == 1100
    events, error, _ = annotate_and_analyse(stubs, "limits-classes", rows)
    assert error is not None and error.code() == EXHAUSTED, error
    assert "11 annotators x 1000 x 1000 classes" in error.details() and events == []


def test_consensus_of_too_many_annotators_is_refused(stubs, photos):
    """A probe: 200,000 annotators of 10 images (2M cells, within the limit)
    made a job whose per-annotator loops no cancellation reached: cancelled at
    once, it kept its slot and a core for 30 s. At most 10,000 annotators."""
    add_images(stubs, "limits-annotators", [photos[0][0], photos[1][0]], ["a0", "a1"])
    rows = [consensus_pb2.Annotation(key=f"a{i % 2}", annotator=f"w{i}", label="ab"[i % 2]) for i in range(10_001)]
    assert len(rows) == 10_001
    events, error, took = annotate_and_analyse(stubs, "limits-annotators", rows)
    assert error is not None and error.code() == EXHAUSTED, error
    assert "10001 annotators, above the limit of 10000" in error.details() and events == []
    assert took < 10


def test_label_analyses_cap_their_classes_and_fractions(stubs):
    """A probe: ScoreLabels took any number of classes, and its answer is
    class x class (6,000 one-image classes: 4.9 s of the event loop, 2.3 GB;
    20,000 were allowed); SampleSizeSweep any number of fractions."""
    many = [common_pb2.Image(key=f"t{i}", data=b"x", label=f"class-{i}") for i in range(1001)]
    events, error = drain(stubs.analysis.ScoreLabels(analysis_pb2.ScoreLabelsRequest(source=inline(many)), timeout=60))
    assert error is not None and error.code() == INVALID, error
    assert "1001 distinct labels (classes), above the limit of 1000" in error.details() and events == []
    events, error = drain(stubs.analysis.SampleSizeSweep(analysis_pb2.SampleSizeRequest(
        source=inline(tiny(40)), fractions=[(i + 1) / 40 for i in range(40)]), timeout=60))
    assert error is not None and error.code() == INVALID, error
    assert "fractions must be 2 to 32 values" in error.details() and events == []


# -- collections -------------------------------------------------------------

def test_remove_images_caps_its_keys(stubs, two_images):
    with pytest.raises(grpc.RpcError) as e:
        stubs.collections.RemoveImages(collections_pb2.RemoveImagesRequest(
            collection=two_images, keys=[f"gone-{i}" for i in range(10_001)]), timeout=60)
    assert e.value.code() == INVALID and "10001 keys" in e.value.details()
    assert "limit of 10000" in e.value.details()
    answer = stubs.collections.RemoveImages(collections_pb2.RemoveImagesRequest(
        collection=two_images, keys=[f"gone-{i}" for i in range(10_000)]), timeout=60)
    assert answer.removed == 0


def test_unknown_index_kind_is_refused(stubs):
    with pytest.raises(grpc.RpcError) as e:
        stubs.collections.CreateCollection(
            collections_pb2.CreateCollectionRequest(name="limits-kind", index_kind=99), timeout=30)
    assert e.value.code() == INVALID and "unknown index_kind 99" in e.value.details()
    assert "INDEX_KIND_HNSW_IP" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stubs.collections.GetCollectionStats(collections_pb2.GetCollectionStatsRequest(name="limits-kind"),
                                             timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND           # nothing was made


def test_long_names_are_cut_in_errors(stubs):
    """A 10,000-character name comes back as its first 64 characters: echoed
    whole, it passed the client's metadata limit and the answer became
    RESOURCE_EXHAUSTED."""
    name = "n" * 10_000
    with pytest.raises(grpc.RpcError) as e:
        stubs.collections.CreateCollection(collections_pb2.CreateCollectionRequest(name=name), timeout=30)
    assert e.value.code() == INVALID, e.value
    assert e.value.details().startswith("invalid collection name '" + "n" * 64 + "…'")
    assert len(e.value.details()) < 250
    for call in (lambda: stubs.collections.GetCollectionStats(
                     collections_pb2.GetCollectionStatsRequest(name=name), timeout=30),
                 lambda: list(stubs.analysis.ScoreLabels(analysis_pb2.ScoreLabelsRequest(
                     source=analysis_pb2.LabelledSource(collection=name)), timeout=30))):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value
        assert e.value.details() == "no collection named '" + "n" * 64 + "…'"
