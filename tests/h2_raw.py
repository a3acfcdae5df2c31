"""A raw HTTP/2 client (h2) for what no gRPC client does: a connection whose
stream window is 0, so that no answer the server writes can be sent."""
from __future__ import annotations

import socket


def health_request(service: str) -> bytes:
    from grpc_health.v1 import health_pb2
    return health_pb2.HealthCheckRequest(service=service).SerializeToString()


def zero_window_calls(address: str, method: str = "Watch", calls: int = 1):
    """(socket, h2 connection) of a new connection with a stream window of 0
    that has sent ``calls`` Health ``method`` calls and reads nothing: the
    server's answers to them can never be sent. Closing the socket ends them;
    ``conn.receive_data`` parses what the server wrote, for a caller that reads."""
    import h2.config
    import h2.connection
    import h2.settings
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0, h2.settings.SettingCodes.ENABLE_PUSH: 0})
    conn.initiate_connection()
    body = health_request("")
    for _ in range(calls):
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", "POST"), (":scheme", "http"),
                                   (":path", f"/grpc.health.v1.Health/{method}"), (":authority", "localhost"),
                                   ("content-type", "application/grpc"), ("te", "trailers")])
        conn.send_data(stream, b"\0" + len(body).to_bytes(4, "big") + body, end_stream=True)
        sock.sendall(conn.data_to_send())
    return sock, conn
