"""Thinking: which templates think, and reasoning split from the answer however it streams."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgarden.errors import BadRequest
from modelgarden.templates.thinking import ThinkingParser, think_value, thinking_tags

QWEN_GO = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{- if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n{{ if .Think }}<think>\n{{ end }}"
)


def test_go_template_tags_come_from_the_text_around_thinking() -> None:
    assert thinking_tags(QWEN_GO, None) == ("<think>", "</think>")
    custom = "{{ range .Messages }}<reason>{{ .Thinking }}</reason>{{ .Content }}{{ end }}"
    assert thinking_tags(custom, None) == ("<reason>", "</reason>")


def test_go_template_that_never_writes_thinking_does_not_think() -> None:
    assert thinking_tags("{{ .System }} {{ .Prompt }}", "<think></think>") is None


def test_jinja_template_thinks_when_it_has_both_tags() -> None:
    assert thinking_tags(None, "{{ '<think>' }}{{ x }}{{ '</think>' }}") == (
        "<think>",
        "</think>",
    )
    assert thinking_tags(None, "{% for m in messages %}{{ m.content }}{% endfor %}") is None
    assert thinking_tags(None, None) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (True, True), (False, False), ("low", "low"), ("high", "high"), ("max", "high")],
)
def test_think_values(value: object, expected: object) -> None:
    assert think_value(value) == expected


@pytest.mark.parametrize("value", ["very", 1, [], {"x": 1}])
def test_other_think_values_are_refused(value: object) -> None:
    with pytest.raises(BadRequest, match="invalid think value"):
        think_value(value)


def run(parser: ThinkingParser, pieces: list[str]) -> tuple[str, str]:
    thinking, content = [], []
    for piece in pieces:
        t, c = parser.add(piece)
        thinking.append(t)
        content.append(c)
    t, c = parser.flush()
    return "".join(thinking) + t, "".join(content) + c


def test_reasoning_then_answer() -> None:
    parser = ThinkingParser("<think>", "</think>")
    assert run(parser, ["<think>\nLet me see.", "</think>\n\nThe answer"]) == (
        "Let me see.",
        "The answer",
    )


def test_a_prompt_that_opened_the_block_starts_in_reasoning() -> None:
    parser = ThinkingParser("<think>", "</think>", opened=True)
    assert run(parser, ["hmm", "</think>", "ok"]) == ("hmm", "ok")


def test_an_answer_without_the_tag_is_all_content() -> None:
    assert run(ThinkingParser("<think>", "</think>"), ["  Hello <think>x"]) == (
        "",
        "  Hello <think>x",
    )


def test_an_unclosed_block_is_all_reasoning() -> None:
    assert run(ThinkingParser("<think>", "</think>"), ["<think>still going"]) == (
        "still going",
        "",
    )


def test_a_partial_closing_tag_is_held_until_it_is_decided() -> None:
    parser = ThinkingParser("<think>", "</think>", opened=True)
    assert parser.add("a</th") == ("a", "")
    assert parser.add("ought") == ("</thought", "")
    assert parser.add("</think>b") == ("", "b")


@given(
    st.text(alphabet="ab <>/\n", max_size=20),
    st.text(alphabet="cd <>/\n", max_size=20),
    st.lists(st.integers(min_value=1, max_value=60), max_size=8),
)
def test_any_split_gives_the_same_answer(thinking: str, content: str, cuts: list[int]) -> None:
    text = f"<think>{thinking}</think>{content}"
    whole = run(ThinkingParser("<think>", "</think>"), [text])
    points = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert run(ThinkingParser("<think>", "</think>"), pieces) == whole
