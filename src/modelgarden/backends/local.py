"""The ``local`` backend: models from the store, answered by runner processes on this machine.

It behaves like an Ollama daemon: it applies a model's Modelfile defaults (system prompt,
template, parameters, messages), checks capabilities, handles ``keep_alive`` and the empty
load/unload requests, and leases a slot of the model's runner (llama.cpp's server engine)
from the :class:`Scheduler` for each request; :class:`ModelEngine` renders the prompt and
turns the engine's stream into Ollama records.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import structlog

from modelgarden.backends.base import Api, BackendRequest, BackendResponse, described
from modelgarden.backends.local_views import (
    capabilities,
    fim_tokens,
    is_embedding_model,
    list_entry,
    load_record,
    model_thinking_tags,
    ps_entry,
    show,
)
from modelgarden.config import Settings
from modelgarden.engine.client import EngineClient
from modelgarden.engine.ollama import ModelEngine, ModelTraits
from modelgarden.engine.records import join
from modelgarden.errors import BadRequest, UnsupportedCapability
from modelgarden.lifecycle.memory import MemoryBudget, MemoryEstimate, estimate
from modelgarden.lifecycle.process import LaunchSpec, RunnerProcess
from modelgarden.lifecycle.scheduler import Lease, Scheduler
from modelgarden.model_options import LOAD_OPTIONS, merge_parameters, validate_options
from modelgarden.resources import offload_memory
from modelgarden.store.default import seed_default_model
from modelgarden.store.gguf import GGUFInfo
from modelgarden.store.store import LocalModel, ModelStore
from modelgarden.templates.thinking import think_value
from modelgarden.upstream_http import new_session
from modelgarden.wire.ollama import ListModel, PsModel, ShowResponse

if TYPE_CHECKING:
    from modelgarden.telemetry.tracing import LoadWindow, Upstream

log = structlog.get_logger(__name__)
#: Seconds an idle connection to a runner is kept: under the 5 s after which llama.cpp's
#: HTTP server closes it, so a request never picks a connection closed under it.
RUNNER_KEEPALIVE = 4.0
#: Bounds of the load options a request may set (``num_thread`` by this machine's cores).
CORES = os.cpu_count() or 1
MAX_BATCH = 8192
MAX_LAYERS = 1024
MAX_GPUS = 64
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
            max_queue=settings.max_queue,
            default_keep_alive=settings.keep_alive,
            start_timeout=settings.runner_start_timeout,
            budget=MemoryBudget(settings.memory_limit),
        )
        self._session: aiohttp.ClientSession | None = None
        self._clients: weakref.WeakKeyDictionary[RunnerProcess, EngineClient] = (
            weakref.WeakKeyDictionary()
        )
        #: Generative models asked for embeddings: their runners start with embeddings on.
        self._embedders: set[str] = set()
        #: Free memory of the GPU the engine offloads to (0: it runs on the CPU).
        self._vram = 0
        self._clamped: set[tuple[str, int]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Seed the default model into a new store, ask the engine for GPUs it can use, and
        open the runner connection pool."""
        await asyncio.to_thread(seed_default_model, self.store, self.settings.default_model)
        self._vram = await asyncio.to_thread(offload_memory, self.settings.llama_server)
        # Idle connections to runners are dropped before llama.cpp's server (5 s) drops them.
        self._session = new_session(connect_timeout=5.0, keepalive=RUNNER_KEEPALIVE)

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
        return await asyncio.to_thread(self._entries)

    def _entries(self) -> list[ListModel]:
        """Every installed model's ``/api/tags`` entry (GGUF headers are read once, cached)."""
        entries = []
        for model in self.store.installed():
            try:
                caps = capabilities(model, self.store.gguf(model))
            except (OSError, ValueError):  # an unreadable GGUF still lists, as it is
                caps = []
            entries.append(list_entry(model, caps))
        return entries

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

    def upstream_id(self, model: str) -> str:
        return model  # the store's own name

    def describe(self) -> dict[str, Any]:
        """The loaded models with their runners and load, the scheduler's queue counts."""
        scheduler = self.scheduler
        models = scheduler.loaded()
        return described(
            self,
            up=True,
            loaded=len(models),
            models=[
                {"name": m.name, "size": m.size, "active": m.active, "runners": len(m.runners)}
                for m in models
            ],
            active=sum(m.active for m in models),
            waiting=scheduler.pending,
            rejected=scheduler.rejected,
        )

    async def delete(self, name: str) -> None:
        """Remove an installed model (unloading it first when idle) and its unshared blobs."""
        model = await self.model(name)
        for loaded in self.scheduler.loaded():
            if loaded.info.name == model.name and loaded.active == 0:
                await self.scheduler.unload_model(loaded)
        await asyncio.to_thread(self.store.delete, name)

    # -- inference -------------------------------------------------------------------------

    def launch_spec(
        self, model: LocalModel, info: GGUFInfo, options: dict[str, Any], shift: bool = True
    ) -> LaunchSpec:
        """How the runner for this model and these load-time options is started."""
        num_ctx = int(options.get("num_ctx") or self.settings.context_length)
        trained = info.context_length
        if trained:
            num_ctx = min(num_ctx, trained)
        embedder = is_embedding_model(info)
        return LaunchSpec(
            model_path=str(model.model_path),
            num_ctx=max(num_ctx, 64),
            parallel=self.settings.num_parallel,
            num_batch=self._bounded("num_batch", options.get("num_batch") or 512, 1, MAX_BATCH),
            num_thread=self._bounded(
                "num_thread", options.get("num_thread") or self.settings.threads, 1, CORES
            ),
            num_gpu=self._bounded("num_gpu", options.get("num_gpu", -1), -1, MAX_LAYERS),
            main_gpu=self._bounded("main_gpu", options.get("main_gpu", -1), -1, MAX_GPUS),
            use_mmap=bool(options.get("use_mmap", True)),
            projector=str(model.projector_path or ""),
            embedding=embedder or str(model.model_path) in self._embedders,
            pooling="" if embedder else "mean",
            context_shift=shift,
            nice=self.settings.runner_nice,
            server=self.settings.llama_server,
        )

    def _bounded(self, name: str, value: Any, low: int, high: int) -> int:
        """A load option within what this machine can use (a request cannot start a runner
        with 64 threads on 2 cores, say); clamping is logged once per value."""
        wanted = int(value)
        kept = min(max(wanted, low), high)
        if kept != wanted and (name, wanted) not in self._clamped:
            self._clamped.add((name, wanted))
            log.info("load option clamped", option=name, asked=wanted, used=kept)
        return kept

    def need(self, model: LocalModel, info: GGUFInfo, spec: LaunchSpec) -> MemoryEstimate:
        """The model's estimated memory need when started as ``spec``: with a GPU the engine
        can use, ``num_gpu`` layers (all by default) go to VRAM as far as it has room."""
        layers = int(info.arch_value("block_count", 0) or 0) + 1
        gpu_layers = spec.num_gpu if spec.num_gpu >= 0 else (layers if self._vram else 0)
        need = estimate(
            info,
            model.size,
            spec.num_ctx,
            spec.num_batch,
            parallel=spec.parallel,
            gpu_layers=gpu_layers,
        )
        if need.vram > self._vram and spec.num_gpu < 0:  # the engine fits what it can
            need = replace(need, vram=self._vram)
        return need

    def _check(self, request: BackendRequest, model: LocalModel, caps: list[str]) -> None:
        """Refuse, before anything loads, what the model cannot do (Ollama's 400s); ``think``
        asked of a model that cannot think is dropped instead when the request says
        ``relax_think``."""
        body, name = request.body, request.model
        if request.endpoint != "embed" and "completion" not in caps:
            raise UnsupportedCapability(f'"{name}" does not support {request.endpoint}')
        if body.get("think") not in (None, False) and "thinking" not in caps:
            think_value(body.get("think"))  # an invalid value is its own error
            if not request.relax_think:
                raise UnsupportedCapability(f'"{name}" does not support thinking')
            request.body = {k: v for k, v in body.items() if k != "think"}  # as Ollama does
        images = body.get("images") or [
            i
            for m in body.get("messages") or []
            if isinstance(m, dict)
            for i in m.get("images") or []
        ]
        if images and "vision" not in caps:
            raise UnsupportedCapability(f'"{name}" does not support images')
        if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
            raise BadRequest("raw mode does not support template, system, or context")

    async def send(self, request: BackendRequest) -> BackendResponse:
        """Answer ``chat``, ``generate`` or ``embed`` from the model's runner."""
        model = await self.model(request.model)
        info = await self.gguf(model)
        caps = capabilities(model, info)
        self._check(request, model, caps)
        if request.endpoint == "embed" and "embedding" not in caps:
            self._embedders.add(str(model.model_path))  # its runner embeds from now on
        options = merge_parameters(model.parameters, validate_options(request.body.get("options")))
        spec = self.launch_spec(model, info, options, request.body.get("shift") is not False)
        if self._is_empty(request):
            return await self._load_or_unload(request, model, info, spec)
        need = self.need(model, info, spec)
        acquiring = self.scheduler.acquire(spec, model.name, model, need, request.keep_alive)
        trace = request.trace
        upstream: Upstream | None = None
        if trace is None:
            lease = await acquiring
        else:
            lease = await trace.queued(acquiring, self.name, _load_window)
            upstream = trace.upstream(self.name)
        try:
            engine = await self._engine(lease, model, info)
            body = self._runner_body(request, model, options)
            if request.endpoint == "embed":
                result = await engine.embed(body, request.start_ns, lease.load_ns, spec.batch)
                self.scheduler.release(lease)
                if upstream is not None:
                    upstream.answered(200, lease.base_url)
                    upstream.end()
                return _one(orjson.dumps(result), JSON)
            answer = engine.chat if request.endpoint == "chat" else engine.generate
            records = await answer(body, lease.load_ns)
            if upstream is not None:
                upstream.answered(200, lease.base_url)
        except BaseException as exc:
            self.scheduler.release(lease)
            if upstream is not None:
                upstream.failed(exc)
            raise
        return self._respond(request, lease, records, upstream)

    async def _engine(self, lease: Lease, model: LocalModel, info: GGUFInfo) -> ModelEngine:
        """The model's engine on the leased runner (its properties read once per runner)."""
        assert self._session is not None
        client = self._clients.get(lease.runner)
        if client is None:
            client = self._clients[lease.runner] = EngineClient(self._session, lease.base_url)
        traits = ModelTraits(
            jinja_template=info.chat_template,
            add_bos=bool(
                info.metadata.get(
                    "tokenizer.ggml.add_bos_token",
                    info.metadata.get("tokenizer.ggml.model") == "llama",
                )
            ),
            thinking_tags=model_thinking_tags(model, info),
            fim=fim_tokens(info),
        )
        return ModelEngine(client, traits, await client.props())

    def _respond(
        self,
        request: BackendRequest,
        lease: Lease,
        records: AsyncIterator[dict[str, Any]],
        upstream: Upstream | None = None,
    ) -> BackendResponse:
        released = False

        async def close() -> None:
            nonlocal released
            if not released:
                released = True
                await records.aclose()  # type: ignore[attr-defined]
                self.scheduler.release(lease)
                if upstream is not None:
                    upstream.end()

        if request.stream:
            return BackendResponse(200, NDJSON, _ndjson(records), Api.OLLAMA, close=close)
        return BackendResponse(200, JSON, _joined(records), Api.OLLAMA, close=close)

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
        if request.stream:
            return _one(record + b"\n", NDJSON)
        return _one(record, JSON)

    def _runner_body(
        self, request: BackendRequest, model: LocalModel, options: dict[str, Any]
    ) -> dict[str, Any]:
        """The request with the model's defaults applied: what the engine answers."""
        body = {k: v for k, v in request.body.items() if k != "keep_alive"}
        body["options"] = {k: v for k, v in options.items() if k not in LOAD_OPTIONS}
        body["_start_ns"] = request.start_ns
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


def _load_window(lease: Lease) -> LoadWindow | None:
    """When the runner a request waited for loaded, for its ``garden.runner.load`` span."""
    window = lease.load_window
    if window is None:
        return None
    spec, runner = lease.model.spec, lease.runner
    attributes = {
        "gen_ai.request.model": lease.model.name,
        "garden.runner.pid": runner.pid or 0,
        "garden.runner.num_ctx": spec.num_ctx,
        "garden.runner.parallel": spec.parallel,
    }
    return (*window, attributes)


def _one(data: bytes, media: str) -> BackendResponse:
    async def body() -> AsyncIterator[bytes]:
        yield data

    return BackendResponse(200, media, body(), Api.OLLAMA)


async def _ndjson(records: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for record in records:
        yield orjson.dumps(record) + b"\n"


async def _joined(records: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    yield orjson.dumps(join([record async for record in records]))
