"""A relay worker's gateway: the remote backends it relays itself, and the primary's local
backend standing in the local one's place (its requests go to the primary)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from modelgarden.api.state import ForwardToPrimary
from modelgarden.backends.base import Api, BackendRequest, BackendResponse, described
from modelgarden.config import Settings
from modelgarden.errors import ModelNotFound
from modelgarden.gateway import Gateway, Route, build_backends
from modelgarden.store.names import normalize
from modelgarden.store.store import ModelStore
from modelgarden.wire.ollama import ListModel, PsModel, ShowResponse

#: Seconds a model found missing from the store is believed missing (the primary may pull it).
MISSING_FOR = 2.0


class PrimaryLocal:
    """In a relay worker, the primary's local backend: it reads the shared model store to
    tell which models are local (so routing agrees with the primary's), and hands their
    requests to the primary."""

    kind = "local"
    apis = frozenset({Api.OLLAMA})

    def __init__(self, settings: Settings, name: str = "local") -> None:
        self.name = name
        self.store = ModelStore(settings.models_dir)
        self._missing: dict[str, float] = {}

    async def start(self) -> None:
        """Nothing to start: the primary owns the runners."""

    async def close(self) -> None:
        """Nothing to stop."""

    async def list_models(self) -> list[ListModel]:
        return []  # catalogue routes are the primary's

    async def has_model(self, model: str) -> bool:
        if self.store.peek(model) is not None:
            return True
        now = time.monotonic()
        if self._missing.get(model, 0.0) > now:
            return False
        try:
            await asyncio.to_thread(self.store.get, model)
        except ModelNotFound:
            if len(self._missing) > 4096:
                self._missing.clear()
            self._missing[model] = now + MISSING_FOR
            return False
        return True

    async def show(self, model: str, verbose: bool = False) -> ShowResponse:
        raise ForwardToPrimary

    async def running(self) -> list[PsModel]:
        return []

    async def send(self, request: BackendRequest) -> BackendResponse:
        raise ForwardToPrimary

    def upstream_id(self, model: str) -> str:
        return model

    def describe(self) -> dict[str, Any]:
        """Nothing known here: the primary's own ``/garden/backends`` has the runners."""
        return described(self, up=True, active=0, waiting=0, rejected=0)


class WorkerGateway(Gateway):
    """A relay worker's gateway: the configured remote backends, :class:`PrimaryLocal` in
    the local backend's place, and the primary as the answer for any model no backend
    here knows (it may have been pulled a moment ago; the primary answers 404 if not)."""

    def __init__(self, settings: Settings) -> None:
        self.primary_local = PrimaryLocal(settings)
        super().__init__(settings, build_backends(settings, self.primary_local))

    async def routes(self, model: str) -> list[Route]:
        try:
            return await super().routes(model)
        except ModelNotFound:
            return [Route(self.primary_local, normalize(model))]
