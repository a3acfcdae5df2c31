"""Large Embed answers are built off the event loop, each distinct image once.

A 7.5 KB Embed naming one small file 256 times (top_k_classes=100, layout
signatures) asks for a 3.6 MB answer: its 65,000 entries were built in Python
on the event loop that serves every call (44-112 ms a call), and 256 such
calls held another client's small Embed for seconds (a probe's follow-up)."""
from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from imagesieve.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc
from imagesieve_server.server import ImageSieveServer, ServerConfig
from imagesieve_server.servicers import embedding as embedding_servicer


@pytest.fixture
def inproc(manifest_path, photos, tmp_path):
    """A real server in this process, its event loop on a thread of its own:
    (address, the loop's thread id, a photo under its allowed root)."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "photo.jpg").write_bytes(photos[0][0])
    config = ServerConfig(address="127.0.0.1:0", model=str(manifest_path), data_dir=str(tmp_path / "data"),
                          allow_root=[str(root)], max_inflight_mb=256, verify_workers=0)
    loop = asyncio.new_event_loop()
    srv = ImageSieveServer(config)
    started = threading.Event()
    port = []

    def run():
        asyncio.set_event_loop(loop)
        port.append(loop.run_until_complete(srv.start()))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(120), "the server did not start"
    try:
        yield f"127.0.0.1:{port[0]}", thread.ident, root / "photo.jpg"
    finally:
        asyncio.run_coroutine_threadsafe(srv.stop(0), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def _channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 1 << 30)])


def _named(path, n: int, top_k: int = 100, signature: bool = True) -> embedding_pb2.EmbedRequest:
    return embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=f"k{i}", server_path=str(path)) for i in range(n)],
                                      top_k_classes=top_k, with_layout_signature=signature)


def test_other_calls_are_answered_while_a_large_answer_is_built(inproc, photos, monkeypatch):
    """The top classes of a 64-item answer are computed while its build is
    held (on purpose, here): a victim's GetModelInfo and small Embed are
    answered meanwhile, and the build ran on a thread other than the event
    loop's. Before, the answer was built on the loop: the victim's calls
    waited for the whole build (here they reached their deadline)."""
    address, loop_thread, photo = inproc
    real = embedding_servicer.softmax_top_k
    entered, release, threads = threading.Event(), threading.Event(), []

    def held(logits, k):
        threads.append(threading.get_ident())
        entered.set()
        release.wait(60)
        return real(logits, k)

    monkeypatch.setattr(embedding_servicer, "softmax_top_k", held)
    attacker, victim = _channel(address), _channel(address)
    try:
        big = embedding_pb2_grpc.EmbeddingServiceStub(attacker).Embed.future(_named(photo, 64), timeout=120)
        try:
            assert entered.wait(60), "the large answer's top classes were never computed"
            stub = embedding_pb2_grpc.EmbeddingServiceStub(victim)
            info = stub.GetModelInfo(embedding_pb2.GetModelInfoRequest(), timeout=20)
            small = stub.Embed(embedding_pb2.EmbedRequest(images=[common_pb2.Image(key="v", data=photos[1][0])]),
                               timeout=20)
        finally:
            release.set()
        assert info.dim and len(small.embeddings) == 1 and small.embeddings[0].vector
        answer = big.result(60)
        assert len(answer.embeddings) == 64 and all(len(e.top_classes) == 100 for e in answer.embeddings)
        assert threads and loop_thread not in threads, "the answer was built on the event loop"
    finally:
        attacker.close()
        victim.close()


def test_an_image_named_many_times_is_built_once(inproc, monkeypatch):
    """256 items naming one file (under two spellings): its top classes are
    computed once, not 256 times, and every entry is the one-item answer
    under its own key."""
    address, _, photo = inproc
    real = embedding_servicer.softmax_top_k
    rows = []

    def counted(logits, k):
        rows.append(len(logits))
        return real(logits, k)

    channel = _channel(address)
    try:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        one = stub.Embed(_named(photo, 1), timeout=60).embeddings[0]
        monkeypatch.setattr(embedding_servicer, "softmax_top_k", counted)
        request = _named(photo, 256)
        for image in request.images[1::2]:
            image.server_path = str(photo.parent / "." / photo.name)
        answer = stub.Embed(request, timeout=60)
        assert rows == [1], f"top classes computed for {sum(rows)} rows in {len(rows)} calls"
        assert [e.key for e in answer.embeddings] == [f"k{i}" for i in range(256)]
        for e in answer.embeddings:
            e.key = one.key
            assert e == one
    finally:
        channel.close()
