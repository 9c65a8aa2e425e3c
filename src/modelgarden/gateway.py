"""The serving layer under the thin API routers: backends, and which one serves a model.

The routers parse and validate; the :class:`Gateway` decides where a request goes and
collects catalogue answers (tags, show, ps) across backends, each model listed once (the
first backend that lists a name serves it). A model's fallbacks (``[fallbacks]`` in
``garden.toml``) are tried in order when its own backend is down, open or full.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from modelgarden.backends.base import Backend
from modelgarden.backends.local import LocalBackend
from modelgarden.backends.modal import ModalBackend
from modelgarden.backends.remote import (
    AnthropicBackend,
    OllamaBackend,
    OpenAIBackend,
    display_name,
)
from modelgarden.config import Settings
from modelgarden.config.backends import BackendConfig
from modelgarden.errors import ModelNotFound
from modelgarden.store.names import normalize
from modelgarden.store.store import ModelStore
from modelgarden.wire.ollama import ListModel, PsModel, ShowResponse

REMOTE_KINDS = {
    "ollama": OllamaBackend,
    "openai": OpenAIBackend,
    "anthropic": AnthropicBackend,
    "modal": ModalBackend,
}


@dataclass(frozen=True)
class Route:
    """Where one model's requests go: the backend and the name it knows the model by."""

    backend: Backend
    model: str


def build_backends(settings: Settings, local: Backend) -> list[Backend]:
    """The configured backends in order; ``local`` first unless a table places it."""
    backends: list[Backend] = []
    configs: list[BackendConfig] = list(settings.backends)
    if not any(c.kind == "local" for c in configs):
        backends.append(local)
    for config in configs:
        if config.kind == "local":
            local.name = config.name
            backends.append(local)
        else:
            backends.append(REMOTE_KINDS[config.kind](config))
    return backends


class Gateway:
    """Owns the configured backends and routes models to them."""

    def __init__(self, settings: Settings, backends: list[Backend] | None = None) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.backends: list[Backend] = backends or build_backends(settings, self.local)
        self.fallbacks = {
            normalize(model): [normalize(f) for f in targets]
            for model, targets in settings.fallbacks.items()
        }

    @cached_property
    def local(self) -> LocalBackend:
        """The local runners' backend (made when first asked for: a relay worker's gateway,
        built over other backends, never makes one)."""
        return LocalBackend(self.settings)

    @property
    def store(self) -> ModelStore:
        """The model store: what ``pull``, ``create``, ``copy`` and ``delete`` change."""
        return self.local.store

    async def start(self) -> None:
        """Start every backend."""
        self.started_at = time.time()
        await asyncio.gather(*(b.start() for b in self.backends))

    async def close(self) -> None:
        """Stop every backend (runners included)."""
        await asyncio.gather(*(b.close() for b in self.backends), return_exceptions=True)

    def backend(self, name: str) -> Backend | None:
        """A backend by its configured name."""
        return next((b for b in self.backends if b.name == name), None)

    async def route(self, model: str) -> Route:
        """The backend that serves ``model``; :class:`ModelNotFound` when none does."""
        name = normalize(model)
        for backend in self.backends:
            if await backend.has_model(name):
                return Route(backend, backend.upstream_id(name))
        raise ModelNotFound(model)

    async def routes(self, model: str) -> list[Route]:
        """The model's own route, then its fallbacks' routes (those that exist)."""
        chain = [model, *self.fallbacks.get(display_name(model) or model, [])]
        found: list[Route] = []
        for name in chain:
            try:
                found.append(await self.route(name))
            except ModelNotFound:
                continue
        if not found:
            raise ModelNotFound(model)
        return found

    async def list_models(self) -> list[ListModel]:
        """The union of every backend's models, each name once (first backend wins)."""
        return [entry for _, entry in await self.catalogue()]

    async def catalogue(self) -> list[tuple[Backend, ListModel]]:
        """Every backend's models with the backend serving each, each name once."""
        seen: set[str] = set()
        out: list[tuple[Backend, ListModel]] = []
        lists = await asyncio.gather(*(b.list_models() for b in self.backends))
        for backend, models in zip(self.backends, lists, strict=True):
            for entry in models:
                if entry.name not in seen:
                    seen.add(entry.name)
                    out.append((backend, entry))
        return out

    async def show(self, model: str, verbose: bool = False) -> ShowResponse:
        """``/api/show`` from the backend serving the model."""
        route = await self.route(model)
        return await route.backend.show(route.model, verbose)

    def describe(self) -> list[dict[str, Any]]:
        """Each backend's description in routing order (:meth:`Backend.describe`)."""
        return [b.describe() for b in self.backends]

    async def running(self) -> list[PsModel]:
        """Loaded models across backends."""
        lists = await asyncio.gather(*(b.running() for b in self.backends))
        return [entry for models in lists for entry in models]
