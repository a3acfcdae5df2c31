"""Fair shares go to clients first, then to each client's connections
(engine/owners.py). By connection alone, one address opening 16 connections
took 16 shares of the decoders, batches, in-flight places, check threads and
collection turns (another client's Embed p50 202-230 -> 632-760 ms, a
twenty-seventh probe). Here client A is on 8 connections and client B on
one: B must get about half, not 1/9; and a client's connections still take
turns among themselves."""
from __future__ import annotations

import asyncio
import collections
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from imagesieve.local_server import LocalServer
from imagesieve.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc
from imagesieve_server.engine.async_embedder import FairAdmission
from imagesieve_server.engine.batcher import DynamicBatcher
from imagesieve_server.engine.fair_pool import FairPool
from imagesieve_server.engine.owners import choose
from imagesieve_server.servicers.common import CollectionTurns

A_CONNECTIONS = [("A", f"a{i}") for i in range(8)]
B = ("B", "b0")


def test_choose_picks_the_client_then_its_connection():
    waiting = [("A", "a1"), ("A", "a2"), ("B", "b1")]
    rank = {"A": 1, "B": 2, ("A", "a1"): 5, ("A", "a2"): 3, ("B", "b1"): 0}
    assert choose(waiting, lambda c, _: rank[c], rank.__getitem__) == ("A", "a2")
    rank["B"] = 0
    assert choose(waiting, lambda c, _: rank[c], rank.__getitem__) == ("B", "b1")
    assert choose(waiting, lambda c, _: 0, lambda o: 0) == ("A", "a1")      # the first among equals


def test_the_decoders_time_goes_to_clients_then_their_connections():
    """FairPool: one thread; while a task holds it, A queues 10 tasks on
    each of 8 connections and B 40 on one. B gets about half the first 40
    (by connection, 1/9: ~4), and each of A's connections some of A's."""
    pool = FairPool(workers=1)
    hold, order = threading.Event(), []

    def work(owner):
        if owner is None:
            hold.wait(10)
            return
        time.sleep(0.004)
        order.append(owner)

    try:
        blocker = pool.submit(("C", "c"), work, None)
        futures = [pool.submit(o, work, o) for _ in range(10) for o in A_CONNECTIONS]
        futures += [pool.submit(B, work, B) for _ in range(40)]
        hold.set()
        for f in [blocker, *futures]:
            f.result(30)
        first = order[:40]
        assert 12 <= first.count(B) <= 28, first
        assert len({o for o in first if o[0] == "A"}) == 8, first

        # One client's two connections alternate (by time used).
        order.clear()
        hold.clear()
        blocker = pool.submit(("C", "c"), work, None)
        futures = [pool.submit(("A", f"x{i % 2}"), work, ("A", f"x{i % 2}")) for i in range(20)]
        hold.set()
        for f in [blocker, *futures]:
            f.result(30)
        assert 3 <= order[:10].count(("A", "x0")) <= 7, order
    finally:
        pool.shutdown()


def test_in_flight_places_go_to_clients_then_their_connections():
    """FairAdmission, 2 places released in the order granted: A's 8
    connections queue 5 images each before B's 40 on one connection. B gets
    half the grants (by connection, B waited behind all of A's 40, which
    came first); each of A's connections gets its turn."""
    async def run(owners, places=2, n=40):
        admission, order = FairAdmission(places), []
        releases: collections.deque = collections.deque()

        async def hold(owner):
            async with admission.place(owner):
                order.append(owner)
                done = asyncio.Event()
                releases.append(done)
                await done.wait()
        tasks = [asyncio.ensure_future(hold(o)) for o in owners]
        await asyncio.sleep(0)
        while len(order) < n:
            releases.popleft().set()
            for _ in range(4):                  # the holder leaves, the next is granted and holds
                await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert admission.total == 0 and not admission.held and not admission._waiting
        return order[:n]

    order = asyncio.run(run([o for _ in range(5) for o in A_CONNECTIONS] + [B] * 40))
    assert 18 <= order.count(B) <= 22, order
    assert {o for o in order if o[0] == "A"} == set(A_CONNECTIONS), order
    # Within a client, the connection holding the fewest first: two connections alternate.
    order = asyncio.run(run([("A", "x")] * 20 + [("A", "y")] * 20, n=20))
    assert 9 <= order.count(("A", "x")) <= 11, order


def test_batches_go_round_clients_then_their_connections():
    """DynamicBatcher: batches of 2, A's 8 connections with 4 images each
    queued before B's 16: each batch holds one of B's (by connection, one
    batch in 4.5), and A's images come from its connections in turn."""
    batches = []

    def run(tensors):
        batches.append([int(t[0, 0, 0]) for t in tensors])
        x = np.stack(tensors)
        return x.reshape(len(x), -1), None

    async def main():
        b = DynamicBatcher(run, max_batch_size=2, max_delay_s=0.05)
        b.start()
        calls = [b.submit(np.full((3, 1, 1), 10 * k + i, np.float32), owner=("A", f"a{k}"))
                 for i in range(4) for k in range(8)]
        calls += [b.submit(np.full((3, 1, 1), 100 + i, np.float32), owner=B) for i in range(16)]
        await asyncio.gather(*calls)
        await b.stop()

    asyncio.run(main())
    first = [i for batch in batches[:8] for i in batch]
    assert sorted(i for i in first if i >= 100) == list(range(100, 108)), batches
    assert sorted(i // 10 for i in first if i < 100) == list(range(8)), batches   # one of each connection
    mine = [i for batch in batches for i in batch if i < 100]
    assert [i % 10 for i in mine] == sorted(i % 10 for i in mine)                 # each connection's in order


def test_a_collections_turns_go_to_clients_then_their_connections():
    """CollectionTurns: one turn, A's 8 connections with 5 calls each queued
    before B's 20: the turn alternates between A and B (by connection, B's
    20 came after A's 40), and A's goes round its connections."""
    class Collection:
        pass

    async def scenario(calls):
        turns, c, order, held = CollectionTurns(1), Collection(), [], threading.Event()
        with ThreadPoolExecutor(2) as pool:
            def work(owner):
                order.append(owner)
                time.sleep(0.002)
            first = asyncio.ensure_future(turns.run(c, pool.submit, held.wait, 10, owner=("C", "c")))
            await asyncio.sleep(0.01)
            tasks = [asyncio.ensure_future(turns.run(c, pool.submit, work, o, owner=o)) for o in calls]
            await asyncio.sleep(0.01)
            held.set()
            await asyncio.gather(first, *tasks)
        return order

    order = asyncio.run(scenario([o for _ in range(5) for o in A_CONNECTIONS] + [B] * 20))
    assert order[:40].count(B) == 20, order
    assert order[:16:2] == A_CONNECTIONS or order[1:17:2] == A_CONNECTIONS, order
    order = asyncio.run(scenario([("A", "x")] * 10 + [("A", "y")] * 10))
    assert order[:10].count(("A", "x")) == 5, order


def test_one_clients_many_connections_do_not_crowd_out_another_client(manifest_path, photos):
    """End to end, two tokens (a token names the client; on loopback every
    connection has the same address): client A sends 96 one-image Embeds on
    8 connections of its own, then client B 12 on one. With 2 places in
    flight, B's 12 are answered while A gets about as many (one place each);
    by connection, B's connection was one of 9 and came last: A's
    remaining images went first (~70 while B waited)."""
    tok_a, tok_b = "a-" + secrets.token_hex(16), "b-" + secrets.token_hex(16)
    image = [common_pb2.Image(key="p", data=photos[0][0])]
    request = embedding_pb2.EmbedRequest(images=image)
    with LocalServer(["--max-inflight", "2"], model=str(manifest_path),
                     env={"IMAGESIEVE_TOKENS": f"{tok_a} rw alice;{tok_b} rw bob"}) as srv:
        channels = [grpc.insecure_channel(srv.address, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(9)]
        try:
            stubs = [embedding_pb2_grpc.EmbeddingServiceStub(ch) for ch in channels]
            for stub, tok in zip(stubs, [tok_a] * 8 + [tok_b]):         # every connection open and warm
                stub.Embed(request, metadata=[("authorization", f"Bearer {tok}")], timeout=60)
            a_calls = [stub.Embed.future(request, metadata=[("authorization", f"Bearer {tok_a}")], timeout=120)
                       for _ in range(12) for stub in stubs[:8]]
            time.sleep(0.5)
            a_before = sum(c.done() for c in a_calls)
            b_calls = [stubs[8].Embed.future(request, metadata=[("authorization", f"Bearer {tok_b}")],
                                             timeout=120) for _ in range(12)]
            for c in b_calls:
                assert not c.result().embeddings[0].HasField("error")
            a_during = sum(c.done() for c in a_calls) - a_before
            a_left = len(a_calls) - a_before
            for c in a_calls:
                c.cancel()
        finally:
            for ch in channels:
                ch.close()
    assert a_left >= 48, f"A's flood had ended before B came: {a_left} left"
    assert a_during <= 30, f"A got {a_during} images answered while B got 12 (of A's {a_left} waiting)"
