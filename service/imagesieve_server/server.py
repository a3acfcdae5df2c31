"""``imagesieve serve``: the gRPC server.

Configuration comes from flags, each with an ``IMAGESIEVE_<FLAG>``
environment variable as default (``--max-batch-size`` <-
``IMAGESIEVE_MAX_BATCH_SIZE``). SIGTERM/SIGINT drain in-flight work, then stop.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import re
import signal
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from imagesieve.v1 import (analysis_pb2, analysis_pb2_grpc, collections_pb2, collections_pb2_grpc,
                           consensus_pb2, consensus_pb2_grpc, duplicates_pb2, duplicates_pb2_grpc,
                           embedding_pb2, embedding_pb2_grpc)

from .analysis.duplicates import verify
from .audit.memory import fix_mmap_threshold, limit_malloc_arenas, return_freed_memory_to_os
from .collections import CollectionManager
from .collections.manager import DEFAULT_MAX_COLLECTIONS
from .engine.async_embedder import AsyncEmbedder
from .engine.budget import MemoryBudget, default_budget_mb
from .engine.decode import DecodeLimits
from .engine.pipeline import RUNTIMES, Embedder
from .engine.torch_executor import DTYPES as TORCH_DTYPES
from .health import HealthServicer
from .observability import CallLimiter, Metrics, ObservabilityInterceptor, configure_logging
from .jobs import runner
from .jobs.result_parts import set_send_limit
from .paths import PathPolicy, check_roots
from .request_gate import PROBE_SLOW_READ_S, RequestGate, gate_capacity
from .security import AuthInterceptor, TokenError, TokenStore, server_credentials
from .servicers import (AnalysisServicer, CollectionServicer, ConsensusServicer, DuplicateServicer,
                        EmbeddingServicer, ImageReader)

log = logging.getLogger("imagesieve.server")

# Health-check service name of a collection that failed to load (NOT_SERVING).
COLLECTION_HEALTH = "imagesieve.v1.collection/"

# HOST:PORT, the host a name, an IPv4 address or a bracketed IPv6 one.
ADDRESS_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}")

SERVICE_NAMES = [
    embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name,
    collections_pb2.DESCRIPTOR.services_by_name["CollectionService"].full_name,
    duplicates_pb2.DESCRIPTOR.services_by_name["DuplicateService"].full_name,
    analysis_pb2.DESCRIPTOR.services_by_name["AnalysisService"].full_name,
    consensus_pb2.DESCRIPTOR.services_by_name["ConsensusService"].full_name,
]


def unsent_limits(budget_bytes: int) -> tuple[int, int]:
    """Bytes of answers not yet read that one client, and all, may leave
    with gRPC before their new calls are refused (CallLimiter): a
    sixteenth and a quarter of the memory budget, at least 16 and 64 MiB
    (32 and 128 MiB at 512 MiB: nine 3.6 MB Embed answers a client)."""
    return max(16 << 20, budget_bytes // 16), max(64 << 20, budget_bytes // 4)


@dataclasses.dataclass
class ServerConfig:
    address: str = "127.0.0.1:50051"
    model: str = "mobilenet_v1"
    data_dir: str = "imagesieve-data"   # collections live under DATA_DIR/collections
    snapshot_every: int = 10_000        # adds/removes between index snapshots
    runtime: str = "onnx"               # "onnx" (ONNX Runtime) or "torch" (PyTorch: GPU hosts without ORT's CUDA build)
    providers: str = ""                 # comma-separated ONNX Runtime providers; "" = best present
    torch_device: str = ""              # runtime torch: "" = cuda when present, else cpu
    torch_dtype: str = "float32"        # runtime torch: float32, float16 or bfloat16 (CUDA only)
    intra_op_threads: int = 0           # 0 = one per core
    decode_workers: int = 0             # 0 = one per core
    max_batch_size: int = 32
    max_delay_ms: float = 5.0
    max_queue: int = 1024               # images waiting for the model before RESOURCE_EXHAUSTED
    max_inflight: int = 512             # images being decoded or embedded at once
    max_inflight_mb: int = 0            # bytes of requests, files and rasters in flight; 0 = a quarter of RAM, <= 4 GiB
    max_concurrent_rpcs: int = 256      # calls at once (health checks aside); beyond it RESOURCE_EXHAUSTED
    max_calls_per_client: int = 0       # calls at once from one token (or address); 0 = half of the above
    max_probes_per_connection: int = 64  # health checks open at once on one connection (answers unread hold them)
    decode_svg: int = 0                 # 1 = rasterize SVG drawings a client sends (bounded by element counts, engine.vector)
    keepalive_s: float = 30.0           # a connection with calls is pinged this often, closed when a ping waits twice as long
    evict_idle_s: float = 10.0          # a stream idle this long is closed when a call would be refused; 0 = never
    max_jobs: int = 0                   # analysis jobs at once; 0 = one per core
    job_wait_s: float = 20.0            # seconds a job waits for a slot (in a line fair between clients); 0 = refused at once
    max_pairs: int = 500_000            # pairs one FindDuplicates answer may hold (raw cosine, exact: N^2/2 at worst)
    max_collections: int = DEFAULT_MAX_COLLECTIONS   # each holds 3 file descriptors while the server runs
    verify_workers: int = -1            # processes aligning a check's candidates (stage 2); -1 = one per core up to 8, 0 = the request's thread
    mmap_threshold_mb: int = 4          # allocations this large unmapped when freed (rasters, requests); 0 = glibc's moving default
    trim_memory: int = 0                # 1 = large temporaries unmapped when freed: ~300 MiB lower peak, ~15% fewer images/s (bench/soak.py)
    malloc_arenas: int = 0              # glibc malloc arenas at most; 0 = glibc's default (8 a core). 4 on 2 cores: ~140 MiB lower peak, ~20% fewer images/s (bench/soak.py)
    max_images_per_request: int = 256
    stream_window: int = 16             # requests per stream worked on concurrently
    max_message_mb: int = 64
    receive_timeout_s: float = 30.0     # a read waits this long for its turn; a unary request must then arrive within it (request_gate)
    request_gate: int = 1               # 0 = requests read whole by gRPC before any limit (bench/request_flood.py's baseline)
    max_image_mb: int = 32
    max_pixels: int = DecodeLimits.max_pixels      # 100 MP
    allow_root: list = dataclasses.field(default_factory=list)  # folders server_path may read
    grace_s: float = 30.0
    reflection: int = 0                 # 1 = serve gRPC server reflection (grpcurl), behind tokens and call limits
    # Security: TLS (cert + key), mutual TLS (+ client CA), bearer tokens
    # ("TOKEN rw|ro NAME" lines; also the env IMAGESIEVE_TOKENS, never a flag).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    tokens_file: str = ""
    # Observability: Prometheus /metrics (-1 = off, 0 = a free port), log format.
    metrics_port: int = -1
    metrics_host: str = "127.0.0.1"     # loopback: /metrics has no authentication
    log_format: str = "text"            # "text" or "json" (one object per line)


class _OneLineErrors(argparse.ArgumentParser):
    """A configuration error is one line and exit code 2, not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def parse_config(argv: list[str] | None = None) -> ServerConfig:
    defaults = ServerConfig()
    ap = _OneLineErrors(prog="imagesieve serve", description="Run the imagesieve gRPC server.")
    for f in dataclasses.fields(ServerConfig):
        flag = "--" + f.name.replace("_", "-")
        env = "IMAGESIEVE_" + f.name.upper()
        default = getattr(defaults, f.name)
        if f.name == "allow_root":
            env_val = os.environ.get(env)
            ap.add_argument(flag, action="append", default=env_val.split(os.pathsep) if env_val else [],
                            help=f"folder whose files server_path may name; repeatable (env {env})")
            continue
        kind = type(default)
        if env in os.environ:
            default = kind(os.environ[env])
        ap.add_argument(flag, type=kind, default=default, help=f"(env {env}, default %(default)s)")
    ap.add_argument("--port", type=int, default=os.environ.get("IMAGESIEVE_PORT") or None, help="the port of --address, its host kept (--port 50052: 127.0.0.1:50052; "
                                    "env IMAGESIEVE_PORT)")
    args = vars(ap.parse_args(argv))
    port = args.pop("port")
    cfg = ServerConfig(**args)
    if port is not None:
        if not 0 <= port <= 65535:
            ap.error(f"--port must be 0-65535 (0 = a free one), got {port}")
        if cfg.address.startswith("unix:"):
            ap.error("--port applies to a HOST:PORT --address, not to a unix: socket")
        host = cfg.address.rsplit(":", 1)[0] if ADDRESS_RE.fullmatch(cfg.address) else cfg.address
        cfg.address = f"{host}:{port}"
    for name in ("snapshot_every", "max_batch_size", "max_queue", "max_inflight", "max_images_per_request",
                 "stream_window", "max_message_mb", "max_image_mb", "max_pixels", "max_concurrent_rpcs", "max_pairs",
                 "max_collections", "max_probes_per_connection"):
        if getattr(cfg, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if not cfg.receive_timeout_s > 0:
        ap.error("--receive-timeout-s must be > 0")
    if not 1 <= cfg.keepalive_s <= 7200:
        ap.error("--keepalive-s must be 1-7200")
    if not cfg.evict_idle_s >= 0:
        ap.error("--evict-idle-s must be >= 0 (0 = never)")
    if not 0 <= cfg.job_wait_s <= 3600:
        ap.error("--job-wait-s must be 0-3600 (0 = a job finding every slot in use is refused at once)")
    for name in ("max_inflight_mb", "max_jobs", "max_calls_per_client"):
        if getattr(cfg, name) < 0:
            ap.error(f"--{name.replace('_', '-')} must be >= 0 (0 = sized from the host)")
    if cfg.mmap_threshold_mb < 0:
        ap.error("--mmap-threshold-mb must be >= 0 (0 = glibc's default)")
    cfg.max_inflight_mb = cfg.max_inflight_mb or default_budget_mb()
    cfg.max_jobs = cfg.max_jobs or (os.cpu_count() or 1)
    if cfg.verify_workers < -1:
        ap.error("--verify-workers must be >= 0 (-1 = sized from the host)")
    cfg.max_calls_per_client = cfg.max_calls_per_client or max(1, cfg.max_concurrent_rpcs // 2)
    try:
        cfg.allow_root = [str(p) for p in check_roots(cfg.allow_root)]
    except ValueError as e:
        ap.error(f"--allow-root: {e}")
    if not ADDRESS_RE.fullmatch(cfg.address):
        ap.error(f"--address must be HOST:PORT (e.g. 127.0.0.1:50051, [::]:50051), got {cfg.address!r}")
    if cfg.max_delay_ms < 0:
        ap.error("--max-delay-ms must be >= 0")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    if cfg.tls_client_ca and not cfg.tls_cert:
        ap.error("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    if cfg.runtime not in RUNTIMES:
        ap.error(f"--runtime must be one of {', '.join(RUNTIMES)}")
    if cfg.torch_dtype not in TORCH_DTYPES:
        ap.error(f"--torch-dtype must be one of {', '.join(TORCH_DTYPES)}")
    if cfg.log_format not in ("text", "json"):
        ap.error("--log-format must be text or json")
    return cfg


class ImageSieveServer:
    """The server as an object, so tests and embedders can run it in-process:
    ``await s.start()`` ... ``await s.stop()``."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.descriptors = raise_descriptor_limit()
        # Connections at most half the descriptors: 20,000 idle ones (no
        # calls, so no call limit applies) used up every descriptor, and
        # collections and files could not be opened.
        self.max_connections = max(64, self.descriptors // 2)
        # Collections hold 3 each for the server's life: no more than the
        # rest fits, with some kept for files, pipes and the model.
        kept = min(DESCRIPTORS_KEPT, self.descriptors // 8)
        fits = max(1, (self.descriptors - self.max_connections - kept) // 3)
        self.max_collections = min(config.max_collections, fits)
        if self.max_collections < config.max_collections:
            log.warning("--max-collections %d lowered to %d: %d file descriptors allowed (raise the hard limit, "
                        "e.g. ulimit -Hn, to hold more)", config.max_collections, fits, self.descriptors)
        self.tokens = TokenStore.load(config.tokens_file, os.environ.get("IMAGESIEVE_TOKENS"))
        self.budget = MemoryBudget((config.max_inflight_mb or default_budget_mb()) << 20)
        embedder = Embedder.from_model(
            config.model, runtime=config.runtime,
            providers=[p for p in config.providers.split(",") if p] or None,
            intra_op_threads=config.intra_op_threads, torch_device=config.torch_device or None,
            torch_dtype=config.torch_dtype, max_batch_size=config.max_batch_size,
            decode_workers=config.decode_workers,
            limits=DecodeLimits(max_bytes=config.max_image_mb << 20, max_pixels=config.max_pixels,
                                drawings=bool(config.decode_svg)),
            budget=self.budget)
        self.engine = AsyncEmbedder(embedder, config.max_delay_ms / 1000, config.max_queue,
                                    config.max_inflight)
        runner.SLOTS.set_limit(config.max_jobs or (os.cpu_count() or 1))
        runner.SLOTS.wait_s = config.job_wait_s
        self.reader: ImageReader | None = None
        self.duplicates: DuplicateServicer | None = None
        self.collection_calls: CollectionServicer | None = None
        ex = embedder.executor
        workers = config.verify_workers if config.verify_workers >= 0 else min(os.cpu_count() or 1, 8)
        # One worker would be no faster than the request's thread.
        self.alignment_pool = verify.AlignmentPool(workers, shared=True) if workers >= 2 else None
        self.collections = CollectionManager(config.data_dir, ex.manifest.name, ex.dim, config.snapshot_every,
                                             alignment_pool=self.alignment_pool,
                                             max_collections=self.max_collections)
        self.health = HealthServicer()
        self._not_serving: set[str] = set()     # collections whose health entry says NOT_SERVING
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.metrics = Metrics(self.engine, self.collections)
        self.metrics_port: int | None = None

    async def start(self) -> int:
        """Bind and start; returns the bound port (useful with port 0)."""
        c = self.config
        set_send_limit(c.max_message_mb << 20)      # job results above it go in parts
        opts = [("grpc.max_receive_message_length", c.max_message_mb << 20),
                ("grpc.max_send_message_length", c.max_message_mb << 20),
                # One listener per port: with SO_REUSEPORT a second server on a
                # busy port started silently and took half the clients.
                ("grpc.so_reuseport", 0),
                # BDP probing widens every stream's read-ahead past what the
                # stream gate holds room for (32 streams of 60 MB messages:
                # 10-11.7 GB with it; request_gate).
                ("grpc.http2.bdp_probe", 0),
                # HTTP/2's own cap on the streams of one connection: a client
                # opening 20,000 calls at once on one channel otherwise filled
                # gRPC's queue of calls not yet handed to us (3,000), and gRPC
                # cancelled other clients' calls before CallLimiter saw them.
                # Calls beyond it wait on the client's side. Twice the server's
                # limit: a proxy may carry several clients on one connection,
                # and calls past the limit must still reach CallLimiter to be
                # refused or to evict idle streams.
                ("grpc.max_concurrent_streams", 2 * c.max_concurrent_rpcs),
                # A connection whose client reads nothing at all (not even
                # HTTP/2's pings) holds every answer and status written to it,
                # refused calls' too, until it leaves: pinged every
                # --keepalive-s while it has calls, it is closed when a ping
                # goes unanswered twice as long (gRPC's default: 2 hours; the
                # slack for a ping queued behind a slow link's buffered data).
                ("grpc.keepalive_time_ms", int(c.keepalive_s * 1000)),
                ("grpc.keepalive_timeout_ms", int(2 * c.keepalive_s * 1000)),
                ("grpc.http2.ping_timeout_ms", int(2 * c.keepalive_s * 1000)),     # newer gRPC core's ack wait
                # Requests uncompressed only (bit 0: identity). Images are
                # compressed already; a 75 KB gzip request inflated to 60 MB
                # on the event loop, one call after another, and stalled every
                # client (0.03 s -> 8.4 s). A compressed request is refused.
                ("grpc.compression_enabled_algorithms_bitset", 1),
                ("grpc.max_allowed_incoming_connections", self.max_connections)]
        limiter = CallLimiter(c.max_concurrent_rpcs, c.max_calls_per_client or max(1, c.max_concurrent_rpcs // 2),
                              c.evict_idle_s, *unsent_limits(self.budget.limit))
        self.gate = (RequestGate(gate_capacity(self.budget.limit), c.max_message_mb << 20, c.receive_timeout_s)
                     if c.request_gate else None)
        # Stream messages through a gate of their own: a stream waiting for
        # its client holds a turn, which must not keep unary calls waiting.
        # Streams idle --evict-idle-s give up their turn as they give up their call slot (0: never).
        self.stream_gate = (RequestGate(gate_capacity(self.budget.limit), c.max_message_mb << 20,
                                        c.receive_timeout_s,
                                        stream_idle_s=c.evict_idle_s if c.evict_idle_s > 0 else float("inf"))
                            if c.request_gate else None)
        if self.metrics.collector is not None:
            self.metrics.collector.gate = self.gate
            self.metrics.collector.stream_gate = self.stream_gate
            self.metrics.collector.limiter = limiter
        # Health checks: four read at once, a client's two; gRPC would read a
        # 60 MB service name whole (48 checks: 2 GB) before any check. Needing
        # no token, a stalled one gives way after 0.5 s: probes time out in ~1 s.
        probe_gate = (RequestGate(4 * (c.max_message_mb << 20), c.max_message_mb << 20, c.receive_timeout_s,
                                  slow_read_s=PROBE_SLOW_READ_S) if c.request_gate else None)
        interceptors = [ObservabilityInterceptor(self.metrics, limiter, self.gate, probe_gate, self.stream_gate,
                                                 max_probes_per_connection=c.max_probes_per_connection)]
        if self.tokens:
            interceptors.append(AuthInterceptor(self.tokens))
        # No grpc-level maximum_concurrent_rpcs: it would count (and refuse)
        # health checks too; CallLimiter admits calls instead.
        self.server = grpc.aio.server(options=opts, interceptors=interceptors)
        reader = self.reader = ImageReader(self.engine, PathPolicy(c.allow_root), self.budget)
        embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(
            EmbeddingServicer(self.engine, reader, c.max_images_per_request, c.stream_window), self.server)
        self.collection_calls = CollectionServicer(self.collections, self.engine, reader, c.max_images_per_request,
                                                   on_dropped=self._collection_dropped)
        collections_pb2_grpc.add_CollectionServiceServicer_to_server(self.collection_calls, self.server)
        self.duplicates = DuplicateServicer(self.collections, self.engine, reader, c.stream_window,
                                            c.max_images_per_request, c.max_pairs)
        duplicates_pb2_grpc.add_DuplicateServiceServicer_to_server(self.duplicates, self.server)
        analysis_pb2_grpc.add_AnalysisServiceServicer_to_server(
            AnalysisServicer(self.engine, self.collections, reader), self.server)
        consensus_pb2_grpc.add_ConsensusServiceServicer_to_server(ConsensusServicer(self.collections), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if c.reflection:
            # Off by default: its stream of requests needs no schema a client
            # lacks, and while it was open to all, 32 reflection streams of
            # 60 MB messages took a server from 221 MB to 7.7 GB (a twelfth probe).
            reflection.enable_server_reflection(
                SERVICE_NAMES + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                 reflection.SERVICE_NAME], self.server)
        try:
            if c.tls_cert:
                creds = server_credentials(c.tls_cert, c.tls_key, c.tls_client_ca)
                self.port = self.server.add_secure_port(c.address, creds)
            else:
                self.port = self.server.add_insecure_port(c.address)
        except RuntimeError as e:       # grpc's "Failed to bind to address"
            raise OSError(f"cannot listen on {c.address}: the port is in use or the address is not "
                          f"this host's ({e})") from None
        if not self.port:
            raise OSError(f"cannot listen on {c.address}: the port is in use or the address is not this host's")
        if c.metrics_port >= 0:
            self.metrics_port = self.metrics.serve_http(c.metrics_port, c.metrics_host)
        await self.engine.start()
        if self.alignment_pool is not None:
            # Started now (in the background): the first check would wait ~1 s for them.
            self._warming = asyncio.get_running_loop().run_in_executor(None, _warm, self.alignment_pool)
        await self.server.start()
        for name in ["", *SERVICE_NAMES]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        # A collection that could not be loaded: the server serves the
        # others, and says so where probes look.
        for name, why in self.collections.failed().items():
            log.warning("collection %r could not be loaded: %s", name, why)
            self._not_serving.add(name)
            await self.health.set(COLLECTION_HEALTH + name, health_pb2.HealthCheckResponse.NOT_SERVING)
        return self.port

    async def _collection_dropped(self, name: str) -> None:
        # A dropped collection that had failed to load no longer reports NOT_SERVING.
        if name in self._not_serving:
            self._not_serving.discard(name)
            await self.health.set(COLLECTION_HEALTH + name, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful: report NOT_SERVING, refuse new calls, finish in-flight
        ones (up to ``grace_s``), then drain the model queue."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.grace_s if grace_s is None else grace_s)
        if self.duplicates is not None:
            self.duplicates.close()
        if self.collection_calls is not None:
            self.collection_calls.close()
        await self.engine.stop()
        await asyncio.to_thread(self.collections.close)   # snapshots what changed
        if self.alignment_pool is not None:
            await asyncio.to_thread(self.alignment_pool.close)
        if self.reader is not None:
            self.reader.close()
        self.metrics.close()


def _warm(pool: verify.AlignmentPool) -> None:
    try:
        pool.warm()
    except Exception as e:  # noqa: BLE001 - checks then start the pool themselves, or align in their thread
        log.warning("alignment workers did not start: %s", e)


async def serve(config: ServerConfig) -> None:
    started = time.perf_counter()
    if config.malloc_arenas:
        # Before any thread allocates: each arena keeps its own high-water mark.
        limit_malloc_arenas(config.malloc_arenas)
    if config.trim_memory:
        # Large temporaries (image bytes, rasters) in their own mappings,
        # unmapped when freed: resident memory then follows what is held (the
        # budget), not every thread arena's high-water mark; the page faults
        # cost throughput, so it is a choice.
        return_freed_memory_to_os()
    elif config.mmap_threshold_mb:
        # The same for blocks of megabytes only, whose page faults cost little
        # next to their use: the soak's peak 1,298 -> 1,137 MiB.
        fix_mmap_threshold(config.mmap_threshold_mb << 20)
    srv = ImageSieveServer(config)
    port = await srv.start()
    ex = srv.engine.embedder.executor
    host = config.address.rsplit(":", 1)[0]
    log.info("serving model=%s dim=%d providers=%s on %s:%d (ready in %.1fs)", ex.manifest.name,
             ex.dim, ",".join(ex.providers), host, port, time.perf_counter() - started)
    security = ("mutual TLS" if config.tls_client_ca else "TLS") if config.tls_cert else "plaintext"
    log.info("security: %s, %s", security,
             f"{len(srv.tokens)} token(s) required" if srv.tokens else "no token authentication")
    if srv.tokens and not config.tls_cert:
        log.warning("tokens are required but the server is plaintext: tokens cross the network in clear "
                    "(serve TLS with --tls-cert/--tls-key)")
    log.info("server_path roots: %s", ", ".join(config.allow_root) or "none (server paths refused)")
    log.info("limits: %d MiB in flight, %d images a request, %d calls (%d a client) and %d analysis jobs at once, "
             "%d collections, %d connections (of %d file descriptors), %s; %s", config.max_inflight_mb,
             config.max_images_per_request, config.max_concurrent_rpcs, config.max_calls_per_client, config.max_jobs,
             srv.max_collections, srv.max_connections, srv.descriptors,
             f"unary requests read {srv.gate.reads_at_once} at once ({srv.gate.reads_per_client} a client) and held "
             f"up to {srv.gate.capacity >> 20} MiB ({srv.gate.held_per_client >> 20} MiB a client), stream "
             f"messages likewise on a gate of their own" if srv.gate
             else "requests read whole by gRPC (--request-gate 0)",
             f"{srv.alignment_pool.workers} alignment processes" if srv.alignment_pool else "alignment in the request's thread")
    if srv.metrics_port is not None:
        print(f"imagesieve: metrics on http://{config.metrics_host}:{srv.metrics_port}/metrics", flush=True)
    print(f"imagesieve: serving {ex.manifest.name} on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining in-flight work (grace %.0fs)", config.grace_s)
    await srv.stop()
    log.info("stopped")


DESCRIPTORS_KEPT = 256       # at most, for files, pipes, workers and the model beyond connections and collections


def raise_descriptor_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (a
    server holds connections, collections and files at once); the limit now."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def die_with_parent() -> None:
    """Linux: when started by ``imagesieve.local_server`` (which names its pid
    in IMAGESIEVE_DIE_WITH_PARENT), get SIGTERM if that process dies, so a
    killed test run or demo leaves no orphan server; exit at once if it is
    already gone."""
    from imagesieve.local_server import PARENT_PID_ENV

    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):
        sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    config = parse_config(argv)
    configure_logging(os.environ.get("IMAGESIEVE_LOG_LEVEL", "INFO"), config.log_format)
    try:
        asyncio.run(serve(config))
    except (OSError, TokenError) as e:        # missing files, a port in use: one line, not a traceback
        print(f"imagesieve serve: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
