"""OpenAI's wire format ⇄ the neutral form. Pure functions, no I/O.

Mapped one to one: chat messages (``developer`` is read as ``system``; text parts are
joined; ``image_url`` parts must be base64 ``data:`` URLs), tool calls (arguments: a JSON
string here, an object in the neutral form; ids kept, or made up when the other side has
none), tool results (``tool_call_id`` ⇄ the called function's name), ``tools``,
``tool_choice``, ``response_format`` (``json_object`` ⇄ ``"json"``, ``json_schema`` ⇄ the
schema), ``max_tokens``/``max_completion_tokens``, ``seed``, ``stop``, ``temperature``,
``top_p``, the penalties, ``logprobs``/``top_logprobs``, ``stream`` with
``stream_options.include_usage``, and the extension ``keep_alive`` (read from clients,
not sent to OpenAI-compatible upstreams, which have no such field).
Refused with a 400: ``n`` or ``best_of`` above 1, ``echo``, remote image URLs, token-id
inputs. Ignored: ``user``, ``metadata``, ``store``, ``service_tier``, ``parallel_tool_calls``.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

from modelgarden.errors import BadRequest
from modelgarden.types import (
    ChatMessage,
    Chunk,
    FinishReason,
    InferenceRequest,
    Sampling,
    ToolCall,
    Usage,
)

FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}
_MIME = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


def new_id(prefix: str) -> str:
    """A fresh id such as ``chatcmpl-3f9a...`` (``call_3f9a...`` for tool calls, as OpenAI)."""
    return f"{prefix}{'_' if prefix == 'call' else '-'}{secrets.token_hex(12)}"


def _image_in(part: dict[str, Any]) -> str:
    url = (
        (part.get("image_url") or {}).get("url", "")
        if isinstance(part.get("image_url"), dict)
        else part.get("image_url", "")
    )
    return data_url_in(url, "messages")


def mime_of(data: str) -> str:
    """The media type of a base64 image, from its first bytes (PNG when unknown)."""
    try:
        head = base64.b64decode(data[:16] + "=" * (-len(data[:16]) % 4), validate=True)
    except ValueError:
        raise BadRequest("images must be base64-encoded", param="images") from None
    if head[8:12] == b"WEBP":
        return "image/webp"
    return next((m for magic, m in _MIME.items() if head.startswith(magic)), "image/png")


def data_url_in(url: Any, param: str) -> str:
    """The base64 payload of a ``data:`` URL; remote URLs are refused (nothing is fetched)."""
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise BadRequest(
            "only base64 data: URLs are supported for images (the gateway fetches nothing)",
            param=param,
        )
    return url.split(";base64,", 1)[1]


def data_url_out(data: str) -> str:
    """A base64 image as a ``data:`` URL."""
    return f"data:{mime_of(data)};base64,{data}"


def _image_out(data: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": data_url_out(data)}}


#: Reasoning efforts, as OpenAI and Ollama name them, and the ``think`` each means.
EFFORTS: dict[str, bool | str] = {
    "none": False,
    "minimal": False,
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "max",
    "max": "max",
}


def think_of_effort(effort: Any, param: str) -> bool | str:
    """A reasoning effort as Ollama's ``think`` (off, or a level)."""
    if isinstance(effort, str) and effort in EFFORTS:
        return EFFORTS[effort]
    raise BadRequest(
        f"invalid reasoning effort {effort!r}: use one of {', '.join(EFFORTS)}", param=param
    )


def _content_in(content: Any) -> tuple[str, list[str]]:
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise BadRequest("message content must be a string or a list of parts", param="messages")
    texts, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            images.append(_image_in(part))
        else:
            raise BadRequest(f"unsupported content part type {kind!r}", param="messages")
    return "".join(texts), images


def _tool_call_in(raw: dict[str, Any]) -> ToolCall:
    fn = raw.get("function") or {}
    args = fn.get("arguments") or "{}"
    try:
        parsed = json.loads(args) if isinstance(args, str) else args
    except ValueError:
        raise BadRequest("tool call arguments must be a JSON object", param="messages") from None
    if not isinstance(parsed, dict):
        raise BadRequest("tool call arguments must be a JSON object", param="messages")
    return ToolCall(str(fn.get("name", "")), parsed, str(raw.get("id", "")))


def tool_call_out(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    """A neutral tool call in OpenAI's shape (arguments as a JSON string)."""
    out: dict[str, Any] = {
        "id": call.id or new_id("call"),
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
    }
    if index is not None:
        out["index"] = index
    return out


def messages_in(raw: list[dict[str, Any]]) -> list[ChatMessage]:
    """OpenAI messages as neutral ones; tool results learn their function's name."""
    names: dict[str, str] = {}
    out: list[ChatMessage] = []
    for m in raw:
        if not isinstance(m, dict):
            raise BadRequest("each message must be an object", param="messages")
        role = str(m.get("role", ""))
        role = "system" if role == "developer" else role
        if role not in ("system", "user", "assistant", "tool"):
            raise BadRequest(f"unknown message role {role!r}", param="messages")
        text, images = _content_in(m.get("content"))
        msg = ChatMessage(role=role, content=text, images=images)
        msg.thinking = str(m.get("reasoning_content") or "")
        msg.tool_calls = [_tool_call_in(c) for c in m.get("tool_calls") or []]
        names.update({c.id: c.name for c in msg.tool_calls if c.id})
        if role == "tool":
            msg.tool_call_id = str(m.get("tool_call_id") or "")
            msg.tool_name = str(m.get("name") or names.get(msg.tool_call_id, ""))
        out.append(msg)
    return out


def messages_out(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Neutral messages in OpenAI's shape; tool results get the id of the call they answer.

    Results are matched to calls of the same function in order, so two calls of one
    function get two different ids.
    """
    out: list[dict[str, Any]] = []
    unanswered: dict[str, list[str]] = {}
    for msg in messages:
        item: dict[str, Any] = {"role": msg.role}
        if msg.images:
            parts = [{"type": "text", "text": msg.content}] if msg.content else []
            item["content"] = parts + [_image_out(i) for i in msg.images]
        else:
            item["content"] = msg.content
        if msg.tool_calls:
            calls = [tool_call_out(c) for c in msg.tool_calls]
            for call in calls:
                unanswered.setdefault(call["function"]["name"], []).append(call["id"])
            item["tool_calls"] = calls
        if msg.role == "tool":
            waiting = unanswered.get(msg.tool_name) or []
            if msg.tool_call_id and msg.tool_call_id in waiting:
                waiting.remove(msg.tool_call_id)
            item["tool_call_id"] = msg.tool_call_id or (
                waiting.pop(0) if waiting else new_id("call")
            )
            if msg.tool_name:
                item["name"] = msg.tool_name
        out.append(item)
    return out


def _response_format_in(raw: Any) -> str | dict[str, Any] | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (raw.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise BadRequest(
                "response_format.json_schema.schema must be an object", param="response_format"
            )
        return schema
    raise BadRequest(
        "response_format.type must be text, json_object or json_schema", param="response_format"
    )


def response_format_out(fmt: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """The neutral format as OpenAI's ``response_format``."""
    if fmt is None:
        return None
    if fmt == "json":
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": fmt, "strict": True},
    }


def _tool_choice_in(raw: Any) -> str | None:
    if raw is None or raw == "auto":
        return None
    if raw in ("none", "required"):
        return str(raw)
    if isinstance(raw, dict) and isinstance((raw.get("function") or {}).get("name"), str):
        return str(raw["function"]["name"])
    raise BadRequest(
        "tool_choice must be auto, none, required or a named function", param="tool_choice"
    )


def tool_choice_out(choice: str | None) -> Any:
    """The neutral tool choice in OpenAI's shape."""
    if choice in (None, "auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _stop_in(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return list(raw)
    raise BadRequest("stop must be a string or a list of strings", param="stop")


def _sampling_in(body: dict[str, Any], default_max: int | None = None) -> Sampling:
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens", default_max)
    return Sampling(
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        seed=body.get("seed"),
        max_tokens=max_tokens,
        stop=_stop_in(body.get("stop")),
        presence_penalty=body.get("presence_penalty"),
        frequency_penalty=body.get("frequency_penalty"),
        top_k=body.get("top_k"),
        min_p=body.get("min_p"),
        repeat_penalty=body.get("repeat_penalty"),
    )


def _only_one(body: dict[str, Any], key: str) -> None:
    value = body.get(key)
    if value is not None and value != 1:
        raise BadRequest(f"{key} > 1 is not supported: ask for one choice per request", param=key)


def chat_request_in(body: dict[str, Any]) -> InferenceRequest:
    """``/v1/chat/completions`` body → neutral request."""
    _only_one(body, "n")
    req = InferenceRequest(kind="chat", model=str(body.get("model", "")))
    req.messages = messages_in(list(body.get("messages") or []))
    req.tools = list(body.get("tools") or [])
    req.tool_choice = _tool_choice_in(body.get("tool_choice"))
    req.response_format = _response_format_in(body.get("response_format"))
    req.sampling = _sampling_in(body)
    req.stream = bool(body.get("stream"))
    req.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    req.logprobs = bool(body.get("logprobs"))
    req.top_logprobs = int(body.get("top_logprobs") or 0)
    req.keep_alive = body.get("keep_alive")
    effort = body.get("reasoning_effort")
    param = "reasoning_effort"
    if effort is None and isinstance(body.get("reasoning"), dict):
        effort, param = body["reasoning"].get("effort"), "reasoning.effort"
    if effort is not None:  # Ollama's think levels, or off
        req.extra["think"] = think_of_effort(effort, param)
    return req


def completion_request_in(body: dict[str, Any]) -> InferenceRequest:
    """``/v1/completions`` body → neutral request (a raw completion, no chat template)."""
    _only_one(body, "n")
    _only_one(body, "best_of")
    if body.get("echo"):
        raise BadRequest("echo is not supported", param="echo")
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise BadRequest("prompt must be a string or a list of one string", param="prompt")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string", param="prompt")
    req = InferenceRequest(kind="completion", model=str(body.get("model", "")), prompt=prompt)
    req.suffix = body.get("suffix")
    req.sampling = _sampling_in(body, default_max=16)
    req.stream = bool(body.get("stream"))
    req.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    logprobs = body.get("logprobs")
    if logprobs is not None:
        req.logprobs, req.top_logprobs = True, int(logprobs)
    req.keep_alive = body.get("keep_alive")
    req.extra["raw"] = True
    return req


def embedding_request_in(body: dict[str, Any]) -> InferenceRequest:
    """``/v1/embeddings`` body → neutral request."""
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
        raise BadRequest("input must be a non-empty string or list of strings", param="input")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise BadRequest("encoding_format must be float or base64", param="encoding_format")
    req = InferenceRequest(kind="embed", model=str(body.get("model", "")), inputs=list(inputs))
    req.dimensions = body.get("dimensions")
    req.keep_alive = body.get("keep_alive")
    req.extra["encoding_format"] = fmt
    return req


def request_out(req: InferenceRequest) -> tuple[str, dict[str, Any]]:
    """A neutral request as an OpenAI endpoint path and body."""
    body: dict[str, Any] = {"model": req.model}
    if req.kind == "embed":
        body["input"] = req.inputs
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        return "embeddings", body
    s = req.sampling
    for key in ("temperature", "top_p", "seed", "max_tokens", "stop"):
        if (value := getattr(s, key)) is not None:
            body[key] = value
    for key in ("presence_penalty", "frequency_penalty"):
        if (value := getattr(s, key)) is not None:
            body[key] = value
    body["stream"] = req.stream
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    if req.kind == "completion":
        body["prompt"] = req.prompt
        if req.suffix is not None:
            body["suffix"] = req.suffix
        if req.logprobs:
            body["logprobs"] = req.top_logprobs
        return "completions", body
    body["messages"] = messages_out(req.messages)
    if req.tools:
        body["tools"] = req.tools
    if req.tool_choice is not None:
        body["tool_choice"] = tool_choice_out(req.tool_choice)
    if (fmt := response_format_out(req.response_format)) is not None:
        body["response_format"] = fmt
    if req.logprobs:
        body["logprobs"] = True
        if req.top_logprobs:
            body["top_logprobs"] = req.top_logprobs
    return "chat/completions", body


# -- answers ----------------------------------------------------------------------------------


def usage_out(usage: Usage | None) -> dict[str, int]:
    """Neutral usage as OpenAI's ``usage`` object."""
    u = usage or Usage()
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def usage_in(raw: dict[str, Any] | None) -> Usage:
    """OpenAI's ``usage`` as neutral usage."""
    raw = raw or {}
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))


def _token_logprob(entry: dict[str, Any]) -> dict[str, Any]:
    token = str(entry.get("token", ""))
    return {"token": token, "logprob": entry.get("logprob", 0.0), "bytes": list(token.encode())}


def logprobs_out(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Ollama-style per-token logprobs as a chat choice's ``logprobs``."""
    content = []
    for entry in entries:
        item = _token_logprob(entry)
        item["top_logprobs"] = [_token_logprob(t) for t in entry.get("top_logprobs") or []]
        content.append(item)
    return {"content": content, "refusal": None}


def completion_logprobs_out(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-token logprobs in the legacy completions shape."""
    offsets, pos = [], 0
    for entry in entries:
        offsets.append(pos)
        pos += len(str(entry.get("token", "")))
    return {
        "tokens": [str(e.get("token", "")) for e in entries],
        "token_logprobs": [e.get("logprob") for e in entries],
        "top_logprobs": [
            {str(t.get("token", "")): t.get("logprob") for t in e.get("top_logprobs") or []}
            for e in entries
        ],
        "text_offset": offsets,
    }


def _envelope(
    kind: str, cid: str, created: int, model: str, choice: dict[str, Any], usage: Usage | None
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": kind,
        "created": created,
        "model": model,
        "system_fingerprint": "fp_modelgarden",
        "choices": [choice],
        "usage": usage_out(usage),
    }


def chat_response_out(chunk: Chunk, model: str, cid: str, created: int) -> dict[str, Any]:
    """A whole answer (one final chunk holding everything) as a chat completion."""
    message: dict[str, Any] = {"role": "assistant", "content": chunk.text or None}
    if chunk.thinking:
        message["reasoning_content"] = chunk.thinking
    if chunk.tool_calls:
        message["tool_calls"] = [tool_call_out(c) for c in chunk.tool_calls]
    else:
        message["content"] = chunk.text
    finish = "tool_calls" if chunk.tool_calls else (chunk.finish_reason or "stop")
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
    choice["logprobs"] = logprobs_out(chunk.logprobs) if chunk.logprobs else None
    return _envelope("chat.completion", cid, created, model, choice, chunk.usage)


def completion_response_out(chunk: Chunk, model: str, cid: str, created: int) -> dict[str, Any]:
    """A whole answer as a text completion."""
    choice: dict[str, Any] = {
        "text": chunk.text,
        "index": 0,
        "finish_reason": chunk.finish_reason or "stop",
        "logprobs": completion_logprobs_out(chunk.logprobs) if chunk.logprobs else None,
    }
    return _envelope("text_completion", cid, created, model, choice, chunk.usage)


def embedding_response_out(
    vectors: list[list[float]], model: str, prompt_tokens: int, encoding: str
) -> dict[str, Any]:
    """Vectors as an OpenAI embeddings answer (``base64``: little-endian float32)."""
    import numpy as np

    data = []
    for index, vector in enumerate(vectors):
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        data.append({"object": "embedding", "embedding": value, "index": index})
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def response_in(body: dict[str, Any]) -> Chunk:
    """A whole chat completion or text completion as one final neutral chunk."""
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message")
    if isinstance(message, dict):
        thinking = message.get("reasoning_content") or message.get("reasoning") or ""
        chunk = Chunk(
            text=str(message.get("content") or ""),
            thinking=str(thinking),
            tool_calls=[_tool_call_in(c) for c in message.get("tool_calls") or []],
        )
    else:
        chunk = Chunk(text=str(choice.get("text") or ""))
    chunk.finish_reason = FINISH.get(str(choice.get("finish_reason") or "stop"), "stop")
    chunk.usage = usage_in(body.get("usage"))
    return chunk


def now() -> int:
    """``created`` as OpenAI writes it: Unix seconds."""
    return int(time.time())
