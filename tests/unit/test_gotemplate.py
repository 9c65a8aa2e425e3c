"""Tests for the Go text/template subset renderer used for Ollama model templates."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import pytest

from modelgarden.templates import gotemplate
from modelgarden.templates.gotemplate import GoTemplate, TemplateError

# Real Ollama templates, verbatim.
LLAMA31 = """\
{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

You have access to the following tools:
{{- range .Tools }}
{{ . }}
{{- end }}
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""  # noqa: E501 (verbatim template)

OLD_STYLE = """\
{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ .Response }}<|im_end|>"""

CHATML = """\
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

WEATHER_TOOL = {
    "Type": "function",
    "Function": {
        "Name": "get_weather",
        "Description": "Get the weather",
        "Parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_TOOL_JSON = (
    '{"Type":"function","Function":{"Name":"get_weather","Description":"Get the weather",'
    '"Parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}'
)
HEADER = "<|start_header_id|>{}<|end_header_id|>"


def render(source: str, data: dict[str, Any] | None = None) -> str:
    return GoTemplate(source).render(data or {})


def msg(role: str, content: str, **extra: Any) -> dict[str, Any]:
    return {"Role": role, "Content": content, **extra}


# -- real templates -------------------------------------------------------------------------


def test_chatml_renders_system_messages_and_generation_prompt() -> None:
    data = {
        "System": "Be brief.",
        "Messages": [msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Bye")],
    }
    assert render(CHATML, data) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chatml_without_system() -> None:
    data = {"Messages": [msg("user", "Hi")]}
    assert render(CHATML, data) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_llama31_system_tools_tool_call_and_tool_result() -> None:
    call = {"Function": {"Name": "get_weather", "Arguments": {"city": "Paris"}}}
    data = {
        "System": "You are helpful.",
        "Tools": [WEATHER_TOOL],
        "Messages": [
            msg("user", "Weather in Paris?"),
            msg("assistant", "", ToolCalls=[call]),
            msg("tool", "22C sunny"),
        ],
    }
    assert render(LLAMA31, data) == (
        HEADER.format("system")
        + "\n\nYou are helpful.\n\nYou have access to the following tools:\n"
        + WEATHER_TOOL_JSON
        + "<|eot_id|>"
        + HEADER.format("user")
        + "\n\nWeather in Paris?<|eot_id|>"
        + HEADER.format("assistant")
        + '\n{"name": "get_weather", "parameters": {"city":"Paris"}}<|eot_id|>'
        + HEADER.format("ipython")
        + "\n\n22C sunny<|eot_id|>"
        + HEADER.format("assistant")
        + "\n\n"
    )


def test_llama31_only_the_last_message_gets_the_assistant_header() -> None:
    data = {"Messages": [msg("user", "Hi"), msg("assistant", "Hello"), msg("user", "Bye")]}
    assert render(LLAMA31, data) == (
        HEADER.format("user")
        + "\n\nHi<|eot_id|>"
        + HEADER.format("assistant")
        + "\n\nHello<|eot_id|>"
        + HEADER.format("user")
        + "\n\nBye<|eot_id|>"
        + HEADER.format("assistant")
        + "\n\n"
    )


def test_llama31_last_assistant_message_is_left_open() -> None:
    data = {"System": "S", "Messages": [msg("user", "Hi"), msg("assistant", "Hel", ToolCalls=[])]}
    assert render(LLAMA31, data) == (
        HEADER.format("system")
        + "\n\nS<|eot_id|>"
        + HEADER.format("user")
        + "\n\nHi<|eot_id|>"
        + HEADER.format("assistant")
        + "\n\nHel"
    )


def test_llama31_with_no_data_renders_nothing() -> None:
    assert render(LLAMA31) == ""


def test_old_style_prompt_template() -> None:
    template = GoTemplate(OLD_STYLE)
    full = template.render({"System": "S", "Prompt": "P", "Response": "R"})
    assert full == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nP<|im_end|>\n"
        "<|im_start|>assistant\nR<|im_end|>"
    )
    # A missing Response renders as empty, never Go's "<no value>".
    assert template.render({"Prompt": "P"}) == (
        "<|im_start|>user\nP<|im_end|>\n<|im_start|>assistant\n<|im_end|>"
    )


def test_tools_print_as_compact_json() -> None:
    source = "{{ if .Tools }}[{{ range .Tools }}{{ . }}{{ end }}]{{ end }}"
    assert render(source, {"Tools": [WEATHER_TOOL]}) == f"[{WEATHER_TOOL_JSON}]"
    assert render(source, {"Tools": []}) == ""
    assert render(source) == ""


def test_tool_calls_print_arguments_as_json() -> None:
    source = (
        '{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", '
        '"arguments": {{ .Function.Arguments }}}{{ end }}'
    )
    call = {"Function": {"Name": "get_weather", "Arguments": {"city": "Paris", "unit": "C"}}}
    assert render(source, {"ToolCalls": [call, call]}) == (
        '{"name": "get_weather", "arguments": {"city":"Paris","unit":"C"}}' * 2
    )


def test_json_function_is_compact_ordered_and_not_html_escaped() -> None:
    tools = [{"Name": "z<&>", "Desc": "café", "Args": {"b": 1, "a": [True, None, 1.5]}}]
    assert render("{{ json .Tools }}", {"Tools": tools}) == (
        '[{"Name":"z<&>","Desc":"café","Args":{"b":1,"a":[true,null,1.5]}}]'
    )
    assert render("{{ json .Missing }}") == "null"


# -- syntax ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a  {{- 1 -}}  b", "a1b"),
        ("a \n\t{{- 1 }} b", "a1 b"),
        ("a {{ 1 -}} \n b", "a 1b"),
        ("a {{ 1 }} b", "a 1 b"),
        ("a {{-3}} b", "a -3 b"),  # no space after the dash: a negative number, not a trim
        ("{{ .X -}}\n\n{{- .Y }}", "xy"),
        ("line\n{{- if true }}\n  yes\n{{- end }}\n", "line\n  yes\n"),
    ],
)
def test_trim_markers(source: str, expected: str) -> None:
    assert render(source, {"X": "x", "Y": "y"}) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a{{/* a comment */}}b", "ab"),
        ("a {{- /* trims left */}} b", "a b"),
        ("a {{/* trims right */ -}} b", "a b"),
        ("a {{- /* trims both */ -}} b", "ab"),
        ("a{{/* spans\nlines {{ .X }} */}}b", "ab"),
    ],
)
def test_comments(source: str, expected: str) -> None:
    assert render(source) == expected


@pytest.mark.parametrize(
    ("n", "expected"), [(1, "one"), (2, "two"), (3, "three"), (4, "many"), (None, "many")]
)
def test_else_if_chain(n: int | None, expected: str) -> None:
    source = (
        "{{ if eq .N 1 }}one{{ else if eq .N 2 }}two"
        "{{ else if eq .N 3 }}three{{ else }}many{{ end }}"
    )
    assert render(source, {"N": n}) == expected


def test_with_rebinds_dot_and_has_else() -> None:
    source = "{{ with .User }}Hi {{ .Name }} of {{ $.Site }}{{ else }}anon{{ end }}"
    assert render(source, {"User": {"Name": "Ann"}, "Site": "x"}) == "Hi Ann of x"
    assert render(source, {"User": {}}) == "anon"
    chain = "{{ with .A }}a={{ . }}{{ else with .B }}b={{ . }}{{ else }}none{{ end }}"
    assert render(chain, {"A": 1, "B": 2}) == "a=1"
    assert render(chain, {"B": 2}) == "b=2"
    assert render(chain, {}) == "none"


def test_break_and_continue() -> None:
    source = (
        "{{ range .Xs }}{{ if eq . 3 }}{{ break }}{{ end }}"
        "{{ if eq . 1 }}{{ continue }}{{ end }}{{ . }},{{ end }}"
    )
    assert render(source, {"Xs": [0, 1, 2, 3, 4]}) == "0,2,"


def test_range_forms() -> None:
    data = {"L": ["a", "b"], "D": {"b": 2, "a": 1}, "E": []}
    assert render("{{ range .L }}<{{ . }}>{{ end }}", data) == "<a><b>"
    assert render("{{ range $i, $x := .L }}{{ $i }}={{ $x }};{{ end }}", data) == "0=a;1=b;"
    assert render("{{ range $x := .L }}{{ $x }}{{ end }}", data) == "ab"
    # Like Go's maps, dicts range in sorted key order.
    assert render("{{ range $k, $v := .D }}{{ $k }}={{ $v }};{{ end }}", data) == "a=1;b=2;"
    assert render("{{ range .E }}x{{ else }}empty{{ end }}", data) == "empty"
    assert render("{{ range .Missing }}x{{ else }}empty{{ end }}", data) == "empty"
    assert render("{{ range 3 }}{{ . }}{{ end }}") == "012"


def test_variables_and_scoping() -> None:
    assert render("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}") == "2"
    assert render("{{ $x := .A }}{{ with .B }}{{ $x }}{{ . }}{{ end }}", {"A": 1, "B": 2}) == "12"
    assert render("{{ if $v := .A }}{{ $v }}{{ else }}{{ $v }}!{{ end }}", {"A": ""}) == "!"
    assert render("{{ range .L }}{{ $y := . }}{{ $y }}{{ end }}", {"L": [1, 2]}) == "12"
    with pytest.raises(TemplateError, match=r"undefined variable \$y"):
        GoTemplate("{{ if true }}{{ $y := 3 }}{{ end }}{{ $y }}")
    with pytest.raises(TemplateError, match=r"undefined variable \$z"):
        GoTemplate("{{ $z = 1 }}")


def test_missing_values_render_empty() -> None:
    assert render("[{{ .Nope }}][{{ .Nope.Deeper }}][{{ $.Nope }}][{{ print nil }}]") == (
        "[][][][]"
    )
    assert render("{{ len .Nope }}") == "0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        (42, "42"),
        (-7, "-7"),
        (1.5, "1.5"),
        (2.0, "2"),
        (123456.0, "123456"),
        (1e6, "1e+06"),
        (0.0001, "0.0001"),
        (1.5e-5, "1.5e-05"),
        (True, "true"),
        (False, "false"),
        (None, ""),
        ([1, "a"], '[1,"a"]'),
        ({"k": [1, 2]}, '{"k":[1,2]}'),
    ],
)
def test_printing_values(value: Any, expected: str) -> None:
    assert render("{{ .V }}", {"V": value}) == expected


def test_literals() -> None:
    assert render(r'{{ "a\tb\u00e9\x41\101\"" }}') == 'a\tbéAA"'
    assert render(r'{{ "\xc3\xa9" }}') == "é"  # \x escapes are bytes, as in Go
    assert render(r"{{ `raw\n` }}") == r"raw\n"
    assert render("{{ 'a' }} {{ 0x1F }} {{ 1_000 }} {{ -2 }} {{ 1.25 }} {{ true }}") == (
        "97 31 1000 -2 1.25 true"
    )


def test_pipes_and_parentheses() -> None:
    data = {"Name": "box", "L": [1, 2, 3], "Messages": [{"Content": "first"}]}
    assert render('{{ .Name | printf "%s!" }}', data) == "box!"
    assert render("{{ .L | len }}", data) == "3"
    assert render('{{ "x" | eq "x" }}', data) == "true"
    assert render("{{ (index .Messages 0).Content }}", data) == "first"
    assert render('{{ len (slice .L 1) | printf "%d left" }}', data) == "2 left"


def test_fields_of_objects() -> None:
    @dataclass
    class Tool:
        Name: str
        _secret: str = "hidden"

    assert render("{{ .T.Name }}", {"T": Tool("calc")}) == "calc"
    with pytest.raises(TemplateError, match="can't evaluate field _secret"):
        render("{{ .T._secret }}", {"T": Tool("calc")})
    with pytest.raises(TemplateError, match="can't evaluate field Nope"):
        render("{{ .T.Nope }}", {"T": Tool("calc")})


# -- functions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            '{{ printf "%s has %d items (%v) %q %%" .N 3 true .N }}',
            'box has 3 items (true) "box" %',
        ),
        ('{{ printf "%03d|%-4s|%5s|%.2f" 7 "ab" "cd" 3.14159 }}', "007|ab  |   cd|3.14"),
        ('{{ printf "%v %v" .L .D }}', '[1,2] {"a":"b"}'),
        ('{{ printf "%d" }}', "%!d(MISSING)"),
        ('{{ printf "%d" "s" }}', "%!d(string=s)"),
        ('{{ printf "%q" "a\\"b\\n" }}', '"a\\"b\\n"'),
    ],
)
def test_printf(source: str, expected: str) -> None:
    assert render(source, {"N": "box", "L": [1, 2], "D": {"a": "b"}}) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{{ or .A "default" }}', "default"),
        ('{{ or .S "default" }}', "set"),
        ("{{ or 0 .Empty }}", ""),
        ("{{ and .S .T }}", "two"),
        ("{{ and .Empty .S }}", ""),
        ("{{ and 1 0 2 }}", "0"),
        ("{{ or 0 false 3 }}", "3"),
        ("{{ or 1 (index .L 99) }}", "1"),  # short-circuit: index is never evaluated
        ("{{ and 0 (index .L 99) }}", "0"),
        ("{{ .S | and true }}", "set"),
        ("{{ not .Empty }} {{ not .S }}", "true false"),
    ],
)
def test_and_or_not(source: str, expected: str) -> None:
    assert render(source, {"S": "set", "T": "two", "Empty": "", "L": []}) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{{ eq .R "user" "tool" }}', "true"),
        ('{{ eq .R "assistant" "system" }}', "false"),
        ('{{ eq .Missing "x" }}', "false"),
        ("{{ eq .Missing nil }}", "true"),
        ("{{ ne 1 2 }} {{ ne 1 1 }}", "true false"),
        ("{{ lt 1 2 }} {{ le 2 2 }} {{ gt 1 2 }} {{ ge 2.5 2 }}", "true true false true"),
        ('{{ lt "a" "b" }}', "true"),
    ],
)
def test_comparisons(source: str, expected: str) -> None:
    assert render(source, {"R": "tool"}) == expected


def test_len_index_slice() -> None:
    data = {"L": [1, 2, 3], "M": {"k": "v"}, "S": "hello", "N": [[1, 2], [3, 4]]}
    assert render("{{ len .L }} {{ len .M }} {{ len .S }}", data) == "3 1 5"
    assert render('{{ index .L 0 }} {{ index .M "k" }} {{ index .M "x" }}', data) == "1 v "
    assert render("{{ index .N 1 0 }}", data) == "3"
    assert render(
        "{{ slice .S 1 3 }} {{ slice .L 1 }} {{ slice .L }} {{ slice .L 0 0 }}", data
    ) == ("el [2,3] [1,2,3] []")


def test_print_family_and_escapers() -> None:
    assert render('{{ print 1 2 "a" "b" 3 }}') == "1 2ab3"
    assert render('{{ println "a" 1 }}') == "a 1\n"
    assert render("{{ html \"<a href='x'>&</a>\" }}") == "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
    assert render('{{ js "it\'s <b>" }}') == "it\\'s \\u003Cb\\u003E"
    assert render('{{ urlquery "a b&c" }}') == "a+b%26c"


def test_current_date() -> None:
    before = datetime.date.today().isoformat()
    rendered = render("{{ currentDate }}")
    assert rendered in {before, datetime.date.today().isoformat()}


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("hello {{ .X", "unclosed action"),
        ("{{ .X }", "unclosed action"),
        ("{{ foo 1 }}", 'function "foo" not defined'),
        ("text {{ end }}", "unexpected {{end}}"),
        ("{{ else }}", "unexpected {{else}}"),
        ("{{ if .X }}yes", "missing {{end}} for this {{if}}"),
        ("{{ range .X }}{{ else }}", "missing {{end}} for this {{range}}"),
        ("{{ if 1 }}{{ else }}{{ else }}{{ end }}", "second {{else}}"),
        ("{{ break }}", "{{break}} outside {{range}}"),
        ("{{ range .L }}{{ else }}{{ continue }}{{ end }}", "{{continue}} outside {{range}}"),
        ('{{ template "x" }}', "{{template}} is not supported"),
        ('{{ define "x" }}{{ end }}', "{{define}} is not supported"),
        ('{{ block "x" . }}{{ end }}', "{{block}} is not supported"),
        ("{{ $nope }}", "undefined variable $nope"),
        ("{{ /* space before comment */ }}", "comment must start right after"),
        ("{{/* unclosed", "unclosed comment"),
        ('{{ "abc }}', "unterminated quoted string"),
        ("{{ .A.B 1 }}", "can't give arguments to a non-function"),
        ("{{ 1 | .X }}", "cannot pipe a value into a non-function"),
        ("{{ nil }}", "nil is not a command"),
        ("{{ }}", "missing value for command"),
        ("{{ (len .X }}", "unclosed left parenthesis"),
        ("{{ len .X) }}", "unexpected ')'"),
        ("{{ 1abc }}", "bad number syntax"),
        ("{{ $a, $b := .X }}", "too many declarations"),
        ('{{ "a".X }}', "unexpected field after constant"),
        ("{{ .A.B.C", "unclosed action"),
    ],
)
def test_parse_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        GoTemplate(source)
    assert message in str(info.value)
    assert "line 1, col" in str(info.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ len }}", "wrong number of args for len: want 1 got 0"),
        ('{{ eq 1 "a" }}', "error calling eq: incompatible types for comparison"),
        ("{{ lt true false }}", "error calling lt: incompatible types"),
        ("{{ index .L 5 }}", "error calling index: index out of range: 5"),
        ("{{ slice .L 2 1 }}", "error calling slice: slice bounds out of range"),
        ("{{ range .S }}{{ end }}", "range can't iterate over string"),
        ("{{ .S.Field }}", "can't evaluate field Field in type string"),
        ("{{ printf 1 }}", "format must be a string"),
    ],
)
def test_render_errors(source: str, message: str) -> None:
    template = GoTemplate(source)
    with pytest.raises(TemplateError) as info:
        template.render({"L": [1], "S": "str"})
    assert message in str(info.value)


def test_error_positions_and_type() -> None:
    with pytest.raises(TemplateError, match=r"line 3, col 4: function \"nope\" not defined"):
        GoTemplate("one\ntwo\n{{ nope }}")
    with pytest.raises(TemplateError, match=r"line 2, col 4: .*index out of range"):
        GoTemplate("ok\n{{ index .L 1 }}").render({"L": []})
    assert issubclass(TemplateError, ValueError)


def test_runaway_ranges_are_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gotemplate, "MAX_RANGE_ITERATIONS", 50)
    template = GoTemplate("{{ range .L }}{{ range $.L }}.{{ end }}{{ end }}")
    assert template.render({"L": list(range(5))}) == "." * 25
    with pytest.raises(TemplateError, match="range ran over 50 iterations"):
        template.render({"L": list(range(10))})
    with pytest.raises(TemplateError, match="range ran over 50 iterations"):
        render("{{ range 1000000000000 }}{{ end }}")


def test_deep_nesting_is_rejected() -> None:
    with pytest.raises(TemplateError, match="nested more than"):
        GoTemplate("{{ if true }}" * 200 + "{{ end }}" * 200)
    with pytest.raises(TemplateError, match="nested more than"):
        GoTemplate("{{ " + "(" * 200 + "1" + ")" * 200 + " }}")


# -- API ------------------------------------------------------------------------------------


def test_parse_once_render_many() -> None:
    template = GoTemplate("Hello {{ .Name }}!")
    assert [template.render({"Name": n}) for n in ("a", "b")] == ["Hello a!", "Hello b!"]


def test_references() -> None:
    fim = (
        "{{ if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>"
        "{{ else }}{{ .Prompt }}{{ end }}"
    )
    assert GoTemplate(fim).references("Suffix")
    assert GoTemplate(fim).references("Prompt")
    assert not GoTemplate(CHATML).references("Suffix")
    assert GoTemplate(CHATML).references("Messages")
    assert GoTemplate("{{ range .Messages }}{{ $.Suffix }}{{ end }}").references("Suffix")
    assert GoTemplate(LLAMA31).references("Tools")
    assert not GoTemplate(OLD_STYLE).references("Tools")
    assert not GoTemplate('{{ "Suffix" }}{{/* .Suffix */}}').references("Suffix")
