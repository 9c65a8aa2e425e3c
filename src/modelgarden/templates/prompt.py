"""Turning chat messages and prompts into the text the model reads.

Which template applies, first match wins:

1. a Go template (a Modelfile ``TEMPLATE``, a pulled model's template layer, or
   ``/api/generate``'s ``template``), rendered as Ollama does;
2. the Jinja chat template inside the GGUF, rendered as Hugging Face does;
3. ChatML, when the file has no template at all.

Tools reach the model through its template when the template knows about tools; otherwise
they are described in the system prompt (:mod:`modelgarden.templates.tools`) and earlier tool
calls and results are written out in the same format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError as JinjaTemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from modelgarden.errors import BadRequest
from modelgarden.templates.gotemplate import GoTemplate, TemplateError
from modelgarden.templates.tools import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, tools_system_prompt

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_SENTINEL = "\x00garden-response\x00"


@lru_cache(maxsize=32)
def go_template(source: str) -> GoTemplate:
    """Parse (once) a Go template; :class:`BadRequest` when it does not parse."""
    try:
        return GoTemplate(source)
    except TemplateError as exc:
        raise BadRequest(f"template error: {exc}") from None


def _raise(message: str) -> None:
    raise BadRequest(f"chat template error: {message}")


@lru_cache(maxsize=8)
def _jinja(source: str) -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def template_handles_tools(go_source: str | None, jinja_source: str | None) -> bool:
    """Whether the applicable template renders tools itself."""
    if go_source:
        return go_template(go_source).references("Tools")
    return bool(jinja_source and "tools" in jinja_source)


def _call_text(calls: list[dict[str, Any]]) -> str:
    parts = []
    for call in calls:
        fn = call.get("function", {})
        body = {"name": fn.get("name"), "arguments": fn.get("arguments", {})}
        parts.append(f"{TOOL_CALL_OPEN}\n{json.dumps(body, ensure_ascii=False)}\n{TOOL_CALL_CLOSE}")
    return "\n".join(parts)


def inline_tools(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Describe tools in the system prompt and write tool turns out as plain text."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            content = (message.get("content") or "") + _call_text(message["tool_calls"])
            out.append({"role": "assistant", "content": content.strip()})
        elif role == "tool":
            content = f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"
            out.append({"role": "user", "content": content})
        else:
            out.append({"role": role, "content": message.get("content") or ""})
    if tools:
        prompt = tools_system_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def _hf_message(message: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.get("role"), "content": message.get("content") or ""}
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {"type": "function", "function": dict(call.get("function", {}))}
            for call in message["tool_calls"]
        ]
    if message.get("tool_name"):
        out["name"] = message["tool_name"]
    return out


class GoValue:
    """A value for Go templates: fields under Go's names, printed as the API's JSON.

    Ollama's templates read ``.Function.Name`` but print ``{{ . }}`` as the wire JSON
    (lowercase keys), as Go structs with JSON tags and a ``String`` method do.
    """

    def __init__(self, fields: Mapping[str, Any], wire: Any) -> None:
        self.__dict__.update(fields)
        self._wire = wire

    def model_dump(self) -> Any:
        return self._wire

    def __str__(self) -> str:
        return json.dumps(self._wire, ensure_ascii=False, separators=(",", ":"))


def _go_call(call: Mapping[str, Any]) -> GoValue:
    fn = call.get("function", {})
    function = GoValue({"Name": fn.get("name"), "Arguments": fn.get("arguments", {})}, fn)
    return GoValue({"Function": function}, dict(call))


def _go_message(message: Mapping[str, Any]) -> dict[str, Any]:
    calls = [_go_call(c) for c in message.get("tool_calls") or []]
    return {
        "Role": message.get("role"),
        "Content": message.get("content") or "",
        "ToolCalls": calls,
        "ToolName": message.get("tool_name") or "",
        "ToolCallID": message.get("tool_call_id") or "",
        "Thinking": message.get("thinking") or "",
    }


class PromptBuilder:
    """Renders prompts for one model: knows its Jinja template and special tokens."""

    def __init__(self, jinja_template: str | None, bos_token: str, eos_token: str) -> None:
        self.jinja_source = jinja_template
        self.bos_token = bos_token
        self.eos_token = eos_token

    def chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        go_source: str | None = None,
        think: bool | str | None = None,
    ) -> str:
        """The prompt for a chat, ending where the assistant's answer begins."""
        tools = tools or []
        if tools and not template_handles_tools(go_source, self.jinja_source):
            messages, tools = inline_tools(messages, tools), []
        if go_source:
            return self._go_chat(go_template(go_source), messages, tools, think)
        return self._jinja_chat(messages, tools, think)

    def _jinja_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        think: bool | str | None = None,
    ) -> str:
        template = _jinja(self.jinja_source or CHATML)
        extra: dict[str, Any] = {}
        if think is not None:  # Qwen3's and DeepSeek's switch, and gpt-oss's level
            extra["enable_thinking"] = bool(think)
            if isinstance(think, str):
                extra["reasoning_effort"] = think
        try:
            text: str = template.render(
                messages=[_hf_message(m) for m in messages],
                tools=tools or None,
                add_generation_prompt=True,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except JinjaTemplateError as exc:
            raise BadRequest(f"chat template error: {exc}") from None
        return text

    def _go_chat(
        self,
        template: GoTemplate,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        think: bool | str | None = None,
    ) -> str:
        system = str(next((m.get("content") for m in messages if m.get("role") == "system"), ""))
        if template.references("Messages"):
            data = {
                "System": system,
                "Messages": [_go_message(m) for m in messages],
                "Tools": [_go_tool(t) for t in tools],
                "Response": "",
                **_go_think(think),
            }
            return self._render_go(template, data)
        # An old-style template renders one (system, prompt, response) turn at a time.
        turns: list[str] = []
        prompt = ""
        for message in messages:
            role = message.get("role")
            if role == "user":
                if prompt:
                    turns.append(self._turn(template, system, prompt, ""))
                prompt = str(message.get("content") or "")
            elif role == "assistant":
                answer = str(message.get("content") or "")
                turns.append(self._turn(template, system, prompt, answer))
                prompt, system = "", ""
        turns.append(self._turn(template, system, prompt, None))
        return "".join(turns)

    def _turn(self, template: GoTemplate, system: str, prompt: str, response: str | None) -> str:
        data = {"System": system, "Prompt": prompt, "Response": response or ""}
        if response is None:
            return self._render_go(template, data)
        return self._safe_render(template, data)

    def _safe_render(self, template: GoTemplate, data: dict[str, Any]) -> str:
        try:
            return template.render(data)
        except TemplateError as exc:
            raise BadRequest(f"template error: {exc}") from None

    def _render_go(self, template: GoTemplate, data: dict[str, Any]) -> str:
        """Render for generation: the text after ``{{ .Response }}`` is cut off."""
        data = {**data, "Response": _SENTINEL} if template.references("Response") else data
        text = self._safe_render(template, data)
        return text.split(_SENTINEL, 1)[0]

    def generate(
        self,
        prompt: str,
        system: str | None,
        go_source: str | None,
        suffix: str | None = None,
        think: bool | str | None = None,
    ) -> str:
        """The prompt for ``/api/generate`` when ``raw`` is false."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        if go_source:
            template = go_template(go_source)
            data = {
                "System": system or "",
                "Prompt": prompt,
                "Suffix": suffix or "",
                "Messages": [_go_message(m) for m in messages],
                "Response": "",
                **_go_think(think),
            }
            return self._render_go(template, data)
        return self._jinja_chat(messages, [], think)


def _go_think(think: bool | str | None) -> dict[str, Any]:
    """Ollama's thinking variables: ``.Think``, ``.ThinkLevel``, ``.IsThinkSet``."""
    return {
        "Think": bool(think),
        "ThinkLevel": think if isinstance(think, str) else "",
        "IsThinkSet": think is not None,
    }


def _go_tool(tool: Mapping[str, Any]) -> GoValue:
    fn = tool.get("function") or {}
    function = GoValue(
        {
            "Name": fn.get("name"),
            "Description": fn.get("description"),
            "Parameters": fn.get("parameters"),
        },
        fn,
    )
    return GoValue({"Type": tool.get("type", "function"), "Function": function}, dict(tool))
