"""Anthropic's Messages stream ⇄ neutral chunks, in the style of :mod:`.stream`.

The encoder writes Anthropic's event sequence: ``message_start`` and a ``ping``, then per
content block ``content_block_start``, its ``content_block_delta`` events (``thinking_delta``,
``text_delta``, ``input_json_delta``) and ``content_block_stop``, then ``message_delta``
(``stop_reason``, and ``usage`` with the input and output tokens, known only at the end when
translating) and ``message_stop``. A failure is an ``error`` event. The decoder reads the
same events from an Anthropic upstream.
"""

from __future__ import annotations

import json
from typing import Any

from modelgarden.errors import message_of
from modelgarden.translate import anthropic as an
from modelgarden.translate.stream import DataEvents, named_sse
from modelgarden.types import Chunk, FinishReason, ToolCall, Usage

#: Error types by status, as Anthropic's API writes them.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (``api_error`` for the rest)."""
    return ERROR_TYPES.get(status, "api_error")


def error_body(status: int, message: str) -> dict[str, Any]:
    """An Anthropic error object."""
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def error_event(message: str, status: int = 500) -> bytes:
    """The event that reports a failure inside an Anthropic stream."""
    return named_sse("error", error_body(status, message))


class AnthropicEncoder:
    """Chunks → Anthropic stream events; keeps the open block and the block index."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = an.new_id("msg")
        #: The final chunk's usage once encoded (for the request's record).
        self.usage: Usage | None = None
        self._started = False
        self._index = -1
        self._open: str | None = None
        self._calls = 0

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": an.usage_out(None),
        }
        start = named_sse("message_start", {"type": "message_start", "message": message})
        return start + named_sse("ping", {"type": "ping"})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return named_sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _block(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = str(block["type"])
        data = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + named_sse("content_block_start", data)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        data = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return named_sse("content_block_delta", data)

    def _streamed(self, kind: str, text: str) -> bytes:
        """A piece of a thinking or text block, opening the block when it is new."""
        out = b""
        if self._open != kind:
            empty = {"type": kind, kind: ""}
            out = self._block({**empty, "signature": ""} if kind == "thinking" else empty)
        return out + self._delta({"type": f"{kind}_delta", kind: text})

    def _call(self, call: ToolCall) -> bytes:
        block = an.tool_use_out(call)
        out = self._block({**block, "input": {}})
        out += self._delta({"type": "input_json_delta", "partial_json": json.dumps(call.arguments)})
        self._calls += 1
        return out + self._close()

    def encode(self, chunk: Chunk) -> bytes:
        out = self._start()
        if chunk.error is not None:
            return out + error_event(chunk.error)
        if chunk.thinking:
            out += self._streamed("thinking", chunk.thinking)
        if chunk.text:
            out += self._streamed("text", chunk.text)
        for call in chunk.tool_calls:
            out += self._call(call)
        if chunk.finish_reason is not None:
            out += self._close()
            self.usage = chunk.usage
            reason = "tool_use" if self._calls else an.stop_reason(chunk)
            delta = {"stop_reason": reason, "stop_sequence": None}
            usage = an.usage_out(chunk.usage)
            out += named_sse(
                "message_delta", {"type": "message_delta", "delta": delta, "usage": usage}
            )
            out += named_sse("message_stop", {"type": "message_stop"})
        return out

    def fail(self, message: str) -> bytes:
        """The last bytes of a stream that failed after it began."""
        return self._start() + error_event(message)

    def finish(self) -> bytes:
        return b""


class AnthropicDecoder(DataEvents):
    """Anthropic stream events → chunks; a tool call is emitted whole when its block ends."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[int, dict[str, str]] = {}
        self._finish: FinishReason = "stop"
        self._usage: dict[str, Any] = {}

    def _event(self, data: dict[str, Any]) -> Chunk | None:
        kind = data.get("type")
        if kind == "content_block_delta":
            return self._delta(int(data.get("index", 0)), data.get("delta") or {})
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                call = {"id": str(block.get("id", "")), "name": str(block.get("name", ""))}
                self._calls[int(data.get("index", 0))] = {**call, "args": ""}
        elif kind == "content_block_stop":
            return self._tool_call(int(data.get("index", 0)))
        elif kind in ("message_start", "message_delta"):
            usage = (data.get("message") or data).get("usage") or {}
            self._usage.update({k: v for k, v in usage.items() if v is not None})
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self._finish = an.FINISH.get(str(reason), "stop")
        elif kind == "message_stop":
            return Chunk(finish_reason=self._finish, usage=an.usage_in(self._usage))
        elif kind == "error":
            return Chunk(error=message_of(data.get("error") or {}))
        return None

    def _delta(self, index: int, delta: dict[str, Any]) -> Chunk | None:
        kind = delta.get("type")
        if kind == "text_delta":
            return Chunk(text=str(delta.get("text") or ""))
        if kind == "thinking_delta":
            return Chunk(thinking=str(delta.get("thinking") or ""))
        if kind == "input_json_delta" and index in self._calls:
            self._calls[index]["args"] += str(delta.get("partial_json") or "")
        return None

    def _tool_call(self, index: int) -> Chunk | None:
        call = self._calls.pop(index, None)
        if call is None:
            return None
        try:
            args = json.loads(call["args"] or "{}")
        except ValueError:
            return Chunk(error="the upstream sent tool input that is not JSON")
        return Chunk(tool_calls=[ToolCall(call["name"], args, call["id"])])
