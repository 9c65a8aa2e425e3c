"""The deployment API for service owners: deploy, query, status, undeploy.

``POST /deploy`` makes a model ready to answer: pulled into the store if it is missing,
loaded, and pinned (a negative ``keep_alive`` unless one is given). ``POST /query`` asks it
something (chat when ``messages`` are given, otherwise a completion of ``prompt``; not
streamed unless asked). ``GET /status`` shows the machine, the loaded models with their
runners and memory, and each backend's queue and health. ``DELETE /undeploy`` unloads a
model and, with ``delete``, removes it from the store.

Loading and unloading go through the backend's own Ollama API (an empty request with a
``keep_alive``), so a model on a remote Ollama daemon deploys the same way as a local one;
an OpenAI-style upstream has nothing to load, and its models are reported as available.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from modelgarden import __version__
from modelgarden.api.body import parse, validate
from modelgarden.api.dispatch import dispatch
from modelgarden.api.ollama.inference import incoming, keep_alive_of
from modelgarden.api.ollama.transfer import progress_response, puller
from modelgarden.api.openapi import body_schema
from modelgarden.api.state import app_state
from modelgarden.backends.base import Api, BackendRequest
from modelgarden.backends.local import LocalBackend
from modelgarden.errors import BadRequest, ModelNotFound
from modelgarden.gateway import Gateway, Route
from modelgarden.resources import machine
from modelgarden.store.names import ModelName
from modelgarden.wire.ollama import ChatRequest, GenerateRequest

router = APIRouter(tags=["deploy"])
JSON = "application/json"


class DeployRequest(BaseModel):
    """``POST /deploy``: the model, whether to pull it when missing, how long to keep it."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    pull: bool = True
    insecure: bool = False
    keep_alive: float | str | None = Field(
        default=None, description="Duration or seconds; default: pinned (never unloads)."
    )
    stream: bool = Field(default=False, description="Stream pull and load progress as NDJSON.")


class UndeployRequest(BaseModel):
    """``DELETE /undeploy``: the model, and whether to delete it from the store too."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    delete: bool = False


class QueryRequest(BaseModel):
    """``POST /query``: ``prompt`` or ``messages``, plus any generate or chat field."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    stream: bool = False


DEPLOY_EXAMPLE = {"model": "smollm2:135m", "pull": True, "keep_alive": -1}
QUERY_EXAMPLE = {
    "model": "smollm2:135m",
    "messages": [{"role": "user", "content": "Name three primary colours."}],
    "options": {"temperature": 0, "num_predict": 32},
}
UNDEPLOY_EXAMPLE = {"model": "smollm2:135m", "delete": False}
DEPLOYED_EXAMPLE = {
    "status": "success",
    "model": "smollm2:135m",
    "backend": "local",
    "pulled": False,
    "loaded": True,
    "load_duration": 412000000,
    "keep_alive": "forever",
}


def _example(example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {JSON: {"example": example}}}}


def _gateway(request: Request) -> Gateway:
    return app_state(request).gateway


async def _empty_generate(route: Route, keep_alive: float, raw_keep_alive: Any) -> None:
    """Load (or, with ``keep_alive`` 0, unload) a model through its backend's Ollama API."""
    body = {"model": route.model, "keep_alive": raw_keep_alive, "stream": False}
    request = BackendRequest(
        api=Api.OLLAMA,
        endpoint="generate",
        model=route.model,
        body=body,
        stream=False,
        start_ns=time.time_ns(),
        keep_alive=keep_alive,
    )
    response = await route.backend.send(request)
    try:
        async for _ in response.body:
            pass
    finally:
        await response.close()


async def _deploy(request: Request, req: DeployRequest) -> AsyncGenerator[dict[str, Any], None]:
    gateway = _gateway(request)
    given = keep_alive_of(req.keep_alive)
    seconds = math.inf if given is None else given
    pulled = False
    try:
        route = await gateway.route(req.model)
    except ModelNotFound:
        if not req.pull:
            raise
        async for record in puller(request).pull(req.model, insecure=req.insecure):
            if record.get("status") != "success":
                yield record
        pulled = True
        route = await gateway.route(req.model)
    loads = Api.OLLAMA in route.backend.apis
    yield {"status": "loading model" if loads else "checking model"}
    started = time.perf_counter_ns()
    if loads:
        await _empty_generate(route, seconds, -1 if math.isinf(seconds) else seconds)
    yield {
        "status": "success",
        "model": req.model,
        "backend": route.backend.name,
        "pulled": pulled,
        "loaded": loads,
        "load_duration": time.perf_counter_ns() - started if loads else 0,
        "keep_alive": "forever" if math.isinf(seconds) else seconds,
    }


@router.post(
    "/deploy",
    openapi_extra=body_schema(DeployRequest, DEPLOY_EXAMPLE),
    responses=_example(DEPLOYED_EXAMPLE),
)
async def deploy(request: Request) -> Response:
    """Pull the model if it is missing, load it and pin it (``keep_alive`` changes how long)."""
    req, _ = await parse(request, DeployRequest)
    ModelName.parse(req.model)
    return await progress_response(_deploy(request, req), stream=req.stream)


@router.post(
    "/query",
    openapi_extra=body_schema(QueryRequest, QUERY_EXAMPLE),
    responses=_example(
        {"model": "smollm2:135m", "message": {"role": "assistant", "content": "Red, blue..."}}
    ),
)
async def query(request: Request) -> Any:
    """Ask a deployed model: a chat with ``messages``, or a completion of ``prompt``."""
    req, data = await parse(request, QueryRequest)
    if (req.prompt is None) == (req.messages is None):
        raise BadRequest("give exactly one of prompt or messages", param="prompt")
    data = {**data, "stream": req.stream}
    parsed: ChatRequest | GenerateRequest
    if req.messages is not None:
        kind, parsed = "chat", validate(ChatRequest, data)
    else:
        kind, parsed = "completion", validate(GenerateRequest, data)
    return await dispatch(request, incoming(kind, req.model, data, req.stream, parsed.keep_alive))


def _local_models(local: LocalBackend) -> list[dict[str, Any]]:
    models = []
    for loaded in local.scheduler.loaded():
        expires = loaded.expires_wall()
        rss = [r.rss() for r in loaded.runners]
        runners = [
            {"pid": r.pid, "state": r.state.value, "port": r.port, "rss": m}
            for r, m in zip(loaded.runners, rss, strict=True)
        ]
        models.append(
            {
                "name": loaded.name,
                "backend": local.name,
                "context_length": loaded.spec.num_ctx,
                "memory_estimate": loaded.size,
                "memory_rss": sum(rss),
                "active": loaded.active,
                "keep_alive": None if math.isinf(loaded.keep_alive) else loaded.keep_alive,
                "expires_at": None if math.isinf(expires) else expires,
                "runners": runners,
            }
        )
    return models


@router.get("/status")
async def status(request: Request) -> Response:
    """Models loaded with their runners and memory, queue depths, backends, and the machine."""
    gateway = _gateway(request)
    local = gateway.local
    here = await asyncio.to_thread(machine, gateway.settings.models_dir)
    models = _local_models(local)  # scheduler state is read on the loop; /proc reads are µs
    remote = [b for b in gateway.backends if b is not local]
    for backend, running in zip(
        remote, await asyncio.gather(*(b.running() for b in remote)), strict=True
    ):
        models += [
            {"name": m.name, "backend": backend.name, "memory_estimate": m.size} for m in running
        ]
    body = {
        "version": __version__,
        "uptime": round(time.time() - gateway.started_at, 3),
        "models": models,
        "queue": {"waiting": local.scheduler.pending, "limit": local.scheduler.max_queue},
        "backends": gateway.describe(),
        "workers": _workers(request),
        "machine": here.to_dict(),
    }
    return Response(orjson.dumps(body), media_type=JSON)


def _workers(request: Request) -> list[dict[str, object]]:
    """This process's relay worker processes (``garden serve --workers N``), if it has any."""
    role = app_state(request).role
    return [] if role is None else role.describe()


@router.delete(
    "/undeploy",
    openapi_extra=body_schema(UndeployRequest, UNDEPLOY_EXAMPLE),
    responses=_example({"status": "success", "model": "smollm2:135m", "deleted": False}),
)
async def undeploy(request: Request) -> Response:
    """Unload the model now; with ``delete``, also remove it from the store."""
    req, _ = await parse(request, UndeployRequest)
    gateway = _gateway(request)
    route = await gateway.route(req.model)
    if req.delete and route.backend is not gateway.local:
        raise BadRequest(
            f"{req.model} is served by backend {route.backend.name!r}; "
            "only models in this gateway's store can be deleted",
            param="delete",
        )
    if Api.OLLAMA in route.backend.apis:
        await _empty_generate(route, 0.0, 0)
    if req.delete:
        await gateway.local.delete(route.model)
    body = {"status": "success", "model": req.model, "deleted": req.delete}
    return Response(orjson.dumps(body), media_type=JSON)
