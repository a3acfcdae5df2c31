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


def test_a_slot_freed_while_a_refused_client_holds_none_is_kept_for_it_oldest_debt_first(monkeypatch):
    """Jobs are refused, not queued; a client resubmitting the moment its
    jobs end kept every slot for as long as it liked (a twenty-fifth probe).
    A refused client holding no slot is owed the next one for OWED_S, the
    oldest debt first, and a client that holds a slot comes after them."""
    clock = [100.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    slots = runner.JobSlots(2)
    slots.take("flooder")
    slots.take("flooder")
    with pytest.raises(runner.JobsBusy):
        slots.take("victim")                     # owed from now
    clock[0] += 1
    with pytest.raises(runner.JobsBusy):
        slots.take("late")                       # owed after the victim
    slots.give_back("flooder")
    with pytest.raises(runner.JobsBusy, match="1 of the server.s 2 analysis job slots are in use .--max-jobs., and 2 kept for clients refused before you"):
        slots.take("flooder")                    # holds one: after every owed client
    with pytest.raises(runner.JobsBusy):
        slots.take("late")                       # the victim's debt is older
    slots.take("victim")
    slots.give_back("flooder")                   # the flooder holds none now; owed: late
    with pytest.raises(runner.JobsBusy):
        slots.take("flooder")
    slots.take("late")
    assert slots.running == 2 and dict(slots.held) == {"victim": 1, "late": 1}
    # A debt lapses OWED_S after the last refusal: a client that gave up holds no slot idle for ever.
    slots.give_back("victim")
    clock[0] += runner.OWED_S + 0.1
    slots.take("newcomer")
    assert slots.running == 2
    # Owed only when refused with every slot in use: a client refused for a slot kept for
    # another, then gone, keeps none idle in turn (a review: one-shot clients 6 s apart,
    # none served for 100 s).
    one = runner.JobSlots(1)
    one.take("busy")
    with pytest.raises(runner.JobsBusy):
        one.take("gone")                         # owed, and never asks again
    one.give_back("busy")
    clock[0] += 6
    with pytest.raises(runner.JobsBusy):
        one.take("n0")                           # the slot is kept for "gone": n0 is not owed
    clock[0] += 6                                # "gone"'s debt has lapsed
    one.take("n1")
    assert dict(one.held) == {"n1": 1} and list(one.owed) == []
    # One already owed keeps its place while it asks, beyond OWED_S from its refusal in full;
    # one that stopped asking loses it.
    two = runner.JobSlots(2)
    two.take("x")
    two.take("x")
    for who in ("first", "second"):
        with pytest.raises(runner.JobsBusy):
            two.take(who)
    two.give_back("x")
    clock[0] += 6
    with pytest.raises(runner.JobsBusy):
        two.take("second")                       # "first"'s turn (it asked first)
    clock[0] += 6                                # "first" stopped asking: its debt lapsed
    with pytest.raises(runner.JobsBusy):
        two.take("x")                            # x is not owed: "second" still is (it asked 6 s ago)
    two.take("second")
    assert dict(two.held) == {"x": 1, "second": 1}
    # The same client, alone, may take every slot (nobody is owed).
    alone = runner.JobSlots(2)
    alone.take("a")
    alone.take("a")
    assert alone.running == 2
