"""Transport security and call authentication.

* TLS / mutual TLS: ``server_credentials`` builds the grpc credentials from
  PEM files (a client CA makes client certificates mandatory).
* Tokens: ``AuthInterceptor`` checks ``authorization: Bearer TOKEN`` call
  metadata before any handler runs. A missing or unknown token gets
  UNAUTHENTICATED; a read-only token calling a writing method gets
  PERMISSION_DENIED. Either way the servicer never sees the call, so nothing
  is done. The health check and server reflection stay open (probes).

Tokens come from a file (``--tokens-file``) or the ``IMAGESIEVE_TOKENS``
environment variable, one per line (``;`` also separates in the env):
``TOKEN rw|ro NAME``. Tokens are kept only as SHA-256 digests and never
logged; logs name the token's NAME.
"""
from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Awaitable, Callable

import grpc

from imagesieve.contract import methods

# The caller's token name for the current call (for logs); "" when auth is off.
principal: contextvars.ContextVar[str] = contextvars.ContextVar("imagesieve_principal", default="")

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)   # probes; reflection (--reflection 1) needs a token like any call

# Methods a read-only token may call, and the request field that makes a
# request of one of them a write: from the .proto's access options
# (imagesieve.contract). A method without the option needs a read-write token,
# so a method added later fails closed.
_CONTRACT = methods()
READ_ONLY_METHODS = frozenset(p for p, m in _CONTRACT.items() if m.reads)
WRITES_WHEN = {p: m.writes_when for p, m in _CONTRACT.items() if m.reads and m.writes_when}

ROLES = ("ro", "rw")


class TokenError(ValueError):
    pass


class RequestRefused(Exception):
    """Raised while reading a stream's requests; the handler wrapper turns
    it into ``code`` (from the RPC's own task)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class Token:
    role: str   # "ro" or "rw"
    name: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenStore:
    """Token digests -> Token. Empty store = authentication off."""

    def __init__(self, entries: dict[bytes, Token] | None = None):
        self._by_digest = dict(entries or {})

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    def __len__(self) -> int:
        return len(self._by_digest)

    @classmethod
    def parse(cls, text: str, source: str = "tokens") -> "TokenStore":
        entries: dict[bytes, Token] = {}
        for n, raw in enumerate(text.replace(";", "\n").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) not in (2, 3) or parts[1] not in ROLES:
                # Never echo the line: it holds a secret.
                raise TokenError(f"{source}:{n}: expected 'TOKEN rw|ro [NAME]'")
            if len(parts[0]) < 16:
                raise TokenError(f"{source}:{n}: token too short (use at least 16 characters)")
            name = parts[2] if len(parts) == 3 else f"{source}:{n}"
            entries[_digest(parts[0])] = Token(parts[1], name)
        return cls(entries)

    @classmethod
    def load(cls, tokens_file: str = "", env_value: str | None = None) -> "TokenStore":
        entries: dict[bytes, Token] = {}
        if tokens_file:
            entries.update(cls.parse(Path(tokens_file).read_text(), os.path.basename(tokens_file))._by_digest)
        if env_value:
            entries.update(cls.parse(env_value, "IMAGESIEVE_TOKENS")._by_digest)
        return cls(entries)

    def lookup(self, token: str) -> Token | None:
        return self._by_digest.get(_digest(token))


def bearer_token(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _denying_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str):
    """A handler of the same kind as ``handler`` that only aborts."""
    async def deny_unary(request_or_iterator, context):
        await context.abort(code, message)

    async def deny_stream(request_or_iterator, context):
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    kw = dict(request_deserializer=handler.request_deserializer,
              response_serializer=handler.response_serializer)
    # Request streams whatever the method: gRPC reads a unary request whole
    # before its handler runs, and a refused caller's megabytes are not read.
    if handler.unary_unary or handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny_unary, **kw)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **kw)


def _read_only_requests(handler: grpc.RpcMethodHandler, field: str):
    """A streaming method for a read-only caller: a request with ``field``
    set (CheckDuplicates' add_if_unique) ends the call with
    PERMISSION_DENIED before the servicer sees it."""
    inner = handler.stream_stream
    if inner is None:
        raise TypeError(f"writes_when ({field}) is supported on stream-stream methods only")

    async def behavior(request_iterator, context):
        async def guarded():
            async for request in request_iterator:
                if getattr(request, field):
                    raise RequestRefused(grpc.StatusCode.PERMISSION_DENIED,
                                         f"{field} needs a read-write token")
                yield request
        try:
            async for response in inner(guarded(), context):
                yield response
        except RequestRefused as e:
            # Abort here, in the RPC's task: the servicer may read requests
            # in a task of its own, and grpc.aio must not be aborted from there.
            await context.abort(e.code, str(e))

    return grpc.stream_stream_rpc_method_handler(
        behavior, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: TokenStore):
        self.tokens = tokens

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails],
                                                             Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method or ""
        handler = await continuation(details)
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        token = bearer_token(details.invocation_metadata)
        found = self.tokens.lookup(token) if token else None
        if found is None:
            why = "missing" if token is None else "invalid"
            return _denying_handler(handler, grpc.StatusCode.UNAUTHENTICATED,
                                    f"{why} token: send 'authorization: Bearer TOKEN' metadata")
        principal.set(found.name)
        if found.role == "rw":
            return handler
        if method in WRITES_WHEN:
            return _read_only_requests(handler, WRITES_WHEN[method])
        if method in READ_ONLY_METHODS:
            return handler
        return _denying_handler(handler, grpc.StatusCode.PERMISSION_DENIED,
                                f"{method.rsplit('/', 1)[-1]} needs a read-write token "
                                f"(token {found.name!r} is read-only)")


def server_credentials(cert_file: str, key_file: str, client_ca_file: str = "") -> grpc.ServerCredentials:
    """TLS server credentials; with ``client_ca_file``, mutual TLS (clients
    must present a certificate signed by that CA)."""
    cert, key = Path(cert_file).read_bytes(), Path(key_file).read_bytes()
    client_ca = Path(client_ca_file).read_bytes() if client_ca_file else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)
