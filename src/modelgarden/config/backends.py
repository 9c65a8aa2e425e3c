"""Backend configuration: the ``[[backends]]`` tables of ``garden.toml``, validated.

Example::

    [[backends]]
    name = "workstation"          # how logs, metrics and /ollama/<name>/... refer to it
    kind = "ollama"               # local | ollama | openai | anthropic | modal
    urls = ["http://192.168.1.20:11434", "http://192.168.1.21:11434"]   # replicas
    allow = ["llama3*", "qwen*"]  # globs over model names; deny wins over allow
    deny = ["*:70b"]
    refresh = "60s"               # how often the model list is read again
    health_interval = "15s"       # active health probe of each replica; 0: none
    apis = ["ollama", "openai", "responses", "anthropic"]   # Ollama 0.14+: relay all four

    [[backends]]
    name = "openrouter"
    kind = "openai"
    urls = ["https://openrouter.ai/api/v1"]
    api_key_env = "OPENROUTER_API_KEY"
    models = ["meta-llama/llama-3.1-8b-instruct"]   # listed: no discovery
    aliases = { "llama-cloud" = "meta-llama/llama-3.1-8b-instruct" }

    [[backends]]
    name = "anthropic"            # Claude models behind every client API
    kind = "anthropic"            # urls and api_key_env default to Anthropic's and
                                  # ANTHROPIC_API_KEY for a backend of this name
    models = ["claude-sonnet-4-5"]

    [[backends]]
    name = "gpu"
    kind = "modal"                # GPU containers of deploy/modal_app.py, woken on demand
    urls = ["modal://personal-model-garden/OllamaBackend"]   # modal://<app>/<class>
    models = ["glm-4.7-flash:q8_0"]   # required: listing never wakes a GPU
    scaledown = "5m"              # the class's scaledown_window: when it is cold again
    wake_timeout = "10m"          # the longest cold start waited for
    max_waking = 64               # requests that may wait on one wake-up; past it, 503

    [fallbacks]
    "smollm2:135m" = ["llama-cloud"]

Without any ``[[backends]]`` the gateway has one ``local`` backend (its own runners);
with some, ``local`` is where a ``kind = "local"`` table puts it, or first when none does.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelgarden.durations import parse_go_duration

#: OpenRouter's endpoint: a backend named "openrouter" needs only its key.
OPENROUTER_URL = "https://openrouter.ai/api/v1"
#: The GPU class of ``deploy/modal_app.py``: what a ``modal`` backend reaches by default.
MODAL_URL = "modal://personal-model-garden/OllamaBackend"
#: Anthropic's API: a backend named "anthropic" needs only its key.
ANTHROPIC_URL = "https://api.anthropic.com"
#: Per kind: the families its upstream may speak natively, and those it does by default.
#: An Ollama daemon speaks the Responses (0.13.3+) and Anthropic (0.14+) APIs only when it
#: is recent enough, so those are opt-in (``apis = [...]``); translation works with any.
NATIVE: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "ollama": (frozenset({"ollama", "openai", "responses", "anthropic"}), ("ollama", "openai")),
    "modal": (frozenset({"ollama", "openai", "responses", "anthropic"}), ("ollama", "openai")),
    "openai": (frozenset({"openai", "responses"}), ("openai",)),
    "anthropic": (frozenset({"anthropic"}), ("anthropic",)),
    "local": (frozenset({"ollama"}), ("ollama",)),
}


class Timeouts(BaseModel):
    """Seconds to wait: for a connection, for the first byte of an answer, between bytes."""

    model_config = ConfigDict(extra="forbid")
    connect: float = Field(default=5.0, gt=0)
    first_byte: float = Field(default=300.0, gt=0)
    idle: float = Field(default=120.0, gt=0)


class BackendConfig(BaseModel):
    """One backend: where it is, how to reach it, which of its models to serve."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    kind: Literal["local", "ollama", "openai", "anthropic", "modal"]
    urls: list[str] = Field(default_factory=list)
    #: The API families the upstream speaks natively (requests in them are relayed as
    #: bytes; others are translated); default per kind, see :data:`NATIVE`.
    apis: list[Literal["ollama", "openai", "responses", "anthropic"]] | None = None
    api_key_env: str | None = None
    models: list[str] | None = None
    refresh: float = 60.0
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    filter_file: Path | None = None
    aliases: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    max_concurrency: int = Field(default=64, ge=1)
    max_queue: int = Field(default=256, ge=0)
    retries: int = Field(default=2, ge=0, le=10)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown: float = Field(default=10.0, gt=0)
    #: Seconds between active health probes of each replica (0: none).
    health_interval: float = Field(default=15.0, ge=0)
    #: What the probe GETs; default ``/api/version`` (ollama) or ``/models`` (openai).
    health_path: str | None = Field(default=None, pattern=r"^/")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    #: ``modal`` only: seconds idle after which the GPU class has scaled to zero.
    scaledown: float = Field(default=300.0, gt=0)
    #: ``modal`` only: the longest a cold start (container, server, model pulls) may take.
    wake_timeout: float = Field(default=600.0, gt=0)
    #: ``modal`` only: requests that may wait on one wake-up; past it, 503 with Retry-After.
    max_waking: int = Field(default=64, ge=1)

    @field_validator("refresh", "health_interval", "scaledown", "wake_timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_go_duration(value) if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://", "modal://")):
                raise ValueError(f"{url!r} must start with http://, https:// or modal://")
        return [u.rstrip("/") for u in urls]

    @model_validator(mode="after")
    def _complete(self) -> BackendConfig:
        if self.kind == "openai" and not self.urls and self.name == "openrouter":
            self.urls = [OPENROUTER_URL]
            self.api_key_env = self.api_key_env or "OPENROUTER_API_KEY"
        if self.kind == "anthropic" and not self.urls and self.name == "anthropic":
            self.urls = [ANTHROPIC_URL]
            self.api_key_env = self.api_key_env or "ANTHROPIC_API_KEY"
        allowed, default = NATIVE[self.kind]
        if self.apis is not None:
            if not self.apis or set(self.apis) - allowed:
                raise ValueError(
                    f"backend {self.name!r}: a {self.kind} backend speaks some of "
                    f"{', '.join(sorted(allowed))}, not {', '.join(self.apis) or 'none'}"
                )
        else:
            self.apis = list(default)  # type: ignore[arg-type]
        if self.kind == "modal":
            self.urls = self.urls or [MODAL_URL]
            if any(not u.startswith("modal://") or u.count("/") != 3 for u in self.urls):
                raise ValueError(f"backend {self.name!r}: modal urls are modal://<app>/<class>")
            if not self.models:
                raise ValueError(f"backend {self.name!r} of kind modal needs its models listed")
        elif any(u.startswith("modal://") for u in self.urls):
            raise ValueError(f'backend {self.name!r}: modal:// urls need kind = "modal"')
        if self.kind != "local" and not self.urls:
            raise ValueError(f"backend {self.name!r} of kind {self.kind} needs urls")
        return self

    def api_key(self) -> str | None:
        """The upstream key, read from the environment (never stored in the config)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def wanted(self, model: str) -> bool:
        """Whether the allow/deny globs and the filter file let this model through."""
        name = model.lower()
        if any(fnmatch.fnmatchcase(name, g.lower()) for g in self.deny):
            return False
        if self.filter_file is not None:
            listed = {
                line.strip().lower()
                for line in self.filter_file.read_text().splitlines()
                if line.strip() and not line.startswith("#")
            }
            if name not in listed:
                return False
        return not self.allow or any(fnmatch.fnmatchcase(name, g.lower()) for g in self.allow)
