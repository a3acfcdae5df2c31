"""Services whose engines are not built yet answer UNIMPLEMENTED, saying
which method and what will provide it."""
from __future__ import annotations

import grpc

from imagesieve.v1 import analysis_pb2_grpc

_PLANNED = {
    analysis_pb2_grpc.AnalysisServiceServicer: "label-noise scoring (issue #4) and sample-size sweeps (issue #5)",
}


def planned_servicer(base: type) -> object:
    """An instance of ``base`` whose every RPC answers UNIMPLEMENTED, naming
    the method and the work that will provide it."""
    what = _PLANNED[base]
    service = base.__name__.removesuffix("Servicer")

    def make(method: str):
        message = f"imagesieve.v1.{service}/{method} is not implemented yet: {what} is planned"

        async def handler(self, request, context):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
        return handler

    methods = {m: make(m) for m in vars(base) if not m.startswith("_")}
    return type(f"Planned{base.__name__}", (base,), methods)()
