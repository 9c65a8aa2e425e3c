"""OpenAI's Responses API ⇄ the neutral form. Pure functions, no I/O.

Mapped one to one: ``instructions`` ⇄ a system message; ``input`` as a string (one user
message) or a list of items: messages (``system``, ``developer`` read as ``system``,
``user``, ``assistant``; ``input_text``/``output_text`` parts and ``input_image`` parts
with base64 ``data:`` URLs), ``function_call`` (joined to the assistant turn before it),
``function_call_output`` (a ``tool`` message knowing its call's id and function name) and
``reasoning`` (the next assistant turn's ``thinking``); function ``tools``,
``tool_choice``, ``text.format`` (``json_schema`` ⇄ the schema, ``json_object`` ⇄
``"json"``), ``reasoning.effort`` ⇄ ``think`` (``none``/``minimal`` off, ``xhigh`` ⇄
``max``), ``max_output_tokens``, ``temperature``, ``top_p``, ``stream``, ``usage``. An
answer is a list of output items: ``reasoning`` (the raw reasoning as ``reasoning_text``
content), ``message`` (``output_text``), ``function_call``; one cut by the token limit is
``incomplete`` (``max_output_tokens``).

Stateless, as Ollama: ``previous_response_id``, ``conversation``, ``item_reference`` items
and ``background`` are refused with a 400, and every answer says ``store: false``.
``namespace`` tools are their member functions, named ``namespace__member`` in the neutral
form (calls come back with ``namespace`` and ``name`` apart). Tools OpenAI hosts (web and
file search, code interpreter, image generation, computer use, MCP) are left out, as if
not offered: this gateway runs none (Codex offers web search in every turn); forcing one
with ``tool_choice`` is a 400. Also refused: ``custom`` (grammar) tools, file inputs and
remote image URLs. Ignored: ``store``, ``include``, ``metadata`` (echoed back),
``parallel_tool_calls``, ``truncation``, ``service_tier``, ``prompt_cache_key``, ``user``.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from modelgarden.errors import BadRequest
from modelgarden.translate.openai import data_url_in, data_url_out, think_of_effort
from modelgarden.types import ChatMessage, Chunk, InferenceRequest, Sampling, ToolCall, Usage

#: Tool types OpenAI runs on its own servers (search, code, images, computers, MCP): they are
#: left out, as if not offered, since this gateway runs none of them (Codex offers
#: web_search in every turn).
HOSTED = frozenset({"file_search", "code_interpreter", "image_generation", "mcp", "local_shell"})
HOSTED_PREFIXES = ("web_search", "computer_use", "tool_search")
#: Request fields an answer echoes back, as OpenAI's does.
ECHOED = ("instructions", "max_output_tokens", "metadata", "temperature", "top_p", "tools")
STATELESS = (
    "this gateway keeps no responses (stateless, as Ollama): send the whole conversation in input"
)


def new_id(prefix: str) -> str:
    """An id in OpenAI's Responses style: ``resp_...``, ``msg_...``, ``fc_...``."""
    return f"{prefix}_{secrets.token_hex(12)}"


def _bad(message: str, param: str = "input") -> BadRequest:
    return BadRequest(message, param=param)


# -- requests in ---------------------------------------------------------------------------


def _parts_in(content: Any, msg: ChatMessage) -> None:
    """Add a message's content (a string or a list of parts) to ``msg``."""
    if content is None or isinstance(content, str):
        msg.content += content or ""
        return
    if not isinstance(content, list):
        raise _bad("content must be a string or a list of parts")
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            msg.content += str(part.get("text") or "")
        elif kind == "refusal":
            msg.content += str(part.get("refusal") or "")
        elif kind == "input_image":
            msg.images.append(data_url_in(part.get("image_url"), "input"))
        else:
            raise _bad(f"unsupported content part type {kind!r}")


def _message_in(item: dict[str, Any]) -> ChatMessage:
    role = item.get("role")
    role = "system" if role == "developer" else role
    if role not in ("system", "user", "assistant"):
        raise _bad(f"message role must be system, developer, user or assistant, not {role!r}")
    msg = ChatMessage(role=str(role))
    _parts_in(item.get("content"), msg)
    return msg


def _arguments_in(raw: Any) -> dict[str, Any]:
    try:
        args = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
    except ValueError:
        raise _bad("function_call arguments must be a JSON object") from None
    if not isinstance(args, dict):
        raise _bad("function_call arguments must be a JSON object")
    return args


def _reasoning_text(item: dict[str, Any]) -> str:
    """The text of a reasoning item: its raw reasoning, else its summary."""
    for key in ("content", "summary"):
        parts = item.get(key)
        if isinstance(parts, list) and parts:
            return "".join(str(p.get("text") or "") for p in parts if isinstance(p, dict))
    return ""


class _Conversation:
    """Builds neutral messages from input items, joining calls to their assistant turn."""

    def __init__(self) -> None:
        self.messages: list[ChatMessage] = []
        self.names: dict[str, str] = {}
        self.thinking = ""

    def _assistant(self) -> ChatMessage:
        last = self.messages[-1] if self.messages else None
        if last is None or last.role != "assistant":
            last = ChatMessage(role="assistant")
            self.messages.append(last)
        if self.thinking:
            last.thinking, self.thinking = last.thinking + self.thinking, ""
        return last

    def add(self, item: Any) -> None:
        if not isinstance(item, dict):
            raise _bad("each input item must be an object")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            msg = _message_in(item)
            if msg.role == "assistant" and self.thinking:
                msg.thinking, self.thinking = self.thinking, ""
            self.messages.append(msg)
        elif kind == "function_call":
            name, cid = call_name_in(item), str(item.get("call_id") or "")
            self._assistant().tool_calls.append(
                ToolCall(name, _arguments_in(item.get("arguments")), cid)
            )
            self.names[cid] = name
        elif kind == "function_call_output":
            cid = str(item.get("call_id") or "")
            msg = ChatMessage(role="tool", tool_call_id=cid, tool_name=self.names.get(cid, ""))
            _parts_in(item.get("output"), msg)
            self.messages.append(msg)
        elif kind == "reasoning":
            self.thinking += _reasoning_text(item)
        elif kind == "item_reference":
            raise _bad(f"item_reference is not supported: {STATELESS}")
        else:
            raise _bad(f"input item type {kind!r} is not supported")


def input_in(raw: Any) -> list[ChatMessage]:
    """``input`` (a string, or a list of items) as neutral messages."""
    if raw is None or isinstance(raw, str):
        return [ChatMessage(role="user", content=raw)] if raw else []
    if not isinstance(raw, list):
        raise _bad("input must be a string or a list of items")
    conversation = _Conversation()
    for item in raw:
        conversation.add(item)
    return conversation.messages


def _hosted(kind: Any) -> bool:
    """Whether a tool type is one OpenAI runs on its own servers."""
    return isinstance(kind, str) and (kind in HOSTED or kind.startswith(HOSTED_PREFIXES))


#: Joins a namespace and a member function into one function name (every API's function
#: names allow it; a dot would not be allowed by OpenAI's or Anthropic's).
SPACE = "__"
Spaces = dict[str, tuple[str, str]]


def _tool_in(raw: Any, spaces: Spaces, space: str = "") -> list[dict[str, Any]]:
    """One tool as neutral function tools: a namespace's members are named
    ``namespace__member`` (noted in ``spaces``); hosted tools are left out."""
    kind = raw.get("type") if isinstance(raw, dict) else None
    if _hosted(kind):
        return []
    if kind == "namespace":
        inner = f"{space}{SPACE}{raw.get('name')}" if space else str(raw.get("name") or "")
        members = raw.get("tools") or []
        return [tool for member in members for tool in _tool_in(member, spaces, inner)]
    if kind != "function":
        raise _bad(f"tool type {kind!r} is not supported: only function tools", "tools")
    fn = raw.get("function") if isinstance(raw.get("function"), dict) else raw
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise _bad("each function tool needs a name", "tools")
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    flat = f"{space}{SPACE}{name}" if space else name
    if space:
        spaces[flat] = (space, name)
    description = str(fn.get("description") or "")
    function = {"name": flat, "description": description, "parameters": params}
    return [{"type": "function", "function": function}]


def call_name_in(item: dict[str, Any]) -> str:
    """A ``function_call`` item's function, namespace included."""
    name, space = str(item.get("name") or ""), item.get("namespace")
    return f"{space}{SPACE}{name}" if space else name


def call_name_out(name: str, spaces: Spaces | None) -> dict[str, str]:
    """A neutral function name as a call item's ``name``, and ``namespace`` when it is a
    member of one the request declared."""
    found = (spaces or {}).get(name)
    return {"namespace": found[0], "name": found[1]} if found else {"name": name}


def spaces_of(req: InferenceRequest) -> Spaces:
    """The namespaced functions a request declared (flat name → namespace, member)."""
    spaces: Spaces = req.extra.get("namespaced") or {}
    return spaces


def _tool_choice_in(raw: Any) -> str | None:
    if raw is None or raw == "auto":
        return None
    if raw in ("none", "required"):
        return str(raw)
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str):
        return call_name_in(raw)
    if isinstance(raw, dict) and _hosted(raw.get("type")):
        raise _bad(f"{raw['type']} runs on OpenAI's servers: this gateway has none", "tool_choice")
    raise _bad("tool_choice must be auto, none, required or {type: function, name}", "tool_choice")


def _format_in(text: Any) -> str | dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema" and isinstance(fmt.get("schema"), dict):
        return dict(fmt["schema"])
    raise _bad(
        "text.format must be text, json_object, or json_schema with a schema object",
        "text.format",
    )


def request_in(body: dict[str, Any]) -> InferenceRequest:
    """``/v1/responses`` body → neutral chat request."""
    for key in ("previous_response_id", "conversation"):
        if body.get(key) is not None:
            raise _bad(f"{key} is not supported: {STATELESS}", key)
    if body.get("background"):
        raise _bad("background responses are not supported: ask with stream", "background")
    req = InferenceRequest(kind="chat", model=str(body.get("model", "")))
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("instructions must be a string", "instructions")
    req.messages = [ChatMessage(role="system", content=instructions)] if instructions else []
    req.messages += input_in(body.get("input"))
    spaces: Spaces = {}
    req.tools = [tool for t in body.get("tools") or [] for tool in _tool_in(t, spaces)]
    if spaces:
        req.extra["namespaced"] = spaces
    req.tool_choice = _tool_choice_in(body.get("tool_choice"))
    req.response_format = _format_in(body.get("text"))
    req.sampling = Sampling(
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        max_tokens=body.get("max_output_tokens"),
    )
    req.stream = bool(body.get("stream"))
    req.keep_alive = body.get("keep_alive")
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    if effort is not None:
        req.extra["think"] = think_of_effort(effort, "reasoning.effort")
    req.extra["echo"] = {k: body[k] for k in ECHOED if k in body}
    req.extra["echo"].update(text=body.get("text"), reasoning=reasoning)
    req.extra["echo"]["tool_choice"] = body.get("tool_choice")
    return req


# -- requests out --------------------------------------------------------------------------


def _content_out(msg: ChatMessage) -> list[dict[str, Any]]:
    kind = "output_text" if msg.role == "assistant" else "input_text"
    parts: list[dict[str, Any]] = [{"type": kind, "text": msg.content}] if msg.content else []
    return parts + [{"type": "input_image", "image_url": data_url_out(i)} for i in msg.images]


def input_out(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Neutral messages (system ones excluded) as input items; earlier reasoning is not
    sent (an upstream accepts only its own, encrypted)."""
    items: list[dict[str, Any]] = []
    unanswered: dict[str, list[str]] = {}
    for msg in messages:
        if msg.role == "tool":
            waiting = unanswered.get(msg.tool_name) or []
            cid = msg.tool_call_id or (waiting.pop(0) if waiting else new_id("call"))
            output: Any = _content_out(msg) if msg.images else msg.content
            items.append({"type": "function_call_output", "call_id": cid, "output": output})
            continue
        if msg.content or msg.images:
            items.append({"type": "message", "role": msg.role, "content": _content_out(msg)})
        for call in msg.tool_calls:
            cid = call.id or new_id("call")
            unanswered.setdefault(call.name, []).append(cid)
            args = json.dumps(call.arguments)
            call_item = {"type": "function_call", "call_id": cid, **call_name_out(call.name, None)}
            items.append({**call_item, "arguments": args})
    return items


def _tool_out(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    out = {"type": "function", "name": fn.get("name", ""), "description": fn.get("description")}
    return {**out, "parameters": fn.get("parameters") or {"type": "object", "properties": {}}}


def tool_choice_out(choice: str | None) -> Any:
    """The neutral tool choice as the Responses ``tool_choice``."""
    if choice in (None, "none", "required"):
        return choice or "auto"
    return {"type": "function", "name": choice}


def format_out(fmt: str | dict[str, Any] | None) -> dict[str, Any]:
    """The neutral answer format as ``text.format``."""
    if fmt is None:
        return {"type": "text"}
    if fmt == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "name": "response", "schema": fmt, "strict": True}


def request_out(req: InferenceRequest) -> tuple[str, dict[str, Any]]:
    """A neutral chat request as the ``responses`` endpoint and body."""
    if req.kind != "chat":
        raise BadRequest("Responses backends answer chats only", param="model")
    system = "\n\n".join(m.content for m in req.messages if m.role == "system" and m.content)
    body: dict[str, Any] = {"model": req.model}
    if system:
        body["instructions"] = system
    body["input"] = input_out([m for m in req.messages if m.role != "system"])
    if req.tools:
        body["tools"] = [_tool_out(t) for t in req.tools]
        body["tool_choice"] = tool_choice_out(req.tool_choice)
    if req.response_format is not None:
        body["text"] = {"format": format_out(req.response_format)}
    s = req.sampling
    for key, name in (("temperature", "temperature"), ("top_p", "top_p")):
        if (value := getattr(s, key)) is not None:
            body[name] = value
    if s.max_tokens is not None:
        body["max_output_tokens"] = s.max_tokens
    think = req.extra.get("think")
    if think is not None:
        effort = "medium" if think is True else ("none" if think is False else str(think))
        body["reasoning"] = {"effort": "high" if effort == "max" else effort}
    body["stream"] = req.stream
    body["store"] = False
    return "responses", body


# -- answers -------------------------------------------------------------------------------


def usage_out(usage: Usage | None) -> dict[str, Any]:
    """Neutral usage as the Responses ``usage``."""
    u = usage or Usage()
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def usage_in(raw: Any) -> Usage:
    """The Responses ``usage`` as neutral usage."""
    raw = raw if isinstance(raw, dict) else {}
    return Usage(int(raw.get("input_tokens") or 0), int(raw.get("output_tokens") or 0))


def reasoning_item(iid: str, text: str) -> dict[str, Any]:
    """A reasoning output item holding the model's raw reasoning."""
    content = [{"type": "reasoning_text", "text": text}]
    return {"id": iid, "type": "reasoning", "summary": [], "content": content}


def message_item(iid: str, text: str, status: str = "completed") -> dict[str, Any]:
    """An assistant message output item (no content while it is only announced)."""
    content = [text_part(text)] if status == "completed" else []
    return {"id": iid, "type": "message", "status": status, "role": "assistant", "content": content}


def text_part(text: str) -> dict[str, Any]:
    """An ``output_text`` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(
    iid: str, call: ToolCall, status: str = "completed", spaces: Spaces | None = None
) -> dict[str, Any]:
    """A ``function_call`` output item (empty arguments while it is only announced)."""
    args = json.dumps(call.arguments) if status == "completed" else ""
    item = {"id": iid, "type": "function_call", "status": status}
    item["call_id"] = call.id or new_id("call")
    return {**item, **call_name_out(call.name, spaces), "arguments": args}


def output_items(chunk: Chunk, spaces: Spaces | None = None) -> list[dict[str, Any]]:
    """A whole answer's output items: reasoning, message, then function calls."""
    items = [reasoning_item(new_id("rs"), chunk.thinking)] if chunk.thinking else []
    if chunk.text or not (chunk.tool_calls or chunk.thinking):
        items.append(message_item(new_id("msg"), chunk.text))
    items.extend(call_item(new_id("fc"), c, spaces=spaces) for c in chunk.tool_calls)
    return items


def response_object(
    rid: str,
    created: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    req: InferenceRequest,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """The ``response`` object, echoing the request's settings; ``usage`` comes last."""
    echo: dict[str, Any] = req.extra.get("echo") or {}
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    text = echo.get("text") if isinstance(echo.get("text"), dict) else None
    obj: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": echo.get("instructions"),
        "max_output_tokens": echo.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": echo.get("reasoning") or {"effort": None, "summary": None},
        "store": False,
        "temperature": echo.get("temperature", 1.0),
        "text": text or {"format": {"type": "text"}},
        "tool_choice": echo.get("tool_choice") or "auto",
        "tools": echo.get("tools") or [],
        "top_p": echo.get("top_p", 1.0),
        "truncation": "disabled",
        "metadata": echo.get("metadata") or {},
    }
    if status != "in_progress":
        obj["completed_at"] = int(time.time())
    obj["usage"] = usage_out(usage) if usage is not None else None
    return obj


def status_of(chunk: Chunk) -> str:
    """``completed``, or ``incomplete`` for an answer cut by the token limit."""
    return "incomplete" if chunk.finish_reason == "length" else "completed"


def response_out(chunk: Chunk, model: str, rid: str, req: InferenceRequest) -> dict[str, Any]:
    """A whole answer (one final chunk) as a ``response`` object."""
    created = int(time.time())
    output = output_items(chunk, spaces_of(req))
    return response_object(
        rid, created, model, status_of(chunk), output, req, chunk.usage or Usage()
    )


def response_in(body: dict[str, Any]) -> Chunk:
    """A whole ``response`` object as one final neutral chunk."""
    chunk = Chunk()
    for item in body.get("output") or []:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            parts = item.get("content") or []
            chunk.text += "".join(str(p.get("text") or "") for p in parts if isinstance(p, dict))
        elif kind == "reasoning":
            chunk.thinking += _reasoning_text(item)
        elif kind == "function_call":
            args = _arguments_in(item.get("arguments"))
            call_id = str(item.get("call_id") or "")
            chunk.tool_calls.append(ToolCall(call_name_in(item), args, call_id))
    if chunk.tool_calls:
        chunk.finish_reason = "tool_calls"
    else:
        chunk.finish_reason = "length" if body.get("status") == "incomplete" else "stop"
    chunk.usage = usage_in(body.get("usage"))
    return chunk
