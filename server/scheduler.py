"""Admission control: per engine pool, a fixed number of running jobs and a bounded queue.

A request first asks for admission (`slot`, or `acquire`/`release`): if the pool already has `max_concurrency`
jobs running and `max_queue` waiting, it is refused at once with OpenAI's 429 envelope
and a `Retry-After` estimate; otherwise it holds a queue place until a run slot frees,
then holds the slot until it is released. Waiting is first come, first served.

    async with scheduler.slot(pool, model) as ticket:   # 429 here when full
        ...                                            # ticket.queue_wait_s is known
    ticket.run_s                                       # known after the block

Everything runs on the event loop thread (asyncio primitives, no locks needed); the
work itself runs in worker threads, so the loop is never blocked.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator

from server.errors import APIError

log = logging.getLogger("oyez.scheduler")


def rate_limited(pool: str, retry_after: int) -> APIError:
    """OpenAI's answer when too many requests are in flight: 429, type `requests`, code `rate_limit_exceeded`."""
    return APIError(
        429,
        f"Too many requests for this model right now; the queue is full. Please retry after {retry_after} s.",
        type="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after)},
    )


@dataclass(eq=False)  # compared and hashed by identity
class Ticket:
    """One admitted request: where it waits or runs, and how long each took."""

    pool: str
    model: str
    admitted_at: float = field(default_factory=lambda: time.monotonic())  # looked up per call: tests move the clock
    started_at: float | None = None
    finished_at: float | None = None
    _waiter: asyncio.Future | None = None

    @property
    def queue_wait_s(self) -> float:
        end = self.started_at if self.started_at is not None else time.monotonic()
        return end - self.admitted_at

    @property
    def run_s(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return end - self.started_at


class _Pool:
    def __init__(self, name: str, concurrency: int, queue: int):
        self.name = name
        self.concurrency = concurrency
        self.queue_limit = queue
        self.running: set[Ticket] = set()
        self.waiting: deque[Ticket] = deque()
        self.recent_run_s = 0.0  # moving average of run times, for Retry-After

    def note_run(self, seconds: float) -> None:
        self.recent_run_s = seconds if self.recent_run_s == 0 else 0.8 * self.recent_run_s + 0.2 * seconds


class Scheduler:
    """Run slots and bounded FIFO queues, one pair per pool (one pool per loaded engine)."""

    def __init__(self, max_concurrency: int = 1, max_queue: int = 16):
        self.max_concurrency = max(1, max_concurrency)
        self.max_queue = max(0, max_queue)
        self._pools: dict[str, _Pool] = {}

    def _pool(self, name: str) -> _Pool:
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = _Pool(name, self.max_concurrency, self.max_queue)
        return pool

    # -- what other parts of the server (metrics, /ready, logs) may read --------------
    def running(self, pool: str) -> int:
        return len(self._pools[pool].running) if pool in self._pools else 0

    def queued(self, pool: str) -> int:
        return len(self._pools[pool].waiting) if pool in self._pools else 0

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {name: {"running": len(p.running), "queued": len(p.waiting), "max_concurrency": p.concurrency,
                       "max_queue": p.queue_limit} for name, p in self._pools.items()}

    # -- admission ---------------------------------------------------------------------
    def retry_after(self, pool: str) -> int:
        """Seconds until a place is likely free: the queue ahead drained at the recent run rate."""
        p = self._pool(pool)
        per_job = p.recent_run_s or 1.0
        return max(1, math.ceil(per_job * (len(p.waiting) + 1) / p.concurrency))

    async def acquire(self, pool: str, model: str) -> Ticket:
        """Admit and wait for a run slot. Raises the 429 APIError when the queue is full."""
        p = self._pool(pool)
        ticket = Ticket(pool=pool, model=model)
        if len(p.running) < p.concurrency and not p.waiting:
            self._start(p, ticket)
            return ticket
        if len(p.waiting) >= p.queue_limit:
            retry = self.retry_after(pool)
            log.warning("refused %s (pool %s): %d running, %d queued; Retry-After %d s",
                        model, pool, len(p.running), len(p.waiting), retry)
            raise rate_limited(pool, retry)
        ticket._waiter = asyncio.get_running_loop().create_future()
        p.waiting.append(ticket)
        try:
            await ticket._waiter
        except BaseException:
            # Cancelled while queued (client gone, shutdown): give the place back, or
            # pass on a slot that was handed over in the same instant.
            if ticket.started_at is not None:
                self.release(ticket)
            else:
                p.waiting.remove(ticket)
            raise
        return ticket

    def release(self, ticket: Ticket) -> None:
        """Free the ticket's run slot and hand it to the next in line. Safe to call twice."""
        if ticket.started_at is None or ticket.finished_at is not None:
            return
        ticket.finished_at = time.monotonic()
        p = self._pools[ticket.pool]
        p.running.discard(ticket)
        p.note_run(ticket.run_s)
        while p.waiting and len(p.running) < p.concurrency:
            nxt = p.waiting.popleft()
            if nxt._waiter is not None and not nxt._waiter.done():
                self._start(p, nxt)
                nxt._waiter.set_result(None)

    def _start(self, p: _Pool, ticket: Ticket) -> None:
        ticket.started_at = time.monotonic()
        p.running.add(ticket)

    @asynccontextmanager
    async def slot(self, pool: str, model: str) -> AsyncIterator[Ticket]:
        ticket = await self.acquire(pool, model)
        try:
            yield ticket
        finally:
            self.release(ticket)
