"""The Anthropic Messages routes: thin, over the same dispatch as ``/api`` and ``/v1``.

``x-api-key`` is read as a gateway key by ``security/auth.py``, and ``anthropic-version`` is
accepted (there is one version); ``anthropic-beta`` goes on to an Anthropic upstream when
the request is relayed as it is, never the client's key.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from modelgarden.api.body import read_json, validate
from modelgarden.api.dispatch import Incoming, dispatch
from modelgarden.api.ollama.inference import keep_alive_of
from modelgarden.api.openapi import body_schema
from modelgarden.backends.base import Api
from modelgarden.store.names import ModelName
from modelgarden.translate import anthropic as an
from modelgarden.wire.anthropic import CountTokensRequest, MessagesRequest

router = APIRouter(prefix="/v1", tags=["anthropic"])
#: Client headers passed on to an Anthropic upstream on a native relay.
PASSED_HEADERS = ("anthropic-beta",)

EXAMPLE = {
    "model": "smollm2:135m",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Hello!"}],
}


async def _incoming(request: Request, wire: type[BaseModel], kind: str) -> Incoming:
    data = await read_json(request)
    validate(wire, data)
    req = an.request_in(data)  # validates the mapping, raises 400s
    ModelName.parse(req.model)
    headers = {h: v for h in PASSED_HEADERS if (v := request.headers.get(h))}
    return Incoming(
        api=Api.ANTHROPIC,
        kind=kind,
        model=req.model,
        body=data,
        stream=req.stream and kind == "chat",
        keep_alive=keep_alive_of(req.keep_alive),
        neutral=lambda: req,
        headers=headers,
        relax_think=True,
    )


@router.post("/messages", openapi_extra=body_schema(MessagesRequest, EXAMPLE))
async def messages(request: Request) -> Any:
    """A message in answer to a conversation; ``stream`` gives Anthropic's events."""
    return await dispatch(request, await _incoming(request, MessagesRequest, "chat"))


@router.post("/messages/count_tokens", openapi_extra=body_schema(CountTokensRequest))
async def count_tokens(request: Request) -> Any:
    """``{"input_tokens": N}``: what the conversation costs the model as input."""
    return await dispatch(request, await _incoming(request, CountTokensRequest, "count"))
