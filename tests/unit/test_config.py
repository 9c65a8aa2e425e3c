"""Tests for settings: ``parse_host`` and ``load_settings`` precedence and errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import AliasChoices, ValidationError

from modelgarden.config import (
    DEFAULT_MODEL,
    ConfigError,
    Settings,
    load_settings,
    parse_bytes,
)
from modelgarden.hosts import DEFAULT_HOST, DEFAULT_PORT, parse_host


def _env_names() -> set[str]:
    """Every environment name ``Settings`` may read (the env source ignores case)."""
    names = {"GARDEN_CONFIG"}
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                if isinstance(choice, str):
                    names |= {choice, choice.upper(), choice.lower()}
    return names


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in _env_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _toml(tmp_path: Path, text: str, name: str = "garden.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- parse_host --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example", ("example", DEFAULT_PORT)),
        ("example:1234", ("example", 1234)),
        (":8080", (DEFAULT_HOST, 8080)),
        ("", (DEFAULT_HOST, DEFAULT_PORT)),
        ("0.0.0.0", ("0.0.0.0", DEFAULT_PORT)),
        ("0.0.0.0:11435", ("0.0.0.0", 11435)),
        ("http://example:9000/some/path", ("example", 9000)),
        ("https://example", ("example", DEFAULT_PORT)),
        ("http://example/", ("example", DEFAULT_PORT)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::1]", ("::1", DEFAULT_PORT)),
        ("::1", ("::1", DEFAULT_PORT)),
        ("  example:7  ", ("example", 7)),
        ("example:65535", ("example", 65535)),
        ("example:1", ("example", 1)),
    ],
)
def test_parse_host(value: str, expected: tuple[str, int]) -> None:
    assert parse_host(value) == expected


@pytest.mark.parametrize(
    "value",
    ["x:99999", "x:65536", "x:0", "x:abc", "x:-1", "[::1]:0", "http://x:port/p", "[::1]:1x"],
)
def test_parse_host_bad_port(value: str) -> None:
    with pytest.raises(ValueError, match="port must be a number from 1 to 65535"):
        parse_host(value)


def test_parse_host_unclosed_bracket() -> None:
    with pytest.raises(ValueError, match=r"unclosed '\['"):
        parse_host("[::1:8080")


# --- defaults --------------------------------------------------------------------------


def test_defaults_without_env_or_file() -> None:
    s = load_settings()
    assert s.host == f"{DEFAULT_HOST}:{DEFAULT_PORT}"
    assert s.bind == (DEFAULT_HOST, DEFAULT_PORT)
    assert s.keep_alive == 300.0
    assert s.num_parallel == 1
    assert s.max_loaded_models == 3
    assert s.max_queue == 512
    assert s.context_length == 4096
    assert s.default_model == DEFAULT_MODEL
    assert s.log_level == "info"
    assert s.models_dir == Path.home() / ".modelgarden" / "models"


def test_load_settings_does_not_read_cwd_garden_toml_by_itself(tmp_path: Path) -> None:
    _toml(tmp_path, "num_parallel = 9\n")
    assert load_settings().num_parallel == 1


def test_threads_falls_back_to_cpu_count() -> None:
    assert load_settings(num_threads=3).threads == 3
    assert load_settings().threads >= 1


# --- precedence ---------------------------------------------------------------------------


def test_ollama_env_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:5000")
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "4")
    monkeypatch.setenv("OLLAMA_MAX_LOADED_MODELS", "2")
    s = load_settings()
    assert s.bind == ("0.0.0.0", 5000)
    assert s.num_parallel == 4
    assert s.max_loaded_models == 2


def test_garden_env_beats_ollama_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "a:1")
    monkeypatch.setenv("GARDEN_HOST", "b:2")
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "4")
    monkeypatch.setenv("GARDEN_NUM_PARALLEL", "8")
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "1m")
    monkeypatch.setenv("GARDEN_KEEP_ALIVE", "2m")
    s = load_settings()
    assert s.host == "b:2"
    assert s.num_parallel == 8
    assert s.keep_alive == 120.0


def test_toml_beats_defaults(tmp_path: Path) -> None:
    cfg = _toml(
        tmp_path,
        'host = "t:5"\nnum_parallel = 7\nkeep_alive = "1h"\nlog_level = "ERROR"\n'
        'models_dir = "/srv/models"\n',
    )
    s = load_settings(cfg)
    assert s.host == "t:5"
    assert s.num_parallel == 7
    assert s.keep_alive == 3600.0
    assert s.log_level == "error"
    assert s.models_dir == Path("/srv/models")


def test_env_beats_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = _toml(tmp_path, 'host = "t:5"\nnum_parallel = 7\n')
    monkeypatch.setenv("OLLAMA_HOST", "o:6")
    s = load_settings(cfg)
    assert s.host == "o:6"
    # Not set in the environment: the file still applies.
    assert s.num_parallel == 7


def test_explicit_override_beats_env_and_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = _toml(tmp_path, 'host = "t:5"\nnum_parallel = 7\n')
    monkeypatch.setenv("GARDEN_HOST", "g:6")
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "3")
    s = load_settings(cfg, host="k:1", num_parallel=2)
    assert s.host == "k:1"
    assert s.num_parallel == 2


def test_none_override_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "4")
    assert load_settings(num_parallel=None).num_parallel == 4


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.num_parallel = 5  # type: ignore[misc]


# --- keep_alive and other conversions ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("10m", 600.0), ("-1", math.inf), ("300", 300.0), ("1h30m", 5400.0), ("-1m", math.inf)],
)
def test_ollama_keep_alive(monkeypatch: pytest.MonkeyPatch, value: str, expected: float) -> None:
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", value)
    assert load_settings().keep_alive == expected


def test_log_level_is_lowercased(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARDEN_LOG_LEVEL", "DEBUG")
    assert load_settings().log_level == "debug"


def test_models_dir_expands_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", "~/garden-models")
    assert load_settings().models_dir == Path.home() / "garden-models"


def test_unrelated_generic_env_names_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only GARDEN_* and OLLAMA_* names are the environment's; a generic HOST or LOG_LEVEL
    # (common in containers and CI) must not reconfigure or break the gateway.
    monkeypatch.setenv("HOST", "example:1")
    monkeypatch.setenv("LOG_LEVEL", "trace")
    s = load_settings()
    assert s.host == f"{DEFAULT_HOST}:{DEFAULT_PORT}"
    assert s.log_level == "info"


# --- errors ---------------------------------------------------------------------------------


def _config_error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message, f"ConfigError message spans lines: {message!r}"
    assert message
    return message


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("OLLAMA_NUM_PARALLEL", "abc", "valid integer"),
        ("OLLAMA_NUM_PARALLEL", "0", "greater than or equal to 1"),
        ("OLLAMA_NUM_PARALLEL", "65", "less than or equal to 64"),
        ("OLLAMA_HOST", "x:99999", "port must be a number from 1 to 65535"),
        ("OLLAMA_KEEP_ALIVE", "forever-ish", "invalid keep_alive"),
        ("OLLAMA_MAX_QUEUE", "-1", "greater than or equal to 0"),
        ("OLLAMA_CONTEXT_LENGTH", "10", "greater than or equal to 64"),
        ("OLLAMA_MAX_LOADED_MODELS", "0", "greater than or equal to 1"),
    ],
)
def test_bad_ollama_env_value_is_one_line_config_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, hint: str
) -> None:
    monkeypatch.setenv(name, value)
    message = _config_error()
    assert name.removeprefix("OLLAMA_") in message
    assert value in message
    assert hint in message


@pytest.mark.parametrize(
    ("name", "value"),
    [("OLLAMA_NUM_PARALLEL", "abc"), ("OLLAMA_NUM_PARALLEL", "0"), ("OLLAMA_HOST", "x:99999")],
)
def test_bad_ollama_env_value_names_the_variable_that_was_set(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    # The user set OLLAMA_*; an error that only names GARDEN_* points at a variable they
    # never set.
    monkeypatch.setenv(name, value)
    message = _config_error()
    assert name in message, f"{name} not named in {message!r}"


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("GARDEN_LOG_LEVEL", "loud", "debug, info, warning, error"),
        ("GARDEN_NUM_PARALLEL", "0", "greater than or equal to 1"),
        ("GARDEN_HOST", "x:99999", "port must be a number from 1 to 65535"),
        ("GARDEN_KEEP_ALIVE", "bogus", "invalid keep_alive"),
        ("GARDEN_RUNNER_START_TIMEOUT", "0", "greater than 0"),
        ("GARDEN_NUM_THREADS", "many", "valid integer"),
    ],
)
def test_bad_garden_env_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, hint: str
) -> None:
    monkeypatch.setenv(name, value)
    message = _config_error()
    assert name in message
    assert value in message
    assert hint in message


def test_bad_value_in_toml_raises_config_error(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, "num_parallel = 0\n")
    message = _config_error(config_file=cfg)
    assert "NUM_PARALLEL" in message.upper()
    assert "greater than or equal to 1" in message


def test_invalid_toml(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, 'host = \n[[[ "unbalanced\n')
    message = _config_error(config_file=cfg)
    assert "not valid TOML" in message
    assert str(cfg) in message


def test_toml_that_is_not_utf8(tmp_path: Path) -> None:
    cfg = tmp_path / "garden.toml"
    cfg.write_bytes(b'host = "\xff\xfe"\n')
    message = _config_error(config_file=cfg)
    assert str(cfg) in message


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "garden.toml"
    message = _config_error(config_file=missing)
    assert str(missing) in message
    assert "does not exist" in message


def test_config_error_does_not_leak_toml_into_next_load(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, "num_parallel = 0\n")
    _config_error(config_file=cfg)
    assert load_settings().num_parallel == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12GiB", 12 * 1024**3),
        ("512MB", 512 * 1000**2),
        ("300 MiB", 300 * 1024**2),
        ("1.5g", 1_500_000_000),
        ("2048", 2048),
        (4096, 4096),
        ("8k", 8000),
    ],
)
def test_parse_bytes(value: object, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize("value", ["lots", "12 GiBs", "-1GB", "1e9"])
def test_memory_limit_rejects_what_is_not_a_size(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GARDEN_MEMORY_LIMIT", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "memory_limit" in str(info.value) or "GARDEN_MEMORY_LIMIT" in str(info.value)


def test_memory_limit_unset_means_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARDEN_MEMORY_LIMIT", "")
    assert load_settings().memory_limit is None
    monkeypatch.setenv("GARDEN_MEMORY_LIMIT", "2GiB")
    assert load_settings().memory_limit == 2 * 1024**3


@pytest.mark.parametrize(
    ("table", "hint"),
    [
        ({"name": "gpu", "kind": "modal"}, "needs its models listed"),
        ({"name": "gpu", "kind": "modal", "models": ["m"], "urls": ["modal://app"]}, "modal://"),
        ({"name": "gpu", "kind": "ollama", "urls": ["modal://app/Cls"]}, 'need kind = "modal"'),
        ({"name": "gpu", "kind": "modal", "models": ["m"], "scaledown": "soon"}, "duration"),
    ],
)
def test_modal_backend_tables_are_checked(table: dict[str, object], hint: str) -> None:
    message = _config_error(backends=[table])
    assert hint in message, message


def test_modal_backend_defaults_to_the_deployed_class() -> None:
    s = load_settings(backends=[{"name": "gpu", "kind": "modal", "models": ["glm"]}])
    backend = s.backends[0]
    assert backend.urls == ["modal://personal-model-garden/OllamaBackend"]
    assert (backend.scaledown, backend.wake_timeout, backend.max_waking) == (300.0, 600.0, 64)
