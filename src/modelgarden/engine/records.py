"""llama.cpp's streamed completion, turned into Ollama's records: pure and incremental.

The engine streams ``{"content", "tokens", "completion_probabilities", "stop", ...}``
events; :class:`RecordStream` turns each into zero or more Ollama records (``response``
chunks for generate, ``message`` chunks for chat) and the last into the final record with
``done_reason`` and the counters from the engine's own ``timings``. On the way it splits
reasoning from content (:class:`ThinkingParser`) and holds back text that may be a tool
call until it is sure, then parses the calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelgarden.templates.thinking import ThinkingParser
from modelgarden.templates.tools import might_be_tool_call, parse_tool_calls

NS_PER_MS = 1_000_000
#: An answer that repeats one piece of text this many times in a row is stuck: it is ended
#: there, as Ollama does (a small model can otherwise loop until its token budget is spent).
REPEAT_LIMIT = 30


def now_iso() -> str:
    """A timestamp in the form Ollama writes ``created_at``."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def logprobs_out(probs: list[dict[str, Any]], top: bool) -> list[dict[str, Any]]:
    """The engine's ``completion_probabilities`` in Ollama's ``logprobs`` form."""
    out = []
    for p in probs:
        entry: dict[str, Any] = {"token": p.get("token", ""), "logprob": p.get("logprob", 0.0)}
        if "bytes" in p:
            entry["bytes"] = p["bytes"]
        if top:
            entry["top_logprobs"] = [
                {"token": t.get("token", ""), "logprob": t.get("logprob", 0.0), "bytes": t["bytes"]}
                if "bytes" in t
                else {"token": t.get("token", ""), "logprob": t.get("logprob", 0.0)}
                for t in p.get("top_logprobs") or []
            ]
        out.append(entry)
    return out


@dataclass
class Tools:
    """Tool calling for one chat: the tools offered, and whether a call is forced."""

    tools: list[dict[str, Any]]
    forced: bool = False
    #: Text the template already wrote for the assistant (an opened ``<tool_call>``).
    opened: str = ""
    #: Whether output is held back while it may still turn into a call.
    buffering: bool = True


@dataclass
class RecordStream:
    """Turns one request's engine events into Ollama records."""

    model: str
    chat: bool
    start_ns: int
    load_ns: int = 0
    thinking: ThinkingParser | None = None
    tools: Tools | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    #: For generate: the prompt's tokens, to return ``context`` (``None``: no context).
    context: list[int] | None = None
    _held: str = ""
    _generated: list[int] = field(default_factory=list)
    _last: str = ""
    _repeats: int = 0
    _events: int = 0

    def __post_init__(self) -> None:
        if self.tools is not None:
            self._held = self.tools.opened

    def stuck(self, event: dict[str, Any]) -> bool:
        """Whether this event's text is the same as the last :data:`REPEAT_LIMIT` ones'."""
        text = (event.get("content") or "").strip()
        self._repeats = self._repeats + 1 if text == self._last else 0
        self._last = text
        return self._repeats >= REPEAT_LIMIT

    def cut(self) -> list[dict[str, Any]]:
        """The end of an answer stopped here (stuck): the final record, counting the events."""
        return self._end({"stop": True, "timings": {"predicted_n": self._events}})

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The records for one engine event (the final one's last record is ``done``)."""
        self._events += 1
        self._generated.extend(event.get("tokens") or [])
        text = event.get("content") or ""
        probs = event.get("completion_probabilities") or []
        lp = logprobs_out(probs, self.top_logprobs > 0) if self.logprobs and probs else None
        records = self._pieces(text, lp)
        if event.get("stop"):
            records.extend(self._end(event))
        return records

    def _pieces(self, text: str, lp: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        thinking, content = self.thinking.add(text) if self.thinking else ("", text)
        out: list[dict[str, Any]] = []
        if thinking:
            out.append(self._chunk("", thinking, None))
        content = self._tool_filter(content)
        if content or (lp and not thinking):
            out.append(self._chunk(content, "", lp))
        elif lp and out:
            out[-1]["logprobs"] = lp
        return out

    def _tool_filter(self, content: str) -> str:
        """Content to pass on now; text that may be a tool call is held."""
        tools = self.tools
        if tools is None or not tools.buffering or not content:
            return content
        self._held += content
        if tools.forced or might_be_tool_call(self._held):
            return ""
        tools.buffering = False
        out, self._held = self._held, ""
        return out

    def _end(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.thinking is not None:
            thinking, content = self.thinking.flush()
            if thinking:
                out.append(self._chunk("", thinking, None))
            content = self._tool_filter(content)
            if content:
                out.append(self._chunk(content, "", None))
        if self._held and self.tools is not None:
            calls = parse_tool_calls(self._held, self.tools.tools)
            chunk = self._chunk("" if calls else self._held, "", None)
            if calls:
                chunk["message"]["tool_calls"] = calls
            out.append(chunk)
            self._held = ""
        out.append(self._final(event))
        return out

    def _chunk(
        self, content: str, thinking: str, lp: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        record: dict[str, Any] = {"model": self.model, "created_at": now_iso()}
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            record["message"] = message
        else:
            record["response"] = content
            if thinking:
                record["thinking"] = thinking
        record["done"] = False
        if lp:
            record["logprobs"] = lp
        return record

    def _final(self, event: dict[str, Any]) -> dict[str, Any]:
        timings = event.get("timings") or {}
        record = self._chunk("", "", None)
        record["done"] = True
        record["done_reason"] = "length" if event.get("stop_type") == "limit" else "stop"
        record["total_duration"] = max(time.time_ns() - self.start_ns, 0)
        record["load_duration"] = self.load_ns
        record["prompt_eval_count"] = int(timings.get("cache_n", 0) + timings.get("prompt_n", 0))
        record["prompt_eval_duration"] = int(timings.get("prompt_ms", 0.0) * NS_PER_MS)
        record["eval_count"] = int(timings.get("predicted_n", len(self._generated)))
        record["eval_duration"] = int(timings.get("predicted_ms", 0.0) * NS_PER_MS)
        if self.context is not None:
            record["context"] = self.context + self._generated
        return record


def join(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold a stream's records into the one record of a non-streamed answer."""
    final = dict(records[-1])
    key = "message" if "message" in final else "response"
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Any] = []
    logprobs: list[Any] = []
    for record in records:
        part = record[key] if key == "message" else record
        texts.append(part.get("content", "") if key == "message" else part.get("response", ""))
        thoughts.append(part.get("thinking") or "")
        calls.extend(part.get("tool_calls") or [] if key == "message" else [])
        logprobs.extend(record.get("logprobs") or [])
    thinking = "".join(thoughts)
    if key == "message":
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        final["message"] = message
    else:
        final["response"] = "".join(texts)
        if thinking:
            final["thinking"] = thinking
    if logprobs:
        final["logprobs"] = logprobs
    return final
