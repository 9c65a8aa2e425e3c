"""Resilience for upstreams: circuit breakers, retry delays, concurrency limits with a queue.

The breaker's states and transitions::

    CLOSED    --N consecutive failures-------> OPEN       calls fail fast
    OPEN      --cooldown elapsed, next call--> HALF_OPEN  one probe goes through
    HALF_OPEN --probe succeeds---------------> CLOSED
    HALF_OPEN --probe fails------------------> OPEN       cooldown starts again
"""

from __future__ import annotations

import asyncio
import enum
import random
import time

from modelgarden.errors import SERVER_BUSY, Overloaded


class BreakerState(enum.StrEnum):
    """Where a circuit breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of one upstream and stops calls while it is down."""

    def __init__(self, failures: int = 5, cooldown: float = 10.0) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """Whether a call may go through now (in half-open, only one probe at a time)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if time.monotonic() - self.opened_at < self.cooldown:
                return False
            self.state = BreakerState.HALF_OPEN
        if self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        """A call succeeded: close."""
        self.state, self.failures, self._probing = BreakerState.CLOSED, 0, False

    def failure(self) -> None:
        """A call failed: open after enough of them in a row (or at once when probing)."""
        self.failures += 1
        self._probing = False
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.state = BreakerState.OPEN
            self.opened_at = time.monotonic()


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
