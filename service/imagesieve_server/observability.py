"""Metrics, request ids and structured logs.

* ``Metrics``: a Prometheus registry per server. Call counters and latency
  histograms come from ``ObservabilityInterceptor``; engine and collection
  figures (batch sizes, queue depth, images embedded, in-flight images,
  collection sizes) are read from the live objects at scrape time, so the
  engine needs no instrumentation of its own.
* ``ObservabilityInterceptor``: one request id per call (the caller's
  ``x-request-id`` metadata if given, else a new one), echoed in the
  response's initial metadata and attached to every log record of the call;
  one access-log line per call with method, code, duration and peer.
* ``JsonFormatter``: one JSON object per log line.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import gc
import inspect
import json
import logging
import re
import socket
import threading
import time
import uuid
import weakref
from socketserver import ThreadingMixIn
from typing import Awaitable, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import wire
from .engine import owners
from .request_gate import GateRefused, RequestGate
from .security import OPEN_PREFIXES, RequestRefused, principal

MAX_PROBE_SERVICE = 1024    # characters of the service a health check names (real names: dozens)
MAX_PROBE_REQUEST = 4 * MAX_PROBE_SERVICE + 16   # bytes: such a name in UTF-8 and its field tag

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("imagesieve_request_id", default="")

access_log = logging.getLogger("imagesieve.access")
error_log = logging.getLogger("imagesieve.server")


async def _internal_error(e: Exception, context, method: str, rid: str):
    """A fault of ours (not an abort, not the client's input): logged with
    its traceback and answered INTERNAL with the request id, never grpc's
    UNKNOWN with a Python exception text."""
    if isinstance(e, grpc.aio.AbortError):
        raise e
    if context.done():
        # The call had already ended (past its deadline, or its client gone):
        # nobody is left to answer. gRPC's own error of an abort or write
        # that came too late is no fault of ours (a ScoreLabels refused
        # INVALID_ARGUMENT just after its 2 ms deadline logged two ERROR
        # tracebacks: this one, then gRPC's "Abort already called!" for the
        # INTERNAL answer below); ours still is, but cannot be answered.
        if type(e).__module__.startswith("grpc"):
            access_log.info("%s: the call had ended (cancelled, or past its deadline) before its status "
                            "could be sent", method)
        else:
            error_log.error("unexpected error in %s (request id %s)", method, rid, exc_info=e)
        raise asyncio.CancelledError
    error_log.error("unexpected error in %s (request id %s)", method, rid, exc_info=e)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method} (request id {rid}); "
                                                  f"the server log has the details")

_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}
_RID_OK = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _EngineCollector:
    """Reads the batcher, the in-flight semaphore and the collections at scrape time."""

    def __init__(self, engine, collections):
        self.engine, self.collections = engine, collections
        self.gate: RequestGate | None = None      # set by the server once it has one
        self.stream_gate: RequestGate | None = None
        self.limiter: CallLimiter | None = None

    def collect(self):
        b = self.engine.batcher
        sizes = dict(b.batch_sizes)
        batches = CounterMetricFamily("imagesieve_model_batches", "Model calls by batch size",
                                      labels=["size"])
        for size in sorted(sizes):
            batches.add_metric([str(size)], sizes[size])
        yield batches
        yield CounterMetricFamily("imagesieve_images_embedded", "Images run through the model",
                                  value=sum(s * n for s, n in sizes.items()))
        yield GaugeMetricFamily("imagesieve_model_queue_depth", "Images waiting for the model",
                                value=b.queue_depth)
        yield GaugeMetricFamily("imagesieve_model_queue_capacity", "Model queue bound (--max-queue)",
                                value=b.max_queue)
        yield GaugeMetricFamily("imagesieve_images_inflight", "Images being decoded or embedded",
                                value=self.engine.images_in_flight)
        budget = self.engine.embedder.budget
        memory = GaugeMetricFamily("imagesieve_memory_budget_bytes",
                                   "Memory budget (--max-inflight-mb): limit, in use, of it held by bytes "
                                   "waiting for a decoder, peak in use", labels=["kind"])
        for kind, value in (("limit", budget.limit), ("used", budget.used), ("held", budget.held),
                            ("peak", budget.peak)):
            memory.add_metric([kind], value)
        yield memory
        yield CounterMetricFamily("imagesieve_memory_budget_refusals",
                                  "Reservations refused by the memory budget", value=budget.refused)
        for g, name, what in ((self.gate, "imagesieve_request_gate", "Unary requests"),
                              (self.stream_gate, "imagesieve_stream_gate", "Stream messages")):
            if g is None:
                continue
            gate = GaugeMetricFamily(name, f"{what} (request_gate): reads in progress, calls waiting to read, "
                                           "bytes held", labels=["kind"])
            for kind, value in (("reading", len(g.reads)), ("waiting", len(g.waiting)), ("held_bytes", g.held)):
                gate.add_metric([kind], value)
            yield gate
            yield CounterMetricFamily(name + "_reads_given_up",
                                      f"{what} given up: not arrived in time, too slow or idle while others waited",
                                      value=g.timed_out)
        if self.limiter is not None:
            lim = self.limiter
            unsent = GaugeMetricFamily("imagesieve_unsent_answer_bytes",
                                       "Answers handed to gRPC and not yet sent (CallLimiter): held now, peak, "
                                       "stream work's estimated answers (reserved, and the peak with them), "
                                       "and the bounds per client and in all (0: none)", labels=["kind"])
            for kind, value in (("held", lim.unsent_total), ("peak", lim.unsent_peak),
                                ("reserved", lim.reserved_total), ("peak_with_reserved", lim.reserved_peak),
                                ("limit_per_client", lim.max_unsent_per_client), ("limit", lim.max_unsent)):
                unsent.add_metric([kind], value)
            yield unsent
        sizes_g = GaugeMetricFamily("imagesieve_collection_images", "Images per collection",
                                    labels=["collection"])
        bytes_g = GaugeMetricFamily("imagesieve_collection_index_bytes", "Index size per collection",
                                    labels=["collection"])
        # A gate turning away an implausible share of what it is shown (a raw threshold too
        # low for glyph-like images, pictures of one template) is something to alert on.
        verdicts = CounterMetricFamily("imagesieve_collection_check_verdicts",
                                       "CheckDuplicates verdicts per collection since it was opened "
                                       "(method: verified or raw_cosine)", labels=["collection", "verdict", "method"])
        for name in self.collections.names():
            try:   # index figures only: a scrape must not scan the store
                c = self.collections.get(name)
                sizes_g.add_metric([name], c.indexed)
                bytes_g.add_metric([name], c.index_bytes)
                for (verdict, method), n in list(c.verdicts.items()):
                    verdicts.add_metric([name, verdict, method], n)
            except Exception:  # noqa: BLE001 - a collection dropped during the scrape
                continue
        yield sizes_g
        yield bytes_g
        yield verdicts
        yield GaugeMetricFamily("imagesieve_collections_failed",
                                "Collections on disk that could not be loaded (listed with load_error)",
                                value=len(self.collections.failed()))


class Metrics:
    def __init__(self, engine=None, collections=None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("imagesieve_requests", "Finished RPCs", ["method", "code"], registry=r)
        self.latency = Histogram("imagesieve_request_duration_seconds", "RPC duration",
                                 ["method", "code"], buckets=LATENCY_BUCKETS, registry=r)
        self.inflight = Gauge("imagesieve_requests_inflight", "RPCs being served", ["method"], registry=r)
        self.item_errors = Counter("imagesieve_item_errors", "Per-image errors in responses",
                                   ["method", "code"], registry=r)
        self.messages = Counter("imagesieve_stream_messages_sent", "Response messages sent",
                                ["method"], registry=r)
        self.collector = None
        if engine is not None and collections is not None:
            self.collector = _EngineCollector(engine, collections)
            r.register(self.collector)
        self._http = None

    def serve_http(self, port: int, host: str = "0.0.0.0") -> int:
        """Expose /metrics; ``port`` 0 picks a free one. Returns the port.
        prometheus_client's own server starts a thread for every connection
        and waits on each for ever, with a listen backlog of 5: held open
        without a request, 3,000 connections took 1,400 threads (a
        twenty-fourth probe). Here a connection is served at most
        METRICS_CONNECTIONS at once (the rest closed at once; a scraper
        retries), one that sends nothing for METRICS_IDLE_S is closed, and
        any after METRICS_CONNECTION_S."""
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]

        class Handler(WSGIRequestHandler):
            timeout = METRICS_IDLE_S          # socket timeout while reading the request

            def log_message(self, *_):        # scrapes are no news
                pass

        class Server(ThreadingMixIn, WSGIServer):
            address_family = family
            daemon_threads = True
            request_queue_size = 128
            slots = threading.BoundedSemaphore(METRICS_CONNECTIONS)

            def process_request(self, request, client_address):
                if not self.slots.acquire(blocking=False):
                    self.shutdown_request(request)
                    return
                try:
                    super().process_request(request, client_address)
                except BaseException:
                    self.slots.release()
                    raise

            opened: dict = {}                 # connection -> when it was opened (time.monotonic)
            opened_lock = threading.Lock()

            def process_request_thread(self, request, client_address):
                with self.opened_lock:
                    self.opened[request] = time.monotonic()
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    with self.opened_lock:
                        self.opened.pop(request, None)
                    self.slots.release()

            def service_actions(self):
                # The socket timeout restarts with every byte: a client sending one every few
                # seconds kept its slot for ever (a review). A whole connection gets a deadline,
                # checked by the accepting thread between polls (a timer thread each doubled
                # the threads).
                now = time.monotonic()
                with self.opened_lock:
                    late = [sock for sock, since in self.opened.items() if now - since > METRICS_CONNECTION_S]
                for sock in late:
                    _cut(sock)

            def handle_error(self, request, client_address):
                pass                          # a client cut off or gone (socketserver printed a traceback)

        self._http = make_server(sockaddr[0], port, make_wsgi_app(self.registry), Server, handler_class=Handler)
        threading.Thread(target=self._http.serve_forever, name="imagesieve-metrics", daemon=True).start()
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def count_item_errors(self, method: str, response) -> None:
        """Per-item ``error`` fields of a response's repeated message fields."""
        try:
            for field in response.DESCRIPTOR.fields:
                if field.message_type is None or not _is_repeated(field):
                    continue
                if "error" not in field.message_type.fields_by_name:
                    continue
                for item in getattr(response, field.name):
                    if item.HasField("error"):
                        self.item_errors.labels(method, _CODE_NAMES.get(item.error.code, "UNKNOWN")).inc()
        except AttributeError:
            return


def _is_repeated(field) -> bool:
    rep = getattr(field, "is_repeated", None)
    return bool(rep) if rep is not None else field.label == field.LABEL_REPEATED


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1] if method else "?"


def _incoming_request_id(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "x-request-id":
            value = value.decode("latin-1") if isinstance(value, bytes) else value
            return value if _RID_OK.fullmatch(value) else None
    return None


#: /metrics connections served at once, how long one may send nothing (s), and
#: how long one may last in all (s).
METRICS_CONNECTIONS = 32
METRICS_IDLE_S = 5.0
METRICS_CONNECTION_S = 10.0


def _cut(sock) -> None:
    """End a connection whose time is up: its handler's next read or write fails."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


#: How long a unary answer waits for room among its client's unsent answers
#: before the call is aborted (CallLimiter.room_for).
ANSWER_ROOM_WAIT_S = 1.0

#: How long a client's stream work waiting for room among its answers may be
#: passed by the same client's later work that fits (CallLimiter.reserve_room).
ROOM_BYPASS_S = 1.0


def _take(counts: dict[str, int], client: str, nbytes: int) -> bool:
    """Take ``nbytes`` from ``client``'s count; False (and the entry gone) when none is left."""
    left = counts.get(client, 0) - nbytes
    if left > 0:
        counts[client] = left
        return True
    counts.pop(client, None)
    return False


class CallLimiter:
    """Calls at once: at most ``max_calls`` in all and ``max_per_client`` from
    one client (its token's name, else its address), so one client's idle
    streams cannot lock everyone else out. The health check and reflection
    are never counted or refused: probes must answer while the server is busy.

    A stream waiting for its client's next message, with every request it
    sent answered, for ``evict_idle_s`` or more since its last message or
    answer, is *idle*: when a call would be refused, the longest idle stream
    holding the slot it needs (anyone's for the server's limit, the same
    client's for the per-client one) is closed instead, RESOURCE_EXHAUSTED,
    and the call admitted. Without it, idle streams from two addresses held
    every slot of a server forever. 0 = never. A unary call waiting for its
    turn to be read is as idle (for another client's call only: a client's
    own new calls would churn its own), and its idle time counts from its
    start: two clients' calls that sent headers and no message held every
    slot for the receive timeout (a twenty-third probe).

    A call whose answer has waited that long to be sent (its client reads
    none: HTTP/2 flow control holds the answer) is as idle for another
    client's call at the server's limit: it is aborted
    RESOURCE_EXHAUSTED (the status follows the answers already on their way,
    so a client that reads on learns why) and its handler cancelled, which
    frees the slot at once. gRPC keeps the unsent answer until the client
    reads, closes its connection or reaches its deadline, or the kernel
    drops the connection (after ~20 s, as a 20 s TCP user timeout on server sockets would:
    the calls of a connection whose answers lay unread ended CANCELLED
    20.1-20.6 s after they began, their answers freed), which is why a
    client cannot evict its own such calls (it would pile up unsent answers
    at the rate it sends calls). Without it,
    streams from two addresses that never read their answers held every
    slot (an eighth probe).

    Answers handed to gRPC and not yet sent are bounded in bytes as well as
    in calls: a client whose unsent answers reach ``max_unsent_per_client``
    bytes, or that has any while all clients' reach ``max_unsent``, has its
    new calls refused until it reads (0 = no bound). A 7.5 KB Embed naming
    one small file 256 times through ``server_path`` (one decode) answers
    3.6 MB: 256 such answers left unread by two addresses took a server from
    232 MB to 3.1 GB (a twenty-first probe)."""

    def __init__(self, max_calls: int, max_per_client: int, evict_idle_s: float = 10.0,
                 max_unsent_per_client: int = 0, max_unsent: int = 0):
        self.max_calls, self.max_per_client = max_calls, max_per_client
        self.evict_idle_s = evict_idle_s
        self.max_unsent_per_client, self.max_unsent = max_unsent_per_client, max_unsent
        self.active = 0
        self.by_client: dict[str, int] = {}
        self.idle: dict[object, tuple[str, StreamActivity, asyncio.Event]] = {}   # key -> (client, its activity, evicted)
        # key -> (client, since, task, context, bytes)
        self.sending: dict[object, tuple[str, float, asyncio.Task, object, int]] = {}
        self.unsent: dict[str, int] = {}        # client -> bytes of its answers in self.sending
        self.unsent_total = 0
        self.unsent_peak = 0                    # of unsent_total (/metrics)
        self.dropping: set[str] = set()         # clients an answer was dropped for, until they read one
        # Stream work not yet answered, by its answers' estimated bytes (StreamRoom).
        self.reserved: dict[str, int] = {}
        self.reserved_total = 0
        self.reserved_peak = 0                  # of unsent_total + reserved_total (/metrics)
        # Stream work waiting for its client's room, a client's in the order it came:
        # client -> [(bytes, future done when they are reserved for it, when it came)] (StreamRoom).
        self.room_waiters: dict[str, list[tuple[int, asyncio.Future, float]]] = {}
        # A client's later, smaller work passes its waiting work only this long (s):
        # work that kept coming and fitting held a larger answer back for ever.
        self.room_bypass_s = ROOM_BYPASS_S

    def enter(self, client: str) -> str | None:
        """None when admitted, else why not (the caller answers RESOURCE_EXHAUSTED)."""
        if (over := self._over_unsent(client, 1)) is not None:     # at or past a bound (whole bytes)
            return over + "; read them, then retry"
        if client in self.dropping:
            # Below its bound by less than an answer, a client that reads nothing had
            # every new call do its work, wait for room and be dropped (the work is the cost).
            return (f"an answer to this client was dropped, and it has not read its others "
                    f"({self.unsent.get(client, 0) / 2**20:.1f} MiB); read them, then retry")
        if self.active >= self.max_calls and not self._evict(None, client):
            return f"the server is at its limit of {self.max_calls} concurrent calls; retry with backoff"
        if self.by_client.get(client, 0) >= self.max_per_client and not self._evict(client, client):
            return (f"this client already has {self.max_per_client} calls in progress (the limit per client); "
                    f"finish or cancel some, then retry")
        self.active += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        return None

    def leave(self, client: str) -> None:
        self.active -= 1
        left = self.by_client[client] - 1
        if left:
            self.by_client[client] = left
        else:
            del self.by_client[client]

    def idle_begin(self, client: str, activity: "StreamActivity") -> tuple[object, asyncio.Event]:
        """A stream of ``client`` starts waiting for its next message (or a
        unary call for its read turn): (key for ``idle_end``, an event set
        if it is evicted)."""
        key, evicted = object(), asyncio.Event()
        self.idle[key] = (client, activity, evicted)
        return key, evicted

    def idle_end(self, key: object) -> None:
        self.idle.pop(key, None)

    def room_for(self, client: str, nbytes: int) -> str | None:
        """None when ``client`` may hand gRPC an answer of ``nbytes`` now,
        else why not: its unsent answers (or everyone's) would pass their
        bound. A client with none may always send one."""
        over = self._over_unsent(client, nbytes)
        return None if over is None else (over + f", so this one ({nbytes / 2**20:.1f} MiB) was dropped; "
                                          "read answers as they come, then retry")

    def try_reserve(self, client: str, nbytes: int) -> bool:
        """Room for stream work whose answer may take ``nbytes``: the client's
        unsent and reserved answer bytes stay within its bound and everyone's
        within theirs, or it has none (one request is always worked on). True
        and counted when there is; see StreamRoom."""
        held = self.unsent.get(client, 0) + self.reserved.get(client, 0)
        if held and self.max_unsent_per_client and held + nbytes > self.max_unsent_per_client:
            return False
        if held and self.max_unsent and self.unsent_total + self.reserved_total + nbytes > self.max_unsent:
            return False
        self.reserved[client] = self.reserved.get(client, 0) + nbytes
        self.reserved_total += nbytes
        self.reserved_peak = max(self.reserved_peak, self.unsent_total + self.reserved_total)
        return True

    def unreserve(self, client: str, nbytes: int) -> None:
        _take(self.reserved, client, nbytes)
        self.reserved_total -= nbytes
        if self.room_waiters:
            self._grant()

    async def reserve_room(self, client: str, nbytes: int) -> None:
        """Wait until ``try_reserve(client, nbytes)`` holds; reserved on
        return. Waiting work is granted its bytes when bytes are freed
        (:meth:`_grant`), not by polling; whatever fits goes, so one stream's
        large answer does not hold back another's small one. A waiter
        cancelled before its grant leaves nothing queued or reserved, one
        cancelled after it gives its grant back. Once a client's work has
        waited ``room_bypass_s``, its later work queues behind it, so the
        client's room drains until it fits."""
        if not self._overdue(client) and self.try_reserve(client, nbytes):
            return
        granted = asyncio.get_running_loop().create_future()
        entry = (nbytes, granted, time.monotonic())
        self.room_waiters.setdefault(client, []).append(entry)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.unreserve(client, nbytes)      # granted, then cancelled before it could start
            else:
                queue = self.room_waiters.get(client)
                if queue is not None and entry in queue:
                    queue.remove(entry)
                    if not queue:
                        del self.room_waiters[client]
                    else:
                        self._grant()           # work it held back (it was overdue) may fit now
            raise

    def _grant(self) -> None:
        """Bytes were freed: each waiter that now fits is reserved its bytes
        and woken (a client's tried in the order they came). Every client's, as one
        client's freed bytes may bring everyone's within the server's bound.
        A waiter whose future is already done (cancelled, its task not yet
        resumed) is dropped, nothing reserved for it. Work that does not fit
        and has waited ``room_bypass_s`` holds back its client's later work."""
        now = time.monotonic()
        for client in list(self.room_waiters):
            queue = self.room_waiters[client]
            waiting = []
            held_back = False
            for entry in queue:
                nbytes, granted, since = entry
                if granted.done():
                    continue
                if not held_back and self.try_reserve(client, nbytes):
                    granted.set_result(None)
                else:
                    waiting.append(entry)
                    held_back = held_back or now - since >= self.room_bypass_s
            if waiting:
                self.room_waiters[client] = waiting
            else:
                del self.room_waiters[client]

    def _overdue(self, client: str) -> bool:
        """Some work of ``client`` has waited for room ``room_bypass_s`` or more."""
        now = time.monotonic()
        return any(now - since >= self.room_bypass_s for _, granted, since in self.room_waiters.get(client, ())
                   if not granted.done())

    def dropped(self, client: str) -> None:
        """An answer to ``client`` found no room and was dropped: its new calls
        are refused until it reads an answer (or all of its unsent ones are freed)."""
        if self.unsent.get(client, 0):
            self.dropping.add(client)

    def _over_unsent(self, client: str, more: int) -> str | None:
        """Why ``more`` bytes added to ``client``'s unsent answers would pass
        its bound or everyone's, or None (always None for a client with none)."""
        unsent = self.unsent.get(client, 0)
        if not unsent:
            return None
        if self.max_unsent_per_client and unsent + more > self.max_unsent_per_client:
            return (f"this client has {unsent / 2**20:.1f} MiB of answers it has not read (the limit per client is "
                    f"{self.max_unsent_per_client / 2**20:.0f} MiB)")
        if self.max_unsent and self.unsent_total + more > self.max_unsent:
            return (f"answers not yet read by their clients fill the server's room for them "
                    f"({self.max_unsent / 2**20:.0f} MiB), and this client has {unsent / 2**20:.1f} MiB of them")
        return None

    def sending_begin(self, client: str, task: asyncio.Task, context, nbytes: int = 0) -> object:
        """A call of ``client`` (its servicer ``context``) hands an answer of
        ``nbytes`` to gRPC (its handler, run by ``task``, waits until it is
        sent): the key for ``sending_end``."""
        key = object()
        self.sending[key] = (client, time.monotonic(), task, context, nbytes)
        self.unsent[client] = self.unsent.get(client, 0) + nbytes
        self.unsent_total += nbytes
        self.unsent_peak = max(self.unsent_peak, self.unsent_total)
        return key

    def sending_end(self, key: object, delivered: bool = False) -> None:
        """``delivered``: gRPC sent the answer (its client reads), rather than
        the call ending with it unsent."""
        entry = self.sending.pop(key, None)
        if entry is not None:
            if delivered:
                self.dropping.discard(entry[0])
            self._sent(entry[0], entry[4])

    def _sent(self, client: str, nbytes: int) -> None:
        if not _take(self.unsent, client, nbytes):
            self.dropping.discard(client)
        self.unsent_total -= nbytes
        if self.room_waiters:
            self._grant()

    def _evict(self, client: str | None, requester: str) -> bool:
        """Close the longest idle stream (of ``client``, else anyone's) idle
        for evict_idle_s or more, or a unary call waiting that long for its
        read turn (another client's only; it ends RESOURCE_EXHAUSTED, see
        _receive_one); True if there was one. Its slot is freed
        when it ends: until then the count runs one over."""
        if self.evict_idle_s <= 0:
            return False
        ready = time.monotonic() - self.evict_idle_s
        idle = [(act.last, key) for key, (who, act, _) in self.idle.items()
                if act.pending <= 0 and act.last <= ready and (act.own_calls_evict or who != requester)
                and (client is None or who == client)]
        # Unread answers only for another client, at the server's limit: gRPC
        # keeps an evicted call's unsent answer, and a client evicting its
        # own would pile them up at the rate it sends calls.
        if client is None:
            idle += [(since, key) for key, (who, since, _, _, _) in self.sending.items()
                     if since <= ready and who != requester]
        if not idle:
            return False
        _, key = min(idle, key=lambda t: t[0])
        if key in self.idle:
            self.idle.pop(key)[2].set()
        else:
            who, _, task, context, nbytes = self.sending.pop(key)
            self._sent(who, nbytes)
            # From a task of its own: the abort waits behind the unsent answer,
            # and completes once the handler is cancelled.
            aborting = asyncio.ensure_future(context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this call's answer waited {self.evict_idle_s:g} s or more for the client to read it while the "
                "server was full, and the call was closed to serve another; read answers as they come"))
            aborting.add_done_callback(lambda t: t.cancelled() or t.exception())
            task.cancel()
        # The slot moves to the new call now: the evicted call's leave() comes later.
        return True


class StreamRoom:
    """A stream's way to hold work back until its client has room for the
    answer (``servicers.common.ordered_concurrent``): each stream's window
    bounds only its own answers, and 48 CheckDuplicates streams opened at
    once, their 35 MB answers left unread, held 5.3 GB and filled every
    client's room (a twenty-second probe). Answers are not dropped for want
    of room, as unary ones are: a slow reader would lose whole streams, and
    a check that added images would be answered RESOURCE_EXHAUSTED after its
    adds. The work waits instead, before it starts; the client holds only
    its own call slots. Waiting work is granted its room when bytes are freed
    (``CallLimiter.reserve_room``), not by polling (it polled every 50 ms: a
    stream's next request started up to 50 ms after its client read the
    answer that made room for it)."""

    def __init__(self, limiter: "CallLimiter", client: str):
        self.limiter, self.client = limiter, client

    async def reserve(self, nbytes: int) -> int:
        """Wait until there is room for an answer of ``nbytes``; then it is
        counted until :meth:`release`."""
        await self.limiter.reserve_room(self.client, nbytes)
        return nbytes

    def release(self, nbytes: int) -> None:
        self.limiter.unreserve(self.client, nbytes)


#: The running stream's StreamRoom (None outside a server's counted calls).
stream_room: contextvars.ContextVar[StreamRoom | None] = contextvars.ContextVar("imagesieve_stream_room",
                                                                                default=None)


class CycleCollector:
    """A call that ends in an error leaves its request in reference cycles
    (the exception's traceback holds the frames that held the request, and
    gRPC's own frames close the loop), which CPython frees only at its next
    full collection -- rare, as it counts objects, not bytes: 48 health
    checks naming 60 MB services, refused, kept 4.9 GB (a thirteenth probe).
    The bytes of such calls are counted here, and once they pass
    ``threshold`` a full collection runs (~20 ms; at most every
    ``min_interval_s``, later ones deferred, not dropped)."""

    def __init__(self, threshold: int, min_interval_s: float = 0.25):
        self.threshold, self.min_interval_s = max(1, int(threshold)), min_interval_s
        self.debt = 0
        self.last = 0.0
        self.scheduled = False
        self.runs = 0

    def add(self, n: int) -> None:
        self.debt += n
        if self.debt >= self.threshold and not self.scheduled:
            self.scheduled = True
            delay = max(0.0, self.last + self.min_interval_s - time.monotonic())
            asyncio.get_running_loop().call_later(delay, self._collect)

    def _collect(self) -> None:
        self.debt, self.scheduled = 0, False
        gc.collect()
        self.last = time.monotonic()
        self.runs += 1


class StreamActivity:
    """A request stream's requests not yet answered and when it last
    received or answered one (time.monotonic)."""

    def __init__(self, own_calls_evict: bool = True):
        self.pending = 0
        self.last = time.monotonic()
        # False: never closed for its own client's new call (a unary call
        # waiting for its read: the client would only churn its own calls),
        # only for another client's at the server's limit.
        self.own_calls_evict = own_calls_evict

    def received(self) -> None:
        self.pending += 1
        self.last = time.monotonic()

    def answered(self) -> None:
        self.pending -= 1
        self.last = time.monotonic()


def _client_of(peer: str) -> str:
    """The caller's identity for CallLimiter: its token's name, else its
    address without the port ("ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7")."""
    who = principal.get()
    if who:
        return "token:" + who
    return peer.rsplit(":", 1)[0] if peer.startswith(("ipv4:", "ipv6:")) else peer


def caller() -> str:
    """The current gRPC call's client, as ``_client_of`` names it ('' outside a call)."""
    return _client_of(owners.connection.get())


class LineBudget:
    """Access-log lines of failed calls, at most ``rate`` a second for each
    status code (bursts of ``burst``); the rest are counted, with the peers
    most of them came from, and summed up before the next line that is
    logged. A client can end calls by the thousand a second for nothing (an
    HTTP/2 rapid reset without a token: 29,000 CANCELLED lines, 3.1 MB, in
    10 s, ~1.1 GB an hour; a twenty-third probe); /metrics counts every call
    still."""

    PEERS_KEPT = 64      # distinct peers counted a code while its lines are skipped; the rest as "others"

    def __init__(self, rate: float = 50.0, burst: float = 200.0):
        self.rate, self.burst = rate, burst
        self.tokens: dict[str, tuple[float, float]] = {}     # code -> (tokens left, when counted)
        self.skipped: dict[str, tuple[int, float, collections.Counter]] = {}   # code -> (calls, since, by peer)

    def take(self, code: str, peer: str = "") -> str | None:
        """None: do not log this call's line; else log it, after the summary
        returned when it is not "" (how many calls of ``code`` were not
        logged, over how long, mostly from which peers)."""
        now = time.monotonic()
        left, at = self.tokens.get(code, (self.burst, now))
        tokens = min(self.burst, left + (now - at) * self.rate)
        if tokens < 1:
            self.tokens[code] = (tokens, now)
            count, since, peers = self.skipped.get(code) or (0, now, collections.Counter())
            peers[peer if peer in peers or len(peers) < self.PEERS_KEPT else "others"] += 1
            self.skipped[code] = (count + 1, since, peers)
            return None
        self.tokens[code] = (tokens - 1, now)
        if code not in self.skipped:
            return ""
        count, since, peers = self.skipped.pop(code)
        top = ", ".join(f"{p or 'unknown'} ({n})" for p, n in peers.most_common(3))
        return f"{count} more calls ended {code} in the last {now - since:.0f} s, not logged one by one (most from {top})"


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Outermost interceptor: sees every call, including refused ones, and
    admits it (``limiter``) before any work."""

    def __init__(self, metrics: Metrics | None, limiter: CallLimiter | None = None, gate: RequestGate | None = None,
                 probe_gate: RequestGate | None = None, stream_gate: RequestGate | None = None,
                 max_probes_per_connection: int = 0):
        self.metrics = metrics
        # Probes open at once, per connection (0: not bounded). A probe is never
        # refused for the server's calls, but one whose answer cannot be sent
        # (a client with an HTTP/2 window of 0) stays open until its connection
        # ends: gRPC core keeps the call and its answer whatever the handler
        # does (~12 KB each; 20 connections x 500 such checks from one
        # address: RSS +121 MB, a twenty-seventh probe).
        self.max_probes_per_connection = max_probes_per_connection
        self.open_probes: collections.Counter = collections.Counter()
        self.failed_lines = LineBudget()
        self.limiter = limiter
        self.gate = gate                  # unary requests
        self.probe_gate = probe_gate      # health checks'
        self.stream_gate = stream_gate    # stream messages': streams waiting for their clients hold turns
        self.cycles = CycleCollector(gate.capacity // 4) if gate is not None else None

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails],
                                                             Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        rid = _incoming_request_id(details.invocation_metadata) or uuid.uuid4().hex
        request_id.set(rid)
        handler = await continuation(details)
        if handler is None:
            return None
        method = _short(details.method)
        # Requests are parsed here, not by grpc: a corrupt message gets
        # INVALID_ARGUMENT (grpc.aio would answer UNKNOWN).
        deser = handler.request_deserializer
        kw = dict(request_deserializer=None, response_serializer=handler.response_serializer)
        streaming_in = bool(handler.stream_unary or handler.stream_stream)
        # A unary request is received here, through the gate (request_gate),
        # as a stream of one message: gRPC would read it whole first. A
        # probe's through a gate of its own: health checks must answer
        # however busy the main gate is, and need no token.
        probe = (details.method or "").startswith(OPEN_PREFIXES)
        gate = self.probe_gate if probe else self.stream_gate if streaming_in else self.gate
        gated = gate is not None and not streaming_in

        async def parsed(request, context, client: str | None, held: list, activity: StreamActivity | None = None):
            if gated:
                request = await self._receive_one(request, context, client, held, gate)
                if probe:
                    # Not held while a Watch stays open: its request is a
                    # name, and unknown fields of 60 MB rode along in three
                    # Watches that kept every probe of their address waiting
                    # (a review).
                    while held:
                        _release_part(held.pop())
                    if len(request) > MAX_PROBE_REQUEST:
                        request = None          # not kept by the traceback's frame
                        raise BadMessage(f"a health check request is at most {MAX_PROBE_REQUEST} bytes "
                                         f"(a service name of at most {MAX_PROBE_SERVICE} characters)")
            if deser is None:
                return request
            if streaming_in:
                return _parse_stream(deser, request, context, method,
                                     self.limiter if client is not None and activity is not None else None,
                                     client, activity, gate, held)
            part = held[-1] if gated and held else None

            def charge(extra: int) -> None:
                if part is not None:
                    _grow_part(held, part, extra)

            message = await _counted_parse(deser, request, method, charge)
            request = None   # the parsed message is what the call keeps
            if probe and len(getattr(message, "service", "")) > MAX_PROBE_SERVICE:
                # A Watch keeps its request while it stays open: 24 Watches naming
                # a 60 MB service held 6 GB, and needed no token (a twelfth probe).
                request = message = None        # not kept by the traceback's frame
                raise BadMessage(f"a health check names a service of at most {MAX_PROBE_SERVICE} characters")
            if probe and hasattr(message, "service"):
                message = type(message)(service=message.service)   # its name only, no unknown fields
            return message

        # A gated unary call yields its answer rather than returning it: the
        # send is then part of the call, so answers a client leaves unread
        # hold its call slots (CallLimiter.sending), as a stream's do.
        one_answer = gated and handler.unary_unary is not None
        if (handler.unary_unary or handler.stream_unary) and not one_answer:
            inner = handler.unary_unary or handler.stream_unary

            async def unary(request, context):
                start = self._begin(method, rid, context)
                code = "OK"
                admitted, held = None, []
                try:
                    admitted = await self._admit(details.method, start, context)
                    await _send_request_id(context, rid)
                    try:
                        response = await inner(await parsed(request, context, admitted, held), context)
                    except (BadMessage, RequestRefused) as e:
                        await context.abort(e.code if isinstance(e, RequestRefused) else grpc.StatusCode.INVALID_ARGUMENT,
                                            str(e))
                    except Exception as e:  # noqa: BLE001 - see _internal_error
                        await _internal_error(e, context, method, rid)
                    if self.metrics is not None and response is not None:
                        self.metrics.count_item_errors(method, response)
                    return response
                except BaseException as e:
                    code = _code_of(e, context)
                    raise
                finally:
                    self._finish(method, rid, context, start, code, admitted, held)

            make = grpc.unary_unary_rpc_method_handler if handler.unary_unary and not gated \
                else grpc.stream_unary_rpc_method_handler
            return make(unary, **kw)

        if one_answer:
            single = handler.unary_unary

            async def answer_once(request, context):
                yield await single(request, context)
            inner = answer_once
        else:
            inner = handler.unary_stream or handler.stream_stream
        make = grpc.unary_stream_rpc_method_handler if handler.unary_stream and not gated \
            else grpc.stream_stream_rpc_method_handler

        if not inspect.isasyncgenfunction(inner):
            # A handler that writes with context.write (the health service's Watch).
            async def writer(request, context):
                start = self._begin(method, rid, context)
                code = "OK"
                admitted, held = None, []
                try:
                    admitted = await self._admit(details.method, start, context)
                    try:
                        await inner(await parsed(request, context, admitted, held), context)
                    except (BadMessage, RequestRefused) as e:
                        await context.abort(e.code if isinstance(e, RequestRefused) else grpc.StatusCode.INVALID_ARGUMENT,
                                            str(e))
                    except Exception as e:  # noqa: BLE001 - see _internal_error
                        await _internal_error(e, context, method, rid)
                except BaseException as e:
                    code = _code_of(e, context)
                    raise
                finally:
                    self._finish(method, rid, context, start, code, admitted, held)
            return make(writer, **kw)

        async def stream(request, context):
            start = self._begin(method, rid, context)
            code = "OK"
            admitted, held = None, []
            try:
                admitted = await self._admit(details.method, start, context)
                await _send_request_id(context, rid)
                # Streaming in and out: one answer a request (what makes a stream idle).
                activity = StreamActivity() if streaming_in else None
                if admitted is not None and not one_answer:
                    stream_room.set(StreamRoom(self.limiter, admitted))
                try:
                    async for response in inner(await parsed(request, context, admitted, held, activity), context):
                        if activity is not None:
                            activity.answered()
                        if self.metrics is not None:
                            if not one_answer:
                                self.metrics.messages.labels(method).inc()
                            self.metrics.count_item_errors(method, response)
                        # Serialized here (gRPC would, on this loop): its size is
                        # then known for free, and the bytes alone wait to be sent.
                        if serialize is not None:
                            response = serialize(response)
                            if one_answer and admitted is not None:
                                await self._wait_for_room(admitted, len(response), context)
                        # Suspended here until gRPC has sent it: a client that
                        # reads nothing keeps it here (CallLimiter.sending).
                        sending = (self.limiter.sending_begin(admitted, asyncio.current_task(), context,
                                                              len(response) if serialize is not None else 0)
                                   if admitted is not None else None)
                        delivered = False
                        try:
                            yield response
                            delivered = True
                        finally:
                            response = None
                            if sending is not None:
                                self.limiter.sending_end(sending, delivered)
                except (BadMessage, RequestRefused) as e:
                    await context.abort(e.code if isinstance(e, RequestRefused) else grpc.StatusCode.INVALID_ARGUMENT,
                                        str(e))
                except Exception as e:  # noqa: BLE001 - see _internal_error
                    await _internal_error(e, context, method, rid)
            except BaseException as e:
                code = _code_of(e, context)
                raise
            finally:
                self._finish(method, rid, context, start, code, admitted, held)

        serialize = kw["response_serializer"]
        if serialize is not None:
            kw = dict(kw, response_serializer=_as_is)
        return make(stream, **kw)

    async def _wait_for_room(self, client: str, nbytes: int, context) -> None:
        """A unary answer of ``client`` waits up to ANSWER_ROOM_WAIT_S for
        room among its unsent answers (a client that reads frees it in
        milliseconds); then the call is aborted RESOURCE_EXHAUSTED, its answer
        dropped. Calls admitted at once all pass ``enter`` before any answer
        exists: 128 of them each made a 3.6 MB answer for a client that
        read none (a twenty-first probe). Streams are bounded by their own
        windows (``servicers/common.ordered_concurrent``) and wait to send."""
        deadline = time.monotonic() + ANSWER_ROOM_WAIT_S
        while (refused := self.limiter.room_for(client, nbytes)) is not None:
            if time.monotonic() >= deadline:
                self.limiter.dropped(client)
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
            await asyncio.sleep(0.05)

    async def _admit(self, full_method: str, begun: list, context) -> str | None:
        """The client key holding a slot, None when the call is not counted
        (no limiter, or a probe: counted open on its connection, see
        ``_probe_enter``); aborts RESOURCE_EXHAUSTED when refused."""
        peer = begun[1]
        if (full_method or "").startswith(OPEN_PREFIXES):
            await self._probe_enter(peer, context)
            begun[2] = peer          # released by _finish
            return None
        if self.limiter is None:
            return None
        client = _client_of(peer)
        refused = self.limiter.enter(client)
        if refused:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
        return client

    async def _probe_enter(self, connection: str, context) -> None:
        """Counts a probe open on ``connection`` until the call ends
        (``_finish``); aborts RESOURCE_EXHAUSTED when that connection has
        max_probes_per_connection open. By connection, not by address: a
        client holding its address's probes (its HTTP/2 stack answering
        pings, its window 0) would otherwise keep every health checker
        behind that address (a kubelet, a proxy) refused for good (a
        review); another connection is answered."""
        if not self.max_probes_per_connection:
            return
        if self.open_probes[connection] >= self.max_probes_per_connection:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{self.max_probes_per_connection} health checks are open on this connection, the "
                                "most one connection may have (--max-probes-per-connection): read their answers "
                                "or close them first")
        self.open_probes[connection] += 1

    async def _receive_one(self, request_iterator, context, client: str | None, held: list,
                           gate: RequestGate) -> bytes:
        """The call's one request message, read through ``gate`` (its
        client: the admitted key, else its token or address), which holds
        its size until the call ends (``held`` gets (gate, client, bytes)
        for _release); RequestRefused when there is no room in time or the
        message does not arrive in time."""
        it = request_iterator.__aiter__()

        async def read():
            try:
                message = await it.__anext__()
            except StopAsyncIteration:
                raise BadMessage("the call carried no request message") from None
            # Closed: gRPC's receiver, left suspended after one message, kept
            # it alive after the call (32 Embeds of 60 MB: 2 GB still held
            # after they ended). Not read to its end: a client need not
            # half-close for its call to start.
            await it.aclose()
            return message

        remaining = context.time_remaining()
        wait = gate.receive_timeout_s if remaining is None else min(remaining, gate.receive_timeout_s)
        who = client or _client_of(_safe_peer(context))
        # Until its read starts, a counted call is as idle as a stream waiting
        # for its next message: at the server's limit, another client's call
        # may close it once it has waited evict_idle_s for a read turn. Calls
        # that sent their headers and no message otherwise held their slots for
        # the receive timeout, and two clients' filled the server (a
        # twenty-third probe). A read in progress is the gate's to give up.
        idle_key = evicted = None
        if client is not None and self.limiter is not None:
            idle_key, evicted = self.limiter.idle_begin(client, StreamActivity(own_calls_evict=False))

        def reading() -> None:
            nonlocal idle_key
            if idle_key is not None:
                self.limiter.idle_end(idle_key)
                idle_key = None

        receiving = asyncio.ensure_future(gate.receive(who, read, wait, on_turn=reading))

        def keep_held() -> None:
            # Received (its bytes held by the gate) whatever else happened: _finish releases them.
            if receiving.done() and not receiving.cancelled() and receiving.exception() is None:
                held.append((gate, who, len(receiving.result())))
        try:
            if evicted is not None:
                closed = asyncio.ensure_future(evicted.wait())
                try:
                    await asyncio.wait((receiving, closed), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closed.cancel()
                if evicted.is_set():            # its slot went to another call: it ends, whatever arrived
                    if not receiving.done():
                        receiving.cancel()
                        await asyncio.wait((receiving,))
                    keep_held()
                    raise RequestRefused(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                        f"the request had waited {self.limiter.evict_idle_s:g} s for its turn to be read while the "
                        "server was at its limit of calls, and the call was closed to serve another client's; "
                        "retry with backoff"))
            raw = await receiving
        except GateRefused as e:
            raise RequestRefused(getattr(grpc.StatusCode, e.code), str(e)) from None
        except RequestRefused:
            raise
        except BaseException:
            if not receiving.done():
                receiving.cancel()
            keep_held()
            raise
        finally:
            reading()
        held.append((gate, who, len(raw)))
        return raw

    def _finish(self, method, rid, context, begun, code, client: str | None, held: list) -> None:
        """The call has ended: its slot and bytes are freed, then counted and logged."""
        code = self._final_code(context, code)
        if client is not None:
            self.limiter.leave(client)
        if (probed := begun[2]) is not None:
            begun[2] = None
            self.open_probes[probed] -= 1
            if not self.open_probes[probed]:
                del self.open_probes[probed]
        if held and code != "OK" and self.cycles is not None:
            self.cycles.add(max(part[2] for part in held))
        while held:          # popped: a stream releases its own as it goes
            _release_part(held.pop())
        self._end(method, rid, context, begun, code)

    @staticmethod
    def _final_code(context, code: str) -> str:
        if code == "OK":
            set_code = _safe_code(context)
            if set_code is not None:
                return set_code
        return code

    def _begin(self, method, rid, context) -> list:
        if self.metrics is not None:
            self.metrics.inflight.labels(method).inc()
        # The peer is read now, while the call is alive: grpc.aio's peer()
        # on a finished call can crash the process.
        peer = _safe_peer(context)
        # Resources are shared fairly between clients, then their connections (engine.owners).
        owners.connection.set(peer)
        owners.client.set(_client_of(peer))
        return [time.perf_counter(), peer, None]      # the third: the connection a probe is counted open on

    def _end(self, method, rid, context, begun, code) -> None:
        start, peer, _ = begun
        elapsed = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.inflight.labels(method).dec()
            self.metrics.requests.labels(method, code).inc()
            self.metrics.latency.labels(method, code).observe(elapsed)
        if code != "OK":
            summary = self.failed_lines.take(code, peer)
            if summary is None:
                return
            if summary:
                access_log.warning("rpc %s (counted in imagesieve_requests_total)", summary, extra={"grpc_code": code})
        access_log.info("rpc %s %s %.1fms", method, code, elapsed * 1000,
                        extra={"rpc_method": method, "grpc_code": code,
                               "duration_ms": round(elapsed * 1000, 2), "peer": peer})


def _as_is(data: bytes) -> bytes:
    """The response serializer of a call whose answers the interceptor
    serialized itself."""
    return data


class BadMessage(Exception):
    """A request message that does not parse. Raised where the message is
    read (possibly in a servicer's reader task) and turned into
    INVALID_ARGUMENT by the handler wrapper, in the RPC's own task:
    aborting from another task crashes grpc.aio."""


def _parse(deser, raw: bytes, method: str):
    try:
        return deser(raw)
    except Exception as e:  # noqa: BLE001 - any parse failure is the caller's bad message
        raise BadMessage(f"cannot parse the {method} request: {e}") from None


#: Large requests counted and parsed at once, each on a thread of its own
#: (PARSE_POOL): the rest wait their turn here, not in a queue of the pool.
PARSE_THREADS = 2
PARSE_POOL = concurrent.futures.ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="imagesieve-parse")
_parse_turns: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # event loop -> its Semaphore


async def _on_parse_thread(fn, *args):
    """``fn(*args)`` on PARSE_POOL once one of its threads is free. A turn
    is given back when the thread's work ends, not when the caller stops
    waiting: a cancelled call's request stays referenced by its queued work
    (a review: 30 MB Embeds cancelled while asyncio's shared pool was busy
    kept +321 MiB after the gate had released them), and that pool serves
    collection calls too, which large requests held up for seconds."""
    loop = asyncio.get_running_loop()
    turns = _parse_turns.get(loop)
    if turns is None:
        turns = _parse_turns[loop] = asyncio.Semaphore(PARSE_THREADS)
    await turns.acquire()
    try:
        future = loop.run_in_executor(PARSE_POOL, fn, *args)
    except BaseException:
        turns.release()
        raise
    future.add_done_callback(lambda _: turns.release())
    return await future


async def _counted_parse(deser, raw: bytes, method: str, charge=None):
    """The request parsed, its fields counted first (``wire.count_fields``)
    when it is large enough to matter: over ``wire.MAX_FIELDS`` it is
    refused unparsed (BadMessage), else ``charge(bytes)`` is called with
    what its fields will cost beyond their wire bytes before the parse
    allocates them. Counting and parsing a large request run on a parse
    thread: millions of tiny fields took seconds, and the event loop serves
    every other call."""
    descriptor = getattr(getattr(deser, "__self__", None), "DESCRIPTOR", None)
    if descriptor is None or len(raw) < wire.COUNT_FROM_BYTES:
        return _parse(deser, raw, method)
    fields = await _on_parse_thread(wire.count_fields, descriptor, raw)
    if fields > wire.MAX_FIELDS:
        raise BadMessage(f"the {method} request holds more than {wire.MAX_FIELDS:,} fields (images, keys, "
                         "annotations and their parts): send it in smaller requests")
    if charge is not None:
        charge(max(0, fields * wire.FIELD_BYTES - len(raw)))
    return await _on_parse_thread(_parse, deser, raw, method)


def _grow_part(held: list, part: tuple, extra: int) -> tuple:
    """``part`` of ``held`` (gate, client, bytes) grown by ``extra`` bytes,
    charged to its gate; unchanged when the call's end released it already."""
    if extra <= 0:
        return part
    for i, p in enumerate(held):
        if p is part:
            gate, who, n = part
            gate.hold(who, extra)
            held[i] = (gate, who, n + extra)
            return held[i]
    return part


async def _parse_stream(deser, raw_iterator, context, method: str, limiter: CallLimiter | None = None,
                        client: str | None = None, activity: StreamActivity | None = None,
                        gate: RequestGate | None = None, held: list | None = None):
    """The stream's requests, parsed. With a ``limiter``, each wait for the
    next message may be idle time (``CallLimiter.idle_begin``; ``activity``
    says whether every request was answered): an evicted stream ends with
    RequestRefused (RESOURCE_EXHAUSTED). With a ``gate``, each message is
    read in a turn of the gate (request_gate) and held there until the
    next is asked for (the handler has charged it to the budget by then),
    and the stream's largest message so far is held until it ends (gRPC's
    read-ahead): ``held`` gets (gate, client, bytes), which the call's end
    releases if the stream does not."""
    it = raw_iterator.__aiter__()
    who = client or _client_of(_safe_peer(context))
    # Since when the stream has been idle (every request answered), else None.
    idle = (lambda: activity.last if activity.pending <= 0 else None) if activity is not None else None
    held = [] if held is None else held
    account = gate.account_for(who) if gate is not None else None   # the client's idle turns while others waited
    message_held = None          # (gate, client, bytes) of the message being worked on
    read_ahead = 0               # bytes held for gRPC's read-ahead: the largest message so far

    def hold_message(n: int) -> None:
        nonlocal message_held, read_ahead
        message_held = (gate, who, n)
        grown = max(0, n - read_ahead)
        read_ahead += grown
        for part in (message_held, (gate, who, grown)) if grown else (message_held,):
            gate.hold(who, part[2])
            held.append(part)

    def release_message():
        nonlocal message_held
        # By identity, and only if the call's end has not released it: a
        # generator left suspended by its handler is closed after the call.
        for i, part in enumerate(held):
            if part is message_held:
                del held[i]
                _release_part(part)
                break
        message_held = None
    try:
        while True:
            release_message()
            turn = None
            if gate is not None:
                remaining = context.time_remaining()
                wait = gate.receive_timeout_s if remaining is None else min(remaining, gate.receive_timeout_s)
                try:
                    # A message waits for bytes held unless the stream's room
                    # holds any message already: a 1-byte first message would
                    # otherwise exempt every later 60 MB one (a review).
                    turn = await gate.turn(who, wait, gate.stream_idle_s, idle, held_ok=read_ahead >= gate.message,
                                           account=account)
                except GateRefused as e:
                    raise RequestRefused(getattr(grpc.StatusCode, e.code), str(e)) from None
            key, evicted = limiter.idle_begin(client, activity) if limiter is not None else (None, None)
            reading = asyncio.ensure_future(it.__anext__())
            waits = [reading]
            if evicted is not None:
                waits.append(asyncio.ensure_future(evicted.wait()))
            if turn is not None:
                turn.started, turn.task = time.monotonic(), reading
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                # The stream's reader was cancelled (its call failed or ended):
                # the pending read ends with the call's AbortError, which nobody
                # would retrieve, and asyncio would log ~3 KB of ERROR traceback
                # for every such call (a probe: 0.5 MB/s from one client).
                reading.cancel()
                reading.add_done_callback(_retrieved)
                raise
            finally:
                if key is not None:
                    limiter.idle_end(key)
                for w in waits[1:]:
                    w.cancel()
                if turn is not None:
                    # Its bytes held before the turn is free: the next read
                    # is admitted on a count that includes them.
                    received = 0
                    if (not turn.evicted and reading.done() and not reading.cancelled()
                            and reading.exception() is None):
                        received = len(reading.result())
                        hold_message(received)
                    gate.done(turn, received)
            if turn is not None and turn.evicted:
                gate.timed_out += 1
                reading.add_done_callback(_retrieved)
                raise RequestRefused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                     f"this stream sent nothing for {gate.stream_idle_s:g} s or more, at once or "
                                     "in pauses while other calls waited to send theirs (the server reads "
                                     f"{gate.reads_at_once} messages at once), and was closed; open a stream when "
                                     "there is something to send")
            if not reading.done():
                reading.cancel()
                reading.add_done_callback(_retrieved)
                raise RequestRefused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                     f"this stream sent nothing for {limiter.evict_idle_s:g} s or more while the "
                                     "server was full, and was closed to serve another call; open a stream when "
                                     "there is something to send")
            # No exception raised here and no message kept past its turn: a
            # frame in a traceback cycle kept the stream's last 60 MB message
            # until the cyclic collector ran (32 streams: +1.2 GB at peak).
            if not reading.cancelled() and isinstance(reading.exception(), StopAsyncIteration):
                return
            raw = reading.result()
            reading = None
            if activity is not None:
                activity.received()

            def charge(extra: int) -> None:
                nonlocal message_held
                if message_held is not None:
                    message_held = _grow_part(held, message_held, extra)

            message = await _counted_parse(deser, raw, method, charge)
            raw = None       # not kept while the message is worked on: it doubled a stream's bytes
            yield message
            message = None
    finally:
        release_message()    # the read-ahead's room is freed with the call (ObservabilityInterceptor._finish)


def _release_part(part: tuple) -> None:
    gate, who, n = part
    gate.release(who, n)


def _retrieved(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


def _safe_code(context) -> str | None:
    try:
        c = context.code()
    except Exception:  # noqa: BLE001
        return None
    if c is None:
        return None
    if isinstance(c, grpc.StatusCode):
        return c.name
    return _CODE_NAMES.get(c, str(c))


def _safe_peer(context) -> str:
    try:
        return context.peer()
    except Exception:  # noqa: BLE001
        return ""


async def _send_request_id(context, rid: str) -> None:
    """The call's initial metadata, with its request id. A call whose client
    left between admission and here (a deadline of a few ms) cannot take it:
    that is a cancellation, logged as such, not a fault of ours with a
    traceback in the error log (~0.4% of calls under 1-50 ms deadlines)."""
    try:
        await context.send_initial_metadata((("x-request-id", rid),))
    except Exception as e:  # noqa: BLE001 - re-raised unless the call is over
        over = type(e).__name__ == "ExecuteBatchError" or any(
            callable(getattr(context, name, None)) and getattr(context, name)() for name in ("done", "cancelled"))
        if over:
            raise asyncio.CancelledError() from None
        raise


def _code_of(e: BaseException, context) -> str:
    set_code = _safe_code(context)
    if set_code is not None and set_code != "OK":
        return set_code            # context.abort(...) recorded its code
    if isinstance(e, asyncio.CancelledError):
        return "CANCELLED"         # the client went away or the deadline passed
    if isinstance(e, GeneratorExit):
        return "CANCELLED"
    return "UNKNOWN"


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` and ``principal`` to every record (for any formatter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.principal = principal.get()
        return True


_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime",
                                                                           "request_id", "principal"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        rid = getattr(record, "request_id", "") or request_id.get()
        if rid:
            out["request_id"] = rid
        who = getattr(record, "principal", "") or principal.get()
        if who:
            out["principal"] = who
        for k, v in vars(record).items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class CancelledWriteFilter(logging.Filter):
    """gRPC core logs an ERROR with a traceback when a streaming handler's
    answer cannot be written because its client has left (a cancelled
    ScoreLabels whose answer was waiting to be sent: a fifteenth probe). The
    access log already says CANCELLED; this is no fault of the server, so it
    becomes one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "ExecuteBatchError raised in core" in str(record.msg):
            record.levelno, record.levelname = logging.INFO, "INFO"
            method = record.getMessage().rsplit(" ", 1)[-1]
            record.msg = "an answer could not be sent: the call had ended (cancelled, or past its deadline) %s"
            record.args = (method,)
            record.exc_info = record.exc_text = None
        return True


def quiet_cancelled_writes() -> None:
    """Install :class:`CancelledWriteFilter` on gRPC core's logger (once)."""
    core = logging.getLogger("grpc._cython.cygrpc")
    if not any(isinstance(f, CancelledWriteFilter) for f in core.filters):
        core.addFilter(CancelledWriteFilter())


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Root logging: ``fmt`` "json" (one object per line) or "text"."""
    quiet_cancelled_writes()
    handler = logging.StreamHandler()
    handler.addFilter(RequestContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
