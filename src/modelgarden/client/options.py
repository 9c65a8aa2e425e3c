"""The client's settings: one frozen object for retries, the circuit breaker and timeouts.

Every knob has a default that suits a shared model service on a LAN; each part can be
switched off: ``RetryPolicy(max_retries=0)`` never retries, ``BreakerPolicy(enabled=False)``
never fails fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying again.

    A call makes one *pass* over the base URLs (failing over at once from one to the
    next), then up to ``max_retries`` more passes, each after a pause. The pause before
    retry ``n`` (0-based) is drawn uniformly from ``[0, min(max_delay, base_delay *
    multiplier**n)]`` ("full jitter"); when every failure of the pass carried a
    ``Retry-After``, the pause is the shortest of those (at most ``max_retry_after``).
    Connection errors and the statuses in ``retry_statuses`` are retried; a read timeout
    is not (the server may still be working on it), and nothing is retried once a stream
    has delivered data.
    """

    max_retries: int = 3
    base_delay: float = 0.25
    multiplier: float = 2.0
    max_delay: float = 8.0
    jitter: bool = True
    max_retry_after: float = 60.0
    retry_statuses: frozenset[int] = frozenset({429, 503})

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must be 0 or more")
        if self.multiplier < 1:
            raise ValueError("multiplier must be 1 or more")


@dataclass(frozen=True)
class BreakerPolicy:
    """The circuit breaker kept per endpoint (base URL + path).

    It opens after ``failure_threshold`` consecutive failures (connection errors, 429
    and 5xx answers, streams that break), fails calls fast while open, lets one probe
    through after ``cooldown`` seconds (half-open), and closes when the probe succeeds.
    """

    enabled: bool = True
    failure_threshold: int = 5
    cooldown: float = 10.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be 1 or more")
        if self.cooldown < 0:
            raise ValueError("cooldown must be 0 or more")


@dataclass(frozen=True)
class ClientOptions:
    """Everything a client may be told about resilience, in one place.

    ``timeout`` is each attempt's limit in seconds for connecting, sending and every
    read (``None``: wait as long as it takes, as the ``ollama`` client does);
    ``connect_timeout`` caps connecting alone, so a dead address fails over quickly.
    A ``timeout=`` given to one method replaces ``timeout`` for that call.
    """

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    timeout: float | None = None
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be more than 0 (or None for no limit)")
        if self.connect_timeout <= 0:
            raise ValueError("connect_timeout must be more than 0")
