"""The one record each inference request leaves behind, and the meter that fills it in.

A :class:`Meter` rides along with a request from the moment the gateway receives it. The
dispatcher notes the route and the time spent waiting on the backend; the relay notes the
first body byte and keeps the stream's last bytes, as it already did to check the final
record. When the request really ends (answered, failed, or left by its client) the meter
turns into one immutable :class:`RequestRecord`, which the metrics, the request log line and
the usage queue all consume (:class:`~modelgarden.telemetry.Telemetry`). Nothing here runs
per streamed chunk: token counts are read once, from the final record's bytes.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelgarden.telemetry import Telemetry
    from modelgarden.telemetry.tracing import RequestTrace

#: The longest client-given request id that is kept (longer or odd ones are replaced).
MAX_REQUEST_ID = 128
_REQUEST_ID_OK = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")
#: What follows a counter's quoted name: the number.
_NUMBER = re.compile(rb"\s*:\s*(\d+)")


#: How far from the end of an answer its token counters are looked for.
COUNTED_TAIL = 1024


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new random one."""
    for name, value in headers:
        if name == b"x-request-id":
            if _REQUEST_ID_OK.fullmatch(value):
                return value.decode()
            break
    return os.urandom(12).hex()


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts read from an answer, with the backend's generation time when given."""

    prompt: int | None = None
    completion: int | None = None
    #: Nanoseconds the backend spent generating (Ollama's ``eval_duration``).
    eval_ns: int | None = None


def tokens_of(data: bytes) -> Tokens:
    """The token counts in an answer's final record (Ollama, OpenAI, Anthropic or Responses,
    JSON or a stream).

    Every family writes its counters last (Ollama's after the message, the others'
    ``usage`` after the content), so only the last :data:`COUNTED_TAIL` bytes are searched:
    a long answer or a large embedding costs no more than a short one.
    """
    start = max(0, len(data) - COUNTED_TAIL)

    def last(name: bytes) -> int | None:
        # The quotes are part of the name: inside a JSON string they are escaped, and
        # '"eval_count"' is not found inside '"prompt_eval_count"'.
        at = data.rfind(name, start)
        match = _NUMBER.match(data, at + len(name)) if at >= 0 else None
        return int(match.group(1)) if match else None

    prompt = last(b'"prompt_eval_count"')
    if prompt is None:
        prompt = last(b'"prompt_tokens"')
    if prompt is None:  # Anthropic's and the Responses API's
        prompt = last(b'"input_tokens"')
    completion = last(b'"eval_count"')
    if completion is None:
        completion = last(b'"completion_tokens"')
    if completion is None:
        completion = last(b'"output_tokens"')
    return Tokens(prompt, completion, last(b'"eval_duration"'))


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What one inference request was and how it went: the unit of metrics, logs and usage."""

    request_id: str
    #: Wall-clock seconds (Unix time) when the request arrived.
    started: float
    api: str
    endpoint: str
    model: str
    #: The backend that answered (or was tried last); ``""`` when none was reached.
    backend: str
    #: The HTTP status, or the error's status when a stream failed after it began
    #: (499: the client left).
    status: int
    stream: bool
    duration_ms: float
    #: Time to the first body byte of a streamed answer; ``None`` for whole answers.
    ttft_ms: float | None
    #: Time spent in the gateway itself before the answer started, backend time excluded.
    overhead_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    #: Completion tokens per second of generation, when it can be told.
    tokens_per_s: float | None
    key_id: str | None = None
    error: str | None = None
    prompt: Any = None

    @property
    def ok(self) -> bool:
        """Whether the request was answered in full."""
        return self.status < 400


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

    def __init__(self, telemetry: Telemetry, request_id: str, start_ns: int) -> None:
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
