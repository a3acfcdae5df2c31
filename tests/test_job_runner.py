"""jobs.runner.run_job: what a cancelled job leaves behind."""
from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

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
