"""Ollama's wire types: the request model *is* the wire schema.

Requests allow unknown fields (clients send newer ones; they are kept and passed on) and
give clear messages for wrong types. Responses are built with these models, so the keys
clients require (``model_info``, ``capabilities``, ``expires_at`` ...) are always present.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ToolFunctionCall(BaseModel):
    """A function call inside a tool call; ``arguments`` is an object, not a string."""

    model_config = ConfigDict(extra="allow")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    index: int | None = None


class ToolCall(BaseModel):
    """One tool call made by the assistant."""

    model_config = ConfigDict(extra="allow")
    id: str | None = None
    type: str | None = None
    function: ToolFunctionCall


class Message(BaseModel):
    """A chat message."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None
    thinking: str | None = None


KeepAlive = float | str | None
Format = Literal["", "json"] | dict[str, Any] | None


class GenerateRequest(_Request):
    """``POST /api/generate``."""

    model: str = ""
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool | None = None
    images: list[str] | None = None
    format: Format = None
    options: dict[str, Any] | None = None
    stream: bool | None = None
    keep_alive: KeepAlive = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class ChatRequest(_Request):
    """``POST /api/chat``."""

    model: str = ""
    messages: list[Message] | None = None
    tools: list[dict[str, Any]] | None = None
    format: Format = None
    options: dict[str, Any] | None = None
    stream: bool | None = None
    keep_alive: KeepAlive = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class EmbedRequest(_Request):
    """``POST /api/embed``."""

    model: str = ""
    input: str | list[str] = ""
    truncate: bool | None = None
    dimensions: int | None = Field(default=None, gt=0)
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class EmbeddingsRequest(_Request):
    """``POST /api/embeddings`` (legacy: one prompt, one vector)."""

    model: str = ""
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class ModelRef(_Request):
    """Requests that name one model: ``/api/show``, ``/api/delete`` (``name`` is legacy)."""

    model: str = ""
    name: str = ""
    verbose: bool | None = None

    @property
    def target(self) -> str:
        """The model asked for, from ``model`` or the legacy ``name``."""
        return self.model or self.name


class CopyRequest(_Request):
    """``POST /api/copy``."""

    source: str = ""
    destination: str = ""


class CreateRequest(_Request):
    """``POST /api/create`` (the current form: ``from`` / ``files``, no server-side paths)."""

    model: str = ""
    name: str = ""
    from_: str | None = Field(default=None, alias="from")
    files: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] | None = None
    messages: list[Message] | None = None
    license: str | list[str] | None = None
    quantize: str | None = None
    stream: bool | None = None


class ModelDetails(BaseModel):
    """``details`` of a model."""

    parent_model: str = ""
    format: str = "gguf"
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""


class ListModel(BaseModel):
    """One entry of ``/api/tags``."""

    name: str
    model: str
    modified_at: datetime
    size: int
    digest: str
    details: ModelDetails
    #: What the model can do (``completion``, ``tools``, ``insert``, ``vision``,
    #: ``embedding``, ``thinking``), as ``/api/show`` says.
    capabilities: list[str] = Field(default_factory=lambda: ["completion"])


class ListResponse(BaseModel):
    """``GET /api/tags``."""

    models: list[ListModel]


class ShowResponse(BaseModel):
    """``POST /api/show``; ``model_info`` and ``capabilities`` are always present."""

    license: str = ""
    modelfile: str = ""
    parameters: str = ""
    template: str = ""
    system: str = ""
    details: ModelDetails
    messages: list[dict[str, Any]] | None = None
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: datetime


class PsModel(BaseModel):
    """One entry of ``/api/ps``."""

    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: datetime
    size_vram: int
    context_length: int


class PsResponse(BaseModel):
    """``GET /api/ps``."""

    models: list[PsModel]


class Metrics(BaseModel):
    """Counters on a final record (nanoseconds)."""

    model_config = ConfigDict(extra="allow")
    model: str = ""
    created_at: str | None = None
    done: bool = False
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class GenerateResponse(Metrics):
    """A record of ``/api/generate`` (a chunk, or the whole answer)."""

    response: str = ""
    thinking: str | None = None
    context: list[int] | None = None
    logprobs: list[dict[str, Any]] | None = None


class ChatResponse(Metrics):
    """A record of ``/api/chat`` (a chunk, or the whole answer)."""

    message: Message = Field(default_factory=lambda: Message(role="assistant"))
    logprobs: list[dict[str, Any]] | None = None


class EmbedResponse(BaseModel):
    """``/api/embed``."""

    model_config = ConfigDict(extra="allow")
    model: str = ""
    embeddings: list[list[float]]
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class ProgressResponse(BaseModel):
    """A progress record of pull, push and create."""

    model_config = ConfigDict(extra="allow")
    status: str = ""
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class VersionResponse(BaseModel):
    """``/api/version``."""

    version: str
