"""The circuit breaker: one class for the gateway's upstream replicas and for the client.

Its states and transitions::

    CLOSED    --N consecutive failures---> OPEN       calls fail fast
    OPEN      --cooldown elapsed---------> HALF_OPEN  the next call is the probe
    HALF_OPEN --probe succeeds-----------> CLOSED
    HALF_OPEN --probe fails--------------> OPEN       cooldown starts again
    HALF_OPEN --probe lost for a cooldown> HALF_OPEN  another probe may go

Only ``success`` and ``failure`` change what is stored; the state itself is read from the
stored failure time and the clock, so a breaker left alone past its cooldown reads
half-open without anyone calling it. Time comes from the injected ``clock`` (monotonic
seconds), so every transition is reproducible in a unit test without sleeping.

This module imports nothing of the gateway's: the client package (``modelgarden.client``)
uses it too, and must never pull in the server's modules.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.StrEnum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Owns one upstream's breaker: its consecutive failures, when it opened, its probe slot.

    Not thread-safe on its own (the gateway uses it from one event loop; the client's
    ``BreakerBoard`` serialises access).
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.clock = clock
        #: Consecutive failures since the last success.
        self.failures = 0
        #: When it last opened (``None``: closed).
        self.opened_at: float | None = None
        #: When the probe in flight went out (``None``: none is).
        self.probe_since: float | None = None

    def state(self) -> BreakerState:
        """The state now: an open breaker whose cooldown has passed is half-open."""
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self.opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """Whether a call may go out now; half-open lets one probe through at a time.

        A probe that never reported back (its caller went away) stops blocking others
        after another cooldown.
        """
        state = self.state()
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self.clock()
        if self.probe_since is not None and now - self.probe_since < self.cooldown:
            return False
        self.probe_since = now
        return True

    def retry_in(self) -> float:
        """Seconds until a probe may go through (0 when one may now)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown - self.clock())

    def success(self) -> None:
        """The upstream answered: close."""
        self.failures = 0
        self.opened_at = None
        self.probe_since = None

    def failure(self) -> None:
        """The upstream failed: count it; open at the threshold, or again after a probe."""
        self.failures += 1
        probing = self.opened_at is not None
        if probing or self.failures >= self.failure_threshold:
            self.opened_at = self.clock()
            self.probe_since = None
