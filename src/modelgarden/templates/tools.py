"""Tool calling for models whose template says nothing about tools.

Such a model is told about the tools in its system prompt, in the Hermes format that most
open models were tuned on, and answers ``<tool_call>{"name": ..., "arguments": {...}}
</tool_call>``. :func:`parse_tool_calls` reads that answer (or a bare JSON call) back;
:func:`forced_call_schema` builds the JSON schema that constrains a forced call
(``tool_choice`` naming a function, or ``required``) through a llama.cpp grammar.
"""

from __future__ import annotations

import json
import re
from typing import Any

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)

TOOLS_PROMPT = (
    "You may call one or more functions to assist with the user query. "
    "The functions you can call are described inside <tools></tools>:\n<tools>\n{tools}\n"
    "</tools>\nTo call a function, answer only with a JSON object with the function name "
    "and its arguments inside <tool_call></tool_call> tags:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def tools_system_prompt(tools: list[dict[str, Any]]) -> str:
    """The system prompt text that describes the tools to the model."""
    described = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return TOOLS_PROMPT.format(tools=described)


def might_be_tool_call(text: str) -> bool:
    """Whether output that starts with ``text`` could still turn into a tool call."""
    head = text.lstrip()
    if not head:
        return True
    if head[0] in "{[":
        return True
    return TOOL_CALL_OPEN.startswith(head[: len(TOOL_CALL_OPEN)]) or head.startswith(TOOL_CALL_OPEN)


def _as_call(obj: Any, names: set[str]) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    inner = obj.get("function")
    function: dict[str, Any] = inner if isinstance(inner, dict) else obj
    name = function.get("name")
    args = function.get("arguments", function.get("parameters", {}))
    if not isinstance(name, str) or (names and name not in names):
        return None
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return {"function": {"name": name, "arguments": args}}


def _json_values(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        while pos < len(text) and text[pos] in " \t\r\n,;":
            pos += 1
        if pos >= len(text):
            break
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return []
        values.extend(value if isinstance(value, list) else [value])
    return values


def parse_tool_calls(text: str, tools: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Tool calls in the model's answer (arguments as objects), or ``None`` if it has none."""
    names = {
        str(t.get("function", {}).get("name")) for t in tools if isinstance(t.get("function"), dict)
    }
    blocks = _BLOCK.findall(text) if TOOL_CALL_OPEN in text else [text]
    calls: list[dict[str, Any]] = []
    for block in blocks:
        for value in _json_values(block):
            call = _as_call(value, names)
            if call is None:
                return None
            calls.append(call)
    return calls or None


def forced_call_schema(tools: list[dict[str, Any]], name: str | None) -> dict[str, Any]:
    """JSON schema of one call to ``name`` (or to any of the tools when ``None``)."""
    variants = []
    for tool in tools:
        function = tool.get("function") or {}
        if name is not None and function.get("name") != name:
            continue
        params = function.get("parameters") or {"type": "object"}
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": function.get("name")}, "arguments": params},
                "required": ["name", "arguments"],
            }
        )
    if not variants:
        raise ValueError(f"tool_choice names a function that is not in tools: {name!r}")
    return variants[0] if len(variants) == 1 else {"anyOf": variants}
