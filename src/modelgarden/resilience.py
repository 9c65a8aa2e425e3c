"""Resilience for upstreams: retry delays and concurrency limits with a queue.

Each replica's circuit breaker is :class:`modelgarden.breaker.CircuitBreaker`, the one
the client uses too (its states and transitions are drawn there).
"""

from __future__ import annotations

import asyncio
import random

from modelgarden.errors import SERVER_BUSY, Overloaded


def backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Exponential backoff with full jitter for retry number ``attempt`` (from 0)."""
    return random.uniform(0, min(cap, base * (2**attempt)))


class Limiter:
    """At most ``limit`` calls at once; at most ``max_queue`` waiting; past that, 503."""

    def __init__(self, limit: int, max_queue: int) -> None:
        self._slots = asyncio.Semaphore(limit)
        self.limit = limit
        self.max_queue = max_queue
        self.waiting = 0
        self.active = 0
        #: Calls turned away because the queue was full.
        self.rejected = 0

    @property
    def full(self) -> bool:
        """Whether a call now would wait for a slot."""
        return self._slots.locked()

    async def acquire(self) -> None:
        """Take a slot, waiting in the bounded queue if need be."""
        if self._slots.locked() and self.waiting >= self.max_queue:
            self.rejected += 1
            raise Overloaded(SERVER_BUSY, retry_after=1.0)
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1

    def release(self) -> None:
        """Give a slot back."""
        self.active -= 1
        self._slots.release()
