"""The channel to an imagesieve server: TLS, bearer tokens, message limits
and the retry policy. Imports grpc alone (no numpy, no service stubs), so
``imagesieve health`` (a container's health probe) starts fast."""
from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import grpc


# Calls that read or compute and change nothing are retried by gRPC itself
# when the server refuses them for now (UNAVAILABLE: restarting, or not yet
# listening; RESOURCE_EXHAUSTED: at its limit of calls, or its queue is full),
# with exponential backoff: 0.2 s, 0.4 s, ... at most 3 s, 5 attempts in all.
# gRPC retries a call only before any answer to it has arrived, so a stream is
# never replayed halfway. Calls that write (AddImages, RemoveImages,
# CheckDuplicates with add_if_unique, CreateCollection, DropCollection,
# AddAnnotations, SnapshotCollection) are not retried: the caller decides.
# Named one by one (a method added to a service later is not retried until it
# is listed): the methods whose (imagesieve.v1.access) option in the .proto is
# READ with no writes_when, which a test checks against imagesieve.contract.
RETRIED_METHODS = (
    ("imagesieve.v1.EmbeddingService", "Embed"),
    ("imagesieve.v1.EmbeddingService", "EmbedStream"),
    ("imagesieve.v1.EmbeddingService", "GetModelInfo"),
    ("imagesieve.v1.CollectionService", "ListCollections"),
    ("imagesieve.v1.CollectionService", "GetCollectionStats"),
    ("imagesieve.v1.DuplicateService", "FindDuplicates"),
    ("imagesieve.v1.AnalysisService", "ScoreLabels"),
    ("imagesieve.v1.AnalysisService", "SampleSizeSweep"),
    ("imagesieve.v1.ConsensusService", "AnalyseConsensus"),
)
RETRY_POLICY = {"maxAttempts": 5, "initialBackoff": "0.2s", "maxBackoff": "3s", "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]}


def service_config(retries: bool = True) -> str:
    """The channel's gRPC service config (JSON): RETRY_POLICY on RETRIED_METHODS."""
    if not retries:
        return json.dumps({})
    names = [{"service": s, "method": m} for s, m in RETRIED_METHODS]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}]})


def _channel_options(max_message_mb: int, retries: bool = True) -> list:
    return [("grpc.max_receive_message_length", max_message_mb << 20),
            ("grpc.max_send_message_length", max_message_mb << 20),
            ("grpc.enable_retries", int(retries)),
            ("grpc.service_config", service_config(retries))]


def _read_pem(value: str | bytes | os.PathLike | None) -> bytes | None:
    """PEM bytes as they are, or the contents of the file a path names."""
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


class _TokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                        grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer TOKEN`` to every call (blocking channels)."""

    def __init__(self, token: str):
        self._md = ("authorization", f"Bearer {token}")

    def _details(self, d):
        return _CallDetails(d.method, d.timeout, [*(d.metadata or ()), self._md], d.credentials,
                            getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, d, request):
        return continuation(self._details(d), request)

    intercept_unary_stream = intercept_unary_unary

    def intercept_stream_unary(self, continuation, d, request_iterator):
        return continuation(self._details(d), request_iterator)

    intercept_stream_stream = intercept_stream_unary


class _CallDetails(collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                            "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):
    pass


def _aio_token_interceptors(token: str) -> list:
    """The same for asyncio channels (one interceptor object per call kind)."""
    md = ("authorization", f"Bearer {token}")

    def details(d):
        metadata = grpc.aio.Metadata(*(d.metadata or ()), md)
        return grpc.aio.ClientCallDetails(d.method, d.timeout, metadata, d.credentials, d.wait_for_ready)

    class UU(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, d, request):
            return await continuation(details(d), request)

    class US(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation, d, request):
            return await continuation(details(d), request)

    class SU(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation, d, request_iterator):
            return await continuation(details(d), request_iterator)

    class SS(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation, d, request_iterator):
            return await continuation(details(d), request_iterator)

    return [UU(), US(), SU(), SS()]


def make_channel(address: str, *, tls_ca=None, tls_cert=None, tls_key=None, token: str | None = None,
                 max_message_mb: int = 64, aio: bool = False, tls: bool | None = None, retries: bool = True):
    """A channel to an imagesieve server.

    tls_ca : PEM (bytes or a file path) of the CA that signed the server's
        certificate; giving it (or ``tls=True``, which trusts the system roots)
        makes the channel TLS.
    tls_cert, tls_key : the client's certificate and key, for mutual TLS.
    token : sent as ``authorization: Bearer TOKEN`` on every call.
    retries : read-only calls refused for now are retried with backoff
        (RETRY_POLICY); False turns that off.
    """
    options = _channel_options(max_message_mb, retries)
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert and tls_key go together")
    secure = bool(tls) or tls_ca is not None or tls_cert is not None
    mod = grpc.aio if aio else grpc
    if secure:
        creds = grpc.ssl_channel_credentials(_read_pem(tls_ca), _read_pem(tls_key), _read_pem(tls_cert))
        if token:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
        return mod.secure_channel(address, creds, options=options)
    if aio:
        return grpc.aio.insecure_channel(address, options=options,
                                         interceptors=_aio_token_interceptors(token) if token else None)
    channel = grpc.insecure_channel(address, options=options)
    return grpc.intercept_channel(channel, _TokenInterceptor(token)) if token else channel
