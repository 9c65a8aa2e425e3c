"""Tests for ``.env`` files: where they are found, how they rank, their errors, and which
of their variables reach the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import AliasChoices

from modelgarden.config import (
    ConfigError,
    EnvFile,
    Settings,
    find_config_file,
    find_env_file,
    load_settings,
    read_env_file,
)

SECRET = "sk-or-v1-dotenv-secret-7f3a"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                monkeypatch.delenv(str(choice), raising=False)
    for name in ("GARDEN_CONFIG", "GARDEN_ENV_FILE", "UPSTREAM_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _file(tmp_path: Path, text: str, name: str = ".env") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _load(env_path: Path, config: Path | None = None, **overrides: object) -> Settings:
    return load_settings(config, read_env_file(env_path), **overrides)


# --- finding ----------------------------------------------------------------------------


def test_dot_env_in_the_working_directory_is_found(tmp_path: Path) -> None:
    assert find_env_file() is None
    _file(tmp_path, "GARDEN_NUM_PARALLEL=2\n")
    assert find_env_file() == Path(".env")


def test_flag_beats_garden_env_file_beats_dot_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _file(tmp_path, "")
    other = _file(tmp_path, "", "other.env")
    monkeypatch.setenv("GARDEN_ENV_FILE", str(other))
    assert find_env_file() == other
    assert find_env_file("flag.env") == Path("flag.env")


def test_the_env_file_may_name_the_config_file(tmp_path: Path) -> None:
    env = read_env_file(_file(tmp_path, "GARDEN_CONFIG=elsewhere.toml\n"))
    assert find_config_file(None, env) == Path("elsewhere.toml")
    assert find_config_file("flag.toml", env) == Path("flag.toml")


# --- precedence -------------------------------------------------------------------------


def test_env_file_beats_toml_and_defaults(tmp_path: Path) -> None:
    env = _file(tmp_path, "GARDEN_NUM_PARALLEL=3\nOLLAMA_KEEP_ALIVE=7m\n")
    toml = _file(tmp_path, "num_parallel = 2\nmax_queue = 9\n", "garden.toml")
    s = _load(env, toml)
    assert (s.num_parallel, s.keep_alive, s.max_queue) == (3, 420.0, 9)


def test_environment_beats_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARDEN_NUM_PARALLEL", "5")
    assert _load(_file(tmp_path, "GARDEN_NUM_PARALLEL=3\n")).num_parallel == 5


def test_environment_ollama_name_beats_env_file_garden_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sources rank first: a variable set for this run beats the file, whatever its name.
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "1m")
    assert _load(_file(tmp_path, "GARDEN_KEEP_ALIVE=7m\n")).keep_alive == 60.0


def test_garden_name_beats_ollama_name_within_the_file(tmp_path: Path) -> None:
    s = _load(_file(tmp_path, "OLLAMA_NUM_PARALLEL=4\nGARDEN_NUM_PARALLEL=6\n"))
    assert s.num_parallel == 6


def test_flags_beat_env_file(tmp_path: Path) -> None:
    assert _load(_file(tmp_path, "GARDEN_WORKERS=4\n"), workers=2).workers == 2


def test_env_file_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", "from-env")
    text = (
        "# a comment\n"
        "export GARDEN_LOG_LEVEL=debug\n"
        "GARDEN_ORIGINS='https://a.example, https://b.example'\n"
        'GARDEN_REGISTRY="https://registry.example"  # trailing comment\n'
        "BARE_NAME\n"
        "COPY=${UPSTREAM_KEY}\n"
    )
    env = read_env_file(_file(tmp_path, text))
    s = load_settings(None, env)
    assert s.log_level == "debug"
    assert s.origin_list == ["https://a.example", "https://b.example"]
    assert s.registry_url == "https://registry.example"
    assert "BARE_NAME" not in env.values
    assert env.values["COPY"] == "from-env"


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "name", "hint"),
    [
        ("OLLAMA_NUM_PARALLEL=abc", "OLLAMA_NUM_PARALLEL", "valid integer"),
        ("GARDEN_KEEP_ALIVE=soon", "GARDEN_KEEP_ALIVE", "invalid keep_alive"),
        ("GARDEN_MAX_QUEUE=-1", "GARDEN_MAX_QUEUE", "greater than or equal to 0"),
    ],
)
def test_bad_value_in_env_file_is_one_line_naming_the_file(
    tmp_path: Path, line: str, name: str, hint: str
) -> None:
    env = _file(tmp_path, f"{line}\n")
    with pytest.raises(ConfigError) as info:
        _load(env)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("invalid setting ") and name in message
    assert f"in {env}" in message and hint in message


def test_a_bad_value_the_environment_overrides_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GARDEN_NUM_PARALLEL", "2")
    assert _load(_file(tmp_path, "GARDEN_NUM_PARALLEL=abc\n")).num_parallel == 2


def test_bad_value_from_the_environment_names_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GARDEN_NUM_PARALLEL", "abc")
    with pytest.raises(ConfigError) as info:
        _load(_file(tmp_path, "GARDEN_NUM_PARALLEL=2\n"))
    assert " in " not in str(info.value).split(":")[0]


def test_bad_value_in_toml_names_the_toml_file(tmp_path: Path) -> None:
    toml = _file(tmp_path, "num_parallel = 0\n", "garden.toml")
    with pytest.raises(ConfigError, match=f"in {toml}"):
        _load(_file(tmp_path, "GARDEN_KEEP_ALIVE=1m\n"), toml)


def test_database_password_in_env_file_is_redacted(tmp_path: Path) -> None:
    env = _file(tmp_path, "GARDEN_DATABASE_URL=mysql://u:hunter2@db/x\n")
    with pytest.raises(ConfigError) as info:
        _load(env)
    assert "hunter2" not in str(info.value) and f"in {env}" in str(info.value)


def test_unparsable_line_names_the_line_not_its_text(tmp_path: Path) -> None:
    env = _file(tmp_path, f"GOOD=1\nthis line {SECRET} is not an assignment\n")
    with pytest.raises(ConfigError) as info:
        read_env_file(env)
    message = str(info.value)
    assert message == f"env file {env} line 2: expected NAME=value"
    assert SECRET not in message


def test_missing_named_env_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_env_file(tmp_path / "nowhere.env")


def test_env_file_that_is_not_utf8(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"GARDEN_HOST=\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_env_file(env)


def test_values_are_not_in_the_repr(tmp_path: Path) -> None:
    env = read_env_file(_file(tmp_path, f"UPSTREAM_KEY={SECRET}\n"))
    assert SECRET not in repr(env) and SECRET not in str(env)


# --- export -----------------------------------------------------------------------------


def test_export_adds_what_the_environment_lacks_and_no_setting(tmp_path: Path) -> None:
    env = EnvFile(
        tmp_path / ".env",
        {"UPSTREAM_KEY": SECRET, "PATH": "/nowhere", "GARDEN_NUM_PARALLEL": "3", "OTHER": "x"},
    )
    environ = {"PATH": "/usr/bin", "OTHER": "real"}
    assert env.export(environ) == ["UPSTREAM_KEY"]
    assert environ == {"PATH": "/usr/bin", "OTHER": "real", "UPSTREAM_KEY": SECRET}


def test_a_backend_key_from_the_env_file_reaches_the_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = _file(
        tmp_path,
        '[[backends]]\nname = "up"\nkind = "openai"\nurls = ["http://127.0.0.1:9/v1"]\n'
        'api_key_env = "UPSTREAM_KEY"\n',
        "garden.toml",
    )
    env = read_env_file(_file(tmp_path, f"UPSTREAM_KEY={SECRET}\n"))
    settings = load_settings(toml, env)
    assert settings.backends[0].api_key() is None
    monkeypatch.setenv("UPSTREAM_KEY", "")  # so that the export is undone after the test
    monkeypatch.delenv("UPSTREAM_KEY")
    assert env.export() == ["UPSTREAM_KEY"]
    assert settings.backends[0].api_key() == SECRET
