"""request_gate.RequestGate on its own: slots, a client's share, waits and
stalled reads (the server-level attack is in test_server_abuse)."""
import asyncio

import pytest

from imagesieve_server.request_gate import GateRefused, RequestGate, reading_slots


def test_slots_follow_the_budget_and_the_message_limit():
    assert reading_slots(256 << 20, 64 << 20) == 2
    assert reading_slots(4 << 30, 64 << 20) == 32
    assert reading_slots(64 << 20, 64 << 20) == 2            # never fewer than two
    with pytest.raises(ValueError):
        RequestGate(0)


def test_a_client_holds_at_most_its_share_and_others_pass_its_queue():
    async def scenario():
        gate = RequestGate(2, receive_timeout_s=5.0)
        release = asyncio.Event()
        order = []

        async def slow():
            await release.wait()
            return b"slow"

        async def quick(tag):
            order.append(tag)
            return tag.encode()

        a1 = asyncio.create_task(gate.receive("a", slow, 5.0))
        a2 = asyncio.create_task(gate.receive("a", lambda: quick("a2"), 5.0))   # waits: a's share is 1
        await asyncio.sleep(0.05)
        assert gate.reading == 1 and not a2.done()
        assert await gate.receive("b", lambda: quick("b"), 5.0) == b"b"        # passes a's queue
        release.set()
        assert await a1 == b"slow" and await a2 == b"a2"
        assert order == ["b", "a2"] and gate.reading == 0 and not gate.by_client

    asyncio.run(scenario())


def test_a_stalled_read_is_given_up_and_a_full_gate_refuses_in_time():
    async def scenario():
        gate = RequestGate(2, receive_timeout_s=0.3)
        never = asyncio.Event()

        async def stalled():
            await never.wait()

        first = asyncio.create_task(gate.receive("a", stalled, 1.0))
        await asyncio.sleep(0.05)
        with pytest.raises(GateRefused, match="receiving as many") as e:
            await gate.receive("a", stalled, 0.1)                               # a's share is taken
        assert e.value.code == "RESOURCE_EXHAUSTED"
        with pytest.raises(GateRefused, match="did not arrive within 0.3 s") as e:
            await first
        assert e.value.code == "DEADLINE_EXCEEDED" and gate.timed_out == 1
        assert gate.reading == 0 and not gate.by_client

    asyncio.run(scenario())
