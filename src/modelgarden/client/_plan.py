"""The course of a call, free of I/O: attempts, failover, retries, breakers and telemetry.

A twin (sync or async) asks a :class:`CallPlan` where to send the next attempt and how
long to pause first, reports what happened (a transport error, a status, each streamed
line), and gets back either a decision (retry: ask again) or a typed error to raise. The
plan publishes the call's :class:`CallStats` exactly once, however the call ends.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from modelgarden.client import _trace
from modelgarden.client._base import (
    DONE,
    Call,
    attempt_timeout,
    encode_json,
    error_for,
    parse_line,
    parse_sse_line,
)
from modelgarden.client._resilience import (
    BreakerBoard,
    BreakerState,
    backoff_delay,
    counts_as_failure,
    failover_order,
    parse_retry_after,
    retryable_transport_error,
)
from modelgarden.client.errors import (
    CircuitOpen,
    ClientError,
    InvalidResponse,
    RequestTimeout,
    StreamError,
    StreamInterrupted,
    Unavailable,
)
from modelgarden.client.options import ClientOptions
from modelgarden.client.telemetry import CallStats, OnCall, error_name, publish, token_counts
from modelgarden.client.types import Health, StatusResponse, Telemetered

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Attempt:
    """One request of a call: where it goes, and how long to pause before sending it."""

    base_url: str
    url: str
    delay: float
    number: int


class ClientCore:
    """What all calls of one client share: base URLs, options, breakers, clocks, randomness.

    ``clock`` is monotonic seconds (breakers, latency); ``wall`` is the current UTC time
    (``Retry-After`` dates); ``rng`` draws the jitter. All three can be replaced in tests.
    """

    def __init__(
        self,
        hosts: Sequence[str],
        options: ClientOptions,
        on_call: OnCall | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        if not hosts:
            raise ValueError("at least one base URL is needed")
        self.hosts = tuple(hosts)
        self.options = options
        self.on_call = on_call
        self.clock = clock
        self.breakers = BreakerBoard(options.breaker, clock)
        self.wall = wall
        self.rng = rng or random.Random()

    def plan(self, call: Call) -> CallPlan:
        """A new plan for one call."""
        return CallPlan(self, call)

    def timeout(self, per_call: float | None) -> httpx.Timeout:
        """The ``httpx`` timeout of each attempt of a call."""
        return attempt_timeout(self.options.timeout, self.options.connect_timeout, per_call)

    def breaker_states(self) -> dict[tuple[str, str], BreakerState]:
        """Every endpoint's breaker state now, keyed by (base URL, path)."""
        return self.breakers.snapshot()

    def health(
        self, base_url: str, started: float, status: int | None, error: BaseException | None
    ) -> Health:
        """The health verdict for one ``GET /`` (200 is healthy)."""
        reason = None
        if error is not None:
            reason = f"could not connect to {base_url}: {error}"
        elif status != 200:
            reason = f"{base_url} answered {status}"
        return Health(status == 200, base_url, status, self.clock() - started, reason)

    def ready_wait(self, timeout: float, interval: float) -> ReadyWait:
        """The polling schedule of ``wait_ready``."""
        return ReadyWait(self.clock, timeout, interval)


class ReadyWait:
    """Owns ``wait_ready``'s schedule: the deadline and a poll interval that grows to 1 s."""

    MAX_INTERVAL = 1.0
    MAX_PROBE = 5.0

    def __init__(self, clock: Callable[[], float], timeout: float, interval: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self.deadline = clock() + timeout
        self.interval = max(interval, 0.01)

    def probe_timeout(self) -> float:
        """How long one health probe may take."""
        return min(self.MAX_PROBE, max(self.deadline - self.clock(), 0.05))

    def next_delay(self) -> float | None:
        """The pause before the next probe, or ``None`` when the deadline has passed."""
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            return None
        delay = min(self.interval, remaining)
        self.interval = min(self.interval * 1.5, self.MAX_INTERVAL)
        return delay

    def expired(self, last: Health) -> Unavailable:
        """The error for a server that did not become ready in time."""
        return Unavailable(f"no server ready within {self.timeout:g}s: {last.error}")


class CallPlan:
    """Owns one call's course: the next base URL, the pause, giving up, and its telemetry."""

    def __init__(self, core: ClientCore, call: Call) -> None:
        self.core = core
        self.call = call
        self.policy = core.options.retry
        self.started = core.clock()
        self.content = encode_json(call.json) if call.json is not None else None
        self.status: int | None = None
        self.base_url: str | None = None
        self.delivered = False
        self.ended = False
        self.stats: CallStats | None = None
        self._pending: deque[str] = deque()
        self._passes = 0
        self._in_pass = 0
        self._pass_delay = 0.0
        self._wants: list[float | None] = []
        self._tried: list[str] = []
        self._last_error: ClientError | None = None
        self._first_at: float | None = None
        self._chunks = 0
        self._tokens: tuple[int | None, int | None] = (None, None)
        #: The call's span and ``traceparent`` when OpenTelemetry is installed.
        self.trace = _trace.start(call)

    def begin(self) -> None:
        """Start the clock now (a stream starts when it is first iterated)."""
        self.started = self.core.clock()

    # -- where next -------------------------------------------------------------------------

    def next_attempt(self) -> Attempt:
        """The next attempt; raises the typed error when the call should give up."""
        while True:
            if not self._pending:
                self._start_pass()
            while self._pending:
                base_url = self._pending.popleft()
                if self.core.breakers.allow(base_url, self.call.path):
                    self._tried.append(base_url)
                    self._in_pass += 1
                    self.base_url = base_url
                    delay, self._pass_delay = self._pass_delay, 0.0
                    return Attempt(base_url, base_url + self.call.path, delay, len(self._tried))
            if not self._in_pass:  # another call holds every half-open probe slot
                raise self._give_up(self._last_error or self._circuit_open(self.core.hosts))

    def _start_pass(self) -> None:
        """Begin a pass over the usable base URLs (the first, or a retry after a pause)."""
        if self._passes > self.policy.max_retries:
            raise self._give_up(self._last_error or Unavailable("no attempt left"))
        order = failover_order(self.core.hosts, self.core.breakers, self.call.path)
        if not order.usable:
            raise self._give_up(self._last_error or self._circuit_open(order.skipped))
        self._pass_delay = self._pause(self._passes - 1) if self._passes else 0.0
        self._wants = []
        self._in_pass = 0
        self._pending = deque(order.usable)
        self._passes += 1

    def _pause(self, retry: int) -> float:
        backoff = backoff_delay(retry, self.policy, self.core.rng)
        return min((backoff if want is None else want for want in self._wants), default=backoff)

    def _circuit_open(self, skipped: Sequence[str]) -> CircuitOpen:
        retry_in = self.core.breakers.retry_in(skipped, self.call.path)
        where = ", ".join(url + self.call.path for url in skipped)
        return CircuitOpen(
            f"circuit open for {where}: failing fast, next probe in {retry_in:.1f}s", retry_in
        )

    # -- what happened ----------------------------------------------------------------------

    def transport_failed(self, attempt: Attempt, exc: httpx.TransportError) -> None:
        """A transport error: count it; return to retry, or raise the typed error."""
        self.core.breakers.failure(attempt.base_url, self.call.path)
        error: ClientError
        if self.delivered:
            error = StreamInterrupted(f"connection to {attempt.base_url} broke mid-stream: {exc}")
        elif not retryable_transport_error(exc):
            error = RequestTimeout(f"{attempt.url} did not answer in time: {exc!r}")
        elif isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            error = Unavailable(f"could not connect to {attempt.base_url}: {exc}")
        else:
            error = Unavailable(f"connection to {attempt.base_url} failed: {exc!r}")
        self._last_error = error
        if self.delivered or not retryable_transport_error(exc):
            raise self._give_up(error)
        self._wants.append(None)

    def answered(self, attempt: Attempt, status: int, body: bytes, retry_after: str | None) -> bool:
        """A status arrived: ``True`` to read the answer, ``False`` to retry; else raises."""
        self.status = status
        path = self.call.path
        if status < 400 or status in self.call.accept:
            self.core.breakers.success(attempt.base_url, path)
            return True
        error = error_for(status, body, None)
        error.retry_after = parse_retry_after(retry_after, self.core.wall())
        if counts_as_failure(status):
            self.core.breakers.failure(attempt.base_url, path)
        else:
            self.core.breakers.success(attempt.base_url, path)
        self._last_error = error
        if status not in self.policy.retry_statuses:
            raise self._give_up(error)
        wait = error.retry_after
        self._wants.append(None if wait is None else min(wait, self.policy.max_retry_after))
        return False

    def record(self, line: str | bytes, model: type[M]) -> M | None:
        """One streamed line as a typed chunk (``None``: nothing to yield; see ``ended``)."""
        try:
            parsed = parse_sse_line(line, model) if self.call.sse else parse_line(line, model)
        except StreamError as error:
            if self.base_url is not None:
                self.core.breakers.failure(self.base_url, self.call.path)
            raise self._give_up(error) from None
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise self._give_up(self._invalid(exc)) from None
        if parsed is DONE:
            self.ended = True
            return None
        if not isinstance(parsed, model):
            return None
        if self._first_at is None:
            self._first_at = self.core.clock()
        self.delivered = True
        self._chunks += 1
        tokens_in, tokens_out = token_counts(parsed)
        self._tokens = (
            self._tokens[0] if tokens_in is None else tokens_in,
            self._tokens[1] if tokens_out is None else tokens_out,
        )
        return parsed

    def result(self, body: bytes, model: type[M]) -> M:
        """A whole answer as a typed response, with the call's telemetry on it."""
        try:
            response = model.model_validate(orjson.loads(body))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise self._give_up(self._invalid(exc)) from None
        self._tokens = token_counts(response)
        self.finish(response)
        return response

    def status_result(self, body: bytes) -> StatusResponse:
        """The answer of copy and delete (``success`` unless the server says otherwise)."""
        try:
            data = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            data = {}
        response = StatusResponse.model_validate(data if isinstance(data, dict) else {})
        response.status = response.status or "success"
        self.finish(response)
        return response

    def _invalid(self, exc: Exception) -> InvalidResponse:
        where = self.base_url or "the server"
        return InvalidResponse(f"unreadable answer from {where}{self.call.path}: {exc}")

    # -- how it ended -----------------------------------------------------------------------

    def finish(self, response: object = None) -> CallStats:
        """The call succeeded: publish its telemetry (and put it on ``response``)."""
        stats = self._publish(None)
        if isinstance(response, Telemetered):
            response.with_telemetry(stats)
        return stats

    def abandon(self) -> None:
        """The caller went away (stream closed early, cancelled): publish, if not yet done."""
        if self.stats is None:
            self._publish("cancelled")

    def _give_up(self, error: ClientError) -> ClientError:
        self._publish(error)
        return error

    def _publish(self, error: ClientError | str | None) -> CallStats:
        if self.stats is not None:
            return self.stats
        now = self.core.clock()
        self.stats = CallStats(
            method=self.call.name or self.call.path,
            path=self.call.path,
            stream=self.call.stream,
            ok=error is None,
            base_url=self.base_url,
            status=self.status,
            error=error_name(error),
            latency_s=now - self.started,
            ttft_s=None if self._first_at is None else self._first_at - self.started,
            tokens_in=self._tokens[0],
            tokens_out=self._tokens[1],
            attempts=len(self._tried),
            retries=max(0, len(self._tried) - 1),
            hosts_tried=tuple(self._tried),
            chunks=self._chunks,
            trace_id=None if self.trace is None else self.trace.trace_id,
        )
        if self.trace is not None:
            self.trace.end(self.stats)
        publish(self.stats, self.core.on_call)
        return self.stats
