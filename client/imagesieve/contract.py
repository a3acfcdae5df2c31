"""What the .proto says about each method, read from the generated
descriptors: its ``imagesieve.v1.access`` option (READ: changes nothing;
WRITE, or none: changes state) and ``writes_when`` (the bool request field
that makes a READ method's request a write). The server's token check reads
it; the client's retry list (``channel.RETRIED_METHODS``, kept light: a
health probe loads no service stubs) is checked against it by a test."""
from __future__ import annotations

import dataclasses
import functools


@dataclasses.dataclass(frozen=True)
class MethodAccess:
    path: str            # "/imagesieve.v1.EmbeddingService/Embed"
    reads: bool          # access = ACCESS_READ (unspecified counts as a write)
    writes_when: str     # "" or a bool request field, e.g. "add_if_unique"


@functools.lru_cache(maxsize=1)
def methods() -> dict[str, MethodAccess]:
    """Every imagesieve.v1 method by its gRPC path."""
    from .v1 import analysis_pb2, collections_pb2, common_pb2, consensus_pb2, duplicates_pb2, embedding_pb2

    out = {}
    for mod in (embedding_pb2, collections_pb2, duplicates_pb2, analysis_pb2, consensus_pb2):
        for service in mod.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                opts = m.GetOptions()
                path = f"/{service.full_name}/{m.name}"
                out[path] = MethodAccess(path, opts.Extensions[common_pb2.access] == common_pb2.ACCESS_READ,
                                         opts.Extensions[common_pb2.writes_when])
    return out
