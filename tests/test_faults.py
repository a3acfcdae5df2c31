"""Faults and limits against a real server: a client killed mid-stream,
deadlines, and a full model queue. The server's own metrics tell whether
anything was left behind."""
from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import textwrap
import time

import grpc
import pytest

from imagesieve import Client
from imagesieve.local_server import LocalServer
from imagesieve.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc

from test_observability import scrape, value


def wait_idle(srv, method: str, timeout: float = 15.0) -> dict:
    """Scrape until no call of ``method``, no image and no queue entry is left."""
    deadline = time.time() + timeout
    while True:
        m = scrape(srv)
        idle = (value(m, "imagesieve_requests_inflight", method=method) == 0
                and value(m, "imagesieve_images_inflight") == 0 and value(m, "imagesieve_model_queue_depth") == 0)
        if idle or time.time() > deadline:
            return m
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fault_server(manifest_path):
    with LocalServer(["--metrics-port", "0", "--metrics-host", "127.0.0.1"], model=str(manifest_path)) as srv:
        yield srv


VANISHING_CLIENT = textwrap.dedent("""
    import itertools, sys, grpc
    from imagesieve.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc
    data = open(sys.argv[2], "rb").read()
    stub = embedding_pb2_grpc.EmbeddingServiceStub(grpc.insecure_channel(sys.argv[1]))
    def requests():   # endless: the client dies long before it ends
        for i in itertools.count():
            yield embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=f"{i}.{j}", data=data) for j in range(8)])
    for n, _ in enumerate(stub.EmbedStream(requests())):
        if n == 3:
            print("STREAMING", flush=True)
""")


def test_client_killed_mid_stream_is_cleaned_up(fault_server, photos, tmp_path):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(photos[0][0])
    before = scrape(fault_server)
    child = subprocess.Popen([sys.executable, "-c", VANISHING_CLIENT, fault_server.address, str(photo)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "STREAMING"
        busy = scrape(fault_server)
        assert value(busy, "imagesieve_requests_inflight", method="EmbedStream") == 1
        time.sleep(0.3)
    finally:
        child.kill()          # SIGKILL: no goodbye on the wire, just a dead socket
        child.wait()
    after = wait_idle(fault_server, "EmbedStream")
    assert value(after, "imagesieve_requests_inflight", method="EmbedStream") == 0
    assert value(after, "imagesieve_images_inflight") == 0
    assert value(after, "imagesieve_model_queue_depth") == 0
    assert (value(after, "imagesieve_requests_total", method="EmbedStream", code="CANCELLED")
            - value(before, "imagesieve_requests_total", method="EmbedStream", code="CANCELLED")) == 1
    # Nothing keeps running for the dead client: the model stops.
    embedded = value(after, "imagesieve_images_embedded_total")
    time.sleep(0.5)
    assert value(scrape(fault_server), "imagesieve_images_embedded_total") == embedded
    with Client(fault_server.address, timeout=30) as c:
        assert c.embed([photos[1][0]]).ok.all()


def test_deadline_is_honoured_and_server_stays_healthy(fault_server, photos):
    images = [common_pb2.Image(key=str(i), data=photos[i % 20][0]) for i in range(64)]
    before = scrape(fault_server)
    with grpc.insecure_channel(fault_server.address) as ch:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(ch)
        t0 = time.perf_counter()
        with pytest.raises(grpc.RpcError) as e:
            stub.Embed(embedding_pb2.EmbedRequest(images=images), timeout=0.05)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.perf_counter() - t0 < 1.0
        with pytest.raises(grpc.RpcError) as e:     # the streaming call too
            list(stub.EmbedStream(iter([embedding_pb2.EmbedRequest(images=images)] * 4), timeout=0.05))
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    after = wait_idle(fault_server, "Embed")
    assert value(after, "imagesieve_images_inflight") == 0
    assert value(after, "imagesieve_model_queue_depth") == 0
    # The server saw the deadline too (it records the call as not OK).
    assert (value(after, "imagesieve_requests_total", method="Embed", code="OK")
            == value(before, "imagesieve_requests_total", method="Embed", code="OK"))
    with Client(fault_server.address, timeout=30) as c:
        assert c.embed_batch([photos[2][0], photos[3][0]]).ok.all()


def test_full_model_queue_gives_resource_exhausted(manifest_path, photos):
    # A model queue of 4 behind a wide decode stage: floods overflow it.
    with LocalServer(["--max-queue", "4", "--max-inflight", "256", "--max-batch-size", "4",
                      "--metrics-port", "0", "--metrics-host", "127.0.0.1"], model=str(manifest_path)) as srv:
        request = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=str(i), data=photos[i % 20][0])
                                                     for i in range(48)])

        def call(_):
            with grpc.insecure_channel(srv.address) as ch:
                try:
                    embedding_pb2_grpc.EmbeddingServiceStub(ch).Embed(request, timeout=60)
                    return "OK", ""
                except grpc.RpcError as e:
                    return e.code().name, e.details()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(call, range(8)))
        codes = [c for c, _ in outcomes]
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, outcomes
        assert "RESOURCE_EXHAUSTED" in codes, outcomes
        details = next(d for c, d in outcomes if c == "RESOURCE_EXHAUSTED")
        assert "queue is full" in details and "retry" in details
        m = wait_idle(srv, "Embed")
        assert value(m, "imagesieve_model_queue_depth") == 0 and value(m, "imagesieve_images_inflight") == 0
        assert value(m, "imagesieve_requests_total", method="Embed", code="RESOURCE_EXHAUSTED") == codes.count(
            "RESOURCE_EXHAUSTED")
        # Back-pressure is not a failure: once the flood is over, calls succeed.
        with Client(srv.address, timeout=30) as c:
            assert c.embed_batch([d for d, _, _ in photos[:4]]).ok.all()
