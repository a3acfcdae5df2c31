"""request_gate.RequestGate on its own: room by bytes, a client's share,
waits and stalled reads (the server-level attacks are in test_server_abuse)."""
import asyncio

import pytest

from imagesieve_server.request_gate import GateRefused, RequestGate, gate_capacity

MB = 1 << 20


def test_capacity_follows_the_budget_and_holds_two_messages_at_least():
    assert gate_capacity(256 * MB) == 128 * MB
    gate = RequestGate(gate_capacity(256 * MB), 64 * MB)
    assert gate.reads_at_once == 2 and gate.per_client == 64 * MB
    assert RequestGate(10 * MB, 64 * MB).capacity == 128 * MB
    with pytest.raises(ValueError):
        RequestGate(MB, 0)


def test_small_requests_pass_by_the_many_and_large_ones_wait_for_room():
    async def scenario():
        gate = RequestGate(100, 10, receive_timeout_s=5.0)       # bytes: room for 10 reads, 5 a client

        async def message(n):
            return b"x" * n

        small = [await gate.receive(f"c{i}", lambda: message(1), 1.0) for i in range(60)]
        assert len(small) == 60 and gate.used == 60              # each holds its real size
        for i in range(60):
            gate.release(f"c{i}", 1)
        assert gate.used == 0 and not gate.by_client
        held = [await gate.receive("a", lambda: message(10), 1.0) for _ in range(5)]
        assert gate.used == 50
        late = asyncio.create_task(gate.receive("a", lambda: message(10), 5.0))   # a's half is full
        await asyncio.sleep(0.05)
        assert not late.done()
        assert await gate.receive("b", lambda: message(3), 1.0) == b"xxx"         # b passes a's queue
        gate.release("a", len(held[0]))
        assert await late == b"x" * 10
        with pytest.raises(GateRefused, match="receiving as many") as e:
            await gate.receive("a", lambda: message(1), 0.1)
        assert e.value.code == "RESOURCE_EXHAUSTED"

    asyncio.run(scenario())


def test_a_stalled_read_is_given_up_and_its_room_returned():
    async def scenario():
        gate = RequestGate(20, 10, receive_timeout_s=0.3)
        never = asyncio.Event()

        async def stalled():
            await never.wait()

        with pytest.raises(GateRefused, match="did not arrive within 0.3 s") as e:
            await gate.receive("a", stalled, 1.0)
        assert e.value.code == "DEADLINE_EXCEEDED" and gate.timed_out == 1
        assert gate.used == 0 and not gate.by_client

    asyncio.run(scenario())
