"""OpenAI's Responses stream ⇄ neutral chunks, in the style of :mod:`.stream`.

The encoder writes the Responses event sequence, each event numbered
(``sequence_number``): ``response.created`` and ``response.in_progress``; per output item
``response.output_item.added``, its deltas (``response.reasoning_text.delta``;
``response.content_part.added``, ``response.output_text.delta``, ``...done`` and
``response.content_part.done`` for a message; ``response.function_call_arguments.delta``
and ``...done`` for a call) and ``response.output_item.done``; then ``response.completed``
(or ``response.incomplete`` at the token limit) with the whole response, its usage
included. A failure is an ``error`` event followed by ``response.failed``. The decoder
reads the same events from a Responses upstream.
"""

from __future__ import annotations

import time
from typing import Any

from modelgarden.translate import responses as rs
from modelgarden.translate.stream import DataEvents, named_sse
from modelgarden.types import Chunk, FinishReason, InferenceRequest, ToolCall, Usage


def error_event(message: str, sequence: int = 0) -> bytes:
    """The ``error`` event of a Responses stream."""
    data = {"type": "error", "sequence_number": sequence, "code": "server_error"}
    return named_sse("error", {**data, "message": message, "param": None})


class ResponsesEncoder:
    """Chunks → Responses stream events; keeps the item being streamed and the output so
    far, from which the final ``response`` object is built."""

    def __init__(self, model: str, req: InferenceRequest) -> None:
        self.model = model
        self.req = req
        self.id = rs.new_id("resp")
        self.created = int(time.time())
        #: The final chunk's usage once encoded (for the request's record).
        self.usage: Usage | None = None
        self._seq = 0
        self._started = False
        #: Finished output items, in order.
        self._output: list[dict[str, Any]] = []
        #: The reasoning or message item being streamed, and its pieces so far (joined once,
        #: when it is done: appending to one string would copy it for every piece).
        self._open: dict[str, Any] | None = None
        self._pieces: list[str] = []

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return named_sse(kind, payload)

    def _response(self, status: str, usage: Usage | None = None) -> dict[str, Any]:
        output = list(self._output) if status != "in_progress" else []
        return rs.response_object(
            self.id, self.created, self.model, status, output, self.req, usage
        )

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        response = self._response("in_progress")
        created = self._event("response.created", response=response)
        return created + self._event("response.in_progress", response=response)

    @property
    def _index(self) -> int:
        return len(self._output)

    def _begin(self, kind: str) -> bytes:
        """Announce a reasoning or message item."""
        iid = rs.new_id("rs" if kind == "reasoning" else "msg")
        if kind == "reasoning":
            item = {**rs.reasoning_item(iid, ""), "content": []}
        else:
            item = rs.message_item(iid, "", status="in_progress")
        self._open, self._pieces = item, []
        out = self._event("response.output_item.added", output_index=self._index, item=item)
        if kind == "message":
            ids = {"item_id": iid, "output_index": self._index, "content_index": 0}
            out += self._event("response.content_part.added", **ids, part=rs.text_part(""))
        return out

    def _streamed(self, kind: str, text: str) -> bytes:
        out = b""
        if self._open is None or self._open["type"] != kind:
            out = self._close() + self._begin(kind)
        assert self._open is not None
        self._pieces.append(text)
        ids = {"item_id": self._open["id"], "output_index": self._index, "content_index": 0}
        if kind == "reasoning":
            return out + self._event("response.reasoning_text.delta", **ids, delta=text)
        return out + self._event("response.output_text.delta", **ids, delta=text, logprobs=[])

    def _close(self) -> bytes:
        """Finish the item being streamed, if any."""
        if self._open is None:
            return b""
        iid, text = self._open["id"], "".join(self._pieces)
        ids = {"item_id": iid, "output_index": self._index, "content_index": 0}
        if self._open["type"] == "reasoning":
            item = rs.reasoning_item(iid, text)
            out = self._event("response.reasoning_text.done", **ids, text=text)
        else:
            item = rs.message_item(iid, text)
            out = self._event("response.output_text.done", **ids, text=text, logprobs=[])
            out += self._event("response.content_part.done", **ids, part=rs.text_part(text))
        out += self._event("response.output_item.done", output_index=self._index, item=item)
        self._output.append(item)
        self._open = None
        return out

    def _call(self, call: ToolCall) -> bytes:
        iid = rs.new_id("fc")
        spaces = rs.spaces_of(self.req)
        done = rs.call_item(iid, call, spaces=spaces)
        call = ToolCall(call.name, call.arguments, done["call_id"])
        announced = rs.call_item(iid, call, status="in_progress", spaces=spaces)
        out = self._event("response.output_item.added", output_index=self._index, item=announced)
        ids = {"item_id": iid, "output_index": self._index}
        args = done["arguments"]
        out += self._event("response.function_call_arguments.delta", **ids, delta=args)
        out += self._event(
            "response.function_call_arguments.done", **ids, name=call.name, arguments=args
        )
        out += self._event("response.output_item.done", output_index=self._index, item=done)
        self._output.append(done)
        return out

    def encode(self, chunk: Chunk) -> bytes:
        out = self._start()
        if chunk.error is not None:
            return out + self._failed(chunk.error)
        if chunk.thinking:
            out += self._streamed("reasoning", chunk.thinking)
        if chunk.text:
            out += self._streamed("message", chunk.text)
        for call in chunk.tool_calls:
            out += self._close() + self._call(call)
        if chunk.finish_reason is not None:
            if not self._output and self._open is None:  # an empty answer is an empty message
                out += self._begin("message")
            out += self._close()
            self.usage = chunk.usage or Usage()
            called = any(item["type"] == "function_call" for item in self._output)
            status = "completed" if called else rs.status_of(chunk)  # as the whole answer
            response = self._response(status, self.usage)
            out += self._event(f"response.{status}", response=response)
        return out

    def _failed(self, message: str) -> bytes:
        out = error_event(message, self._seq)
        self._seq += 1
        response = self._response("failed")
        response["error"] = {"code": "server_error", "message": message}
        return out + self._event("response.failed", response=response)

    def fail(self, message: str) -> bytes:
        """The last bytes of a stream that failed after it began."""
        return self._start() + self._failed(message)

    def finish(self) -> bytes:
        return b""


#: The events that end a Responses stream.
FINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


class ResponsesDecoder(DataEvents):
    """Responses stream events → chunks; a function call is emitted whole when its item is
    done."""

    def __init__(self) -> None:
        super().__init__()

    @staticmethod
    def _event(data: dict[str, Any]) -> Chunk | None:
        kind = str(data.get("type") or "")
        if kind == "response.output_text.delta":
            return Chunk(text=str(data.get("delta") or ""))
        if kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            return Chunk(thinking=str(data.get("delta") or ""))
        if kind == "response.output_item.done":
            item = data.get("item") or {}
            if item.get("type") == "function_call":
                return Chunk(tool_calls=rs.response_in({"output": [item]}).tool_calls)
            return None
        if kind in ("response.completed", "response.incomplete"):
            whole = rs.response_in(data.get("response") or {})
            finish: FinishReason = "length" if kind == "response.incomplete" else "stop"
            return Chunk(finish_reason=finish, usage=whole.usage)
        if kind in ("response.failed", "error"):
            err = (data.get("response") or {}).get("error") or data
            return Chunk(error=str(err.get("message") or "the upstream failed"))
        return None
