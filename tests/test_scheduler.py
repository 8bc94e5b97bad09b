"""Unit: admission control: run slots, a bounded FIFO queue, 429 with Retry-After past it."""

from __future__ import annotations

import asyncio

import pytest

from server.errors import APIError
from server.scheduler import Scheduler


def run(coro):
    return asyncio.run(coro)


def test_full_queue_is_refused_with_429_and_retry_after():
    async def scenario():
        s = Scheduler(max_concurrency=1, max_queue=1)
        first = await s.acquire("base", "whisper-1")  # runs at once
        waiting = asyncio.create_task(s.acquire("base", "gpt-4o-transcribe"))  # same engine: queued
        await asyncio.sleep(0)
        assert (s.running("base"), s.queued("base")) == (1, 1)
        with pytest.raises(APIError) as refused:
            await s.acquire("base", "whisper-1")
        err = refused.value
        assert err.status == 429
        assert err.body() == {"error": {"message": err.message, "type": "requests", "param": None,
                                        "code": "rate_limit_exceeded"}}
        assert int(err.headers["Retry-After"]) >= 1
        assert (s.running("base"), s.queued("base")) == (1, 1)  # the refusal took no place
        s.release(first)
        second = await waiting
        assert (s.running("base"), s.queued("base")) == (1, 0)
        s.release(second)
        assert s.snapshot()["base"] == {"running": 0, "queued": 0, "max_concurrency": 1, "max_queue": 1}

    run(scenario())


def test_pools_are_independent_and_fifo():
    async def scenario():
        s = Scheduler(max_concurrency=2, max_queue=3)
        running = [await s.acquire("base", "m"), await s.acquire("base", "m")]
        other = await s.acquire("tiny", "t")  # another engine is not held up by a busy one
        assert s.running("tiny") == 1
        order: list[int] = []

        async def wait(i):
            ticket = await s.acquire("base", "m")
            order.append(i)
            return ticket

        tasks = [asyncio.create_task(wait(i)) for i in range(3)]
        await asyncio.sleep(0)
        assert s.queued("base") == 3
        for t in running:
            s.release(t)
        s.release(other)
        done = [await t for t in tasks[:2]]
        assert order == [0, 1] and s.queued("base") == 1
        for t in done:
            s.release(t)
        s.release(await tasks[2])
        assert order == [0, 1, 2] and s.running("base") == 0

    run(scenario())


class FakeClock:
    """The scheduler's time.monotonic, moved by the test: times are exact, not raced against the machine."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr("server.scheduler.time.monotonic", fake)
    return fake


def test_cancelled_waiter_gives_its_place_back_and_times_are_measured(clock):
    async def scenario():
        s = Scheduler(max_concurrency=1, max_queue=1)
        first = await s.acquire("base", "m")
        waiter = asyncio.create_task(s.acquire("base", "m"))
        await asyncio.sleep(0)
        assert s.queued("base") == 1
        waiter.cancel()  # the client went away while queued
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert s.queued("base") == 0
        clock.now += 1.0
        queued = asyncio.create_task(s.acquire("base", "m"))  # the place is free again
        await asyncio.sleep(0)
        assert s.queued("base") == 1
        clock.now += 2.0
        s.release(first)
        s.release(first)  # releasing twice is harmless
        ticket = await queued
        assert ticket.queue_wait_s == 2.0  # admitted 2 s before the slot came free
        assert first.run_s == 3.0 and first.queue_wait_s == 0.0
        async with s.slot("tiny", "t") as t:  # an idle pool: no wait at all
            clock.now += 0.5
        assert t.queue_wait_s == 0.0 and t.run_s == 0.5
        clock.now += 4.0
        assert t.run_s == 0.5  # finished: its run time no longer grows
        s.release(ticket)
        assert ticket.run_s == 4.5 and s.running("base") == 0

    run(scenario())


def test_retry_after_grows_with_the_queue_and_recent_run_time():
    async def scenario():
        s = Scheduler(max_concurrency=1, max_queue=4)
        t = await s.acquire("base", "m")
        t.started_at -= 10  # pretend it ran 10 s
        s.release(t)
        assert 10 <= s.retry_after("base") <= 11
        t = await s.acquire("base", "m")
        waiters = [asyncio.create_task(s.acquire("base", "m")) for _ in range(3)]
        await asyncio.sleep(0)
        assert 40 <= s.retry_after("base") <= 41  # three ahead plus this one, at about 10 s each
        for w in waiters:
            w.cancel()
        s.release(t)

    run(scenario())
