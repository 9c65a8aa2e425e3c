"""The serving layer under the thin API routers: backends, and which one serves a model.

The routers parse and validate; the :class:`Gateway` decides where a request goes and
collects catalogue answers (tags, show, ps) across backends, each model listed once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from modelgarden.backends.base import Backend
from modelgarden.backends.local import LocalBackend
from modelgarden.config import Settings
from modelgarden.errors import ModelNotFound
from modelgarden.store.names import normalize
from modelgarden.wire.ollama import ListModel, PsModel, ShowResponse


@dataclass(frozen=True)
class Route:
    """Where one model's requests go: the backend and the name it knows the model by."""

    backend: Backend
    model: str


class Gateway:
    """Owns the configured backends and routes models to them."""

    def __init__(self, settings: Settings, backends: list[Backend] | None = None) -> None:
        self.settings = settings
        self.local = LocalBackend(settings)
        self.backends: list[Backend] = [self.local, *(backends or [])]

    async def start(self) -> None:
        """Start every backend."""
        await asyncio.gather(*(b.start() for b in self.backends))

    async def close(self) -> None:
        """Stop every backend (runners included)."""
        await asyncio.gather(*(b.close() for b in self.backends), return_exceptions=True)

    async def route(self, model: str) -> Route:
        """The backend that serves ``model``; :class:`ModelNotFound` when none does."""
        name = normalize(model)
        for backend in self.backends:
            if await backend.has_model(name):
                return Route(backend, name)
        raise ModelNotFound(model)

    async def list_models(self) -> list[ListModel]:
        """The union of every backend's models, each name once (first backend wins)."""
        seen: set[str] = set()
        out: list[ListModel] = []
        for models in await asyncio.gather(*(b.list_models() for b in self.backends)):
            for entry in models:
                if entry.name not in seen:
                    seen.add(entry.name)
                    out.append(entry)
        return out

    async def show(self, model: str, verbose: bool = False) -> ShowResponse:
        """``/api/show`` from the backend serving the model."""
        route = await self.route(model)
        return await route.backend.show(route.model, verbose)

    async def running(self) -> list[PsModel]:
        """Loaded models across backends."""
        lists = await asyncio.gather(*(b.running() for b in self.backends))
        return [entry for models in lists for entry in models]
