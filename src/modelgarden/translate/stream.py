"""Streams between the families: decode an upstream's records into neutral chunks, and
encode neutral chunks as the client's records. Stateful but I/O-free: feed bytes in, get
bytes out; :func:`translate` drives them over an async byte stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any, Protocol

import orjson

from modelgarden.errors import message_of
from modelgarden.translate import ollama as ot
from modelgarden.translate import openai as oa
from modelgarden.types import Chunk, ToolCall, Usage


class Decoder(Protocol):
    """Turns an upstream's bytes into neutral chunks."""

    def feed(self, data: bytes) -> list[Chunk]: ...


class Encoder(Protocol):
    """Turns neutral chunks into the client's bytes."""

    def encode(self, chunk: Chunk) -> bytes: ...

    def finish(self) -> bytes: ...


class Lines:
    """Splits a byte stream into complete lines."""

    def __init__(self) -> None:
        self._rest = b""

    def split(self, data: bytes) -> list[bytes]:
        data = self._rest + data
        lines = data.split(b"\n")
        self._rest = lines.pop()
        return [line for line in lines if line.strip()]


class DataEvents:
    """Base of the decoders of streams whose events are JSON ``data:`` lines (Anthropic's,
    the Responses API's): owns the line splitting; ``_event`` turns one event into at most
    one chunk."""

    def __init__(self) -> None:
        self._lines = Lines()

    def feed(self, data: bytes) -> list[Chunk]:
        out: list[Chunk] = []
        for line in self._lines.split(data):
            if line.startswith(b"data:"):
                chunk = self._event(orjson.loads(line[5:]))
                if chunk is not None:
                    out.append(chunk)
        return out

    def _event(self, event: dict[str, Any]) -> Chunk | None:
        raise NotImplementedError


class NDJSONDecoder:
    """Ollama NDJSON records → chunks."""

    def __init__(self) -> None:
        self._lines = Lines()

    def feed(self, data: bytes) -> list[Chunk]:
        return [ot.chunk_in(orjson.loads(line)) for line in self._lines.split(data)]


class SSEDecoder:
    """OpenAI server-sent events → chunks; tool-call fragments are joined by index."""

    def __init__(self) -> None:
        self._lines = Lines()
        self._calls: dict[int, dict[str, str]] = {}
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    def feed(self, data: bytes) -> list[Chunk]:
        out: list[Chunk] = []
        for line in self._lines.split(data):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                out.append(self._final())
                continue
            event = orjson.loads(payload)
            if err := event.get("error"):
                out.append(Chunk(error=message_of(err)))
                continue
            if chunk := self._event(event):
                out.append(chunk)
        return out

    def _event(self, event: dict[str, Any]) -> Chunk | None:
        if event.get("usage"):
            self._usage = event["usage"]
        choices = event.get("choices") or []
        if not choices:
            return None
        choice = choices[0]
        delta = choice.get("delta") or {}
        for call in delta.get("tool_calls") or []:
            slot = self._calls.setdefault(
                int(call.get("index", 0)), {"id": "", "name": "", "args": ""}
            )
            fn = call.get("function") or {}
            slot["id"] = call.get("id") or slot["id"]
            slot["name"] += fn.get("name") or ""
            slot["args"] += fn.get("arguments") or ""
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
        text = delta.get("content") if "delta" in choice else choice.get("text")
        thinking = delta.get("reasoning_content") or delta.get("reasoning") or ""
        return Chunk(text=str(text or ""), thinking=str(thinking)) if text or thinking else None

    def _final(self) -> Chunk:
        try:
            calls = [
                ToolCall(c["name"], json.loads(c["args"] or "{}"), c["id"])
                for _, c in sorted(self._calls.items())
            ]
        except ValueError:
            return Chunk(error="the upstream sent tool call arguments that are not JSON")
        chunk = Chunk(tool_calls=calls, finish_reason=oa.FINISH.get(self._finish or "stop", "stop"))
        chunk.usage = oa.usage_in(self._usage)
        return chunk


class OllamaEncoder:
    """Chunks → Ollama NDJSON records (``kind``: ``chat`` or ``generate``)."""

    def __init__(self, model: str, kind: str) -> None:
        self.model, self.kind = model, kind

    def encode(self, chunk: Chunk) -> bytes:
        return orjson.dumps(ot.chunk_out(chunk, self.model, self.kind)) + b"\n"

    def finish(self) -> bytes:
        return b""


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event frame."""
    return b"data: " + orjson.dumps(event) + b"\n\n"


def named_sse(kind: str, data: dict[str, Any]) -> bytes:
    """One server-sent event frame with its ``event:`` name (Anthropic's and the Responses
    API's streams name every event by its type)."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def sse_error(message: str) -> bytes:
    """The event that reports a failure inside an OpenAI stream."""
    return sse({"error": {"message": message, "type": "server_error", "param": None, "code": None}})


class OpenAIChatEncoder:
    """Chunks → ``chat.completion.chunk`` events, then ``data: [DONE]``."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = oa.new_id("chatcmpl")
        self.created = oa.now()
        #: The final chunk's usage once encoded (sent only if ``include_usage``).
        self.usage: Usage | None = None
        self._started = False
        self._calls = 0

    def _event(self, delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
        choice: dict[str, Any] = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
        }
        choice.update(extra)
        return self._frame([choice])

    def _frame(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_modelgarden",
                "choices": choices,
                **extra,
            }
        )

    def encode(self, chunk: Chunk) -> bytes:
        if chunk.error is not None:
            return sse_error(chunk.error)
        out = b""
        delta: dict[str, Any] = {}
        if not self._started:
            self._started = True
            delta["role"] = "assistant"
        if chunk.thinking:
            delta["reasoning_content"] = chunk.thinking
        if chunk.text or delta:
            delta["content"] = chunk.text
        if chunk.tool_calls:
            delta["tool_calls"] = [
                oa.tool_call_out(c, self._calls + i) for i, c in enumerate(chunk.tool_calls)
            ]
            self._calls += len(chunk.tool_calls)
        if delta:
            extra = {"logprobs": oa.logprobs_out(chunk.logprobs)} if chunk.logprobs else {}
            out += self._event(delta, None, **extra)
        if chunk.finish_reason is not None:
            finish = "tool_calls" if self._calls else chunk.finish_reason
            out += self._event({}, finish)
            self.usage = chunk.usage
            if self.include_usage:
                out += self._frame([], usage=oa.usage_out(chunk.usage))
        return out

    def finish(self) -> bytes:
        return DONE


class OpenAICompletionEncoder:
    """Chunks → ``text_completion`` events, then ``data: [DONE]``."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = oa.new_id("cmpl")
        self.created = oa.now()
        #: The final chunk's usage once encoded (sent only if ``include_usage``).
        self.usage: Usage | None = None

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse(
            {
                "id": self.id,
                "object": "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
        )

    def encode(self, chunk: Chunk) -> bytes:
        if chunk.error is not None:
            return sse_error(chunk.error)
        out = b""
        if chunk.text or chunk.finish_reason:
            logprobs = oa.completion_logprobs_out(chunk.logprobs) if chunk.logprobs else None
            out += self._event(
                [
                    {
                        "text": chunk.text,
                        "index": 0,
                        "logprobs": logprobs,
                        "finish_reason": chunk.finish_reason,
                    }
                ]
            )
        if chunk.finish_reason is not None:
            self.usage = chunk.usage
            if self.include_usage:
                out += self._event([], usage=oa.usage_out(chunk.usage))
        return out

    def finish(self) -> bytes:
        return DONE


async def translate(
    body: AsyncIterable[bytes], decoder: Decoder, encoder: Encoder
) -> AsyncGenerator[bytes, None]:
    """Re-encode an upstream stream chunk by chunk, ending with the encoder's trailer."""
    try:
        async for data in body:
            out = b"".join(encoder.encode(chunk) for chunk in decoder.feed(data))
            if out:
                yield out
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
    yield encoder.finish()


def join(chunks: list[Chunk]) -> Chunk:
    """Fold a stream's chunks into one final chunk (what the unstreamed answer holds)."""
    whole = Chunk()
    for chunk in chunks:
        whole.text += chunk.text
        whole.thinking += chunk.thinking
        whole.tool_calls.extend(chunk.tool_calls)
        whole.logprobs.extend(chunk.logprobs)
        if chunk.final:
            whole.finish_reason, whole.usage, whole.error = (
                chunk.finish_reason,
                chunk.usage,
                chunk.error,
            )
    if whole.tool_calls and whole.finish_reason is not None:
        whole.finish_reason = "tool_calls"  # the one rule: an answer with calls ends in calls
    return whole
