"""Resilience decisions, free of I/O: backoff, ``Retry-After``, circuit breakers, failover.

Time comes from the caller (``now`` arguments, a monotonic clock) and randomness from a
``random.Random`` it owns, so each decision is reproducible in a unit test.
"""

from __future__ import annotations

import enum
import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from modelgarden.client.options import BreakerPolicy, RetryPolicy


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


class BreakerState(enum.StrEnum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """One endpoint's breaker: owns its state, failure count and probe slot.

    Not thread-safe on its own; :class:`BreakerBoard` serialises access.
    """

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self.opened_at: float | None = None
        self.probe_since: float | None = None

    def state(self, now: float) -> BreakerState:
        """The state at ``now``: an open breaker whose cooldown passed is half-open."""
        if self.opened_at is None:
            return BreakerState.CLOSED
        if now - self.opened_at >= self.policy.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self, now: float) -> bool:
        """Whether a request may go out now; half-open lets one probe through at a time.

        A probe that never reported back (its caller went away) stops blocking others
        after another cooldown.
        """
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        if self.probe_since is not None and now - self.probe_since < self.policy.cooldown:
            return False
        self.probe_since = now
        return True

    def retry_in(self, now: float) -> float:
        """Seconds until a probe may go through (0 when one may now)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.policy.cooldown - now)

    def success(self) -> None:
        """The endpoint answered: close."""
        self.failures = 0
        self.opened_at = None
        self.probe_since = None

    def failure(self, now: float) -> None:
        """The endpoint failed: count it; open at the threshold, or again after a probe."""
        self.failures += 1
        probing = self.opened_at is not None
        if probing or self.failures >= self.policy.failure_threshold:
            self.opened_at = now
            self.probe_since = None


def endpoint_path(path: str) -> str:
    """The part of a path that names an endpoint (blob digests are one endpoint)."""
    path = path.split("?", 1)[0]
    if path.startswith("/api/blobs/"):
        return "/api/blobs"
    return path


class BreakerBoard:
    """All breakers of one client, keyed by (base URL, endpoint path); thread-safe."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._lock = threading.Lock()

    def _get(self, base_url: str, path: str) -> CircuitBreaker:
        key = (base_url, endpoint_path(path))
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(self.policy)
        return breaker

    def allow(self, base_url: str, path: str, now: float) -> bool:
        """Whether a request may go to this endpoint now (takes the probe slot if half-open)."""
        if not self.policy.enabled:
            return True
        with self._lock:
            return self._get(base_url, path).allow(now)

    def success(self, base_url: str, path: str) -> None:
        """Record an answer from this endpoint."""
        if self.policy.enabled:
            with self._lock:
                self._get(base_url, path).success()

    def failure(self, base_url: str, path: str, now: float) -> None:
        """Record a failure of this endpoint."""
        if self.policy.enabled:
            with self._lock:
                self._get(base_url, path).failure(now)

    def state(self, base_url: str, path: str, now: float) -> BreakerState:
        """The breaker's state at ``now`` (closed for endpoints never seen)."""
        with self._lock:
            breaker = self._breakers.get((base_url, endpoint_path(path)))
            return breaker.state(now) if breaker else BreakerState.CLOSED

    def retry_in(self, base_urls: Sequence[str], path: str, now: float) -> float:
        """Seconds until the soonest of these endpoints lets a probe through."""
        with self._lock:
            waits = [
                breaker.retry_in(now)
                for base_url in base_urls
                if (breaker := self._breakers.get((base_url, endpoint_path(path))))
            ]
        return min(waits, default=0.0)

    def snapshot(self, now: float) -> dict[tuple[str, str], BreakerState]:
        """Every known breaker's state at ``now``."""
        with self._lock:
            return {key: breaker.state(now) for key, breaker in self._breakers.items()}


@dataclass(frozen=True)
class FailoverOrder:
    """The base URLs one pass of a call may try, in order, and those skipped as open."""

    usable: tuple[str, ...]
    skipped: tuple[str, ...]


def failover_order(
    base_urls: Sequence[str], board: BreakerBoard, path: str, now: float
) -> FailoverOrder:
    """The base URLs in their configured (priority) order, without those whose breaker is open.

    Half-open ones stay in their place: the request becomes their probe. Nothing is
    taken here (no probe slot): :meth:`BreakerBoard.allow` does that at send time.
    """
    usable: list[str] = []
    skipped: list[str] = []
    for base_url in base_urls:
        if board.policy.enabled and board.state(base_url, path, now) is BreakerState.OPEN:
            skipped.append(base_url)
        else:
            usable.append(base_url)
    return FailoverOrder(tuple(usable), tuple(skipped))
