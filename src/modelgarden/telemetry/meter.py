"""The meter that rides along with one inference request and fills in its record.

A :class:`Meter` starts the moment the gateway receives a request. The dispatcher notes the
route and the time spent waiting on the backend; the relay notes the first body byte and
keeps the stream's last bytes, as it already did to check the final record. When the
request really ends (answered, failed, or left by its client) the meter turns into one
immutable :class:`~modelgarden.telemetry.record.RequestRecord` and hands it to its sink
(the :class:`~modelgarden.telemetry.Telemetry`). Nothing here runs per streamed chunk.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from modelgarden.telemetry.record import RequestRecord, Tokens, tokens_of

if TYPE_CHECKING:
    from modelgarden.telemetry.tracing import RequestTrace


class RecordSink(Protocol):
    """Where a finished request's record goes (the telemetry's :meth:`record`)."""

    def record(self, record: RequestRecord) -> None: ...


class Meter:
    """Times one inference request and collects what its record needs; finishes once."""

    __slots__ = (
        "api",
        "backend",
        "backend_ns",
        "counted",
        "endpoint",
        "finished",
        "first_ns",
        "key_id",
        "model",
        "overhead_ns",
        "prompt",
        "request_id",
        "start_ns",
        "started",
        "stream",
        "telemetry",
        "trace",
    )

    def __init__(self, telemetry: RecordSink, request_id: str, start_ns: int) -> None:
        self.telemetry = telemetry
        self.request_id = request_id
        self.start_ns = start_ns
        self.started = time.time() - (time.perf_counter_ns() - start_ns) / 1e9
        self.api = ""
        self.endpoint = ""
        self.model = ""
        self.backend = ""
        self.stream = False
        self.key_id: str | None = None
        self.prompt: Any = None
        #: Nanoseconds spent waiting on backends (every attempt, and whole bodies read).
        self.backend_ns = 0
        #: Something whose ``usage`` holds the answer's counts when its bytes do not
        #: (a translating encoder whose client did not ask for usage).
        self.counted: Any = None
        self.first_ns = 0
        self.overhead_ns = 0
        self.finished = False
        #: The request's trace when tracing is on (``telemetry/tracing.py``), else ``None``.
        self.trace: RequestTrace | None = None

    def headers(self) -> list[tuple[bytes, bytes]]:
        """``X-Request-ID`` and ``X-Garden-Overhead-Ms``, fixing the overhead as of now."""
        self.overhead_ns = max(time.perf_counter_ns() - self.start_ns - self.backend_ns, 0)
        return [
            (b"x-request-id", self.request_id.encode()),
            (b"x-garden-overhead-ms", f"{self.overhead_ns / 1e6:.3f}".encode()),
        ]

    def finish(self, status: int, tail: bytes = b"", error: str | None = None) -> None:
        """End the request: build its record from ``tail`` (the final record's bytes)."""
        if self.finished:
            return
        self.finished = True
        end = time.perf_counter_ns()
        if not self.overhead_ns:
            self.overhead_ns = max(end - self.start_ns - self.backend_ns, 0)
        tokens = tokens_of(tail) if tail else Tokens()
        usage = getattr(self.counted, "usage", None)
        if tokens.completion is None and usage is not None:
            tokens = Tokens(usage.prompt_tokens, usage.completion_tokens, usage.eval_duration)
        ttft = (self.first_ns - self.start_ns) / 1e6 if self.first_ns else None
        record = RequestRecord(
            request_id=self.request_id,
            started=self.started,
            api=self.api,
            endpoint=self.endpoint,
            model=self.model,
            backend=self.backend,
            status=status,
            stream=self.stream,
            duration_ms=(end - self.start_ns) / 1e6,
            ttft_ms=ttft,
            overhead_ms=self.overhead_ns / 1e6,
            prompt_tokens=tokens.prompt,
            completion_tokens=tokens.completion,
            tokens_per_s=self._rate(tokens, end),
            key_id=self.key_id,
            error=error,
            prompt=self.prompt,
        )
        if self.trace is not None:
            self.trace.end(record, self.first_ns, tail)
        self.telemetry.record(record)

    def _rate(self, tokens: Tokens, end: int) -> float | None:
        if not tokens.completion:
            return None
        if tokens.eval_ns:
            span = tokens.eval_ns
        elif self.first_ns:
            span = end - self.first_ns
        else:
            span = end - self.start_ns
        return tokens.completion / (span / 1e9) if span > 0 else None
