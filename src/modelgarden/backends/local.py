"""The ``local`` backend: models from the store, answered by runner processes on this machine.

It behaves like an Ollama daemon: it applies a model's Modelfile defaults (system prompt,
template, parameters, messages), handles ``keep_alive`` and the empty load/unload requests,
and leases a runner slot from the :class:`Scheduler` for each request. Runners speak the
Ollama API, so their answers are relayed as bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import structlog

from modelgarden.backends.base import Api, BackendRequest, BackendResponse
from modelgarden.backends.http import iter_body, new_session, status_error
from modelgarden.backends.local_views import (
    capabilities,
    list_entry,
    load_record,
    ps_entry,
    show,
)
from modelgarden.config import Settings
from modelgarden.errors import RunnerFailed, UnsupportedCapability
from modelgarden.lifecycle.memory import MemoryBudget, MemoryEstimate, estimate
from modelgarden.lifecycle.process import LaunchSpec
from modelgarden.lifecycle.scheduler import Lease, Scheduler
from modelgarden.options import LOAD_OPTIONS, merge_parameters, validate_options
from modelgarden.store.default import seed_default_model
from modelgarden.store.gguf import GGUFInfo
from modelgarden.store.store import LocalModel, ModelStore
from modelgarden.wire.ollama import ListModel, PsModel, ShowResponse

log = structlog.get_logger(__name__)
NDJSON = "application/x-ndjson"
JSON = "application/json"


class LocalBackend:
    """Owns the model store, the scheduler and the HTTP connections to runner processes."""

    kind = "local"
    apis = frozenset({Api.OLLAMA})

    def __init__(self, settings: Settings, name: str = "local") -> None:
        self.name = name
        self.settings = settings
        self.store = ModelStore(settings.models_dir)
        self.scheduler = Scheduler(
            max_loaded=settings.max_loaded_models,
            num_parallel=settings.num_parallel,
            max_queue=settings.max_queue,
            default_keep_alive=settings.keep_alive,
            start_timeout=settings.runner_start_timeout,
            budget=MemoryBudget(settings.memory_limit),
        )
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Seed the default model into a new store and open the runner connection pool."""
        await asyncio.to_thread(seed_default_model, self.store, self.settings.default_model)
        self._session = new_session(connect_timeout=5.0)

    async def close(self) -> None:
        """Stop every runner and close connections."""
        await self.scheduler.shutdown()
        if self._session is not None:
            await self._session.close()

    # -- catalogue -------------------------------------------------------------------------

    async def model(self, name: str) -> LocalModel:
        """The installed model (cached after the first read); ``ModelNotFound`` if absent."""
        cached = self.store.peek(name)
        return cached if cached is not None else await asyncio.to_thread(self.store.get, name)

    async def gguf(self, model: LocalModel) -> GGUFInfo:
        """The model's GGUF header (cached)."""
        cached = self.store.peek_gguf(model)
        return cached if cached is not None else await asyncio.to_thread(self.store.gguf, model)

    async def list_models(self) -> list[ListModel]:
        models = await asyncio.to_thread(self.store.installed)
        return [list_entry(m) for m in models]

    async def has_model(self, model: str) -> bool:
        if self.store.peek(model) is not None:
            return True
        if self.store.known_missing(model):
            return False  # the common case for models of other backends: no thread, no I/O
        return await asyncio.to_thread(self.store.exists, model)

    async def show(self, model: str, verbose: bool = False) -> ShowResponse:
        local = await self.model(model)
        return show(local, await self.gguf(local), verbose)

    async def running(self) -> list[PsModel]:
        return [ps_entry(m) for m in self.scheduler.loaded()]

    async def delete(self, name: str) -> None:
        """Remove an installed model (unloading it first when idle) and its unshared blobs."""
        model = await self.model(name)
        for loaded in self.scheduler.loaded():
            if loaded.info.name == model.name and loaded.active == 0:
                await self.scheduler.unload_model(loaded)
        await asyncio.to_thread(self.store.delete, name)

    # -- inference -------------------------------------------------------------------------

    def launch_spec(self, model: LocalModel, info: GGUFInfo, options: dict[str, Any]) -> LaunchSpec:
        """How the runner for this model and these load-time options is started."""
        num_ctx = int(options.get("num_ctx") or self.settings.context_length)
        trained = info.context_length
        if trained:
            num_ctx = min(num_ctx, trained)
        return LaunchSpec(
            model_path=str(model.model_path),
            num_ctx=max(num_ctx, 64),
            num_batch=int(options.get("num_batch") or 512),
            num_thread=int(options.get("num_thread") or self.settings.threads),
            use_mmap=bool(options.get("use_mmap", True)),
            nice=self.settings.runner_nice,
        )

    @staticmethod
    def need(model: LocalModel, info: GGUFInfo, spec: LaunchSpec) -> MemoryEstimate:
        """The model's estimated memory need when started as ``spec``."""
        return estimate(info, model.size, spec.num_ctx, spec.num_batch)

    async def send(self, request: BackendRequest) -> BackendResponse:
        """Answer ``chat``, ``generate`` or ``embed`` from a runner."""
        model = await self.model(request.model)
        info = await self.gguf(model)
        caps = capabilities(model, info)
        needed = "embedding" if request.endpoint == "embed" else "completion"
        if needed == "completion" and needed not in caps:
            raise UnsupportedCapability(f'"{request.model}" does not support {request.endpoint}')
        options = merge_parameters(model.parameters, validate_options(request.body.get("options")))
        spec = self.launch_spec(model, info, options)
        if self._is_empty(request):
            return await self._load_or_unload(request, model, info, spec)
        need = self.need(model, info, spec)
        lease = await self.scheduler.acquire(spec, model.name, model, need, request.keep_alive)
        try:
            body = self._runner_body(request, model, options)
            return await self._forward(request, lease, body)
        except BaseException:
            self.scheduler.release(lease)
            raise

    @staticmethod
    def _is_empty(request: BackendRequest) -> bool:
        body = request.body
        if request.endpoint == "chat":
            return not body.get("messages")
        if request.endpoint == "generate":
            return not body.get("prompt") and not body.get("images") and not body.get("suffix")
        return False

    async def _load_or_unload(
        self, request: BackendRequest, model: LocalModel, info: GGUFInfo, spec: LaunchSpec
    ) -> BackendResponse:
        """An empty prompt loads the model; with ``keep_alive: 0`` it unloads it."""
        if request.keep_alive == 0:
            loaded = self.scheduler.find(spec)
            if loaded is not None:
                if loaded.active == 0:
                    await self.scheduler.unload_model(loaded)
                else:
                    self.scheduler.set_keep_alive(spec, 0)
            reason = "unload"
        else:
            need = self.need(model, info, spec)
            lease = await self.scheduler.acquire(spec, model.name, model, need, request.keep_alive)
            self.scheduler.release(lease)
            reason = "load"
        record = orjson.dumps(
            load_record(request.body.get("model") or model.name, request.endpoint, reason)
        )
        media = NDJSON if request.stream else JSON

        async def one() -> AsyncIterator[bytes]:
            yield record + (b"\n" if request.stream else b"")

        return BackendResponse(200, media, one(), Api.OLLAMA)

    def _runner_body(
        self, request: BackendRequest, model: LocalModel, options: dict[str, Any]
    ) -> dict[str, Any]:
        """The request with the model's defaults applied: what the runner receives."""
        body = {k: v for k, v in request.body.items() if k != "keep_alive"}
        body["options"] = {k: v for k, v in options.items() if k not in LOAD_OPTIONS}
        body["stream"] = request.stream
        if request.endpoint == "chat":
            messages = list(body.get("messages") or [])
            if model.system and not any(m.get("role") == "system" for m in messages):
                messages.insert(0, {"role": "system", "content": model.system})
            body["messages"] = [*model.messages, *messages]
            body["template"] = model.template
        elif request.endpoint == "generate":
            body["system"] = body.get("system") or model.system
            body["template"] = body.get("template") or model.template
        return body

    async def _forward(
        self, request: BackendRequest, lease: Lease, body: dict[str, Any]
    ) -> BackendResponse:
        assert self._session is not None
        headers = {
            "content-type": JSON,
            "x-garden-start-ns": str(request.start_ns),
            "x-garden-load-ns": str(lease.load_ns),
        }
        url = f"{lease.base_url}/api/{request.endpoint}"
        try:
            response = await self._session.post(url, data=orjson.dumps(body), headers=headers)
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise RunnerFailed(f"llama runner process is not answering: {exc}") from None
        if response.status != 200:
            raw = await response.read()
            response.release()
            raise status_error(response.status, raw, RunnerFailed)
        released = False

        async def close() -> None:
            nonlocal released
            if not released:
                released = True
                response.close()
                self.scheduler.release(lease)

        media = NDJSON if request.stream and request.endpoint != "embed" else JSON
        body_iter = iter_body(response, RunnerFailed, "llama runner process")
        return BackendResponse(200, media, body_iter, Api.OLLAMA, close=close)
