"""OpenAI chat completion objects, as ``POST /v1/chat/completions`` returns them.

Written here so the client does not depend on the ``openai`` package. Field names and
shapes follow OpenAI's API; unknown fields are kept (``extra="allow"``), so newer servers
do not break older clients.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelgarden.client.types import Telemetered


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionCall(_Open):
    """The function a tool call names; ``arguments`` is a JSON string, as OpenAI sends it."""

    name: str
    arguments: str = ""


class ToolCall(_Open):
    """One tool call of an assistant message."""

    id: str
    type: str = "function"
    function: FunctionCall


class ChatCompletionMessage(_Open):
    """The assistant's message in a completion."""

    role: str = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(_Open):
    """One choice of a completion."""

    index: int = 0
    message: ChatCompletionMessage
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class CompletionUsage(_Open):
    """Tokens a completion used."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(_Open, Telemetered):
    """A whole chat completion (``object: "chat.completion"``), with the call's telemetry."""

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice] = Field(default_factory=list)
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


class ChoiceDeltaFunctionCall(_Open):
    """A piece of a streamed tool call's function."""

    name: str | None = None
    arguments: str | None = None


class ChoiceDeltaToolCall(_Open):
    """A piece of a streamed tool call."""

    index: int = 0
    id: str | None = None
    type: str | None = None
    function: ChoiceDeltaFunctionCall | None = None


class ChoiceDelta(_Open):
    """What a chunk adds to a choice's message."""

    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None


class ChunkChoice(_Open):
    """One choice of a streamed chunk."""

    index: int = 0
    delta: ChoiceDelta = Field(default_factory=ChoiceDelta)
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(_Open):
    """One SSE chunk of a streamed completion (``object: "chat.completion.chunk"``).

    The last chunk has ``usage`` (and no choices) when the request asked for it with
    ``stream_options={"include_usage": True}``.
    """

    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
