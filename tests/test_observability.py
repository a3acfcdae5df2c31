"""Prometheus metrics and structured logs of a real server."""
from __future__ import annotations

import json
import os
import re
import socket
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imagesieve import Client
from imagesieve.local_server import LocalServer
from imagesieve.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc

from conftest import encode, photo_image


def metrics_url(srv: LocalServer) -> str:
    for line in srv.log:
        m = re.search(r"imagesieve: metrics on http://[^:]+:(\d+)/metrics", line)
        if m:
            return f"http://127.0.0.1:{m.group(1)}/metrics"
    raise AssertionError("no metrics line in the server log")


def scrape(srv: LocalServer) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(metrics_url(srv), timeout=10).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def obs_server(manifest_path):
    with LocalServer(["--metrics-port", "0", "--metrics-host", "127.0.0.1", "--log-format", "json",
                      "--max-batch-size", "8"], model=str(manifest_path)) as srv:
        yield srv


def test_metrics_move_with_real_calls(obs_server, photos):
    before = scrape(obs_server)
    good = [d for d, _, _ in photos[:6]]
    with Client(obs_server.address, timeout=30) as c:
        res = c.embed_batch(good + [b"not an image", b""])
        assert res.ok.tolist() == [True] * 6 + [False, False]
        assert sum(r.ok for r in c.embed_stream(good, chunk_size=2)) == 6
        c.create_collection("metered")
        assert all(r.added for r in c.add("metered", good[:4], keys=list("abcd")))
        with pytest.raises(grpc.RpcError):
            c.collection_stats("no-such-collection")
    # A streaming call's metrics are recorded when its handler finishes on the
    # server, which can come just after the client has read the last message.
    deadline = time.time() + 10
    while True:
        after = scrape(obs_server)
        settled = all(value(after, "imagesieve_requests_total", method=m, code=code)
                      > value(before, "imagesieve_requests_total", method=m, code=code)
                      for m, code in (("Embed", "OK"), ("EmbedStream", "OK"), ("AddImages", "OK"),
                                      ("GetCollectionStats", "NOT_FOUND")))
        if settled or time.time() > deadline:
            break
        time.sleep(0.1)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("imagesieve_requests_total", method="Embed", code="OK") == 1
    assert delta("imagesieve_requests_total", method="EmbedStream", code="OK") == 1
    assert delta("imagesieve_requests_total", method="AddImages", code="OK") == 1
    assert delta("imagesieve_requests_total", method="GetCollectionStats", code="NOT_FOUND") == 1
    assert delta("imagesieve_request_duration_seconds_count", method="Embed", code="OK") == 1
    assert value(after, "imagesieve_request_duration_seconds_sum", method="Embed", code="OK") > 0
    assert delta("imagesieve_item_errors_total", method="Embed", code="INVALID_ARGUMENT") == 2
    assert delta("imagesieve_images_embedded_total") == 16          # 6 + 6 + 4 through the model
    batches = {dict(k[1])["size"]: v for k, v in after.items() if k[0] == "imagesieve_model_batches_total"}
    assert batches and sum(int(s) * n for s, n in batches.items()) == value(after, "imagesieve_images_embedded_total")
    assert max(int(s) for s in batches) <= 8                         # --max-batch-size
    assert value(after, "imagesieve_model_queue_depth") == 0
    assert value(after, "imagesieve_model_queue_capacity") == 1024
    assert value(after, "imagesieve_images_inflight") == 0
    assert value(after, "imagesieve_collection_images", collection="metered") == 4
    assert value(after, "imagesieve_collection_index_bytes", collection="metered") > 0
    assert value(after, "imagesieve_requests_inflight", method="Embed") == 0
    # Every unary request's bytes were returned to the request gate when its call ended.
    assert value(after, "imagesieve_request_gate", kind="held_bytes") == 0
    assert value(after, "imagesieve_request_gate", kind="reading") == 0
    assert value(after, "imagesieve_request_gate_reads_given_up_total") == 0


def test_check_verdicts_are_counted_per_collection_and_method(obs_server, photos):
    """A gate that turns away an implausible share of what it is shown (a
    raw threshold too low for thumbnails: 93% of a stream of Fashion-MNIST,
    bench/stream_gate.py) shows in /metrics, per collection and method,
    exact duplicates answered by content hash included."""
    data = [d for d, _, _ in photos]
    smaller = photo_image(data[1])
    copy = encode(smaller.resize((smaller.width * 3 // 4, smaller.height * 3 // 4)), "JPEG", quality=60)
    with Client(obs_server.address, timeout=60) as c:
        c.create_collection("gated")
        verdicts = [r.verdict for r in c.check("gated", [data[0], data[1], data[2], data[0], copy],
                                               keys=list("abcde"), add_if_unique=True)]
        assert verdicts == ["UNIQUE", "UNIQUE", "UNIQUE", "EXACT_DUPLICATE", "NEAR_DUPLICATE"]
        assert [r.verdict for r in c.check("gated", [data[5]], keys=["f"], raw_cosine=True)] == ["UNIQUE"]
    after = scrape(obs_server)

    def count(verdict, method):
        return value(after, "imagesieve_collection_check_verdicts_total", collection="gated", verdict=verdict,
                     method=method)
    assert (count("unique", "verified"), count("exact_duplicate", "verified"),
            count("near_duplicate", "verified"), count("unique", "raw_cosine")) == (3, 1, 1, 1)
    assert count("near_duplicate", "raw_cosine") == 0                  # every series is there from the start
    assert ("imagesieve_collection_check_verdicts_total",
            (("collection", "gated"), ("method", "raw_cosine"), ("verdict", "near_duplicate"))) in after


def test_request_id_is_echoed_and_logged_as_json(obs_server, photos):
    rid = "req-test-0042"
    with grpc.insecure_channel(obs_server.address) as ch:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(ch)
        req = embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="k", data=photos[0][0])])
        _, call = stub.Embed.with_call(req, metadata=[("x-request-id", rid)], timeout=30)
        assert dict(call.initial_metadata())["x-request-id"] == rid
        # Without one, the server makes one up and still echoes it.
        _, call = stub.Embed.with_call(req, timeout=30)
        generated = dict(call.initial_metadata())["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
    deadline = time.time() + 5
    while time.time() < deadline:
        records = [json.loads(line) for line in obs_server.log if line.startswith("{")]
        mine = [r for r in records if r.get("request_id") == rid]
        if mine and any(r.get("request_id") == generated for r in records):
            break
        time.sleep(0.05)
    assert mine, "no JSON log line with the request id"
    (access,) = [r for r in mine if r["logger"] == "imagesieve.access"]
    assert access["rpc_method"] == "Embed" and access["grpc_code"] == "OK"
    assert access["duration_ms"] > 0 and access["level"] == "INFO" and "ipv4:127.0.0.1" in access["peer"]
    assert any(r.get("request_id") == generated for r in records)
    # Every log line the server wrote after start-up is one JSON object.
    assert all(json.loads(line) for line in obs_server.log if line.startswith("{"))


def test_an_answer_the_client_left_is_logged_as_one_info_line():
    """gRPC core logs ERROR with a traceback when it cannot write a streaming
    answer because the call has ended (a fifteenth probe: cancelled
    ScoreLabels calls whose answers waited to be sent, one traceback each);
    the filter makes it one INFO line naming the method. Other errors of
    that logger stay as they were."""
    import logging
    import sys

    from imagesieve_server.observability import CancelledWriteFilter, quiet_cancelled_writes
    quiet_cancelled_writes()
    quiet_cancelled_writes()                     # once, however often it is called
    core = logging.getLogger("grpc._cython.cygrpc")
    assert sum(isinstance(f, CancelledWriteFilter) for f in core.filters) == 1
    try:
        raise RuntimeError("Failed execute_batch")
    except RuntimeError:
        exc = sys.exc_info()
    record = core.makeRecord(core.name, logging.ERROR, "server.pyx.pxi", 733,
                             "ExecuteBatchError raised in core by servicer method "
                             "[/imagesieve.v1.AnalysisService/ScoreLabels]", (), exc)
    assert CancelledWriteFilter().filter(record)
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage().endswith("[/imagesieve.v1.AnalysisService/ScoreLabels]")
    assert "could not be sent" in record.getMessage()
    other = core.makeRecord(core.name, logging.ERROR, "server.pyx.pxi", 737, "Unexpected [%s] raised", ("X",), exc)
    assert CancelledWriteFilter().filter(other) and other.levelno == logging.ERROR and other.exc_info is exc


def test_failed_calls_log_lines_are_budgeted_per_code_and_the_rest_summed_up():
    """A flood of calls a client ends for nothing (an HTTP/2 rapid reset:
    29,000 CANCELLED lines in 10 s) logs at most the budget's lines; the
    next line logged is preceded by how many were not and whose they mostly
    were, and other codes keep their own budget."""
    from imagesieve_server.observability import LineBudget
    budget = LineBudget(rate=1e-9, burst=3)
    assert [budget.take("CANCELLED", "ipv4:10.0.0.1") for _ in range(3)] == ["", "", ""]
    assert all(budget.take("CANCELLED", "ipv4:10.0.0.9" if i < 6 else "ipv4:10.0.0.2") is None for i in range(7))
    assert budget.take("UNAUTHENTICATED", "ipv4:10.0.0.3") == ""          # its own budget
    budget.tokens["CANCELLED"] = (1.5, budget.tokens["CANCELLED"][1])      # as after a while
    summary = budget.take("CANCELLED", "ipv4:10.0.0.1")
    assert summary.startswith("7 more calls ended CANCELLED") and "ipv4:10.0.0.9 (6), ipv4:10.0.0.2 (1)" in summary
    assert budget.take("CANCELLED") is None                                # 0.5 left


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the server's thread count from /proc")
def test_idle_metrics_connections_take_a_bounded_number_of_threads_and_are_closed(obs_server):
    """A twenty-fourth probe: prometheus_client's /metrics server started a
    thread for each connection and waited on it for ever (3,000 connections
    opened and left silent: 1,400 more threads). Now at most
    METRICS_CONNECTIONS are served at once, the rest closed at once, and a
    silent one is closed after METRICS_IDLE_S; then a scrape is answered."""
    from imagesieve_server.observability import METRICS_CONNECTIONS, METRICS_IDLE_S
    port = int(metrics_url(obs_server).rsplit(":", 1)[1].split("/")[0])
    scrape(obs_server)
    before = _threads(obs_server.proc.pid)
    held = []
    for _ in range(150):
        held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    time.sleep(1.0)
    during = _threads(obs_server.proc.pid)
    closed_at_once = 0
    for s in held:
        s.setblocking(False)
        try:
            closed_at_once += s.recv(1) == b""
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed_at_once += 1
    time.sleep(METRICS_IDLE_S + 1.5)
    after = _threads(obs_server.proc.pid)
    assert "imagesieve_requests_total" in urllib.request.urlopen(metrics_url(obs_server), timeout=10).read().decode()
    for s in held:
        s.close()
    assert during - before <= METRICS_CONNECTIONS + 2, (before, during)
    assert closed_at_once >= 150 - METRICS_CONNECTIONS - 2, closed_at_once
    assert after - before <= 2, (before, after)


def test_a_metrics_connection_that_trickles_is_cut_at_its_deadline(monkeypatch):
    """A review: the idle limit is a socket timeout, restarted by every byte, so
    clients sending a byte every few seconds held every /metrics slot for as
    long as they liked. A connection now ends at METRICS_CONNECTION_S."""
    from imagesieve_server import observability as obs
    monkeypatch.setattr(obs, "METRICS_CONNECTIONS", 2)
    monkeypatch.setattr(obs, "METRICS_CONNECTION_S", 1.5)
    metrics = obs.Metrics()
    port = metrics.serve_http(0, "127.0.0.1")
    try:
        tricklers = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        cut = [False, False]
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 4 and not all(cut):
            for i, s in enumerate(tricklers):
                try:
                    s.sendall(b"G")
                except OSError:
                    cut[i] = True
            time.sleep(0.3)
        took = time.perf_counter() - t0
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        for s in tricklers:
            s.close()
    finally:
        metrics.close()
    assert all(cut) and took < 3.5, (cut, took)
    assert "imagesieve_requests" in text
