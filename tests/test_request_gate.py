"""request_gate.RequestGate on its own: turns to read, bytes held, a
client's share, waits, slow and stalled reads (the server-level attacks are
in test_server_abuse)."""
import asyncio
import time

import pytest

from imagesieve_server.request_gate import GateRefused, RequestGate, StreamAccount, gate_capacity

MB = 1 << 20


async def message(n):
    return b"x" * n


async def waiting_stream(gate, who, turns, idle, next_message, account=None):
    """A stream's turn waiting for its client's next message (the coroutine
    ``next_message``); ``turns[who]`` is the turn."""
    turns[who] = turn = await gate.turn(who, 1.0, gate.stream_idle_s, idle, account=account)
    turn.task = asyncio.ensure_future(next_message)
    try:
        await asyncio.wait((turn.task,))
    finally:
        gate.done(turn)


def test_turns_follow_the_budget_and_the_message_limit():
    assert gate_capacity(256 * MB) == 128 * MB
    gate = RequestGate(gate_capacity(256 * MB), 64 * MB)
    assert (gate.reads_at_once, gate.reads_per_client, gate.held_per_client) == (2, 1, 64 * MB)
    assert RequestGate(gate_capacity(4096 * MB), 64 * MB).reads_at_once == 32
    assert RequestGate(10 * MB, 64 * MB).capacity == 128 * MB       # two messages at least
    with pytest.raises(ValueError):
        RequestGate(MB, 0)


def test_small_requests_held_do_not_serialise_a_clients_calls():
    """A review: charged a whole message per read against one budget, a
    256 MiB server let a client start a read only with nothing held, so a
    long job's small request blocked every other call of its client."""
    async def scenario():
        gate = RequestGate(128 * MB, 64 * MB, receive_timeout_s=5.0)
        job = await gate.receive("a", lambda: message(300), 0.1)          # held for a long job
        calls = [await gate.receive("a", lambda: message(2000), 0.1) for _ in range(50)]
        assert len(job) == 300 and len(calls) == 50 and gate.held == 300 + 50 * 2000
        for c in calls:
            gate.release("a", len(c))
        gate.release("a", 300)
        assert gate.held == 0 and not gate.held_by_client and not gate.reads

    asyncio.run(scenario())


def test_large_requests_wait_for_held_bytes_and_others_pass_a_clients_queue():
    async def scenario():
        gate = RequestGate(100, 10, receive_timeout_s=5.0)    # bytes: 10 reads, 5 a client; 100 held, 50 a client
        held = [await gate.receive("a", lambda: message(10), 1.0) for _ in range(5)]
        assert gate.held == 50
        late = asyncio.create_task(gate.receive("a", lambda: message(10), 5.0))   # a's half is held
        await asyncio.sleep(0.05)
        assert not late.done()
        assert await gate.receive("b", lambda: message(3), 1.0) == b"xxx"         # b passes a's queue
        gate.release("a", len(held[0]))
        assert await late == b"x" * 10
        with pytest.raises(GateRefused, match="receiving as many") as e:
            await gate.receive("a", lambda: message(1), 0.1)
        assert e.value.code == "RESOURCE_EXHAUSTED"

    asyncio.run(scenario())


def test_a_stalled_read_is_given_up_alone_after_the_timeout_and_sooner_when_others_wait():
    async def scenario():
        never = asyncio.Event()

        async def stalled():
            await never.wait()

        gate = RequestGate(20, 10, receive_timeout_s=0.3)
        with pytest.raises(GateRefused, match="did not arrive within 0.3 s") as e:
            await gate.receive("a", stalled, 1.0)
        assert e.value.code == "DEADLINE_EXCEEDED" and gate.timed_out == 1 and not gate.reads

        # Both turns stalled by two clients; a third waits: the oldest stall gives way after slow_read_s.
        gate = RequestGate(20, 10, receive_timeout_s=30.0, slow_read_s=0.4)
        a = asyncio.create_task(gate.receive("a", stalled, 1.0))
        await asyncio.sleep(0.1)
        b = asyncio.create_task(gate.receive("b", stalled, 1.0))
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        begun = loop.time()
        assert await gate.receive("c", lambda: message(4), 5.0) == b"xxxx"
        assert 0.15 < loop.time() - begun < 1.0
        with pytest.raises(GateRefused, match="while others waited"):
            await a
        assert not b.done()                                  # the younger stall keeps its turn
        b.cancel()
        with pytest.raises(asyncio.CancelledError):
            await b
        assert [r.client for r in gate.reads] == [] and gate.held == 4

    asyncio.run(scenario())


def test_a_streams_turn_is_given_up_only_when_the_stream_is_idle():
    """A stream waiting for its next message holds a turn: it is given up
    for a waiting read only once every request of the stream is answered
    and stream_idle_s has passed since (``idle()``: since when, or None
    while a request is in work)."""
    async def scenario():
        gate = RequestGate(20, 10, receive_timeout_s=30.0, slow_read_s=0.1, stream_idle_s=0.3)
        never = asyncio.Event()
        busy = {"a": True, "b": False}
        turns = {}

        streams = [asyncio.create_task(waiting_stream(gate, who, turns, lambda w=who: None if busy[w] else 0.0,
                                                      never.wait()))
                   for who in "ab"]
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        begun = loop.time()
        third = asyncio.create_task(gate.receive("c", lambda: message(3), 5.0))
        await asyncio.sleep(0.15)
        assert not third.done() and not turns["b"].evicted   # slow_read_s is not a stream's grace
        assert await third == b"xxx"
        assert 0.25 < loop.time() - begun < 1.5
        assert turns["b"].evicted and turns["b"].task.cancelled()
        assert not turns["a"].evicted                        # a has a request in work: never given up
        assert streams[1].done() and not streams[0].done()
        streams[0].cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        assert not gate.reads

    asyncio.run(scenario())


def test_streams_that_pause_just_under_the_grace_give_their_turns_up_once_they_have_kept_others_waiting():
    """Two streams holding both turns, each sending a message every 0.5 s
    (under stream_idle_s 0.6): before, another client's every read waited
    for one of their messages; now their idle time while others wait adds
    up (StreamAccount), and past stream_idle_s in all, a pause of a quarter
    of it gives the turn up. A stream never idle while others wait owes
    nothing."""
    async def scenario():
        gate = RequestGate(20, 10, receive_timeout_s=30.0, slow_read_s=5.0, stream_idle_s=0.6)
        loop = asyncio.get_running_loop()
        evicted = {}

        async def trickle(who):
            account, last = StreamAccount(), loop.time()
            while True:
                turn = await gate.turn(who, 30.0, gate.stream_idle_s, lambda: time.monotonic() - (loop.time() - last),
                                       account=account)
                turn.task = asyncio.ensure_future(asyncio.sleep(0.5))     # its client's next message
                try:
                    await asyncio.wait((turn.task,))
                finally:
                    gate.done(turn)
                if turn.evicted:
                    evicted[who] = account.owed_s
                    return
                last = loop.time()

        tricklers = [asyncio.create_task(trickle(who)) for who in "ab"]
        await asyncio.sleep(0.05)
        waits = []
        for _ in range(12):
            begun = loop.time()
            assert await gate.receive("c", lambda: message(3), 10.0) == b"xxx"
            gate.release("c", 3)
            waits.append(loop.time() - begun)
        # One gave its turn up (the other keeps its own: nobody waits for it now).
        assert len(evicted) == 1 and min(evicted.values()) >= 0.6
        assert sum(waits[6:]) < 0.1              # later reads find the turn free
        assert sum(waits) < 2.0                  # before: ~0.25 s a read, 12 reads ~3 s
        assert gate.contended_since is None
        for t in tricklers:
            t.cancel()
        await asyncio.gather(*tricklers, return_exceptions=True)
        assert not gate.reads

    asyncio.run(scenario())


def test_a_client_reopening_its_streams_gets_no_fresh_credit_and_its_record_fades():
    """The account is the client's, not a stream's: a stream given up and
    reopened by the same client yields at its first pause while others
    wait; another client's new stream keeps the whole grace. A client's
    record halves every ACCOUNT_HALF_LIFE_S."""
    from imagesieve_server import request_gate

    async def scenario():
        gate = RequestGate(20, 10, receive_timeout_s=30.0, stream_idle_s=0.6)    # 2 turns, 1 a client
        gate.account_for("a").owed_s = 5.0                # a client that kept others waiting before
        since = time.monotonic()
        turns = {}

        streams = [asyncio.create_task(waiting_stream(gate, who, turns, lambda: since, asyncio.sleep(100),
                                                      gate.account_for(who)))
                   for who in "ab"]
        await asyncio.sleep(0)
        begun = time.monotonic()
        assert await gate.receive("c", lambda: message(3), 5.0) == b"xxx"
        assert turns["a"].evicted and not turns["b"].evicted
        assert time.monotonic() - begun < 0.5             # a's pause of 0.15 s sufficed; b had 0.6 s of grace
        for t in streams:
            t.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        gate.release("c", 3)
        assert gate.account_for("a") is gate.account_for("a") and gate.account_for("b").owed_s < 0.5

    asyncio.run(scenario())
    account = StreamAccount()
    account.owed_s = 8.0
    account._at -= request_gate.ACCOUNT_HALF_LIFE_S
    assert account.owed_s == pytest.approx(4.0)
    # Records are bounded however many clients come: the faded go, then those owing least.
    gate = RequestGate(20, 10)
    for i in range(2 * request_gate.MAX_ACCOUNTS):
        gate.account_for(f"ipv6:[::{i:x}]").owed_s = 1.0 + i
    assert len(gate.accounts) <= request_gate.MAX_ACCOUNTS
    assert f"ipv6:[::{2 * request_gate.MAX_ACCOUNTS - 2:x}]" in gate.accounts and "ipv6:[::0]" not in gate.accounts


def test_a_stream_never_idle_while_others_wait_owes_nothing():
    async def scenario():
        gate = RequestGate(20, 10, receive_timeout_s=30.0, stream_idle_s=0.6)
        account = StreamAccount()
        turn = await gate.turn("a", 1.0, gate.stream_idle_s, lambda: time.monotonic() - 5.0, account=account)
        turn.task = asyncio.ensure_future(asyncio.sleep(0.3))
        await asyncio.wait((turn.task,))
        gate.done(turn)
        assert account.owed_s == 0.0             # idle, but nobody waited

    asyncio.run(scenario())


def test_uploading_large_messages_back_to_back_runs_up_no_account():
    """A stream counts as idle while its next message arrives (every
    request answered): a review found one uploading large messages back to
    back, 0.6 s each, closed after 3 while others waited. A turn that read
    a message gets back the time such a message may take (slow_read_s for
    the largest)."""
    async def scenario():
        gate = RequestGate(20, 10, receive_timeout_s=30.0, slow_read_s=1.0, stream_idle_s=2.0)
        account, last, sent = StreamAccount(), time.monotonic(), 0

        async def uploader():
            nonlocal last, sent
            while sent < 8:
                turn = await gate.turn("a", 30.0, gate.stream_idle_s, lambda: last, account=account)
                turn.task = asyncio.ensure_future(asyncio.sleep(0.6))    # a large message arriving
                await asyncio.wait((turn.task,))
                gate.done(turn, received=10)
                assert not turn.evicted
                sent, last = sent + 1, time.monotonic()

        async def other(who):                   # another client's stream, always wanting a turn
            while True:
                turn = await gate.turn(who, 30.0)
                turn.task = asyncio.ensure_future(asyncio.sleep(0.6))
                await asyncio.wait((turn.task,))
                gate.done(turn)
        others = [asyncio.create_task(other(w)) for w in "bc"]
        await asyncio.wait_for(uploader(), 30)
        assert sent == 8 and account.owed_s < 0.5
        for o in others:
            o.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    asyncio.run(scenario())


def test_a_client_waiting_beyond_its_share_charges_no_other_stream():
    """4 turns, 2 a client: a client holding its 2 and asking for a third
    waits, but a turn is free, so nobody stands in its way and another
    client's idle stream is not charged (a review: it was, 1.5 s)."""
    async def scenario():
        gate = RequestGate(40, 10, receive_timeout_s=30.0, stream_idle_s=0.6)
        account, since = StreamAccount(), time.monotonic()
        s = await gate.turn("s", 1.0, gate.stream_idle_s, lambda: since, account=account)
        s.task = asyncio.ensure_future(asyncio.sleep(100))
        mine = [await gate.turn("c", 1.0) for _ in range(2)]
        for t in mine:
            t.task = asyncio.ensure_future(asyncio.sleep(100))
        with pytest.raises(GateRefused):
            await gate.turn("c", 1.0)
        assert account.owed_s == 0.0 and not s.evicted and gate.contended_since is None
        for t in (s, *mine):
            t.task.cancel()
            gate.done(t)

    asyncio.run(scenario())


def test_a_stream_holds_room_for_its_read_ahead_and_its_next_message_skips_that_wait():
    """Bytes held stop new reads, but not a stream's own next message
    (``held_ok``): its room is held already. Another client's read waits
    for the room, and the stream's ending (``release``) lets it in."""
    async def scenario():
        gate = RequestGate(100, 10, receive_timeout_s=5.0)     # 100 held, 50 a client
        gate.hold("a", 50)                                     # a stream's message and read-ahead
        with pytest.raises(GateRefused, match="receiving as many"):
            await gate.turn("a", 0.1)
        nxt = await gate.turn("a", 0.1, held_ok=True)        # the same stream's next message
        gate.done(nxt)
        gate.hold("b", 50)
        waiting = asyncio.create_task(gate.turn("c", 2.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        gate.release("a", 50)
        gate.done(await waiting)
        assert gate.held == 50 and not gate.reads

    asyncio.run(scenario())


def test_a_streams_idle_time_counts_from_its_last_answer():
    """A review: the grace counted from the start of the wait for the next
    message, so a stream whose one slow request took longer than
    stream_idle_s was given up the moment it was answered, told it had
    "sent nothing" for that long."""
    async def scenario():
        gate = RequestGate(20, 10, receive_timeout_s=30.0, stream_idle_s=0.4)    # 2 turns, 1 a client
        never = asyncio.Event()
        answered_at = [None]
        loop = asyncio.get_running_loop()
        turn = await gate.turn("a", 1.0, gate.stream_idle_s, lambda: answered_at[0])
        turn.task = asyncio.ensure_future(never.wait())

        async def reader():
            try:
                await asyncio.wait((turn.task,))
            finally:
                gate.done(turn)
        a = asyncio.create_task(reader())
        other = asyncio.create_task(gate.receive("a", lambda: message(2), 5.0))   # a's client's next read waits
        await asyncio.sleep(0.6)                               # the request in work outlasts the grace
        answered_at[0] = time.monotonic()
        await asyncio.sleep(0.2)
        assert not turn.evicted and not other.done()           # idle for 0.2 s only
        begun = loop.time()
        assert await other == b"xx"
        assert turn.evicted and 0.1 < loop.time() - begun < 1.0
        await asyncio.gather(a, return_exceptions=True)

    asyncio.run(scenario())


def test_a_turn_given_up_goes_to_a_client_reading_less_not_to_the_stalling_clients_next_call():
    """A twenty-third probe: two clients whose calls sent headers and no
    message held every turn, and each read given up as slow went to the same
    client's next call, queued ahead of everyone else's: another client's
    call waited as long as the attack lasted. The freed turn now goes to the
    client reading least, and stalled reads run up their client's account,
    so once it owes twice the grace its later reads are given up after a
    short pause."""
    async def scenario():
        never = asyncio.Event()
        started = []

        def stalled(who):
            async def read():
                started.append(who)
                await never.wait()
            return read

        async def quick():
            started.append("c")
            return b"xxxx"

        gate = RequestGate(40, 10, receive_timeout_s=30.0, slow_read_s=0.3)    # 4 turns, 2 a client
        attackers = [asyncio.create_task(gate.receive(who, stalled(who), 30.0)) for who in "abab"]
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(gate.receive(who, stalled(who), 30.0)) for who in "abab"]
        await asyncio.sleep(0.05)
        assert sorted(started) == ["a", "a", "b", "b"] and len(gate.waiting) == 4
        assert await asyncio.wait_for(gate.receive("c", quick, 30.0), 2.0) == b"xxxx"
        assert started[4] == "c"                   # before either attacker's queued calls
        assert gate.accounts["a"].owed_s > 0 or gate.accounts["b"].owed_s > 0
        assert gate.accounts["c"].owed_s == 0      # its read was never slow
        # Once an attacker owes twice its grace, its reads are given up after a short pause.
        gate.accounts["a"].owed_s = gate.accounts["b"].owed_s = 10.0
        turn = next(r for r in gate.reads if r.client == "a" and r.task is not None)
        now = time.monotonic()
        assert turn.given_up_at(now) <= max(turn.started + 0.3 / 4, now) + 1e-6
        never.set()
        for t in attackers + queued:
            t.cancel()
        await asyncio.gather(*attackers, *queued, return_exceptions=True)

    asyncio.run(scenario())


class _Context:
    def time_remaining(self):
        return None

    def peer(self):
        return "ipv4:10.0.0.9:1234"


def test_a_call_cancelled_just_after_its_request_arrived_leaves_nothing_held():
    """A review: the request is read in a task of its own (so that an idle
    call can be closed while it waits); a call cancelled after that task had
    received its message (the gate holding its bytes) and before the call
    resumed kept those bytes held for ever. Now the call's ``held`` list has
    them, and its end releases them."""
    from imagesieve_server.observability import CallLimiter, ObservabilityInterceptor

    async def scenario(limiter):
        gate = RequestGate(1 << 20, 1 << 16)
        interceptor = ObservabilityInterceptor(None, limiter, gate)

        async def request():
            yield b"x" * 1000
        call = None
        hold = gate.hold

        def hold_then_cancel(client, n):
            hold(client, n)
            asyncio.get_running_loop().call_soon(call.cancel)    # as gRPC's cancellation would land
        gate.hold = hold_then_cancel
        held = []
        call = asyncio.ensure_future(interceptor._receive_one(
            request(), _Context(), "ipv4:10.0.0.9" if limiter else None, held, gate))
        await asyncio.gather(call, return_exceptions=True)
        assert call.cancelled()
        for part in held:                                          # what the call's end does
            part[0].release(part[1], part[2])
        assert gate.held == 0 and not gate.held_by_client

    asyncio.run(scenario(None))
    asyncio.run(scenario(CallLimiter(10, 5)))


def test_only_a_call_still_waiting_for_its_read_turn_is_closed_for_another_clients():
    """A review: a unary call was evictable from its start, so an upload in
    progress could be closed for another client's call, and a client's own
    new call closed its own uploads at its per-client limit. Now only a call
    still waiting for its turn to be read may be closed, and only for
    another client's call at the server's limit (a read in progress is the
    gate's to give up)."""
    from imagesieve_server.observability import CallLimiter, ObservabilityInterceptor, RequestRefused

    async def scenario():
        gate = RequestGate(20, 10, slow_read_s=30.0)          # 2 turns, 1 a client
        limiter = CallLimiter(3, 2, evict_idle_s=0.2)
        interceptor = ObservabilityInterceptor(None, limiter, gate)

        def uploading(seconds):
            async def request():
                await asyncio.sleep(seconds)
                yield b"x" * 4
            return request()

        async def call(who, seconds):
            assert limiter.enter(who) is None
            held = []
            try:
                return await interceptor._receive_one(uploading(seconds), _Context(), who, held, gate)
            finally:
                limiter.leave(who)
                for part in held:
                    part[0].release(part[1], part[2])
        reading = asyncio.ensure_future(call("a", 0.8))        # a's read: in progress for 0.8 s
        queued = asyncio.ensure_future(call("a", 0.0))         # waits for a's turn (1 a client)
        other = asyncio.ensure_future(call("b", 0.8))          # b's read: the gate's second turn
        await asyncio.sleep(0.4)                              # all past evict_idle_s
        assert limiter.enter("a") is not None                 # a's own new call: refused, its calls kept
        assert limiter.enter("c") is None                     # another client's: takes the queued call's slot
        limiter.leave("c")
        results = await asyncio.gather(reading, queued, other, return_exceptions=True)
        assert results[0] == b"xxxx" and results[2] == b"xxxx"          # the uploads were not closed
        assert isinstance(results[1], RequestRefused) and "waited 0.2 s for its turn" in str(results[1])

    asyncio.run(scenario())


def test_a_clients_concurrent_uploads_and_empty_requests_leave_it_owing_nothing():
    """A second review: all of a client's reads charged one account, so k
    uploads at once owed k times as fast and were given up before any could
    be refunded (16 of 16 at the real scale); an empty message, delivered,
    was never refunded. A unary read now owes 1/k of the time while others
    wait, a delivered read of any size is refunded whole, and only a client
    owing twice its grace has its reads cut short."""
    async def scenario():
        never = asyncio.Event()

        async def stalled():
            await never.wait()

        def upload(seconds, data):
            async def read():
                await asyncio.sleep(seconds)
                return data
            return read

        gate = RequestGate(80, 10, receive_timeout_s=10.0, slow_read_s=0.4)     # 8 turns, 4 a client
        uploads = [asyncio.create_task(gate.receive("u", upload(0.3, b"xx"), 10.0)) for _ in range(4)]
        await asyncio.sleep(0.01)
        blockers = [asyncio.create_task(gate.receive("b", stalled, 10.0)) for _ in range(4)]
        await asyncio.sleep(0.01)
        # The gate is full and others keep waiting: contended throughout.
        waiting = [asyncio.create_task(gate.receive(who, stalled, 10.0)) for who in ("c", "d", "e") for _ in range(4)]
        assert await asyncio.gather(*uploads, return_exceptions=True) == [b"xx"] * 4
        assert gate.accounts["u"].owed_s == 0
        assert await gate.receive("u", upload(0.05, b""), 10.0) == b""              # empty, delivered
        assert gate.accounts["u"].owed_s == 0
        never.set()
        for t in blockers + waiting:
            t.cancel()
        await asyncio.gather(*blockers, *waiting, return_exceptions=True)

    asyncio.run(scenario())
