"""jobs.runner.run_job: what a cancelled job leaves behind."""
from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

import pytest

from imagesieve_server.jobs import runner


class Big:
    """Stands for a job's working data (a probe: 2.4 GB a ScoreLabels job)."""


def test_a_cancelled_jobs_data_is_freed_when_its_work_stops_not_at_the_next_full_collection():
    # A job's work raised JobCancelled after its caller left; the exception went
    # into the caller's queue, and its traceback held the work's frame, whose
    # reporter held the queue: a reference cycle keeping the job's arrays (two
    # ScoreLabels on 100,000 images cancelled: 4.8 GB still resident, idle)
    # until CPython's next full collection.
    refs, started, stopped = [], threading.Event(), threading.Event()

    def work(reporter):
        data = Big()
        refs.append(weakref.ref(data))
        started.set()
        try:
            while True:
                reporter.report("fold 1/5", 1, 5)
                time.sleep(0.01)
        finally:
            stopped.set()

    async def main():
        events = runner.run_job(work)
        await events.__anext__()          # a progress event: the work runs
        assert started.wait(5)
        await events.aclose()             # the caller leaves (a cancelled call)
        assert await asyncio.to_thread(stopped.wait, 5)
        for _ in range(50):               # the thread ends and its last post reaches the loop
            await asyncio.sleep(0.01)
        return refs[0]

    slots = runner.SLOTS.running
    gc.disable()
    try:
        ref = asyncio.run(main())
        assert ref() is None, "the cancelled job's data is still referenced (a cycle only gc.collect frees)"
    finally:
        gc.enable()
    assert runner.SLOTS.running == slots


def test_a_failed_jobs_error_still_reaches_its_caller():
    def work(reporter):
        reporter.report("loading", 0)
        raise ValueError("bad request")

    async def main():
        seen = []
        try:
            async for kind, value in runner.run_job(work):
                seen.append(kind)
        except ValueError as e:
            return seen, str(e)
        return seen, None

    seen, error = asyncio.run(main())
    assert error == "bad request"


def test_a_job_finding_every_slot_in_use_waits_and_a_freed_slot_goes_round_the_waiting_clients():
    """Refused at once, a client resubmitting the moment its jobs ended took
    every freed slot (a twenty-fifth probe); slots kept for refused clients
    were held idle by many addresses each refused once (a twenty-sixth). A
    job now waits for a slot: a freed one goes to the waiting client holding
    the fewest, among equals the one granted longest ago, then the first
    come; one waiting job a client, MAX_WAITING in all, JOB_WAIT_S at most."""
    async def main():
        slots = runner.JobSlots(2)
        await slots.wait("flooder", 0)
        await slots.wait("flooder", 0)
        order = []

        async def job(client, timeout=5.0):
            await slots.wait(client, timeout)
            order.append(client)

        victim = asyncio.ensure_future(job("victim"))
        await asyncio.sleep(0.01)
        again = asyncio.ensure_future(job("flooder"))
        await asyncio.sleep(0.01)
        late = asyncio.ensure_future(job("late"))
        await asyncio.sleep(0.01)
        with pytest.raises(runner.JobsBusy, match="already has a job waiting"):
            await slots.wait("victim", 5.0)                  # one waiting job a client
        with pytest.raises(runner.JobsBusy):
            await slots.wait("newcomer", 0)                           # those waiting come first
        # From the job's thread, as a job gives its slot back.
        await asyncio.to_thread(slots.give_back, "flooder")
        await victim                                         # holds none: before the flooder's second
        await asyncio.to_thread(slots.give_back, "flooder")
        await late                                           # never granted: before the flooder again
        assert order == ["victim", "late"] and not again.done()
        await asyncio.to_thread(slots.give_back, "victim")
        await again
        assert dict(slots.held) == {"late": 1, "flooder": 1} and not slots.waiting
        # A job waits JOB_WAIT_S at most, then is refused; a cancelled one leaves the line.
        with pytest.raises(runner.JobsBusy, match="waited 0.05 s in line without a slot"):
            await slots.wait("patient", 0.05)
        gone = asyncio.ensure_future(slots.wait("gone", 5.0))
        await asyncio.sleep(0.01)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert not slots.waiting
        # A slot handed over as its waiter gave up is passed on, not lost.
        quitter = asyncio.ensure_future(slots.wait("quitter", 5.0))
        await asyncio.sleep(0.01)
        slots.give_back("late")                              # granted to quitter (on this loop: not yet run)
        quitter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await quitter
        assert slots.running == 1 and dict(slots.held) == {"flooder": 1}
        # At most MAX_WAITING wait; beyond, refused at once.
        await slots.wait("x", 0)
        waiters = [asyncio.ensure_future(slots.wait(f"w{k}", 5.0)) for k in range(runner.MAX_WAITING)]
        await asyncio.sleep(0.01)
        with pytest.raises(runner.JobsBusy, match=f"{runner.MAX_WAITING} job.s. waiting"):
            await slots.wait("one-too-many", 5.0)
        # ...unless it ranks before the last of them: served less, it takes that one's place.
        for k in range(runner.MAX_WAITING):
            slots.granted_at[f"w{k}"] = 1000 - k          # as if each had been served, w0 last
        newcomer = asyncio.ensure_future(slots.wait("never-served", 5.0))
        await asyncio.sleep(0.01)
        assert "never-served" in slots.waiting and "w0" not in slots.waiting
        with pytest.raises(runner.JobsBusy, match="a client served less took this job's place"):
            await waiters[0]
        slots.give_back("x")
        await newcomer
        assert slots.held["never-served"] == 1
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        assert not slots.waiting and slots.running == 2

    asyncio.run(main())


def test_the_line_survives_the_races_a_review_forced(monkeypatch):
    """A slot granted as its waiter gave up, whose loop then closed, went back
    twice (running -1); a limit raised left jobs waiting beside free slots; a
    call cancelled in the tick its slot came kept it (Python 3.11's
    wait_for); a displaced waiter already gone left an exception nobody read
    (logged at ERROR)."""
    # 1. Granted, given up, loop closed before the hand-over ran: back once, not twice.
    slots = runner.JobSlots(1)
    asyncio.run(slots.wait("holder", 0))
    loop_closed = threading.Event()
    real_call = runner._call

    def slow_call(waiter, fate):
        if fate == runner.GRANTED:
            loop_closed.wait(5)
        return real_call(waiter, fate)

    monkeypatch.setattr(runner, "_call", slow_call)

    def in_loop():
        async def main():
            with pytest.raises(runner.JobsBusy):
                await slots.wait("w", 0.2)
        asyncio.run(main())
        loop_closed.set()

    waiter = threading.Thread(target=in_loop)
    waiter.start()
    time.sleep(0.1)
    back = threading.Thread(target=slots.give_back, args=("holder",))
    back.start()
    waiter.join(10)
    back.join(10)
    monkeypatch.undo()
    assert slots.running == 0 and not slots.held and not slots.waiting
    asyncio.run(slots.wait("a", 0))
    with pytest.raises(runner.JobsBusy):
        asyncio.run(slots.wait("b", 0))

    async def main():
        # 2. A limit raised: those waiting get the new slots at once.
        line = runner.JobSlots(1)
        await line.wait("x", 0)
        waiters = [asyncio.ensure_future(line.wait(f"w{k}", 5.0)) for k in range(3)]
        await asyncio.sleep(0.01)
        line.set_limit(4)
        await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
        assert line.running == 4 and not line.waiting
        # 3. Cancelled in the tick its slot comes: cancelled, and the slot passed on.
        for _ in range(50):
            one = runner.JobSlots(1)
            await one.wait("x", 0)
            task = asyncio.ensure_future(one.wait("w", 5.0))
            await asyncio.sleep(0)
            one.give_back("x")                  # on this loop: the hand-over runs next tick
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert one.running == 0 and not one.held and not one.waiting
        # 4. Displaced while already gone: its fate is a result, read or not.
        full = runner.JobSlots(1)
        await full.wait("x", 0)
        monkeypatch.setattr(runner, "MAX_WAITING", 1)
        served = asyncio.ensure_future(full.wait("served", 5.0))
        await asyncio.sleep(0.01)
        full.granted_at["served"] = 99
        newcomer = asyncio.ensure_future(full.wait("never-served", 5.0))
        await asyncio.sleep(0)
        served.cancel()                         # gone before its fate arrives
        await asyncio.gather(served, return_exceptions=True)
        await asyncio.sleep(0.01)
        full.give_back("x")
        await newcomer
        assert full.held == {"never-served": 1}

    asyncio.run(main())
