"""The one record each inference request leaves behind, and what it is read from.

A :class:`RequestRecord` is made once per request by its
:class:`~modelgarden.telemetry.meter.Meter`, and the metrics, the request log line, the
usage queue and the trace all consume it. Token counts are read once, from the final
record's bytes (:func:`tokens_of`). Nothing here imports the rest of the telemetry: it is
the piece every other part of it shares.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

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
