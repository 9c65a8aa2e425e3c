"""Ollama's wire format ⇄ the neutral form. Pure functions, no I/O.

Mapped one to one: messages (roles, content, base64 images, tool calls with object
arguments, ``tool_name``, ``tool_call_id``, ``thinking``), ``tools``, ``format``, the
sampling options (``num_predict`` is ``max_tokens``; a negative value means no limit),
``stream``, ``keep_alive``, ``logprobs``.
Kept aside in ``extra`` and restored on the way back: the other options (``num_ctx`` ...),
``think``, ``raw``, ``system``, ``template``, ``context``, ``truncate``. ``tool_choice`` is
not part of Ollama's API; the gateway's own runners accept it as an extra field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modelgarden.types import (
    ChatMessage,
    Chunk,
    FinishReason,
    InferenceRequest,
    Sampling,
    ToolCall,
    Usage,
)

#: Ollama option name -> neutral sampling field.
SAMPLING_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "seed": "seed",
    "num_predict": "max_tokens",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "repeat_penalty": "repeat_penalty",
}
_PASSED = ("think", "raw", "system", "template", "context", "truncate")


def _tool_call_in(raw: dict[str, Any]) -> ToolCall:
    fn = raw.get("function") or {}
    return ToolCall(
        str(fn.get("name", "")), dict(fn.get("arguments") or {}), str(raw.get("id", ""))
    )


def _tool_call_out(call: ToolCall) -> dict[str, Any]:
    out: dict[str, Any] = {"function": {"name": call.name, "arguments": call.arguments}}
    if call.id:
        out["id"] = call.id
    return out


def message_in(raw: dict[str, Any]) -> ChatMessage:
    """An Ollama message as a neutral one."""
    return ChatMessage(
        role=str(raw.get("role", "")),
        content=str(raw.get("content") or ""),
        images=list(raw.get("images") or []),
        tool_calls=[_tool_call_in(c) for c in raw.get("tool_calls") or []],
        tool_name=str(raw.get("tool_name") or ""),
        tool_call_id=str(raw.get("tool_call_id") or ""),
        thinking=str(raw.get("thinking") or ""),
    )


def message_out(msg: ChatMessage) -> dict[str, Any]:
    """A neutral message in Ollama's shape."""
    out: dict[str, Any] = {"role": msg.role, "content": msg.content}
    if msg.images:
        out["images"] = list(msg.images)
    if msg.tool_calls:
        out["tool_calls"] = [_tool_call_out(c) for c in msg.tool_calls]
    if msg.tool_name:
        out["tool_name"] = msg.tool_name
    if msg.tool_call_id:
        out["tool_call_id"] = msg.tool_call_id
    if msg.thinking:
        out["thinking"] = msg.thinking
    return out


def sampling_in(options: dict[str, Any] | None) -> tuple[Sampling, dict[str, Any]]:
    """Split Ollama options into neutral sampling and the rest."""
    sampling = Sampling()
    rest: dict[str, Any] = {}
    for key, value in (options or {}).items():
        name = SAMPLING_OPTIONS.get(key)
        if name is None:
            rest[key] = value
        elif name == "max_tokens":
            sampling.max_tokens = int(value) if value is not None and value >= 0 else None
        elif name == "stop":
            sampling.stop = [value] if isinstance(value, str) else list(value or [])
        else:
            setattr(sampling, name, value)
    return sampling, rest


def sampling_out(sampling: Sampling, rest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Neutral sampling as Ollama options (unset fields left out)."""
    options = dict(rest or {})
    for key, name in SAMPLING_OPTIONS.items():
        value = getattr(sampling, name)
        if value is not None:
            options[key] = value
    return options


def _common_in(body: dict[str, Any], req: InferenceRequest) -> InferenceRequest:
    req.sampling, rest = sampling_in(body.get("options"))
    if rest:
        req.extra["options"] = rest
    fmt = body.get("format")
    req.response_format = fmt if fmt not in ("", None) else None
    req.stream = body.get("stream") is not False
    req.keep_alive = body.get("keep_alive")
    req.logprobs = bool(body.get("logprobs"))
    req.top_logprobs = int(body.get("top_logprobs") or 0)
    for key in _PASSED:
        if key in body:
            req.extra[key] = body[key]
    return req


def chat_request_in(body: dict[str, Any]) -> InferenceRequest:
    """``/api/chat`` body → neutral request."""
    req = InferenceRequest(kind="chat", model=str(body.get("model", "")))
    req.messages = [message_in(m) for m in body.get("messages") or []]
    req.tools = list(body.get("tools") or [])
    choice = body.get("tool_choice")
    req.tool_choice = choice.get("name") if isinstance(choice, dict) else choice
    if req.tool_choice == "auto":
        req.tool_choice = None
    return _common_in(body, req)


def generate_request_in(body: dict[str, Any]) -> InferenceRequest:
    """``/api/generate`` body → neutral completion request."""
    req = InferenceRequest(kind="completion", model=str(body.get("model", "")))
    req.prompt = str(body.get("prompt") or "")
    req.suffix = body.get("suffix")
    if body.get("images"):
        req.extra["images"] = list(body["images"])
    return _common_in(body, req)


def embed_request_in(body: dict[str, Any]) -> InferenceRequest:
    """``/api/embed`` body → neutral embedding request."""
    raw = body.get("input")
    req = InferenceRequest(kind="embed", model=str(body.get("model", "")))
    req.inputs = [raw] if isinstance(raw, str) else list(raw or [])
    req.dimensions = body.get("dimensions")
    return _common_in(body, req)


def _common_out(req: InferenceRequest, body: dict[str, Any]) -> dict[str, Any]:
    passed = {k: v for k, v in req.extra.items() if k in _PASSED or k == "images"}
    body.update(passed)
    options = sampling_out(req.sampling, req.extra.get("options"))
    if options:
        body["options"] = options
    if req.response_format is not None:
        body["format"] = req.response_format
    body["stream"] = req.stream
    if req.keep_alive is not None:
        body["keep_alive"] = req.keep_alive
    if req.logprobs:
        body["logprobs"] = True
        if req.top_logprobs:
            body["top_logprobs"] = req.top_logprobs
    return body


def request_out(req: InferenceRequest) -> tuple[str, dict[str, Any]]:
    """A neutral request as an Ollama endpoint (``chat``/``generate``/``embed``) and body."""
    body: dict[str, Any] = {"model": req.model}
    if req.kind == "chat":
        body["messages"] = [message_out(m) for m in req.messages]
        if req.tools:
            body["tools"] = req.tools
        if req.tool_choice is not None:
            choice = req.tool_choice
            body["tool_choice"] = (
                choice if choice in ("none", "required", "auto") else {"name": choice}
            )
        return "chat", _common_out(req, body)
    if req.kind == "completion":
        body["prompt"] = req.prompt
        if req.suffix is not None:
            body["suffix"] = req.suffix
        return "generate", _common_out(req, body)
    body["input"] = req.inputs
    if req.dimensions is not None:
        body["dimensions"] = req.dimensions
    body = _common_out(req, body)
    body.pop("stream", None)
    return "embed", body


# -- answers --------------------------------------------------------------------------------


def usage_in(record: dict[str, Any]) -> Usage:
    """Ollama's counters as neutral usage."""
    return Usage(
        prompt_tokens=int(record.get("prompt_eval_count") or 0),
        completion_tokens=int(record.get("eval_count") or 0),
        total_duration=record.get("total_duration"),
        load_duration=record.get("load_duration"),
        prompt_eval_duration=record.get("prompt_eval_duration"),
        eval_duration=record.get("eval_duration"),
    )


def usage_out(usage: Usage) -> dict[str, Any]:
    """Neutral usage as Ollama's counters (timings only when known)."""
    out: dict[str, Any] = {}
    for key in ("total_duration", "load_duration"):
        if (value := getattr(usage, key)) is not None:
            out[key] = value
    out["prompt_eval_count"] = usage.prompt_tokens
    if usage.prompt_eval_duration is not None:
        out["prompt_eval_duration"] = usage.prompt_eval_duration
    out["eval_count"] = usage.completion_tokens
    if usage.eval_duration is not None:
        out["eval_duration"] = usage.eval_duration
    return out


def chunk_in(record: dict[str, Any]) -> Chunk:
    """One Ollama chat or generate record as a neutral chunk."""
    if "error" in record:
        return Chunk(error=str(record["error"]))
    message = record.get("message")
    if isinstance(message, dict):
        chunk = Chunk(
            text=str(message.get("content") or ""),
            thinking=str(message.get("thinking") or ""),
            tool_calls=[_tool_call_in(c) for c in message.get("tool_calls") or []],
        )
    else:
        chunk = Chunk(
            text=str(record.get("response") or ""), thinking=str(record.get("thinking") or "")
        )
    chunk.logprobs = list(record.get("logprobs") or [])
    if record.get("done"):
        reason = record.get("done_reason")
        finish: FinishReason = "length" if reason == "length" else "stop"
        if chunk.tool_calls:
            finish = "tool_calls"
        chunk.finish_reason = finish
        chunk.usage = usage_in(record)
    return chunk


def now_iso() -> str:
    """``created_at`` as Ollama writes it."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def chunk_out(chunk: Chunk, model: str, kind: str) -> dict[str, Any]:
    """A neutral chunk as an Ollama record (``kind``: ``chat`` or ``generate``)."""
    if chunk.error is not None:
        return {"error": chunk.error}
    record: dict[str, Any] = {"model": model, "created_at": now_iso()}
    if kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": chunk.text}
        if chunk.thinking:
            message["thinking"] = chunk.thinking
        if chunk.tool_calls:
            message["tool_calls"] = [_tool_call_out(c) for c in chunk.tool_calls]
        record["message"] = message
    else:
        record["response"] = chunk.text
        if chunk.thinking:
            record["thinking"] = chunk.thinking
    if chunk.logprobs:
        record["logprobs"] = chunk.logprobs
    record["done"] = chunk.final
    if chunk.final:
        record["done_reason"] = "length" if chunk.finish_reason == "length" else "stop"
        record.update(usage_out(chunk.usage or Usage()))
    return record
