"""Anthropic's Messages API ⇄ the neutral form. Pure functions, no I/O.

Mapped one to one: ``system`` (a string or text blocks) ⇄ system messages (``system``
turns in mid-conversation, which Claude Code sends, too; toward an Anthropic upstream all
of them join the top-level ``system``); messages with
``text``, base64 ``image``, ``tool_use`` (object ``input``) and ``tool_result`` blocks (a
result becomes a ``tool`` message that knows its call's id and function name), assistant
``thinking`` blocks ⇄ a message's ``thinking``; ``tools`` (``name``, ``description``,
``input_schema``) ⇄ function tools; ``tool_choice`` (``auto``, ``any`` ⇄ ``required``,
``tool`` ⇄ a function name, ``none``); ``thinking`` (``enabled`` ⇄ ``think: true``,
``disabled`` ⇄ ``false``; sent upstream with a token budget per level); ``max_tokens``,
``temperature``, ``top_p``, ``top_k``, ``stop_sequences``, ``stream``; ``stop_reason``
(``end_turn``, ``max_tokens``, ``tool_use``) and ``usage`` (``input_tokens`` counts cached
input too).

Refused with a 400: images by URL or file id (nothing is fetched), ``document`` and other
block types, server tools (``web_search_...``, ``bash_...``), and, toward an Anthropic
upstream, raw completions, embeddings and JSON-schema answers, which its API lacks.
Ignored: ``metadata``, ``service_tier``, ``cache_control``, ``is_error`` of results,
``disable_parallel_tool_use``, and thinking signatures (earlier turns' thinking is not sent
upstream, where its signature would be checked).
"""

from __future__ import annotations

import secrets
from typing import Any

from modelgarden.errors import BadRequest
from modelgarden.translate.openai import mime_of
from modelgarden.types import (
    ChatMessage,
    Chunk,
    FinishReason,
    InferenceRequest,
    Sampling,
    ToolCall,
    Usage,
)

#: What a request without ``max_tokens`` (Ollama's default: no limit) asks an Anthropic
#: upstream for; its API requires a number.
DEFAULT_MAX_TOKENS = 4096
#: Thinking budgets sent upstream per level (Anthropic's minimum is 1024).
BUDGETS = {"low": 1024, "medium": 4096, "high": 16384, "max": 32000}
STOP_REASONS = {"tool_calls": "tool_use", "length": "max_tokens", "stop": "end_turn"}
FINISH: dict[str, FinishReason] = {"max_tokens": "length", "tool_use": "tool_calls"}


def new_id(prefix: str) -> str:
    """An id in Anthropic's style: ``msg_...``, ``toolu_...``."""
    return f"{prefix}_{secrets.token_hex(12)}"


def _bad(message: str, param: str = "messages") -> BadRequest:
    return BadRequest(message, param=param)


# -- requests in ---------------------------------------------------------------------------


def _text_of(blocks: Any, param: str) -> str:
    """The text of a string or of a list of text blocks."""
    if blocks is None or isinstance(blocks, str):
        return blocks or ""
    if not isinstance(blocks, list):
        raise _bad(f"{param} must be a string or a list of text blocks", param)
    texts = []
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _bad(f"{param} blocks must be text blocks", param)
        texts.append(str(block.get("text") or ""))
    return "".join(texts)


def _image_in(block: dict[str, Any]) -> str:
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        raise _bad("only base64 image sources are supported (the gateway fetches nothing)")
    data = source.get("data")
    if not isinstance(data, str) or not data:
        raise _bad("an image source needs its base64 data")
    return data


def _tool_result_in(block: dict[str, Any], names: dict[str, str]) -> ChatMessage:
    call_id = str(block.get("tool_use_id") or "")
    msg = ChatMessage(role="tool", tool_call_id=call_id, tool_name=names.get(call_id, ""))
    content = block.get("content")
    if isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                msg.content += str(part.get("text") or "")
            elif kind == "image":
                msg.images.append(_image_in(part))
            else:
                raise _bad(f"unsupported tool_result content block type {kind!r}")
    else:
        msg.content = _text_of(content, "messages")
    return msg


def _block_in(block: Any, msg: ChatMessage, names: dict[str, str]) -> None:
    """Add one content block (not a tool result) to the message being built."""
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        msg.content += str(block.get("text") or "")
    elif kind == "image":
        msg.images.append(_image_in(block))
    elif kind == "tool_use":
        name, args = block.get("name"), block.get("input") or {}
        if not isinstance(name, str) or not isinstance(args, dict):
            raise _bad("a tool_use block needs a name and an object input")
        call = ToolCall(name, args, str(block.get("id") or ""))
        msg.tool_calls.append(call)
        if call.id:
            names[call.id] = name
    elif kind == "thinking":
        msg.thinking += str(block.get("thinking") or "")
    elif kind != "redacted_thinking":  # encrypted reasoning of another model: nothing to read
        raise _bad(f"unsupported content block type {kind!r}")


def messages_in(raw: Any) -> list[ChatMessage]:
    """Anthropic messages as neutral ones; each ``tool_result`` becomes a ``tool`` message
    at its place, the blocks around it stay in their own message."""
    if not isinstance(raw, list):
        raise _bad("messages must be a list")
    names: dict[str, str] = {}
    out: list[ChatMessage] = []
    for m in raw:
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant", "system"):
            raise _bad(f"message role must be user, assistant or system, not {role!r}")
        content = m.get("content")
        if role == "system":  # instructions in mid-conversation: text only
            out.append(ChatMessage(role="system", content=_text_of(content, "messages")))
            continue
        if isinstance(content, str):
            out.append(ChatMessage(role=role, content=content))
            continue
        if not isinstance(content, list):
            raise _bad("message content must be a string or a list of blocks")
        msg, emitted = ChatMessage(role=role), False
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                if _has_content(msg):
                    out.append(msg)
                    msg = ChatMessage(role=role)
                out.append(_tool_result_in(block, names))
                emitted = True
            else:
                _block_in(block, msg, names)
        if _has_content(msg) or not emitted:
            out.append(msg)
    return out


def _has_content(msg: ChatMessage) -> bool:
    return bool(msg.content or msg.images or msg.tool_calls or msg.thinking)


def _tool_in(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _bad("each tool must be an object", "tools")
    kind = raw.get("type")
    if kind not in (None, "custom"):
        raise _bad(
            f"tool type {kind!r} is not supported: only custom tools (name, description, "
            "input_schema)",
            "tools",
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _bad("each tool needs a name", "tools")
    schema = raw.get("input_schema") or {"type": "object", "properties": {}}
    description = str(raw.get("description") or "")
    function = {"name": name, "description": description, "parameters": schema}
    return {"type": "function", "function": function}


def _tool_choice_in(raw: Any) -> str | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "auto":
        return None
    if kind in ("any", "none"):
        return "required" if kind == "any" else "none"
    if kind == "tool" and isinstance(raw.get("name"), str):
        return str(raw["name"])
    raise _bad("tool_choice.type must be auto, any, tool (with a name) or none", "tool_choice")


def thinking_in(raw: Any) -> bool | None:
    """``thinking`` as Ollama's ``think`` (``None``: the model's default)."""
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind in ("enabled", "adaptive"):
        return True
    if kind == "disabled":
        return False
    raise _bad("thinking.type must be enabled or disabled", "thinking")


def request_in(body: dict[str, Any]) -> InferenceRequest:
    """``/v1/messages`` (or ``count_tokens``) body → neutral chat request."""
    req = InferenceRequest(kind="chat", model=str(body.get("model", "")))
    system = _text_of(body.get("system"), "system")
    req.messages = [ChatMessage(role="system", content=system)] if system else []
    req.messages += messages_in(body.get("messages"))
    req.tools = [_tool_in(t) for t in body.get("tools") or []]
    req.tool_choice = _tool_choice_in(body.get("tool_choice"))
    stop = body.get("stop_sequences")
    req.sampling = Sampling(
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        top_k=body.get("top_k"),
        max_tokens=body.get("max_tokens"),
        stop=list(stop) if stop else None,
    )
    req.stream = bool(body.get("stream"))
    req.keep_alive = body.get("keep_alive")
    think = thinking_in(body.get("thinking"))
    if think is not None:
        req.extra["think"] = think
    return req


# -- requests out --------------------------------------------------------------------------


def _image_out(data: str) -> dict[str, Any]:
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": mime_of(data), "data": data},
    }


class _CallIds:
    """Gives tool calls ids and tool results the id of the call they answer (by function
    name, in order, when a result does not say)."""

    def __init__(self) -> None:
        self.unanswered: dict[str, list[str]] = {}

    def call(self, call: ToolCall) -> str:
        cid = call.id or new_id("toolu")
        self.unanswered.setdefault(call.name, []).append(cid)
        return cid

    def result(self, msg: ChatMessage) -> str:
        waiting = self.unanswered.get(msg.tool_name) or []
        if msg.tool_call_id:
            if msg.tool_call_id in waiting:
                waiting.remove(msg.tool_call_id)
            return msg.tool_call_id
        return waiting.pop(0) if waiting else new_id("toolu")


def _blocks_out(msg: ChatMessage, ids: _CallIds) -> list[dict[str, Any]]:
    if msg.role == "tool":
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": ids.result(msg)}
        if msg.images:
            text = [{"type": "text", "text": msg.content}] if msg.content else []
            result["content"] = text + [_image_out(i) for i in msg.images]
        else:
            result["content"] = msg.content
        return [result]
    blocks = [_image_out(i) for i in msg.images]
    if msg.content:
        blocks.append({"type": "text", "text": msg.content})
    for call in msg.tool_calls:
        block = {"type": "tool_use", "id": ids.call(call), "name": call.name}
        blocks.append({**block, "input": call.arguments})
    return blocks


def messages_out(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Neutral messages (system ones excluded) as Anthropic's alternating turns: tool
    results join the user turn, consecutive turns of one role are merged, empty ones
    dropped (the API refuses empty text)."""
    out: list[dict[str, Any]] = []
    ids = _CallIds()
    for msg in messages:
        role = "assistant" if msg.role == "assistant" else "user"
        blocks = _blocks_out(msg, ids)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _thinking_out(think: Any, max_tokens: int) -> dict[str, Any] | None:
    if think in (None, False):
        return None
    budget = BUDGETS.get(str(think), BUDGETS["medium"])
    budget = min(budget, max_tokens - 1)
    return {"type": "enabled", "budget_tokens": budget} if budget >= BUDGETS["low"] else None


def _tool_out(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    out = {"name": fn.get("name", ""), "description": fn.get("description") or ""}
    return {**out, "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}


def tool_choice_out(choice: str | None) -> dict[str, Any] | None:
    """The neutral tool choice as Anthropic's ``tool_choice``."""
    if choice is None:
        return None
    if choice in ("none", "required"):
        return {"type": "none" if choice == "none" else "any"}
    return {"type": "tool", "name": choice}


def _as_chat(req: InferenceRequest) -> list[ChatMessage]:
    """The conversation a request holds; a templated completion is one user turn."""
    if req.kind == "embed":
        raise BadRequest("Anthropic backends do not embed", param="model")
    if req.kind == "chat":
        return req.messages
    if req.extra.get("raw") or req.suffix:
        raise BadRequest("Anthropic backends answer chats only: no raw prompt or suffix")
    system = str(req.extra.get("system") or "")
    head = [ChatMessage(role="system", content=system)] if system else []
    images = list(req.extra.get("images") or [])
    return [*head, ChatMessage(role="user", content=req.prompt, images=images)]


def request_out(req: InferenceRequest) -> tuple[str, dict[str, Any]]:
    """A neutral request as the ``messages`` endpoint and an Anthropic body."""
    if req.response_format is not None:
        raise BadRequest("Anthropic backends cannot constrain answers to JSON", param="format")
    messages = _as_chat(req)
    s = req.sampling
    max_tokens = s.max_tokens if s.max_tokens else DEFAULT_MAX_TOKENS
    body: dict[str, Any] = {"model": req.model, "max_tokens": max_tokens}
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    if system:
        body["system"] = system
    body["messages"] = messages_out([m for m in messages if m.role != "system"])
    for key in ("temperature", "top_p", "top_k"):
        if (value := getattr(s, key)) is not None:
            body[key] = value
    if s.stop:
        body["stop_sequences"] = list(s.stop)
    if req.tools:
        body["tools"] = [_tool_out(t) for t in req.tools]
        if (choice := tool_choice_out(req.tool_choice)) is not None:
            body["tool_choice"] = choice
    if (thinking := _thinking_out(req.extra.get("think"), max_tokens)) is not None:
        body["thinking"] = thinking
    body["stream"] = req.stream
    return "messages", body


# -- answers -------------------------------------------------------------------------------


def usage_in(raw: Any) -> Usage:
    """Anthropic's ``usage`` as neutral usage (cached input counted as input)."""
    raw = raw if isinstance(raw, dict) else {}
    prompt = sum(
        int(raw.get(k) or 0)
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return Usage(prompt, int(raw.get("output_tokens") or 0))


def usage_out(usage: Usage | None) -> dict[str, int]:
    """Neutral usage as Anthropic's ``usage``."""
    u = usage or Usage()
    return {
        "input_tokens": u.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": u.completion_tokens,
    }


def stop_reason(chunk: Chunk) -> str:
    """The final chunk's finish as Anthropic's ``stop_reason``."""
    if chunk.tool_calls:
        return "tool_use"
    return STOP_REASONS.get(chunk.finish_reason or "stop", "end_turn")


def tool_use_out(call: ToolCall) -> dict[str, Any]:
    """A neutral tool call as a ``tool_use`` block."""
    block = {"type": "tool_use", "id": call.id or new_id("toolu"), "name": call.name}
    return {**block, "input": call.arguments}


def response_out(chunk: Chunk, model: str, mid: str) -> dict[str, Any]:
    """A whole answer (one final chunk) as an Anthropic message."""
    content: list[dict[str, Any]] = []
    if chunk.thinking:
        content.append({"type": "thinking", "thinking": chunk.thinking, "signature": ""})
    if chunk.text:
        content.append({"type": "text", "text": chunk.text})
    content.extend(tool_use_out(c) for c in chunk.tool_calls)
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(chunk),
        "stop_sequence": None,
        "usage": usage_out(chunk.usage),
    }


def response_in(body: dict[str, Any]) -> Chunk:
    """A whole Anthropic message as one final neutral chunk."""
    chunk = Chunk()
    for block in body.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            chunk.text += str(block.get("text") or "")
        elif kind == "thinking":
            chunk.thinking += str(block.get("thinking") or "")
        elif kind == "tool_use":
            args = block.get("input") if isinstance(block.get("input"), dict) else {}
            call = ToolCall(str(block.get("name", "")), args, str(block.get("id") or ""))
            chunk.tool_calls.append(call)
    chunk.finish_reason = FINISH.get(str(body.get("stop_reason") or ""), "stop")
    chunk.usage = usage_in(body.get("usage"))
    return chunk


def count_out(chunk: Chunk) -> dict[str, Any]:
    """``/v1/messages/count_tokens``'s answer, from the prompt a backend evaluated."""
    return {"input_tokens": (chunk.usage or Usage()).prompt_tokens}
