"""Tests for the Hermes-style tool-call helpers (stop sequences are the engine's own now)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgarden.templates.tools import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    forced_call_schema,
    might_be_tool_call,
    parse_tool_calls,
    tools_system_prompt,
)

# --- tools: parse_tool_calls -------------------------------------------------------------------

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "f"}},
]


def _call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"function": {"name": name, "arguments": args}}


def test_tagged_call() -> None:
    text = '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>'
    assert parse_tool_calls(text, TOOLS) == [_call("f", {"a": 1})]


def test_multiple_tagged_calls_with_whitespace_and_prose() -> None:
    text = (
        "Let me check.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    )
    assert parse_tool_calls(text, TOOLS) == [
        _call("get_weather", {"city": "Paris"}),
        _call("f", {}),
    ]


def test_bare_json_object() -> None:
    text = '  {"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
    assert parse_tool_calls(text, TOOLS) == [_call("get_weather", {"city": "Oslo"})]


def test_bare_json_list_of_calls() -> None:
    text = '[{"name": "f", "arguments": {"a": 1}}, {"name": "f", "arguments": {"a": 2}}]'
    assert parse_tool_calls(text, TOOLS) == [_call("f", {"a": 1}), _call("f", {"a": 2})]


def test_arguments_given_as_json_string_are_decoded() -> None:
    text = json.dumps({"name": "get_weather", "arguments": json.dumps({"city": "Rome"})})
    calls = parse_tool_calls(text, TOOLS)
    assert calls == [_call("get_weather", {"city": "Rome"})]
    assert calls is not None
    assert isinstance(calls[0]["function"]["arguments"], dict)


def test_openai_shaped_call_and_parameters_alias() -> None:
    wrapped = '{"function": {"name": "f", "arguments": {"x": true}}}'
    assert parse_tool_calls(wrapped, TOOLS) == [_call("f", {"x": True})]
    aliased = '{"name": "f", "parameters": {"x": 2}}'
    assert parse_tool_calls(aliased, TOOLS) == [_call("f", {"x": 2})]


def test_missing_arguments_default_to_empty_object() -> None:
    assert parse_tool_calls('{"name": "f"}', TOOLS) == [_call("f", {})]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "delete_everything", "arguments": {}}',
        '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
        # One unknown call spoils the whole answer.
        '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
    ],
)
def test_unknown_function_name_is_not_a_call(text: str) -> None:
    assert parse_tool_calls(text, TOOLS) is None


@pytest.mark.parametrize(
    "text",
    [
        "The weather in Paris is sunny.",
        "",
        "{not json}",
        '{"name": "f", "arguments": "not json"}',
        '{"name": "f", "arguments": [1, 2]}',
        '{"name": 5, "arguments": {}}',
        '"just a string"',
        "<tool_call></tool_call>",
        '{"name": "f", "arguments": {}} and then prose',
    ],
)
def test_not_a_call(text: str) -> None:
    assert parse_tool_calls(text, TOOLS) is None


def test_unterminated_tool_call_at_end_of_text() -> None:
    text = 'Calling.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lima"}}\n'
    assert parse_tool_calls(text, TOOLS) == [_call("get_weather", {"city": "Lima"})]


def test_no_tools_means_any_name_is_accepted() -> None:
    assert parse_tool_calls('{"name": "zz", "arguments": {}}', []) == [_call("zz", {})]


@given(
    name=st.sampled_from(["get_weather", "f"]),
    args=st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(st.integers(), st.text(max_size=10), st.booleans(), st.none()),
        max_size=4,
    ),
    tagged=st.booleans(),
    string_args=st.booleans(),
)
def test_round_trip_of_well_formed_calls(
    name: str, args: dict[str, Any], tagged: bool, string_args: bool
) -> None:
    body = json.dumps({"name": name, "arguments": json.dumps(args) if string_args else args})
    text = f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}" if tagged else body
    assert parse_tool_calls(text, TOOLS) == [_call(name, args)]


# --- might_be_tool_call ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "   ", "\n", "{", ' {"na', "[", "<", "<tool", "<tool_call", "<tool_call>", "<tool_call>{"],
)
def test_might_be_tool_call_true(text: str) -> None:
    assert might_be_tool_call(text) is True


@pytest.mark.parametrize("text", ["Hello", "<b>bold</b>", "<tools>", "The answer", "1"])
def test_might_be_tool_call_false(text: str) -> None:
    assert might_be_tool_call(text) is False


# --- forced_call_schema / prompt ----------------------------------------------------------------


def test_forced_call_schema_for_named_function() -> None:
    schema = forced_call_schema(TOOLS, "get_weather")
    assert schema == {
        "type": "object",
        "properties": {
            "name": {"const": "get_weather"},
            "arguments": TOOLS[0]["function"]["parameters"],
        },
        "required": ["name", "arguments"],
    }


def test_forced_call_schema_defaults_parameters_to_object() -> None:
    schema = forced_call_schema(TOOLS, "f")
    assert schema["properties"]["arguments"] == {"type": "object"}


def test_forced_call_schema_any_tool() -> None:
    schema = forced_call_schema(TOOLS, None)
    assert set(schema) == {"anyOf"}
    names = [v["properties"]["name"]["const"] for v in schema["anyOf"]]
    assert names == ["get_weather", "f"]
    assert all(v["required"] == ["name", "arguments"] for v in schema["anyOf"])


def test_forced_call_schema_single_tool_without_name_is_not_wrapped() -> None:
    schema = forced_call_schema(TOOLS[:1], None)
    assert schema["properties"]["name"] == {"const": "get_weather"}


@pytest.mark.parametrize(("tools", "name"), [(TOOLS, "unknown"), ([], None), ([], "f")])
def test_forced_call_schema_unknown_name(tools: list[dict[str, Any]], name: str | None) -> None:
    with pytest.raises(ValueError, match="not in tools"):
        forced_call_schema(tools, name)


def test_tools_system_prompt_lists_each_tool_as_json() -> None:
    prompt = tools_system_prompt(TOOLS)
    for tool in TOOLS:
        assert json.dumps(tool, ensure_ascii=False) in prompt
    assert "<tools>" in prompt
    assert TOOL_CALL_OPEN in prompt
    assert '{"name": <function-name>, "arguments": <args-json-object>}' in prompt
