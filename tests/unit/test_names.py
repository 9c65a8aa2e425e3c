"""Tests for model-name parsing, normalising and validation (``modelgarden.store.names``)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from modelgarden.errors import BadRequest, InvalidModelName
from modelgarden.store.names import (
    DEFAULT_HOST,
    DEFAULT_NAMESPACE,
    DEFAULT_TAG,
    ModelName,
    normalize,
)

# --- parsing ---------------------------------------------------------------------------------


def test_bare_model_gets_defaults() -> None:
    name = ModelName.parse("smollm2")
    assert name == ModelName(DEFAULT_HOST, DEFAULT_NAMESPACE, "smollm2", DEFAULT_TAG)
    assert (DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG) == (
        "registry.ollama.ai",
        "library",
        "latest",
    )


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("smollm2:135m", ("registry.ollama.ai", "library", "smollm2", "135m")),
        ("user/model:tag", ("registry.ollama.ai", "user", "model", "tag")),
        ("user/model", ("registry.ollama.ai", "user", "model", "latest")),
        ("host:5000/ns/model:tag", ("host:5000", "ns", "model", "tag")),
        ("host:5000/ns/model", ("host:5000", "ns", "model", "latest")),
        ("example.com/ns/model:v1", ("example.com", "ns", "model", "v1")),
        ("llama3.2:3b-instruct-q4_K_M", ("registry.ollama.ai", "library", "llama3.2", "")),
        ("https://example.com/ns/m:t", ("example.com", "ns", "m", "t")),
        ("http://example.com/ns/m", ("example.com", "ns", "m", "latest")),
        ("m:_t", ("registry.ollama.ai", "library", "m", "_t")),
        ("  smollm2  ", ("registry.ollama.ai", "library", "smollm2", "latest")),
    ],
)
def test_parse_parts(text: str, parts: tuple[str, str, str, str]) -> None:
    name = ModelName.parse(text)
    host, namespace, model, tag = parts
    assert (name.host, name.namespace, name.model) == (host, namespace, model)
    if tag:
        assert name.tag == tag
    else:
        assert name.tag == "3b-instruct-q4_k_m"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SmolLM2", "smollm2:latest"),
        ("SmolLM2:135M", "smollm2:135m"),
        ("User/Model:TAG", "user/model:tag"),
        ("Host:5000/NS/Model:Tag", "host:5000/ns/model:tag"),
    ],
)
def test_case_folding(text: str, expected: str) -> None:
    assert normalize(text) == expected
    assert ModelName.parse(text) == ModelName.parse(text.lower())


def test_names_differing_only_in_case_are_equal() -> None:
    assert ModelName.parse("LLAMA3:Latest") == ModelName.parse("llama3")


# --- display forms ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "short", "full"),
    [
        ("smollm2", "smollm2:latest", "registry.ollama.ai/library/smollm2:latest"),
        (
            "registry.ollama.ai/library/smollm2:135m",
            "smollm2:135m",
            "registry.ollama.ai/library/smollm2:135m",
        ),
        ("user/model", "user/model:latest", "registry.ollama.ai/user/model:latest"),
        ("host:5000/ns/model:tag", "host:5000/ns/model:tag", "host:5000/ns/model:tag"),
        ("example.com/library/m:t", "example.com/library/m:t", "example.com/library/m:t"),
    ],
)
def test_display_forms(text: str, short: str, full: str) -> None:
    name = ModelName.parse(text)
    assert str(name) == short
    assert name.full == full
    assert normalize(text) == short


def test_normalize_is_idempotent() -> None:
    once = normalize("User/Model")
    assert normalize(once) == once == "user/model:latest"


def test_names_sort() -> None:
    names = sorted(ModelName.parse(n) for n in ["b:1", "a:2", "a:1"])
    assert [str(n) for n in names] == ["a:1", "a:2", "b:1"]


# --- manifest_path ---------------------------------------------------------------------------


def test_manifest_path_default() -> None:
    path = ModelName.parse("smollm2:135m").manifest_path
    assert path == PurePosixPath("registry.ollama.ai/library/smollm2/135m")


def test_manifest_path_escapes_port_colon() -> None:
    path = ModelName.parse("host:5000/ns/model:tag").manifest_path
    assert path == PurePosixPath("host%3A5000/ns/model/tag")
    assert path.parts == ("host%3A5000", "ns", "model", "tag")


# --- rejection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("../x", "bad namespace"),
        ("a/../b", "bad namespace"),
        ("..", "bad model"),
        ("./x", "bad namespace"),
        ("m..x", "bad model"),
        ("x/y/z/w", "too many '/' parts"),
        ("a b", "bad model"),
        ("a\x00b", "bad model"),
        ("a\\b", "bad model"),
        ("..\\..\\etc", "bad model"),
        ("model:", "bad tag"),
        (":tag", "bad model"),
        ("/m", "bad namespace"),
        ("m/", "bad model"),
        ("m:a:b", "bad model"),
        (".hidden", "bad model"),
        ("-dash", "bad model"),
        ("m:.t", "bad tag"),
        ("host:5000/m", "bad namespace"),
        ("a" * 300, "bad model"),
        ("m:" + "t" * 129, "bad tag"),
        ("m\u00e9", "bad model"),
    ],
)
def test_rejects_invalid_names(text: str, reason: str) -> None:
    with pytest.raises(InvalidModelName, match="invalid model name") as info:
        ModelName.parse(text)
    assert reason in str(info.value)


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_name_is_required(text: str) -> None:
    with pytest.raises(InvalidModelName, match=r"^model is required$"):
        ModelName.parse(text)


def test_invalid_name_is_a_bad_request() -> None:
    with pytest.raises(BadRequest) as info:
        normalize("../etc/passwd")
    assert info.value.status == 400


def test_length_limits_are_inclusive() -> None:
    assert ModelName.parse("a" * 80).model == "a" * 80
    assert ModelName.parse("m:" + "t" * 128).tag == "t" * 128
    with pytest.raises(InvalidModelName):
        ModelName.parse("a" * 81)


@pytest.mark.parametrize("text", ["m\n:t", "ns\n/m:t", "h\n/ns/m:t", "ns/m\n:t"])
def test_rejects_embedded_newline(text: str) -> None:
    # ``$`` in the part patterns matches before a trailing newline, so "m\n" must not
    # slip through as a model part (it would become a manifest file name).
    with pytest.raises(InvalidModelName):
        ModelName.parse(text)


# --- properties ------------------------------------------------------------------------------

_name_chars = st.sampled_from("abcxyzABZ0189_.-:/\\ \x00\n\t%é")


def _check_safe(name: ModelName) -> None:
    path = name.manifest_path
    assert not path.is_absolute()
    assert ".." not in path.parts
    assert len(path.parts) == 4
    for part in path.parts:
        assert part not in ("", ".", "..")
        assert "/" not in part
        assert "\\" not in part
        assert "\x00" not in part


@given(st.text(_name_chars, max_size=40))
def test_any_parsed_name_is_safe_and_round_trips(text: str) -> None:
    try:
        name = ModelName.parse(text)
    except InvalidModelName:
        return
    _check_safe(name)
    assert ModelName.parse(str(name)) == name
    assert ModelName.parse(name.full) == name


_part = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,15}\Z")
_tag = st.from_regex(r"\A[a-z0-9_][a-z0-9_.-]{0,15}\Z")


@given(_part, _part, _tag, st.booleans())
def test_well_formed_names_parse_and_round_trip(
    namespace: str, model: str, tag: str, upper: bool
) -> None:
    assume(".." not in tag)
    text = f"{namespace}/{model}:{tag}"
    name = ModelName.parse(text.upper() if upper else text)
    assert (name.namespace, name.model, name.tag) == (namespace, model, tag)
    assert ModelName.parse(str(name)) == name
    _check_safe(name)
