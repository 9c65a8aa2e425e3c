"""Tests for the Modelfile parser/renderer and the option table (``model_options``)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgarden.errors import BadRequest
from modelgarden.model_options import (
    LOAD_OPTIONS,
    OPTION_TYPES,
    format_parameters,
    merge_parameters,
    validate_options,
)
from modelgarden.store.modelfile import (
    Modelfile,
    parse_modelfile,
    parse_parameter,
    render_modelfile,
)

# --- parsing -----------------------------------------------------------------------------------


def test_from_only() -> None:
    assert parse_modelfile("FROM llama3\n") == Modelfile(from_="llama3")


def test_instructions_are_case_insensitive() -> None:
    mf = parse_modelfile('from ./model.gguf\nsystem "be brief"\nparameter num_ctx 2048\n')
    assert mf.from_ == "./model.gguf"
    assert mf.system == "be brief"
    assert mf.parameters == {"num_ctx": 2048}


def test_typed_parameters() -> None:
    mf = parse_modelfile(
        "FROM x\n"
        "PARAMETER num_ctx 4096\n"
        "PARAMETER seed -1\n"
        "PARAMETER temperature 0.7\n"
        "PARAMETER top_p 1\n"
        "PARAMETER penalize_newline true\n"
        "PARAMETER use_mmap 0\n"
        "PARAMETER numa FALSE\n"
    )
    assert mf.parameters == {
        "num_ctx": 4096,
        "seed": -1,
        "temperature": 0.7,
        "top_p": 1.0,
        "penalize_newline": True,
        "use_mmap": False,
        "numa": False,
    }
    assert type(mf.parameters["num_ctx"]) is int
    assert type(mf.parameters["top_p"]) is float


def test_repeated_stop_accumulates_in_order() -> None:
    mf = parse_modelfile(
        'FROM x\nPARAMETER stop "<|im_end|>"\nPARAMETER stop <|im_start|>\nPARAMETER stop "User:"\n'
    )
    assert mf.parameters["stop"] == ["<|im_end|>", "<|im_start|>", "User:"]


def test_later_scalar_parameter_wins() -> None:
    mf = parse_modelfile("FROM x\nPARAMETER num_ctx 1024\nPARAMETER num_ctx 2048\n")
    assert mf.parameters == {"num_ctx": 2048}


def test_quoted_values_are_unquoted() -> None:
    mf = parse_modelfile('FROM "x"\nSYSTEM "You are \\"nice\\" sometimes"\n')
    assert mf.from_ == "x"
    assert mf.system is not None
    assert mf.system.startswith("You are ")
    assert not mf.system.startswith('"')


def test_bare_value_keeps_inner_quotes() -> None:
    mf = parse_modelfile('FROM x\nSYSTEM You are "nice"\n')
    assert mf.system == 'You are "nice"'


def test_triple_quoted_values_span_lines() -> None:
    text = (
        "# leading comment\n"
        "FROM ./m.gguf\n"
        'TEMPLATE """{{ if .System }}<|system|>\n{{ .System }}{{ end }}\n'
        '<|user|>\n{{ .Prompt }}"""\n'
        'SYSTEM """You are a pirate.\n\nAlways answer in rhymes."""\n'
    )
    mf = parse_modelfile(text)
    assert mf.template == (
        "{{ if .System }}<|system|>\n{{ .System }}{{ end }}\n<|user|>\n{{ .Prompt }}"
    )
    assert mf.system == "You are a pirate.\n\nAlways answer in rhymes."


def test_empty_triple_quoted_system() -> None:
    assert parse_modelfile('FROM x\nSYSTEM """"""\n').system == ""


def test_messages_and_licenses() -> None:
    mf = parse_modelfile(
        "FROM x\n"
        "MESSAGE user hi there\n"
        'MESSAGE Assistant """multi\nline"""\n'
        'MESSAGE system "quoted"\n'
        'LICENSE """MIT\nCopyright"""\n'
        "LICENSE Apache-2.0\n"
    )
    assert mf.messages == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "multi\nline"},
        {"role": "system", "content": "quoted"},
    ]
    assert mf.licenses == ["MIT\nCopyright", "Apache-2.0"]


def test_comments_blank_lines_and_crlf() -> None:
    mf = parse_modelfile("  # indented comment\r\n\r\nFROM x\r\n# another\r\nSYSTEM hi\r\n")
    assert mf.from_ == "x"
    assert mf.system == "hi"


def test_no_trailing_newline() -> None:
    mf = parse_modelfile("FROM x\nPARAMETER num_ctx 8")
    assert mf.parameters == {"num_ctx": 8}


# --- parse errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "no FROM"),
        ("# only a comment\n", "no FROM"),
        ("PARAMETER num_ctx 1\nSYSTEM hi\n", "no FROM"),
        ("FROM x\nFOO bar\n", "unknown Modelfile instruction 'FOO'"),
        ("FROM x\nADAPTER ./lora.gguf\n", "ADAPTER is not supported"),
        ("FROM x\nPARAMETER nope 1\n", "unknown parameter 'nope'"),
        ("FROM x\nPARAMETER num_ctx abc\n", "invalid int value 'abc' for parameter 'num_ctx'"),
        ("FROM x\nPARAMETER num_ctx 1.5\n", "invalid int"),
        ("FROM x\nPARAMETER temperature hot\n", "invalid float value 'hot'"),
        ("FROM x\nPARAMETER use_mmap yes\n", "invalid bool value 'yes'"),
        ('FROM x\nTEMPLATE """abc\n', 'unterminated """'),
        ('FROM x\nSYSTEM """never closed', 'unterminated """'),
        ("FROM x\nMESSAGE bot hi\n", "MESSAGE role must be one of"),
    ],
)
def test_parse_errors(text: str, match: str) -> None:
    with pytest.raises(BadRequest, match=match) as info:
        parse_modelfile(text)
    assert info.value.status == 400


# --- render / round trip ------------------------------------------------------------------------


def _render(**kwargs: Any) -> str:
    base: dict[str, Any] = {
        "name": "mine:latest",
        "from_": "/blobs/sha256-abc",
        "template": None,
        "system": None,
        "parameters": {},
        "licenses": [],
        "messages": [],
    }
    base.update(kwargs)
    return render_modelfile(**base)


def test_render_layout() -> None:
    text = _render(
        template="{{ .Prompt }}",
        system="sys",
        parameters={"num_ctx": 2048, "stop": ["a", "b"]},
        licenses=["MIT"],
        messages=[{"role": "user", "content": "hi"}],
    )
    lines = text.splitlines()
    assert lines[0].startswith("#")
    assert "# FROM mine:latest" in lines
    assert "FROM /blobs/sha256-abc" in lines
    assert 'TEMPLATE """{{ .Prompt }}"""' in lines
    assert 'SYSTEM """sys"""' in lines
    assert "PARAMETER num_ctx 2048" in lines
    assert lines.count('PARAMETER stop "a"') == 1
    assert lines.count('PARAMETER stop "b"') == 1
    assert 'MESSAGE user """hi"""' in lines
    assert 'LICENSE """MIT"""' in lines
    assert text.endswith("\n")


def test_render_omits_empty_template_and_system() -> None:
    text = _render(template="", system=None)
    assert "TEMPLATE" not in text
    assert "SYSTEM" not in text


def test_round_trip_full() -> None:
    params = {
        "num_ctx": 8192,
        "temperature": 0.25,
        "penalize_newline": False,
        "stop": ["<|im_start|>", "<|im_end|>", "a b"],
    }
    messages = [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "a\nb"}]
    text = _render(
        template="{{ .System }}\n{{ .Prompt }}",
        system="Be terse.\nVery.",
        parameters=params,
        licenses=["MIT License\n\nfull text"],
        messages=messages,
    )
    mf = parse_modelfile(text)
    assert mf.from_ == "/blobs/sha256-abc"
    assert mf.template == "{{ .System }}\n{{ .Prompt }}"
    assert mf.system == "Be terse.\nVery."
    assert mf.parameters == params
    assert mf.licenses == ["MIT License\n\nfull text"]
    assert mf.messages == messages


@pytest.mark.parametrize("stop", ["\n", "\n\nUser:", 'say "hi"', "User: "])
def test_round_trip_stop_with_escaped_characters(stop: str) -> None:
    # format_parameters JSON-quotes such values; parsing the rendered Modelfile must give
    # back the exact stop string (escapes decoded, inner spaces kept).
    mf = parse_modelfile(_render(parameters={"stop": [stop]}))
    assert mf.parameters == {"stop": [stop]}


def test_round_trip_system_ending_in_a_quote() -> None:
    system = 'Always answer "yes"'
    mf = parse_modelfile(_render(system=system))
    assert mf.system == system


_safe_text = st.text(
    st.characters(codec="utf-8", exclude_characters='"\r', exclude_categories=["Cs"]),
    min_size=1,
    max_size=60,
)
_stop = st.from_regex(r"\A[A-Za-z0-9<>|/_.:-]{1,12}\Z")


@given(
    template=_safe_text,
    system=_safe_text,
    num_ctx=st.integers(min_value=1, max_value=1 << 20),
    temperature=st.floats(min_value=0, max_value=5, allow_nan=False),
    mmap=st.booleans(),
    stops=st.lists(_stop, min_size=1, max_size=4),
)
def test_render_parse_round_trip(
    template: str, system: str, num_ctx: int, temperature: float, mmap: bool, stops: list[str]
) -> None:
    params = {"num_ctx": num_ctx, "temperature": temperature, "use_mmap": mmap, "stop": stops}
    mf = parse_modelfile(_render(template=template, system=system, parameters=params))
    assert mf.from_ == "/blobs/sha256-abc"
    assert mf.template == template
    assert mf.system == system
    assert mf.parameters == params


# --- options: validate_options ---------------------------------------------------------------


def test_validate_options_coerces_types() -> None:
    out = validate_options(
        {"num_ctx": 4096.0, "temperature": 1, "top_k": 40, "stop": "x", "use_mmap": True}
    )
    assert out == {
        "num_ctx": 4096,
        "temperature": 1.0,
        "top_k": 40,
        "stop": ["x"],
        "use_mmap": True,
    }
    assert type(out["num_ctx"]) is int
    assert type(out["temperature"]) is float


def test_validate_options_drops_unknown_and_none() -> None:
    out = validate_options({"bogus": 1, "seed": None, "stop": None, "num_predict": 5})
    assert out == {"num_predict": 5}


@pytest.mark.parametrize("value", [None, {}])
def test_validate_options_empty(value: dict[str, Any] | None) -> None:
    assert validate_options(value) == {}


@pytest.mark.parametrize(
    ("options", "kind"),
    [
        ({"num_ctx": "4096"}, "integer"),
        ({"num_ctx": True}, "integer"),
        ({"seed": [1]}, "integer"),
        ({"temperature": "hot"}, "float"),
        ({"temperature": False}, "float"),
        ({"use_mmap": 1}, "boolean"),
        ({"use_mmap": "true"}, "boolean"),
        ({"stop": [1]}, "array of strings"),
        ({"stop": 5}, "array of strings"),
    ],
)
def test_validate_options_wrong_type(options: dict[str, Any], kind: str) -> None:
    (key,) = options
    with pytest.raises(BadRequest, match=f'option "{key}" must be') as info:
        validate_options(options)
    assert kind in str(info.value)
    assert info.value.param == key


def test_stop_list_is_kept() -> None:
    assert validate_options({"stop": ["a", "b"]}) == {"stop": ["a", "b"]}


def test_option_table_consistency() -> None:
    assert set(OPTION_TYPES) >= LOAD_OPTIONS
    assert set(OPTION_TYPES.values()) <= {"int", "float", "bool", "str", "list"}


def test_parse_parameter() -> None:
    assert parse_parameter("num_ctx", " 512 ") == 512
    assert parse_parameter("top_p", "0.9") == 0.9
    assert parse_parameter("numa", "1") is True
    assert parse_parameter("stop", '"<end>"') == ["<end>"]
    with pytest.raises(BadRequest, match="unknown parameter 'foo'"):
        parse_parameter("foo", "1")


def test_merge_parameters_request_stop_replaces_model_stop() -> None:
    merged = merge_parameters({"stop": ["a"], "num_ctx": 1}, {"stop": ["b"]})
    assert merged == {"stop": ["b"], "num_ctx": 1}


# --- options: format_parameters --------------------------------------------------------------


def test_format_parameters() -> None:
    text = format_parameters(
        {"num_ctx": 4096, "stop": ["a", "b c", ""], "use_mmap": False, "temperature": 0.5}
    )
    assert text.splitlines() == [
        f"{'num_ctx':<30} 4096",
        f'{"stop":<30} "a"',
        f'{"stop":<30} "b c"',
        f'{"stop":<30} ""',
        f"{'use_mmap':<30} false",
        f"{'temperature':<30} 0.5",
    ]


def test_format_parameters_empty() -> None:
    assert format_parameters({}) == ""
