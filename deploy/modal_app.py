"""modelgarden on Modal: a warm gateway on a CPU container, scale-to-zero GPU backends.

    modal deploy deploy/modal_app.py

- ``Gateway`` (CPU, ``min_containers`` from ``GATEWAY_MIN_CONTAINERS``, default 1) serves the
  very app ``garden serve`` serves: /api, /v1, /ollama/*, /health, /garden/*. Its catalogue
  is the ``OLLAMA_MODELS`` list, so ``/``, ``/health`` and model listing never wake a GPU.
- ``OllamaBackend`` (GPU) runs the Ollama server over the ``ollama-models`` volume. At start
  it pulls every model of ``OLLAMA_MODELS`` that the volume lacks, then commits the volume.
  The gateway reaches it through its ``modal`` backend kind: ``proxy`` for a whole answer,
  the generator ``stream`` for a streamed one (see ``modelgarden.backends.modal``).

Every class option comes from :func:`class_options`, one function of the environment at
deploy time; the same values are baked into the images' environment, so the module reads
them back alike when Modal imports it again inside a container. The settings, the cost
model and the expected cold start are in docs/DEPLOY.md ("Modal").
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import modal

from modelgarden.backends.modal_server import ModelServer

APP_NAME = "personal-model-garden"
VOLUME_NAME = "ollama-models"
#: Where Ollama keeps models by default: the volume is mounted there.
MODELS_PATH = "/root/.ollama/models"
#: How long the gateway lets an answer take to begin before it starts it (Modal's web
#: endpoints redirect to a result URL at 150 s).
EARLY_START = 120.0
ROOT = Path(__file__).resolve().parent.parent
EPHEMERAL_KEYS = (
    "GATEWAY_KEYS=true needs a database that outlives the gateway's containers: put "
    "GARDEN_DATABASE_URL=postgresql://... in a Modal secret and name it in GATEWAY_SECRET"
)


@dataclass(frozen=True)
class DeploySettings:
    """The deployment's settings, by environment variable name (lowercase here)."""

    gateway_min_containers: int = 1
    gateway_proxy_auth: bool = True
    gateway_cpu: float = 0.5
    gateway_memory: int = 1024
    gateway_concurrency: int = 256
    #: API keys on the gateway (beyond Modal's proxy keys): they need a database that
    #: outlives the containers, named by ``gateway_secret``.
    gateway_keys: bool = False
    #: A Modal secret holding GARDEN_DATABASE_URL (PostgreSQL), and GARDEN_REDIS_URL for
    #: per-key limits shared by every gateway container.
    gateway_secret: str = ""
    ollama_gpu: str = "A100-40GB"
    ollama_scaledown: int = 300
    ollama_timeout: int = 1800
    ollama_models: str = "glm-4.7-flash:q8_0,glm-4.7-flash:q4_K_M"
    ollama_concurrency: int = 4
    ollama_max_containers: int = 1
    ollama_version: str = ""
    ollama_server_command: str = "ollama serve"
    ollama_models_path: str = MODELS_PATH

    @property
    def models(self) -> list[str]:
        """The models to serve and to hold on the volume."""
        return [m.strip() for m in self.ollama_models.split(",") if m.strip()]

    def env(self) -> dict[str, str]:
        """The settings as environment variables (for the images)."""
        return {k.upper(): str(v) for k, v in asdict(self).items()}


def load_settings(env: Mapping[str, str]) -> DeploySettings:
    """Read and check the settings; a bad value raises ``ValueError`` naming the variable."""
    values: dict[str, Any] = {}
    for field in fields(DeploySettings):
        raw = env.get(field.name.upper())
        if raw is None or raw == "":
            continue
        kind = type(getattr(DeploySettings, field.name))
        try:
            values[field.name] = _flag(raw) if kind is bool else kind(raw)
        except ValueError:
            raise ValueError(f"{field.name.upper()}={raw!r}: expected a {kind.__name__}") from None
    settings = DeploySettings(**values)
    if not 2 <= settings.ollama_scaledown <= 3600:
        raise ValueError("OLLAMA_SCALEDOWN must be 2 to 3600 seconds (Modal's limits)")
    if settings.gateway_min_containers < 0 or settings.ollama_max_containers < 1:
        raise ValueError("GATEWAY_MIN_CONTAINERS >= 0 and OLLAMA_MAX_CONTAINERS >= 1, please")
    if not settings.models:
        raise ValueError("OLLAMA_MODELS must name at least one model")
    if settings.gateway_keys and not settings.gateway_secret:
        raise ValueError(EPHEMERAL_KEYS)
    return settings


def _flag(raw: str) -> bool:
    text = raw.strip().lower()
    if text not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        raise ValueError(raw)
    return text in {"1", "true", "yes", "on"}


def gateway_packages() -> list[str]:
    """The project's dependencies, less the engine: the gateway runs no model itself."""
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.is_file():  # inside a container: the image is built already
        return []
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [d for d in deps if not d.startswith("xllamacpp")]


def class_options(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Every ``@app.cls`` option of both classes, from the environment."""
    s = load_settings(env)
    base = modal.Image.debian_slim(python_version="3.11").pip_install(*gateway_packages())
    gateway_image = base.env(s.env()).add_local_python_source("modelgarden")
    install = f"OLLAMA_VERSION={s.ollama_version} " if s.ollama_version else ""
    backend_image = (
        base.apt_install("curl", "ca-certificates", "zstd")
        .run_commands(f"curl -fsSL https://ollama.com/install.sh | {install}sh")
        .env(s.env())
        .add_local_python_source("modelgarden")
    )
    volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)
    secrets = [modal.Secret.from_name(s.gateway_secret)] if s.gateway_secret else []
    return {
        "gateway": {
            "image": gateway_image,
            "cpu": s.gateway_cpu,
            "memory": s.gateway_memory,
            "min_containers": s.gateway_min_containers,
            "timeout": s.ollama_timeout,
            "secrets": secrets,
        },
        "backend": {
            "image": backend_image,
            "gpu": s.ollama_gpu,
            "volumes": {s.ollama_models_path: volume},
            "timeout": s.ollama_timeout,
            "scaledown_window": s.ollama_scaledown,
            "min_containers": 0,
            "max_containers": s.ollama_max_containers,
        },
    }


SETTINGS = load_settings(os.environ)
OPTIONS = class_options(os.environ)
app = modal.App(APP_NAME)


@app.cls(**OPTIONS["backend"])
@modal.concurrent(max_inputs=SETTINGS.ollama_concurrency)
class OllamaBackend:
    """A GPU container running the model server over the models volume."""

    @modal.enter()
    def start(self) -> None:
        """Start the server, wait for its port, pull what the volume lacks, commit it."""
        settings = load_settings(os.environ)
        self.server = ModelServer(
            settings.ollama_server_command,
            Path(settings.ollama_models_path),
            parallel=settings.ollama_concurrency,
        )
        self.server.start()
        try:
            pulled = self.server.prepare(settings.models)
        except BaseException:
            self.server.stop()
            raise
        if pulled and not modal.is_local():
            modal.Volume.from_name(VOLUME_NAME).commit()

    @modal.exit()
    def stop(self) -> None:
        """Stop the server with the container."""
        self.server.stop()

    @modal.method()
    def proxy(self, call: dict[str, Any]) -> dict[str, Any]:
        """One request to the server, answered whole: status, headers, body."""
        return self.server.proxy(call)

    @modal.method()
    def stream(self, call: dict[str, Any]) -> Iterator[dict[str, Any] | bytes]:
        """One request to the server: its status and headers, then its body as it comes."""
        yield from self.server.stream(call)


def gateway_app(
    settings: DeploySettings, *, early_start: float = EARLY_START, max_waking: int = 64
) -> Any:
    """The gateway's ASGI app: ``garden serve``'s own, with the GPU class as its backend."""
    from modelgarden.api.app import create_app
    from modelgarden.api.early import EarlyStart
    from modelgarden.config import Settings
    from modelgarden.config.backends import BackendConfig, Timeouts

    backend = BackendConfig(
        name="gpu",
        kind="modal",
        urls=[f"modal://{APP_NAME}/OllamaBackend"],
        models=settings.models,
        scaledown=settings.ollama_scaledown,
        wake_timeout=settings.ollama_timeout,
        max_waking=max_waking,
        max_concurrency=settings.ollama_concurrency * settings.ollama_max_containers,
        timeouts=Timeouts(first_byte=settings.ollama_timeout, idle=300.0),
    )
    database = os.environ.get("GARDEN_DATABASE_URL", "")
    if settings.gateway_keys and not database.startswith(("postgresql://", "postgres://")):
        raise RuntimeError(EPHEMERAL_KEYS)
    garden = Settings(
        default_model="",
        models_dir=Path("/tmp/modelgarden-models"),
        backends=[backend],
        database_url=database,
        redis_url=os.environ.get("GARDEN_REDIS_URL", ""),
        ephemeral=True,  # the container's disk goes with it: no keys on a database there
    )
    return EarlyStart(create_app(garden), after=early_start)


@app.cls(**OPTIONS["gateway"])
@modal.concurrent(max_inputs=SETTINGS.gateway_concurrency)
class Gateway:
    """The always-warm CPU container serving the gateway."""

    @modal.asgi_app(requires_proxy_auth=SETTINGS.gateway_proxy_auth)
    def web(self) -> Any:
        """The gateway app, built from the settings baked into the image."""
        return gateway_app(load_settings(os.environ))
