"""The standard gRPC health service (``grpc.health.v1.Health``), with a
Watch that never holds the service's lock while it writes.

grpc_health's asyncio servicer writes each status change to a watcher while
holding that service's ``asyncio.Condition``, which every ``set`` needs too.
A client that opens a Watch with an HTTP/2 window of 0 never lets that write
complete: every later ``set`` of the service waited for ever, among them the
NOT_SERVING of a graceful stop (SIGTERM did not stop the server, which kept
answering SERVING) and a dropped collection's status (DropCollection timed
out though the collection was gone; a twenty-seventh probe). Health calls
need no token, so any client could do it.
"""
from __future__ import annotations

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer as _GrpcHealthServicer


class HealthServicer(_GrpcHealthServicer):
    async def Watch(self, request: health_pb2.HealthCheckRequest, context) -> None:
        """Each status change of ``request.service`` (intermediate ones may
        be skipped: a watcher wants the latest); read and waited for under
        the service's condition, written without it."""
        service = request.service
        condition = self._server_watchers[service]
        self._watcher_count_by_service[service] += 1
        last = None
        try:
            while True:
                async with condition:
                    while (status := self._server_status.get(
                            service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)) == last:
                        await condition.wait()
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
        finally:
            self._watcher_count_by_service[service] -= 1
            if self._watcher_count_by_service[service] == 0:
                del self._server_watchers[service]
                del self._watcher_count_by_service[service]
