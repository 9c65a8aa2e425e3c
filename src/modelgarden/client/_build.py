"""Request building, free of I/O: each client method's :class:`Call` and its typed fields.

The ``*Fields`` TypedDicts are the optional keyword arguments of the methods (the names
the ``ollama`` client and OpenAI's API use). Any other keyword is sent as is, so a field
newer than this client still reaches the server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from pydantic import BaseModel

from modelgarden.client._base import Call, drop_none

#: A chat message: a mapping, or any pydantic model (``ollama.Message`` works).
MessageLike = Mapping[str, Any] | BaseModel
#: A JSON schema, ``"json"``, or nothing.
FormatLike = str | Mapping[str, Any] | None


class GenerateFields(TypedDict, total=False):
    """Optional fields of :meth:`Client.generate` (Ollama's ``/api/generate``)."""

    system: str | None
    template: str | None
    context: Sequence[int] | None
    think: bool | str | None
    raw: bool | None
    format: FormatLike
    images: Sequence[str] | None
    options: Mapping[str, Any] | BaseModel | None
    keep_alive: float | str | None
    logprobs: bool | None
    top_logprobs: int | None


class ChatFields(TypedDict, total=False):
    """Optional fields of :meth:`Client.chat` (Ollama's ``/api/chat``)."""

    tools: Sequence[Mapping[str, Any] | BaseModel] | None
    think: bool | str | None
    format: FormatLike
    options: Mapping[str, Any] | BaseModel | None
    keep_alive: float | str | None
    logprobs: bool | None
    top_logprobs: int | None


class EmbedFields(TypedDict, total=False):
    """Optional fields of :meth:`Client.embed` (Ollama's ``/api/embed``)."""

    truncate: bool | None
    dimensions: int | None
    options: Mapping[str, Any] | BaseModel | None
    keep_alive: float | str | None


class CreateFields(TypedDict, total=False):
    """Optional fields of :meth:`Client.create` (``from_`` is sent as ``from``)."""

    quantize: str | None
    from_: str | None
    files: Mapping[str, str] | None
    adapters: Mapping[str, str] | None
    template: str | None
    license: str | Sequence[str] | None
    system: str | None
    parameters: Mapping[str, Any] | BaseModel | None
    messages: Sequence[MessageLike] | None


class ChatCompletionFields(TypedDict, total=False):
    """Optional fields of :meth:`Client.chat_completions` (OpenAI's chat completions)."""

    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    max_completion_tokens: int | None
    stop: str | Sequence[str] | None
    seed: int | None
    n: int | None
    presence_penalty: float | None
    frequency_penalty: float | None
    tools: Sequence[Mapping[str, Any]] | None
    tool_choice: str | Mapping[str, Any] | None
    response_format: Mapping[str, Any] | None
    stream_options: Mapping[str, Any] | None
    logprobs: bool | None
    top_logprobs: int | None
    user: str | None


def _body(fields: Mapping[str, Any], **required: Any) -> dict[str, Any]:
    return drop_none({**required, **fields})


def get(name: str, path: str) -> Call:
    """A ``GET`` without a body (version, list, ps)."""
    return Call("GET", path, name=name)


def generate(
    model: str, prompt: str | None, suffix: str | None, stream: bool, fields: Mapping[str, Any]
) -> Call:
    """``POST /api/generate``."""
    body = _body(fields, model=model, prompt=prompt, suffix=suffix, stream=stream)
    return Call("POST", "/api/generate", body, stream, name="generate")


def chat(
    model: str, messages: Sequence[MessageLike] | None, stream: bool, fields: Mapping[str, Any]
) -> Call:
    """``POST /api/chat``."""
    body = _body(fields, model=model, messages=list(messages or []), stream=stream)
    return Call("POST", "/api/chat", body, stream, name="chat")


def embed(model: str, input: str | Sequence[str], fields: Mapping[str, Any]) -> Call:
    """``POST /api/embed``."""
    text = input if isinstance(input, str) else list(input)
    return Call("POST", "/api/embed", _body(fields, model=model, input=text), name="embed")


def show(model: str) -> Call:
    """``POST /api/show``."""
    return Call("POST", "/api/show", {"model": model}, name="show")


def pull(model: str, insecure: bool, stream: bool) -> Call:
    """``POST /api/pull``: progress records while the server downloads the model."""
    body = {"model": model, "insecure": insecure, "stream": stream}
    return Call("POST", "/api/pull", body, stream, name="pull")


def create(model: str, stream: bool, fields: Mapping[str, Any]) -> Call:
    """``POST /api/create`` (``from_`` becomes ``from``)."""
    named = dict(fields)
    if "from_" in named:
        named["from"] = named.pop("from_")
    return Call("POST", "/api/create", _body(named, model=model, stream=stream), stream, "create")


def copy(source: str, destination: str) -> Call:
    """``POST /api/copy``."""
    return Call("POST", "/api/copy", {"source": source, "destination": destination}, name="copy")


def delete(model: str) -> Call:
    """``DELETE /api/delete``."""
    return Call("DELETE", "/api/delete", {"model": model}, name="delete")


def blob_exists(digest: str) -> Call:
    """``HEAD /api/blobs/<digest>``: 200 when the server has it, 404 otherwise."""
    return Call("HEAD", f"/api/blobs/{digest}", name="upload_blob", accept=frozenset({404}))


def chat_completions(
    model: str, messages: Sequence[MessageLike], stream: bool, fields: Mapping[str, Any]
) -> Call:
    """``POST /v1/chat/completions`` (streams are SSE)."""
    body = _body(fields, model=model, messages=list(messages), stream=stream)
    return Call("POST", "/v1/chat/completions", body, stream, "chat_completions", sse=stream)


def upload_blob(digest: str, path: Path) -> Call:
    """``POST /api/blobs/<digest>`` with the file as the body (re-read on each attempt)."""
    return Call("POST", f"/api/blobs/{digest}", name="upload_blob", upload=path)
