"""Resilience decisions, free of I/O: backoff, ``Retry-After``, circuit breakers, failover.

Time comes from the caller (a monotonic clock injected into the breakers, ``now`` for
dates) and randomness from a ``random.Random`` it owns, so each decision is reproducible
in a unit test. The breaker itself is :class:`modelgarden.breaker.CircuitBreaker`, the
gateway's own.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from modelgarden.breaker import BreakerState, CircuitBreaker
from modelgarden.client.options import BreakerPolicy, RetryPolicy

__all__ = [
    "BreakerBoard",
    "BreakerState",
    "FailoverOrder",
    "backoff_delay",
    "counts_as_failure",
    "endpoint_path",
    "failover_order",
    "parse_retry_after",
    "retryable_transport_error",
]


def backoff_delay(retry: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Seconds to wait before retry number ``retry`` (0-based): capped exponential, full jitter."""
    exponent = min(retry, 64)  # 2**64 already exceeds any sane cap
    ceiling = min(policy.max_delay, policy.base_delay * policy.multiplier**exponent)
    return rng.uniform(0.0, ceiling) if policy.jitter else ceiling


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds: delay-seconds or an HTTP-date; ``None`` if invalid.

    A date in the past means "now" (0 seconds); a negative or non-finite number is invalid.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retryable_transport_error(exc: httpx.TransportError) -> bool:
    """Whether a transport error may be retried: the request may not have been processed.

    Connection failures (refused, reset, closed early, connect or pool timeouts) are;
    a read or write timeout is not, since the server may still be working on the request.
    """
    return not isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout)


def counts_as_failure(status: int) -> bool:
    """Whether an answer with this status counts against the endpoint's breaker."""
    return status == 429 or status >= 500


def endpoint_path(path: str) -> str:
    """The part of a path that names an endpoint (blob digests are one endpoint)."""
    path = path.split("?", 1)[0]
    if path.startswith("/api/blobs/"):
        return "/api/blobs"
    return path


class BreakerBoard:
    """All breakers of one client, keyed by (base URL, endpoint path); thread-safe.

    Every breaker reads the board's ``clock`` (the client's monotonic clock)."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.clock = clock
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._lock = threading.Lock()

    def _get(self, base_url: str, path: str) -> CircuitBreaker:
        key = (base_url, endpoint_path(path))
        breaker = self._breakers.get(key)
        if breaker is None:
            policy = self.policy
            breaker = CircuitBreaker(policy.failure_threshold, policy.cooldown, self.clock)
            self._breakers[key] = breaker
        return breaker

    def allow(self, base_url: str, path: str) -> bool:
        """Whether a request may go to this endpoint now (takes the probe slot if half-open)."""
        if not self.policy.enabled:
            return True
        with self._lock:
            return self._get(base_url, path).allow()

    def success(self, base_url: str, path: str) -> None:
        """Record an answer from this endpoint."""
        if self.policy.enabled:
            with self._lock:
                self._get(base_url, path).success()

    def failure(self, base_url: str, path: str) -> None:
        """Record a failure of this endpoint."""
        if self.policy.enabled:
            with self._lock:
                self._get(base_url, path).failure()

    def state(self, base_url: str, path: str) -> BreakerState:
        """The breaker's state now (closed for endpoints never seen)."""
        with self._lock:
            breaker = self._breakers.get((base_url, endpoint_path(path)))
            return breaker.state() if breaker else BreakerState.CLOSED

    def retry_in(self, base_urls: Sequence[str], path: str) -> float:
        """Seconds until the soonest of these endpoints lets a probe through."""
        with self._lock:
            waits = [
                breaker.retry_in()
                for base_url in base_urls
                if (breaker := self._breakers.get((base_url, endpoint_path(path))))
            ]
        return min(waits, default=0.0)

    def snapshot(self) -> dict[tuple[str, str], BreakerState]:
        """Every known breaker's state now."""
        with self._lock:
            return {key: breaker.state() for key, breaker in self._breakers.items()}


@dataclass(frozen=True)
class FailoverOrder:
    """The base URLs one pass of a call may try, in order, and those skipped as open."""

    usable: tuple[str, ...]
    skipped: tuple[str, ...]


def failover_order(base_urls: Sequence[str], board: BreakerBoard, path: str) -> FailoverOrder:
    """The base URLs in their configured (priority) order, without those whose breaker is open.

    Half-open ones stay in their place: the request becomes their probe. Nothing is
    taken here (no probe slot): :meth:`BreakerBoard.allow` does that at send time.
    """
    usable: list[str] = []
    skipped: list[str] = []
    for base_url in base_urls:
        if board.policy.enabled and board.state(base_url, path) is BreakerState.OPEN:
            skipped.append(base_url)
        else:
            usable.append(base_url)
    return FailoverOrder(tuple(usable), tuple(skipped))
