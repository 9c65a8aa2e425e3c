"""Stand-ins for the fast tier: a clock that moves only when told, a backend in memory, an
Ollama daemon in the test's own event loop, and the app built over them.

Nothing here starts a process: tests built on them run the app in-process
(``httpx.ASGITransport``, through its own lifespan) and finish in milliseconds.
:class:`FakeUpstream` is the one piece with a socket (loopback, same event loop): it lets
the real remote backend (its replicas, breakers, limiter, retries) run unchanged.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import structlog
from aiohttp import web

from modelgarden.api.app import FastPath, create_app
from modelgarden.backends.base import Api, Backend, BackendRequest, BackendResponse, described
from modelgarden.backends.remote import OllamaBackend
from modelgarden.config import Settings, load_settings
from modelgarden.errors import GardenError, ModelNotFound
from modelgarden.gateway import Gateway
from modelgarden.security.keys import KeyRing
from modelgarden.store.names import normalize
from modelgarden.wire.ollama import ListModel, ModelDetails, PsModel, ShowResponse

WHEN = datetime(2030, 1, 1, tzinfo=UTC)
#: The tokens each answer below counts (prompt and completion): what key limits spend.
PROMPT_TOKENS, COMPLETION_TOKENS = 3, 1


@dataclass
class FakeClock:
    """Monotonic seconds that move only when told to."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chat_lines(content: str, model: str = "m") -> list[dict[str, Any]]:
    """An Ollama chat stream answering ``content``: one piece, then the final record."""
    return [
        {"model": model, "created_at": "2030-01-01T00:00:00Z",
         "message": {"role": "assistant", "content": content}, "done": False},
        {"model": model, "created_at": "2030-01-01T00:00:00Z",
         "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
         "prompt_eval_count": PROMPT_TOKENS, "eval_count": COMPLETION_TOKENS},
    ]  # fmt: skip


def chat_answer(content: str, model: str = "m") -> dict[str, Any]:
    """The same answer as :func:`chat_lines`, not streamed: one object."""
    first, last = chat_lines(content, model)
    return {**last, "message": first["message"]}


def ollama_body(content: str, model: str, stream: bool) -> list[bytes]:
    """An Ollama chat answer's bytes, as a daemon sends them: one NDJSON line per record
    when streamed, else one object."""
    if not stream:
        return [orjson.dumps(chat_answer(content, model))]
    return [orjson.dumps(line) + b"\n" for line in chat_lines(content, model)]


@dataclass
class FakeBackend:
    """An Ollama-speaking backend in memory: serves ``models``, answers each chat with its
    name (so a test sees who answered), raises ``fail`` while it is set, waits for ``gate``
    (when set) before answering, and breaks its stream with ``cut`` after the first line."""

    name: str
    models: list[str]
    kind: str = "fake"
    apis: frozenset[Api] = frozenset({Api.OLLAMA})
    fail: GardenError | None = None
    cut: GardenError | None = None
    gate: asyncio.Event | None = None
    sent: list[BackendRequest] = field(default_factory=list)
    #: Set when a request has arrived (and waits for ``gate``, if set).
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @property
    def names(self) -> list[str]:
        """Its models' names, the Ollama way (``m`` is ``m:latest``)."""
        return [normalize(m) for m in self.models]

    async def list_models(self) -> list[ListModel]:
        return [
            ListModel(name=m, model=m, modified_at=WHEN, size=0, digest="0",
                      details=ModelDetails(format="api"))
            for m in self.names
        ]  # fmt: skip

    async def has_model(self, model: str) -> bool:
        return normalize(model) in self.names

    async def show(self, model: str, verbose: bool = False) -> ShowResponse:
        if not await self.has_model(model):
            raise ModelNotFound(model)
        details = ModelDetails(format="api")
        return ShowResponse(details=details, model_info={}, capabilities=[], modified_at=WHEN)

    async def running(self) -> list[PsModel]:
        return []

    def upstream_id(self, model: str) -> str:
        return model

    def describe(self) -> dict[str, Any]:
        return described(self, up=self.fail is None, active=0, waiting=0, rejected=0)

    async def send(self, request: BackendRequest) -> BackendResponse:
        self.sent.append(request)
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        parts = ollama_body(f"from {self.name}", request.model, request.stream)
        cut = self.cut

        async def body() -> AsyncIterator[bytes]:
            for number, part in enumerate(parts):
                if cut is not None and number == 1:
                    raise cut
                yield part

        media = "application/x-ndjson" if request.stream else "application/json"
        return BackendResponse(200, media, body(), Api.OLLAMA)


@dataclass
class FakeUpstream:
    """An Ollama daemon's ``/api/chat`` on loopback, in the test's event loop: answers with
    its name, or with ``status`` (an error body) while that is not 200, waits for ``hold``
    when set, and closes the connection after the first line while ``cut`` is set.

    ``received`` holds each request body, in order (the model the gateway asked for).
    """

    name: str
    status: int = 200
    cut: bool = False
    hold: asyncio.Event | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> FakeUpstream:
        app = web.Application()
        app.router.add_post("/api/chat", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        self.received.append(body)
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.status != 200:
            return web.json_response({"error": f"{self.name} failed"}, status=self.status)
        stream = bool(body.get("stream", True))
        parts = ollama_body(f"from {self.name}", str(body.get("model")), stream)
        response = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(parts[0])
        if self.cut:
            assert request.transport is not None
            request.transport.close()
            return response
        for part in parts[1:]:
            await response.write(part)
        await response.write_eof()
        return response


@asynccontextmanager
async def upstream(name: str, **behaviour: Any) -> AsyncIterator[FakeUpstream]:
    """A started :class:`FakeUpstream`, closed afterwards."""
    server = await FakeUpstream(name, **behaviour).start()
    try:
        yield server
    finally:
        if server.hold is not None:  # a test that failed while it held a request
            server.hold.set()
        await server.close()


def fast_settings(tmp_path: Path, toml: str = "", **overrides: Any) -> Settings:
    """Settings as a user's would be: ``toml`` as their ``garden.toml`` (backends,
    fallbacks), a model store and database of their own under ``tmp_path``."""
    config: Path | None = None
    if toml:
        config = tmp_path / "garden.toml"
        config.write_text(toml, encoding="utf-8")
    given: dict[str, Any] = {"database_url": "", "redis_url": "", **overrides}
    return load_settings(config, models_dir=tmp_path / "models", **given)


@dataclass
class Garden:
    """The app running in-process, and a client that speaks to it."""

    app: FastPath
    client: httpx.AsyncClient

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway

    @property
    def keys(self) -> KeyRing:
        keys: KeyRing = self.app.state.keys
        return keys


@asynccontextmanager
async def fast_app(
    settings: Settings, backends: list[Backend], clock: FakeClock | None = None
) -> AsyncIterator[Garden]:
    """The gateway's app over ``backends``, started and stopped by its own lifespan, with an
    ``httpx`` client on it; ``clock``: what per-key limits read the time from."""
    structlog.reset_defaults()  # an earlier test may have bound logging to a closed stream
    app = create_app(settings, Gateway(settings, backends), clock=clock or time.monotonic)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:11434"
    )
    try:
        async with app.full.router.lifespan_context(app.full), client:
            yield Garden(app, client)
    finally:
        gc.unfreeze()  # the lifespan froze what the process held: let this test's go


@asynccontextmanager
async def replica_pair(
    tmp_path: Path, first: FakeUpstream, second: FakeUpstream, *, retries: int
) -> AsyncIterator[Garden]:
    """The app over one real ``ollama`` backend, ``pair``, whose two replicas are ``first``
    and ``second`` (both serving ``m``; no health checks, ``retries`` attempts beyond the
    first)."""
    toml = f"""
[[backends]]
name = "pair"
kind = "ollama"
urls = ["{first.url}", "{second.url}"]
models = ["m"]
health_interval = 0
retries = {retries}
"""
    settings = fast_settings(tmp_path, toml)
    async with fast_app(settings, [OllamaBackend(settings.backends[0])]) as garden:
        yield garden
