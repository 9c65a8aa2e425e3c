"""Ollama's Modelfile format: parse it into a create request, and write one for ``/api/show``.

Supported instructions: ``FROM``, ``PARAMETER``, ``TEMPLATE``, ``SYSTEM``, ``LICENSE``,
``MESSAGE``; ``ADAPTER`` is refused (LoRA adapters are not supported). Values may be
written bare, in ``"double quotes"`` or in ``\"\"\"triple quotes\"\"\"`` spanning lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from modelgarden.errors import BadRequest
from modelgarden.model_options import OPTION_TYPES, format_parameters

_ROLES = {"system", "user", "assistant", "tool"}


@dataclass
class Modelfile:
    """The instructions of one Modelfile, in order of meaning rather than of text."""

    from_: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    licenses: list[str] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)


def _read_raw(text: str, pos: int) -> tuple[str, int]:
    """Read a value starting at ``pos``, quotes kept: triple-quoted, or to end of line."""
    if text.startswith('"""', pos):
        end = text.find('"""', pos + 3)
        if end < 0:
            raise BadRequest('unterminated """ in Modelfile')
        while text.startswith('"', end + 3):  # a value may end in quotes: """say "hi""""
            end += 1
        return text[pos : end + 3], end + 3
    line_end = text.find("\n", pos)
    line_end = len(text) if line_end < 0 else line_end
    return text[pos:line_end].strip(), line_end


def unquote(raw: str) -> str:
    """A value's text: triple quotes removed, a double-quoted value read as a JSON string."""
    if raw.startswith('"""') and raw.endswith('"""') and len(raw) >= 6:
        return raw[3:-3]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        try:
            value = json.loads(raw)
        except ValueError:
            return raw[1:-1]
        return value if isinstance(value, str) else raw[1:-1]
    return raw


def parse_parameter(key: str, text: str) -> Any:
    """Parse one Modelfile ``PARAMETER key value`` into its typed value."""
    kind = OPTION_TYPES.get(key)
    if kind is None:
        raise BadRequest(f"unknown parameter '{key}'")
    text = unquote(text.strip())
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            lowered = text.lower()
            if lowered not in {"true", "false", "1", "0"}:
                raise ValueError(text)
            return lowered in {"true", "1"}
    except ValueError:
        raise BadRequest(f"invalid {kind} value {text!r} for parameter '{key}'") from None
    return [text] if kind == "list" else text


def _read_value(text: str, pos: int) -> tuple[str, int]:
    raw, end = _read_raw(text, pos)
    return unquote(raw), end


def parse_modelfile(text: str) -> Modelfile:
    """Parse Modelfile text. Raises :class:`BadRequest` naming the offending line."""
    mf = Modelfile()
    pos, n = 0, len(text)
    while pos < n:
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        if pos >= n:
            break
        if text[pos] == "#":
            nl = text.find("\n", pos)
            pos = n if nl < 0 else nl + 1
            continue
        word_end = pos
        while word_end < n and text[word_end] not in " \t\r\n":
            word_end += 1
        command = text[pos:word_end].upper()
        pos = word_end
        while pos < n and text[pos] in " \t":
            pos += 1
        if command == "PARAMETER":
            key_end = pos
            while key_end < n and text[key_end] not in " \t\r\n":
                key_end += 1
            key = text[pos:key_end]
            raw, pos = _read_raw(text, key_end + 1 if key_end < n else key_end)
            value = parse_parameter(key, raw)
            if isinstance(value, list):
                mf.parameters.setdefault(key, []).extend(value)
            else:
                mf.parameters[key] = value
            continue
        if command == "MESSAGE":
            role_end = pos
            while role_end < n and text[role_end] not in " \t\r\n":
                role_end += 1
            role = text[pos:role_end].lower()
            if role not in _ROLES:
                raise BadRequest(f"MESSAGE role must be one of {sorted(_ROLES)}, got {role!r}")
            content, pos = _read_value(text, role_end + 1)
            mf.messages.append({"role": role, "content": content})
            continue
        value, pos = _read_value(text, pos)
        _apply(mf, command, value)
    if not mf.from_:
        raise BadRequest("no FROM line in Modelfile")
    return mf


def _apply(mf: Modelfile, command: str, value: str) -> None:
    if command == "FROM":
        mf.from_ = value
    elif command == "TEMPLATE":
        mf.template = value
    elif command == "SYSTEM":
        mf.system = value
    elif command == "LICENSE":
        mf.licenses.append(value)
    elif command == "ADAPTER":
        raise BadRequest("ADAPTER is not supported: LoRA adapters cannot be loaded here")
    else:
        raise BadRequest(f"unknown Modelfile instruction {command!r}")


def _quote(value: str) -> str:
    """Triple quotes where they read back exactly, else a JSON string."""
    if '"""' in value or value.startswith('"'):
        return json.dumps(value, ensure_ascii=False)
    return f'"""{value}"""'


def render_modelfile(
    *,
    name: str,
    from_: str,
    template: str | None,
    system: str | None,
    parameters: dict[str, Any],
    licenses: list[str],
    messages: list[dict[str, Any]],
) -> str:
    """The ``modelfile`` text of ``/api/show``: a Modelfile that recreates the model."""
    lines = [
        "# Modelfile generated by modelgarden",
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {name}",
        "",
        f"FROM {from_}",
    ]
    if template:
        lines.append(f"TEMPLATE {_quote(template)}")
    if system:
        lines.append(f"SYSTEM {_quote(system)}")
    for line in format_parameters(parameters).splitlines():
        key, _, value = line.partition(" ")
        lines.append(f"PARAMETER {key} {value.strip()}")
    for message in messages:
        lines.append(
            f"MESSAGE {message.get('role', 'user')} {_quote(str(message.get('content', '')))}"
        )
    for text in licenses:
        lines.append(f"LICENSE {_quote(text)}")
    return "\n".join(lines) + "\n"
