"""The light Python client: images in, numpy arrays out.

Needs only grpcio, protobuf, numpy and pillow. Images may be paths, encoded
bytes or PIL images; files are read lazily, so streaming a million paths
holds only the in-flight ones in memory.

    with Client("127.0.0.1:50051") as c:
        result = c.embed(["a.jpg", "b.png"])     # Embeddings: .vectors (N, D)
        for r in c.embed_stream(paths):          # one EmbeddingResult per image
            ...
"""
from __future__ import annotations

import dataclasses
import errno
import io
import itertools
import os
import threading
import time
from typing import AsyncIterator, Callable, Iterable, Iterator, NamedTuple, Union

import grpc
import numpy as np
from PIL import Image as PILImage

from .channel import make_channel
from .files import UnreadFile, read_regular
from .v1 import (analysis_pb2, analysis_pb2_grpc, collections_pb2, collections_pb2_grpc, common_pb2,
                 consensus_pb2, consensus_pb2_grpc, duplicates_pb2, duplicates_pb2_grpc, embedding_pb2,
                 embedding_pb2_grpc)

ImageInput = Union[str, os.PathLike, bytes, PILImage.Image]

_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}
CHUNK_BYTES = 1 << 20   # a stream message closes at chunk_size images or this many bytes
# Neighbours one CheckDuplicates request may ask for (images x k), the server's bound
# (imagesieve_server.servicers.duplicates.MAX_NEIGHBORS_PER_REQUEST; a test checks they agree).
MAX_CHECK_NEIGHBORS = 2560
# Room in a message for everything but the image bytes (keys, labels, framing): an image
# of more than the message limit less this fails alone instead of failing the stream.
MESSAGE_HEADROOM = 64 << 10
#: Pauses (s) before a job refused for now (RESOURCE_EXHAUSTED before its first event: the
#: server's line for job slots full, its wait over, or no memory for now) is asked again.
JOB_RETRY_PAUSES_S = (0.25, 0.5, 1.0, 2.0, 4.0)


class ServerUnreachable(grpc.FutureTimeoutError):
    """``Client.wait_ready`` found no server to talk to (its message says why)."""

@dataclasses.dataclass(frozen=True)
class ItemFailure:
    """Why one image failed; the rest of its batch is unaffected."""
    index: int
    key: str
    code: str          # a grpc.StatusCode name, e.g. "INVALID_ARGUMENT"
    message: str


@dataclasses.dataclass
class EmbeddingResult:
    """One image's answer from ``embed_stream``."""
    index: int
    key: str
    vector: np.ndarray | None                    # (D,) float32, unit L2 norm
    error: ItemFailure | None = None
    top_classes: list[tuple[int, str, float]] = dataclasses.field(default_factory=list)
    width: int = 0
    height: int = 0
    signature: bytes = b""                        # layout signature, when asked for (with_layout_signature)
    # With the signature: brightness, contrast, entropy, sharpness, colourfulness
    # (Embedding.image_properties in the proto); None when not asked or an older server.
    properties: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass
class Embeddings:
    """Answers for a list of images, in input order.

    vectors : (N, D) float32; rows of failed images are all zero.
    ok : (N,) bool, False where the image failed (see ``errors``).
    """
    keys: list[str]
    vectors: np.ndarray
    ok: np.ndarray
    errors: list[ItemFailure]
    top_classes: list[list[tuple[int, str, float]]]

    @staticmethod
    def needs_dim(results: list[EmbeddingResult]) -> bool:
        """True when no image embedded: then only the model's dim sizes the array."""
        return not any(r.ok for r in results)

    @classmethod
    def from_results(cls, results: list[EmbeddingResult],
                     dim: int | Callable[[], int] | None = None) -> "Embeddings":
        """``dim`` (or a function giving it, called only then) sizes the
        vectors when every image failed (no vector to size by)."""
        if cls.needs_dim(results) and callable(dim):
            dim = dim()
        dim = next((len(r.vector) for r in results if r.ok), dim or 0)
        vectors = np.zeros((len(results), dim), dtype=np.float32)
        for r in results:
            if r.ok:
                vectors[r.index] = r.vector
        return cls(keys=[r.key for r in results], vectors=vectors,
                   ok=np.array([r.ok for r in results], dtype=bool),
                   errors=[r.error for r in results if r.error is not None],
                   top_classes=[r.top_classes for r in results])


class Neighbor(NamedTuple):
    """A stored image near a checked one. ``agreement``: stage 2's layout
    agreement (NaN when not verified); ``verified``: the same picture;
    ``keypoint_inliers``: stage 2's keypoints one transform maps onto each other;
    ``matched_blur_px``: the blur (Gaussian sigma, pixels of the 48-px layout
    thumbnail) stage 2 gave the sharper image to compare the two at one
    sharpness (0: compared as they are)."""
    key: str
    cosine: float
    label: str = ""
    split: str = ""
    agreement: float = float("nan")
    verified: bool = False
    keypoint_inliers: int = 0
    matched_blur_px: float = 0.0


@dataclasses.dataclass
class DuplicateCheckResult:
    """One image's verdict from ``check``: "UNIQUE", "NEAR_DUPLICATE",
    "EXACT_DUPLICATE" or "ERROR"; neighbours: verified ones first, then by
    cosine."""
    index: int
    key: str
    verdict: str
    neighbors: list[Neighbor]
    added: bool = False
    error: ItemFailure | None = None


@dataclasses.dataclass
class AddResult:
    index: int
    key: str
    added: bool
    id: int = -1
    exact_duplicate_of: str = ""
    error: ItemFailure | None = None


def _failure(index: int, key: str, err: common_pb2.ItemError) -> ItemFailure:
    return ItemFailure(index, key, _CODE_NAMES.get(err.code, str(err.code)), err.message)


def _labelled_items(images, keys, labels, splits, unread: dict | None = None,
                    max_bytes: int | None = None) -> Iterator[common_pb2.Image]:
    """Image messages with label and split; unreadable local files, and
    images of more than ``max_bytes``, become items with no data (the server
    answers them with an error), their position's ItemFailure with the local
    reason put in ``unread``."""
    labels_it = iter(labels) if labels is not None else itertools.repeat("")
    splits_it = iter(splits) if splits is not None else itertools.repeat("")
    keys_it = iter(keys) if keys is not None else None
    for i, item in enumerate(images):
        key = next(keys_it) if keys_it is not None else (
            os.fspath(item) if isinstance(item, (str, os.PathLike)) else str(i))
        try:
            msg = to_image_message(item, key, max_bytes)
        except OSError as e:
            msg = common_pb2.Image(key=key)
            if unread is not None:
                unread[i] = _local_failure(i, key, e)
        msg.label, msg.split = next(labels_it), next(splits_it)
        yield msg


def _chunks(it: Iterator[common_pb2.Image], size: int, max_bytes: float = float("inf"),
            close_at: float = float("inf")) -> Iterator[list]:
    """Lists of up to ``size`` images: a list closes early before an image
    that would take its bytes over ``max_bytes`` (one message's worth: a
    64 MB photo after 355 KB of small ones made a message over gRPC's limit
    and failed the whole stream), and once its bytes reach ``close_at``."""
    chunk, used = [], 0
    for msg in it:
        if chunk and used + len(msg.data) > max_bytes:
            yield chunk
            chunk, used = [], 0
        chunk.append(msg)
        used += len(msg.data)
        if len(chunk) == size or used >= close_at:
            yield chunk
            chunk, used = [], 0
    if chunk:
        yield chunk


def _local_failure(index: int, key: str, e: OSError) -> ItemFailure:
    if e.errno == errno.EFBIG:
        return ItemFailure(index, key, "RESOURCE_EXHAUSTED", f"not sent: {e.strerror}")
    return ItemFailure(index, key, "NOT_FOUND", f"cannot read {key}: {e}")


def read_regular_file(path: str, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file (``files.read_regular``); OSError for
    anything else, EFBIG beyond ``max_bytes``, read no further (a 3 GB file
    was read whole, 6 GB of memory, before its message failed)."""
    try:
        return read_regular(path, max_bytes)[0]
    except UnreadFile as e:
        if e.errno == errno.EFBIG:
            raise _too_large(e.size, max_bytes) from None
        raise OSError(e.errno, e.strerror, path) from None


def _too_large(size: int, max_bytes: int) -> OSError:
    return OSError(errno.EFBIG, f"{size / 2**20:.1f} MB is more than one message may carry "
                                f"({max_bytes / 2**20:.1f} MB; Client(max_message_mb=...) and the "
                                f"server's --max-message-mb raise it)")


def to_image_message(item: ImageInput, key: str | None = None, max_bytes: int | None = None
                     ) -> common_pb2.Image:
    """Path -> its bytes (key = the path); bytes as they are; PIL image ->
    lossless PNG. ``server_path:`` prefixed strings name a file on the server.
    OSError (EFBIG) for more than ``max_bytes`` of image."""
    if isinstance(item, PILImage.Image):
        buf = io.BytesIO()
        item.save(buf, format="PNG")
        data = buf.getvalue()
    elif isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
    elif isinstance(item, (str, os.PathLike)):
        s = os.fspath(item)
        if s.startswith("server_path:"):
            return common_pb2.Image(key=key or s, server_path=s[len("server_path:"):])
        return common_pb2.Image(key=key or s, data=read_regular_file(s, max_bytes))
    else:
        raise TypeError(f"cannot send {type(item).__name__} as an image (use a path, bytes or PIL image)")
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    return common_pb2.Image(key=key or "", data=data)


def _result(index: int, e: embedding_pb2.Embedding) -> EmbeddingResult:
    if e.HasField("error"):
        err = ItemFailure(index, e.key, _CODE_NAMES.get(e.error.code, str(e.error.code)), e.error.message)
        return EmbeddingResult(index, e.key, None, err)
    return EmbeddingResult(index, e.key, np.array(e.vector, dtype=np.float32), None,
                           [(c.index, c.name, c.probability) for c in e.top_classes], e.width, e.height,
                           e.layout_signature,
                           np.array(e.image_properties, np.float32) if len(e.image_properties) else None)


def _requests(images: Iterable[ImageInput], keys: Iterable[str] | None, chunk_size: int,
              top_k: int, failures: list, chunk_bytes: float = CHUNK_BYTES,
              with_signature: bool = False, max_bytes: int | None = None) -> Iterator[embedding_pb2.EmbedRequest]:
    """Chunk images into requests. A local file that cannot be read, and an
    image of more than ``max_bytes``, becomes an item with no data, so the
    server answers it with a per-item error; a request never holds more
    than ``max_bytes`` of images (it closes early)."""
    def messages():
        keys_it = iter(keys) if keys is not None else None
        for i, item in enumerate(images):
            key = next(keys_it) if keys_it is not None else (
                os.fspath(item) if isinstance(item, (str, os.PathLike)) else str(i))
            try:
                yield to_image_message(item, key, max_bytes)
            except OSError as e:
                failures.append((i, key, e))
                yield common_pb2.Image(key=key)
    # Big photos go one or two per message (closed at chunk_bytes), so the server
    # starts decoding the first while the next is still on the wire.
    for batch in _chunks(messages(), chunk_size, float("inf") if max_bytes is None else max_bytes, chunk_bytes):
        yield embedding_pb2.EmbedRequest(images=batch, top_k_classes=top_k, with_layout_signature=with_signature)


def _localize(results: Iterable[EmbeddingResult], failures: list) -> Iterator[EmbeddingResult]:
    """Replace the server's 'no data' answer for unreadable local files by
    the local reason."""
    local = {}
    for r in results:
        while failures:
            i, key, e = failures.pop(0)
            local[i] = (key, e)
        if r.index in local:
            key, e = local.pop(r.index)
            r.error = _local_failure(r.index, key, e)
        yield r


class Client:
    """Blocking client.

    Parameters
    ----------
    address : "host:port" of an imagesieve server.
    timeout : seconds per unary call (None = no deadline).
    max_message_mb : gRPC message size limit, both directions.
    tls_ca : CA certificate (PEM bytes or path) that signed the server's; makes the channel TLS.
    tls_cert, tls_key : client certificate and key (PEM bytes or paths), for mutual TLS.
    token : bearer token sent with every call (``authorization: Bearer TOKEN``).
    retries : calls that change nothing (embedding, listings, analyses) are
        retried with backoff when the server refuses them for now
        (UNAVAILABLE, RESOURCE_EXHAUSTED; ``imagesieve.channel.RETRY_POLICY``).
    """

    def __init__(self, address: str = "127.0.0.1:50051", *, timeout: float | None = None,
                 max_message_mb: int = 64, tls_ca=None, tls_cert=None, tls_key=None,
                 token: str | None = None, retries: bool = True):
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self.max_image_bytes = (max_message_mb << 20) - MESSAGE_HEADROOM    # what one message carries
        self.channel = make_channel(address, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                                    token=token, max_message_mb=max_message_mb, retries=retries)
        self.embedding = embedding_pb2_grpc.EmbeddingServiceStub(self.channel)
        self.collections = collections_pb2_grpc.CollectionServiceStub(self.channel)
        self.duplicates = duplicates_pb2_grpc.DuplicateServiceStub(self.channel)
        self.analysis = analysis_pb2_grpc.AnalysisServiceStub(self.channel)
        self.consensus_service = consensus_pb2_grpc.ConsensusServiceStub(self.channel)
        self._dim: int | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout: float = 30.0, fail_fast: bool = False) -> None:
        """Block until the channel is connected; ServerUnreachable (a
        grpc.FutureTimeoutError) after ``timeout`` s or, with ``fail_fast``,
        at the first failed connection attempt (nothing listens there, a
        refused TLS handshake), instead of retrying until the timeout."""
        if not fail_fast:
            try:
                grpc.channel_ready_future(self.channel).result(timeout=timeout)
            except grpc.FutureTimeoutError:
                raise ServerUnreachable(f"{self.address}: not connected within {timeout:g} s") from None
            return
        seen: dict = {}
        settled = threading.Event()

        def watch(state):
            if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                         grpc.ChannelConnectivity.SHUTDOWN):
                seen.setdefault("state", state)
                settled.set()
        self.channel.subscribe(watch, try_to_connect=True)
        try:
            settled.wait(timeout)
        finally:
            self.channel.unsubscribe(watch)
        state = seen.get("state")
        if state != grpc.ChannelConnectivity.READY:
            why = "the connection failed" if state is not None else f"not connected within {timeout:g} s"
            raise ServerUnreachable(f"{self.address}: {why}")

    def model_info(self) -> embedding_pb2.ModelInfo:
        return self.embedding.GetModelInfo(embedding_pb2.GetModelInfoRequest(), timeout=self.timeout)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self.model_info().dim
        return self._dim

    def embed(self, images: Iterable[ImageInput], *, keys: Iterable[str] | None = None,
              top_k_classes: int = 0, chunk_size: int = 16) -> Embeddings:
        """Embed images; one failing image never fails the others.
        Returns ``Embeddings`` (vectors (N, D) float32, unit L2 norm)."""
        results = list(self.embed_stream(images, keys=keys, top_k_classes=top_k_classes,
                                         chunk_size=chunk_size))
        return Embeddings.from_results(results, lambda: self.dim)

    def embed_batch(self, images: list[ImageInput], *, top_k_classes: int = 0) -> Embeddings:
        """One unary Embed call (the server limits images per request)."""
        failures: list = []
        requests = list(_requests(images, None, max(1, len(images)), top_k_classes, failures,
                                  chunk_bytes=float("inf"), max_bytes=self.max_image_bytes))
        if len(requests) > 1:
            raise ValueError(f"these {len(images)} images are more than one message may carry "
                             f"({self.max_image_bytes / 2**20:.1f} MB): use embed(), which streams them")
        (request,) = requests
        response = self.embedding.Embed(request, timeout=self.timeout)
        results = list(_localize((_result(i, e) for i, e in enumerate(response.embeddings)), failures))
        return Embeddings.from_results(results, lambda: self.dim)

    def embed_stream(self, images: Iterable[ImageInput], *, keys: Iterable[str] | None = None,
                     top_k_classes: int = 0, chunk_size: int = 16,
                     with_layout_signature: bool = False) -> Iterator[EmbeddingResult]:
        """Stream images through EmbedStream; yields one EmbeddingResult per
        image, in input order, as answers arrive (with ``signature``, the
        layout signature for duplicate verification, when
        ``with_layout_signature``)."""
        failures: list = []
        responses = self.embedding.EmbedStream(_requests(images, keys, chunk_size, top_k_classes, failures,
                                                         with_signature=with_layout_signature,
                                                         max_bytes=self.max_image_bytes))
        counter = itertools.count()
        yield from _localize((_result(next(counter), e) for resp in responses for e in resp.embeddings),
                             failures)


    # -- collections --------------------------------------------------------
    def create_collection(self, name: str, *, index_kind: str = "auto", threshold: float = 0.0,
                          exist_ok: bool = False) -> collections_pb2.CollectionInfo:
        """index_kind: "auto", "flat", "ivf_flat", "ivf_pq" or "hnsw"; threshold:
        the near-duplicate cosine of raw-cosine verdicts (0 = measured on the
        collection's own images, at least 0.75)."""
        kind = {"auto": 0, "flat": 1, "ivf_flat": 2, "ivf_pq": 3, "hnsw": 4}[index_kind]
        return self.collections.CreateCollection(collections_pb2.CreateCollectionRequest(
            name=name, index_kind=kind, near_duplicate_threshold=threshold, exist_ok=exist_ok),
            timeout=self.timeout)

    def list_collections(self, *, page_size: int = 0) -> list[collections_pb2.CollectionInfo]:
        """Every collection, following the server's pages (``page_size`` 0:
        the server's default). One that could not be loaded has ``load_error`` set."""
        out, token = [], ""
        while True:
            page = self.collections.ListCollections(collections_pb2.ListCollectionsRequest(
                page_size=page_size, page_token=token), timeout=self.timeout)
            out.extend(page.collections)
            token = page.next_page_token
            if not token:
                return out

    def collection_stats(self, name: str) -> collections_pb2.CollectionInfo:
        return self.collections.GetCollectionStats(collections_pb2.GetCollectionStatsRequest(name=name),
                                                   timeout=self.timeout)

    def drop_collection(self, name: str) -> bool:
        return self.collections.DropCollection(collections_pb2.DropCollectionRequest(name=name),
                                               timeout=self.timeout).dropped

    def snapshot_collection(self, name: str) -> collections_pb2.SnapshotCollectionResponse:
        return self.collections.SnapshotCollection(collections_pb2.SnapshotCollectionRequest(name=name),
                                                   timeout=self.timeout)

    def remove(self, collection: str, keys: list[str]) -> int:
        return self.collections.RemoveImages(collections_pb2.RemoveImagesRequest(
            collection=collection, keys=keys), timeout=self.timeout).removed

    def add(self, collection: str, images: Iterable[ImageInput], *, keys: Iterable[str] | None = None,
            labels: Iterable[str] | None = None, splits: Iterable[str] | None = None,
            skip_exact_duplicates: bool = False, chunk_size: int = 16) -> Iterator[AddResult]:
        """Stream images into a collection; yields one AddResult per image, in
        order, each acknowledged only once durable on the server."""
        unread: dict[int, ItemFailure] = {}
        requests = (collections_pb2.AddImagesRequest(collection=collection, images=chunk,
                                                     skip_exact_duplicates=skip_exact_duplicates)
                    for chunk in _chunks(_labelled_items(images, keys, labels, splits, unread, self.max_image_bytes),
                                         chunk_size, self.max_image_bytes))
        index = itertools.count()
        for resp in self.collections.AddImages(requests):
            for r in resp.results:
                i = next(index)
                error = _failure(i, r.key, r.error) if r.HasField("error") else None
                yield AddResult(i, r.key, r.added, r.id, r.exact_duplicate_of, unread.pop(i, None) or error)

    def check(self, collection: str, images: Iterable[ImageInput], *, keys: Iterable[str] | None = None,
              labels: Iterable[str] | None = None, splits: Iterable[str] | None = None, k: int = 5,
              threshold: float = 0.0, add_if_unique: bool = False, raw_cosine: bool = False,
              chunk_size: int = 8) -> Iterator[DuplicateCheckResult]:
        """Check images before ingestion; yields one verdict per image, in order.
        With add_if_unique, unique images are added atomically. Verdicts are
        verified (stage 2) unless ``raw_cosine``. A message carries at most
        ``chunk_size`` images, fewer where k asks for more neighbours than the
        server answers a request (MAX_CHECK_NEIGHBORS)."""
        unread: dict[int, ItemFailure] = {}
        chunk_size = max(1, min(chunk_size, MAX_CHECK_NEIGHBORS // max(k or 5, 1)))
        requests = (duplicates_pb2.CheckDuplicatesRequest(collection=collection, images=chunk, k=k,
                                                          threshold=threshold, add_if_unique=add_if_unique,
                                                          raw_cosine=raw_cosine)
                    for chunk in _chunks(_labelled_items(images, keys, labels, splits, unread, self.max_image_bytes),
                                         chunk_size, self.max_image_bytes))
        index = itertools.count()
        for resp in self.duplicates.CheckDuplicates(requests):
            for r in resp.results:
                i = next(index)
                yield DuplicateCheckResult(
                    i, r.key, duplicates_pb2.Verdict.Name(r.verdict).removeprefix("VERDICT_"),
                    [Neighbor(n.key, n.cosine, n.label, n.split, n.agreement, n.verified, n.keypoint_inliers,
                              n.matched_blur_px)
                     for n in r.neighbors],
                    r.added,
                    unread.pop(i, None) or (_failure(i, r.key, r.error) if r.HasField("error") else None))

    def find_duplicates(self, collection: str, *, threshold: float = 0.0, approximate: bool = False,
                        grouping: str = "bounded", knn_k: int = 0, raw_cosine: bool = False,
                        progress: Callable[[common_pb2.JobProgress], None] | None = None,
                        ) -> duplicates_pb2.FindDuplicatesResult:
        """All duplicate pairs and groups of a collection (a long job; each
        progress event goes to ``progress``). Pairs are verified (stage 2)
        unless ``raw_cosine``. grouping: "bounded" (every two members are a
        pair), "centre" or "components"."""
        request = duplicates_pb2.FindDuplicatesRequest(collection=collection, threshold=threshold,
                                                       approximate=approximate, grouping=grouping, knn_k=knn_k,
                                                       raw_cosine=raw_cosine)
        return self._run_job(lambda: self.duplicates.FindDuplicates(request), progress)

    # -- analyses -----------------------------------------------------------
    def _labelled_source(self, collection, images, labels, keys, splits) -> analysis_pb2.LabelledSource:
        if (collection is None) == (images is None):
            raise ValueError("give either collection= or images= (with labels=)")
        if collection is not None:
            return analysis_pb2.LabelledSource(collection=collection)
        if labels is None:
            raise ValueError("inline images need labels=")
        return analysis_pb2.LabelledSource(inline=analysis_pb2.InlineImages(
            images=list(_labelled_items(images, keys, labels, splits, max_bytes=self.max_image_bytes))))

    def _run_job(self, start: Callable[[], Iterator], progress):
        """The result of the job ``start()`` calls (:meth:`_merged`). A job
        refused before its first event (RESOURCE_EXHAUSTED: the server's line
        for job slots full, its wait over, or no memory for now; no work was
        done) is asked again after each of JOB_RETRY_PAUSES_S when
        ``retries``: gRPC's own retries do not cover a call whose headers
        were sent."""
        pauses = iter(JOB_RETRY_PAUSES_S if self.retries else ())
        while True:
            started = False

            def tracked():
                nonlocal started
                for event in start():
                    started = True
                    yield event

            try:
                return self._merged(tracked(), progress)
            except grpc.RpcError as e:
                pause = next(pauses, None)
                if started or pause is None or e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                time.sleep(pause)

    @staticmethod
    def _merged(events, progress):
        """A job's result from its events: progress events to ``progress``; a
        large result arrives in parts (one ``result`` event each, lists split
        across them): merged in order, they are the whole result."""
        result, received = None, 0
        for event in events:
            if event.HasField("result"):
                if result is None:
                    result = type(event.result)()
                result.MergeFrom(event.result)
                received += 1
            elif progress is not None:
                progress(event.progress)
        if result is None:
            raise RuntimeError("the job ended without a result")
        if received < result.parts:
            raise RuntimeError(f"the job's result came in {received} of its {result.parts} parts")
        return result

    def score_labels(self, *, collection: str | None = None, images: Iterable[ImageInput] | None = None,
                     labels: Iterable[str] | None = None, keys: Iterable[str] | None = None,
                     method: str = "", top_fraction: float = 0.01, folds: int = 5,
                     classifier: str = "", seed: int = 0, pixels: bool = False,
                     progress: Callable[[common_pb2.JobProgress], None] | None = None,
                     ) -> analysis_pb2.ScoreLabelsResult:
        """Rank likely mislabeled images of a labelled collection, or of
        images sent with their labels. method: "out_of_fold" or "labelfix";
        classifier: "lda", "logreg", "mlp" or "ensemble" ("": the server's
        defaults, out of fold with shrunk LDA). pixels: also a small CNN on
        the images' thumbnails, when the server has torch (else ``note``
        says why not)."""
        request = analysis_pb2.ScoreLabelsRequest(
            source=self._labelled_source(collection, images, labels, keys, None), method=method,
            top_fraction=top_fraction, folds=folds, classifier=classifier, seed=seed, pixels=pixels)
        return self._run_job(lambda: self.analysis.ScoreLabels(request), progress)

    def sample_size(self, *, target_accuracy: float = 0.0, at_sizes: Iterable[int] = (),
                    collection: str | None = None,
                    images: Iterable[ImageInput] | None = None, labels: Iterable[str] | None = None,
                    splits: Iterable[str] | None = None, keys: Iterable[str] | None = None,
                    fractions: Iterable[float] = (), repeats: int = 0, classifier: str = "",
                    seed: int = 0, progress: Callable[[common_pb2.JobProgress], None] | None = None,
                    ) -> analysis_pb2.SampleSizeResult:
        """Sample-size sweep: accuracy on growing subsets, fitted learning
        curves, images needed for ``target_accuracy`` (0 = not asked) and the
        accuracy expected with each of ``at_sizes`` training images
        (``accuracy_at``), each with an interval; plots. With neither: the
        accuracy with all the training images and twice as many."""
        request = analysis_pb2.SampleSizeRequest(
            source=self._labelled_source(collection, images, labels, keys, splits), fractions=list(fractions),
            repeats=repeats, target_accuracy=target_accuracy, at_sizes=list(at_sizes), classifier=classifier,
            seed=seed)
        return self._run_job(lambda: self.analysis.SampleSizeSweep(request), progress)

    # -- several annotators ---------------------------------------------
    def add_annotations(self, collection: str, annotations: Iterable[tuple[str, str, str]]
                        ) -> consensus_pb2.AddAnnotationsResponse:
        """Store (key, annotator, label) triples on a collection's images."""
        return self.consensus_service.AddAnnotations(consensus_pb2.AddAnnotationsRequest(
            collection=collection, annotations=[consensus_pb2.Annotation(key=k, annotator=a, label=l)
                                                for k, a, l in annotations]), timeout=self.timeout)

    def consensus(self, collection: str, *, method: str = "dawid_skene", no_model: bool = False, seed: int = 0,
                  progress: Callable[[common_pb2.JobProgress], None] | None = None) -> consensus_pb2.ConsensusResult:
        """Consensus label, quality and review rank per image, each annotator's
        reliability, Krippendorff's alpha and the confused class pairs."""
        request = consensus_pb2.ConsensusRequest(collection=collection, method=method, no_model=no_model, seed=seed)
        return self._run_job(lambda: self.consensus_service.AnalyseConsensus(request), progress)


class AsyncClient:
    """asyncio client with the same methods as ``Client`` (awaitable)."""

    def __init__(self, address: str = "127.0.0.1:50051", *, timeout: float | None = None,
                 max_message_mb: int = 64, tls_ca=None, tls_cert=None, tls_key=None,
                 token: str | None = None, retries: bool = True):
        self.address = address
        self.timeout = timeout
        self.max_image_bytes = (max_message_mb << 20) - MESSAGE_HEADROOM    # what one message carries
        self.channel = make_channel(address, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                                    token=token, max_message_mb=max_message_mb, aio=True,
                                    retries=retries)
        self.embedding = embedding_pb2_grpc.EmbeddingServiceStub(self.channel)
        self._dim: int | None = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def model_info(self) -> embedding_pb2.ModelInfo:
        return await self.embedding.GetModelInfo(embedding_pb2.GetModelInfoRequest(), timeout=self.timeout)

    async def dim(self) -> int:
        if self._dim is None:
            self._dim = (await self.model_info()).dim
        return self._dim

    async def embed(self, images: Iterable[ImageInput], *, keys: Iterable[str] | None = None,
                    top_k_classes: int = 0, chunk_size: int = 16) -> Embeddings:
        results = [r async for r in self.embed_stream(images, keys=keys, top_k_classes=top_k_classes,
                                                      chunk_size=chunk_size)]
        return Embeddings.from_results(results, await self.dim() if Embeddings.needs_dim(results) else None)

    async def embed_stream(self, images: Iterable[ImageInput], *, keys: Iterable[str] | None = None,
                           top_k_classes: int = 0, chunk_size: int = 16) -> AsyncIterator[EmbeddingResult]:
        failures: list = []
        call = self.embedding.EmbedStream(_requests(images, keys, chunk_size, top_k_classes, failures,
                                                    max_bytes=self.max_image_bytes))
        index = 0
        async for resp in call:
            for e in resp.embeddings:
                (r,) = _localize([_result(index, e)], failures)
                index += 1
                yield r
