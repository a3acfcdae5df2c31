"""Unary answers left unread are bounded in bytes, not only in calls (a
twenty-first probe)."""
from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from imagesieve.local_server import LocalServer
from imagesieve.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc
from test_observability import scrape, value
from test_server_abuse import _rss_mb, _StallingProxy, big_message_channel

METRICS = ["--metrics-port", "0", "--metrics-host", "127.0.0.1"]


def _inflated(path, n=256) -> embedding_pb2.EmbedRequest:
    # One file named n times: one decode, and a ~14 KB answer an item (vector,
    # 100 classes, layout signature): 7.5 KB asks for 3.6 MB.
    return embedding_pb2.EmbedRequest(images=[common_pb2.Image(key=f"k{i}", server_path=str(path)) for i in range(n)],
                                      top_k_classes=100, with_layout_signature=True)


def test_answers_a_client_does_not_read_are_bounded_in_bytes(manifest_path, photos, tmp_path):
    """Before: answers were bounded by count (--max-calls-per-client, 128 by
    default): 256 inflated Embed answers left unread by two addresses took a
    server from 232 MB to 3.1 GB, and the same client's next call was
    admitted. Now a client's unsent answers (serialized by the interceptor,
    so their size is known) are bounded in bytes: answers past the bound are
    dropped, RESOURCE_EXHAUSTED, and its new calls refused until it reads.

    The 48 unread calls go as many a connection as HTTP/2's initial 64 KB
    window carries (3 of these ~20 KB requests), so that all arrive with no
    window update from the server: a connection's first answer fills its
    socket buffers (~1 MB), the server's window updates wait behind it, and
    the client sends no more on it. All 48 on one connection got 3 and 13
    requests through in two traced runs once answers were built off the
    event loop (the first ready ~60 ms after the first call); the rest held
    the address's turn in the request gate, where its reading connection's
    call waited behind them until the kernel dropped the connection (20 s,
    CallLimiter)."""
    (tmp_path / "photo.jpg").write_bytes(photos[0][0])
    request = _inflated(tmp_path / "photo.jpg")
    with LocalServer(["--max-inflight-mb", "256", "--allow-root", str(tmp_path), *METRICS],
                     model=str(manifest_path)) as srv:
        pid = srv.proc.pid
        direct = big_message_channel(srv.address)
        stub = embedding_pb2_grpc.EmbeddingServiceStub(direct)
        assert len(stub.Embed(request, timeout=60).SerializeToString()) > 3_000_000
        before = _rss_mb(pid)
        proxy = _StallingProxy(srv.address, None, answer_bytes=32 << 10)     # answers stop at 32 KB
        per_connection = max(1, (64 << 10) // (request.ByteSize() + 64))
        readers = [grpc.insecure_channel(proxy.address, options=[("grpc.http2.bdp_probe", 0),
                                                                 ("grpc.max_receive_message_length", 1 << 30),
                                                                 ("grpc.use_local_subchannel_pool", 1)])
                   for _ in range(-(-48 // per_connection))]
        calls = []
        try:
            calls = [embedding_pb2_grpc.EmbeddingServiceStub(r).Embed.future(request, timeout=120)
                     for r in readers for _ in range(per_connection)]
            # Well within the 20 s after which the kernel drops a connection
            # that reads nothing, and its answers with it (CallLimiter).
            deadline = time.monotonic() + 12
            refused = None
            while time.monotonic() < deadline:          # the same address, on a connection that reads
                time.sleep(1)
                try:
                    stub.Embed(request, timeout=10)
                except grpc.RpcError as e:
                    refused = e
                    break
            grown = _rss_mb(pid) - before
            print(f"unread answers: +{grown:.0f} MB")     # RSS here moves with the work's own; see the probe's script
            assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, \
                "the client's unsent answers did not stop its new calls"
            assert "not read" in refused.details()
            # By now an answer was dropped (or the bound reached): the next call is
            # refused before it does its work, not after it, when its answer would
            # find no room either (held stops ~2 MiB below the bound: 4 answers).
            try:
                stub.Embed(request, timeout=10)
                again = None
            except grpc.RpcError as e:
                again = e
            assert again is not None and again.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, again
            assert "not read" in again.details() and "was dropped;" not in again.details(), again.details()
            # The bytes its unread answers held never passed its bound (one
            # client: everyone's are its own).
            samples = scrape(srv)
            unsent = {k: value(samples, "imagesieve_unsent_answer_bytes", kind=k)
                      for k in ("held", "peak", "limit_per_client")}
            assert 0 < unsent["held"] <= unsent["peak"] <= unsent["limit_per_client"] == 16 << 20, unsent
        finally:
            proxy.close()
            for c in calls:
                c.cancel()
            for r in readers:
                r.close()
        # Once its connections are gone, the client is served again.
        time.sleep(1)
        assert stub.Embed(request, timeout=60).embeddings[0].vector
        assert value(scrape(srv), "imagesieve_unsent_answer_bytes", kind="held") == 0
        direct.close()


def test_a_client_reading_its_answers_is_not_refused(manifest_path, photos, tmp_path):
    """The bound counts only answers waiting to be sent: 24 inflated calls at
    once (87 MB of answers, past a client's 16 MiB at this budget) from a
    client that reads them all succeed."""
    (tmp_path / "photo.jpg").write_bytes(photos[0][0])
    request = _inflated(tmp_path / "photo.jpg")
    with LocalServer(["--max-inflight-mb", "256", "--allow-root", str(tmp_path)], model=str(manifest_path)) as srv:
        direct = big_message_channel(srv.address)
        stub = embedding_pb2_grpc.EmbeddingServiceStub(direct)
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda _: stub.Embed(request, timeout=120), range(24)))
        assert all(len(a.embeddings) == 256 for a in answers)
        direct.close()


def test_a_client_an_answer_was_dropped_for_is_refused_until_it_reads():
    """Below its bound by less than an answer, a client that reads nothing
    had each new call admitted, do its work, wait a second for room and be
    dropped. Once one of its answers is dropped, its new calls are refused at
    once, until it reads one (or its unsent answers are all freed)."""
    from imagesieve_server.observability import CallLimiter
    limiter = CallLimiter(8, 4, max_unsent_per_client=10, max_unsent=100)
    held = limiter.sending_begin("a", None, None, 8)
    assert limiter.room_for("a", 4) is not None          # 12 bytes would pass its 10
    assert limiter.enter("a") is None                     # below the bound: admitted
    limiter.leave("a")
    limiter.dropped("a")
    assert "dropped" in limiter.enter("a")
    assert limiter.enter("b") is None                     # nobody else
    limiter.leave("b")
    limiter.sending_end(held, delivered=True)             # it reads
    assert limiter.enter("a") is None
    limiter.leave("a")
    first, second = limiter.sending_begin("a", None, None, 4), limiter.sending_begin("a", None, None, 4)
    limiter.dropped("a")
    limiter.sending_end(first)                            # freed unsent (its call ended): one is left
    assert "dropped" in limiter.enter("a")
    limiter.sending_end(second)                           # none left
    assert limiter.enter("a") is None
    limiter.leave("a")
    limiter.dropped("c")                                  # nothing unsent: nothing to wait for
    assert limiter.enter("c") is None



def test_stream_work_waits_for_its_clients_room_before_it_starts(manifest_path, tmp_path):
    """Each stream's window bounds only its own answers: 48 CheckDuplicates
    streams opened at once, each asking a 35 MB answer, left unread, held
    5.3 GB and filled every client's room (a twenty-second probe). A stream
    request now starts only when its client has room for its answer (its
    estimate) among all its streams' unsent and started ones; unread, the
    rest wait unstarted. Nothing is dropped: dropping stream answers lost a
    slow reader's streams, and answered an add RESOURCE_EXHAUSTED after it
    was made (a review)."""
    import io

    from PIL import Image

    from imagesieve import Client
    from imagesieve.v1 import duplicates_pb2, duplicates_pb2_grpc
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "tiny.png")
    pictures = []
    for i in range(100):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (i, 255 - i, (7 * i) % 256)).save(buf, "PNG")
        pictures.append(buf.getvalue())
    with LocalServer(["--max-inflight-mb", "256", "--allow-root", str(tmp_path), *METRICS],
                     model=str(manifest_path)) as srv:
        with Client(srv.address) as c:
            c.create_collection("long")
            list(c.add("long", pictures, keys=[f"{i:04d}" + "k" * 1020 for i in range(100)],
                       labels=[f"{i:03d}" + "l" * 253 for i in range(100)], splits=["s" * 64] * 100))
        # 25 images x k=100 (the most a request may ask: 2,560 neighbours): ~3.4 MB an answer.
        request = duplicates_pb2.CheckDuplicatesRequest(collection="long", k=100, raw_cosine=True, images=[
            common_pb2.Image(key=f"q{i}", server_path=str(tmp_path / "tiny.png")) for i in range(25)])
        direct = big_message_channel(srv.address)
        stub = duplicates_pb2_grpc.DuplicateServiceStub(direct)
        (answer,) = stub.CheckDuplicates(iter([request]), timeout=60)
        assert answer.ByteSize() > 3_000_000
        proxy = _StallingProxy(srv.address, None, answer_bytes=32 << 10)     # answers stop at 32 KB
        unread = grpc.insecure_channel(proxy.address, options=[("grpc.http2.bdp_probe", 0),
                                                               ("grpc.max_receive_message_length", 1 << 30),
                                                               ("grpc.use_local_subchannel_pool", 1)])
        stop = time.monotonic() + 60
        streams = []

        def one_request():
            yield request
            while time.monotonic() < stop:      # the stream stays open, its answer unread
                time.sleep(0.2)
        try:
            streams = [duplicates_pb2_grpc.DuplicateServiceStub(unread).CheckDuplicates(one_request(), timeout=60)
                       for _ in range(24)]         # ~24 KB of requests: within HTTP/2's first 64 KB window
            # The same address checks on a connection that reads (it waits for room, or
            # is refused: its unread streams hold both); in traced runs the unread streams'
            # requests were all taken in by the server only once such calls came in.
            refused = 0
            for _ in range(5):
                time.sleep(1)
                try:
                    list(stub.CheckDuplicates(iter([request]), timeout=2))
                except grpc.RpcError as e:      # waited for room, or refused while its streams hold it
                    assert e.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED), e
                    refused += 1            # the server may refuse it after the client's deadline passed
            samples = scrape(srv)
            unsent = {k: value(samples, "imagesieve_unsent_answer_bytes", kind=k)
                      for k in ("held", "peak", "peak_with_reserved", "limit_per_client")}
            # Before: every stream's answer was made and held, ~24 x 3.4 MB.
            assert 0 < unsent["held"] <= unsent["peak"] <= unsent["limit_per_client"] == 16 << 20, unsent
            assert unsent["peak_with_reserved"] <= unsent["limit_per_client"], unsent
            assert value(samples, "imagesieve_requests_total", method="CheckDuplicates",
                         code="RESOURCE_EXHAUSTED") <= refused    # no unread stream's answer dropped
        finally:
            stop = 0
            proxy.close()
            for s in streams:
                s.cancel()
            unread.close()
        time.sleep(1)
        assert len(list(stub.CheckDuplicates(iter([request]), timeout=60))[0].results) == 25
        samples = scrape(srv)
        assert value(samples, "imagesieve_unsent_answer_bytes", kind="reserved") == 0     # all given back
        direct.close()


def test_stream_room_is_reserved_within_the_bounds():
    """CallLimiter.try_reserve: a client with nothing unsent or reserved may
    always start one (even past its bound); then its unsent and reserved
    bytes stay within its bound, and everyone's within theirs."""
    from imagesieve_server.observability import CallLimiter
    limiter = CallLimiter(8, 4, max_unsent_per_client=10, max_unsent=15)
    assert limiter.try_reserve("a", 12)                   # the first: always
    assert not limiter.try_reserve("a", 1)
    limiter.unreserve("a", 12)
    assert limiter.try_reserve("a", 6) and limiter.try_reserve("a", 4) and not limiter.try_reserve("a", 1)
    held = limiter.sending_begin("b", None, None, 3)
    assert limiter.try_reserve("b", 2)                    # b: 5 of its 10; everyone's: 3 + 10 + 2 = 15
    assert not limiter.try_reserve("b", 1)                # everyone's would be 16 > 15
    limiter.unreserve("a", 10)
    assert limiter.try_reserve("b", 1) and limiter.reserved_total == 3
    limiter.sending_end(held, delivered=True)


def test_a_stream_waiting_for_room_starts_when_room_is_freed_not_at_a_poll():
    """StreamRoom.reserve is granted its bytes when they are freed, in the
    event loop's next turn (it polled every 50 ms): by its own client's
    reserved bytes or by another client's answer being sent (the server's
    bound is shared). Whatever fits goes (one stream's large answer does not
    hold back another's small one), and a waiter given up, before or after
    its grant, or in the step that frees its room, leaves nothing behind."""
    import asyncio

    from imagesieve_server.observability import CallLimiter, StreamRoom

    async def turns(n: int = 3):
        for _ in range(n):
            await asyncio.sleep(0)

    async def scenario():
        limiter = CallLimiter(8, 4, max_unsent_per_client=10, max_unsent=15)
        a, b = StreamRoom(limiter, "a"), StreamRoom(limiter, "b")
        first = await a.reserve(8)
        waiting = asyncio.ensure_future(a.reserve(5))        # 8 + 5 > a's 10
        await turns()
        assert not waiting.done()
        a.release(first)
        await turns()
        assert waiting.done() and waiting.result() == 5
        # The server's bound: b's unsent answer fills everyone's room.
        sending = limiter.sending_begin("b", None, None, 9)    # 5 + 9 = 14 of 15
        waiting = asyncio.ensure_future(a.reserve(3))
        await turns()
        assert not waiting.done()
        limiter.sending_end(sending, delivered=True)
        await turns()
        assert waiting.done() and limiter.reserved["a"] == 8
        # Whatever fits goes: a's 4 waits, and a later 1 that fits is not held back by it.
        big = asyncio.ensure_future(a.reserve(4))
        await turns()
        small = asyncio.ensure_future(a.reserve(1))
        await turns()
        assert not big.done() and small.done() and limiter.reserved["a"] == 9
        a.release(3)                                          # a: 6 held, the 4 fits
        await turns()
        assert big.done() and limiter.reserved["a"] == 10
        # Given up while waiting: nothing queued, nothing reserved.
        blocked = asyncio.ensure_future(a.reserve(2))
        await turns()
        assert limiter.room_waiters
        blocked.cancel()
        await turns()
        assert not limiter.room_waiters and limiter.reserved["a"] == 10
        # Granted, then cancelled before it could start: its grant given back.
        late = asyncio.ensure_future(a.reserve(2))
        await turns()
        a.release(2)                                          # granted now; it runs next turn
        late.cancel()
        await turns()
        assert late.cancelled() and limiter.reserved["a"] == 8 and not limiter.room_waiters
        # Cancelled, and room freed in the same step, before the waiter could run
        # (ordered_concurrent's cleanup: the reader cancelled, then its tasks' room
        # given back): nothing is reserved for the cancelled waiter, nothing raised.
        blocked = [asyncio.ensure_future(a.reserve(2)) for _ in range(2)]
        await turns()
        a.release(8)                                          # granted both (a: 0 + 2 + 2)
        await turns()
        assert all(t.done() for t in blocked) and limiter.reserved["a"] == 4
        more = asyncio.ensure_future(a.reserve(8))           # 4 + 8 > 10: waits
        await turns()
        more.cancel()
        a.release(4)                                          # frees room in the same step
        await turns()
        assert more.cancelled() and limiter.reserved.get("a", 0) == 0 and limiter.reserved_total == 0
        assert not limiter.room_waiters

    asyncio.run(scenario())


def test_a_large_answer_is_not_passed_for_ever_by_its_clients_smaller_ones():
    """Whatever fits goes, but not for ever: a client whose streams keep
    smaller work coming (each fitting beside the last) held a larger
    answer's work back as long as they came. Once it has waited
    ``room_bypass_s``, the client's later work queues behind it, its room
    drains and the large one starts."""
    import asyncio

    from imagesieve_server.observability import CallLimiter, StreamRoom

    async def turns(n: int = 3):
        for _ in range(n):
            await asyncio.sleep(0)

    async def cycle(limiter: CallLimiter, bypass_s: float) -> tuple[bool, int]:
        limiter.room_bypass_s = bypass_s
        a = StreamRoom(limiter, "a")
        small = [await a.reserve(3), await a.reserve(3)]            # two small answers in work: 6 of 10
        big = asyncio.ensure_future(a.reserve(8))                   # 6 + 8 > 10: waits
        await turns()
        started = 0
        for _ in range(20):                                         # one small answer sent, another asked for
            a.release(small.pop(0))
            nxt = asyncio.ensure_future(a.reserve(3))
            await turns()
            if nxt.done():
                small.append(nxt.result())
                started += 1
            else:
                while small:                                         # the client's room drains
                    a.release(small.pop(0))
                    await turns()
                break
            if big.done():
                break
        return big.done(), started

    for_ever, started = asyncio.run(cycle(CallLimiter(8, 4, max_unsent_per_client=10), bypass_s=3600.0))
    assert not for_ever and started == 20                          # passed by all 20 (the old behaviour)
    in_turn, started = asyncio.run(cycle(CallLimiter(8, 4, max_unsent_per_client=10), bypass_s=0.0))
    assert in_turn and started == 0                                # the next small one queued behind it


def test_work_held_back_by_an_overdue_waiter_goes_when_that_waiter_leaves():
    """A review: work queued only because an older waiter of its client was
    overdue stayed queued after that waiter was cancelled, although it fit,
    until other bytes happened to be freed."""
    import asyncio

    from imagesieve_server.observability import CallLimiter

    async def scenario():
        limiter = CallLimiter(8, 4, max_unsent_per_client=10)
        limiter.room_bypass_s = 0.0
        assert limiter.try_reserve("x", 6)
        overdue = asyncio.ensure_future(limiter.reserve_room("x", 8))      # 6 + 8 > 10: waits
        await asyncio.sleep(0)
        held_back = asyncio.ensure_future(limiter.reserve_room("x", 1))    # fits, but queues behind it
        await asyncio.sleep(0)
        assert not held_back.done()
        overdue.cancel()
        await asyncio.gather(overdue, return_exceptions=True)
        await asyncio.sleep(0)
        assert held_back.done() and limiter.reserved["x"] == 7 and not limiter.room_waiters

    asyncio.run(scenario())


def test_a_collection_turn_is_held_until_its_thread_ends_however_often_it_is_cancelled():
    """CollectionTurns: a call cancelled while its work runs keeps its turn
    until the thread ends; a review found a second cancel gave it up early,
    and two 'one at a time' calls of one collection ran at once."""
    import asyncio
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from imagesieve_server.servicers.common import CollectionTurns

    running, peak, lock = [0], [0], threading.Lock()

    def work():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.5)
        with lock:
            running[0] -= 1

    class Collection:
        pass

    async def scenario():
        turns, c = CollectionTurns(1), Collection()
        with ThreadPoolExecutor(4) as pool:
            first = asyncio.ensure_future(turns.run(c, pool.submit, work))
            await asyncio.sleep(0.1)
            first.cancel()
            await asyncio.sleep(0.05)
            first.cancel()                                   # the call cancelled, then the server stopping
            second = asyncio.ensure_future(turns.run(c, pool.submit, work))
            results = await asyncio.gather(first, second, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError) and results[1] is None

    asyncio.run(scenario())
    assert peak[0] == 1


def test_a_collections_turns_go_to_the_owner_holding_fewest_not_in_arrival_order():
    """CollectionTurns: one client's 20 queued checks of a collection went
    before another client's one check of it (arrival order: the review of a
    twenty-fourth probe's fix). A freed turn now goes to the waiting owner
    that holds the fewest; within an owner, in order; never more than
    ``width`` at once, and a waiter cancelled before its turn takes none."""
    import asyncio
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from imagesieve_server.servicers.common import CollectionTurns

    running, peak, started, lock = [0], [0], [], threading.Lock()

    def work(name):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            started.append(name)
        time.sleep(0.1)
        with lock:
            running[0] -= 1
        return name

    class Collection:
        pass

    async def scenario():
        turns, c = CollectionTurns(2), Collection()
        with ThreadPoolExecutor(8) as pool:
            flood = [asyncio.ensure_future(turns.run(c, pool.submit, work, f"flood{i}", owner="flood"))
                     for i in range(20)]
            await asyncio.sleep(0.05)
            flood[7].cancel()                                # waiting: it takes no turn
            t0 = time.perf_counter()
            victim = await turns.run(c, pool.submit, work, "victim", owner="victim")
            victim_s = time.perf_counter() - t0
            done = await asyncio.gather(*flood, return_exceptions=True)
        return victim, victim_s, done

    victim, victim_s, done = asyncio.run(scenario())
    assert victim == "victim" and victim_s < 0.45, victim_s        # arrival order: ~1 s
    assert isinstance(done[7], asyncio.CancelledError)
    assert [d for i, d in enumerate(done) if i != 7] == [f"flood{i}" for i in range(20) if i != 7]
    assert peak[0] == 2 and "flood7" not in started
    floods = [s for s in started if s != "victim"]
    assert floods == sorted(floods, key=lambda s: int(s[5:]))           # an owner's calls in order

    # One turn (adds, removes and snapshots have one a collection), two owners flooding: the
    # turn goes round (a review: the owner that had just let it go won every tie).
    async def one_turn():
        turns, c, order = CollectionTurns(1), Collection(), []
        with ThreadPoolExecutor(4) as pool:
            def quick(name):
                order.append(name)
                time.sleep(0.01)
            calls = [turns.run(c, pool.submit, quick, f"{o}{i}", owner=o) for o in "AB" for i in range(10)]
            calls = [asyncio.ensure_future(x) for x in calls]
            await asyncio.sleep(0.02)
            await turns.run(c, pool.submit, quick, "victim", owner="victim")
            await asyncio.gather(*calls)
        return order
    order = asyncio.run(one_turn())
    assert order.index("victim") <= 3, order
    owners = [o[0] for o in order if o != "victim"]
    assert max(len(list(g)) for _, g in itertools.groupby(owners)) <= 2, owners
