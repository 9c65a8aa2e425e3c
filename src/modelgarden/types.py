"""The neutral form every API family translates to and from: requests, stream chunks, usage.

It holds exactly what the two families share, with one spelling: sampling parameters under
OpenAI-neutral names, tool-call arguments as objects, images as base64 without a data-URL
prefix, durations in nanoseconds. What only one family has travels in ``extra`` and is
documented in ``translate/`` where it is dropped or mapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass
class ToolCall:
    """One function call made by the assistant."""

    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass
class ChatMessage:
    """One chat message."""

    role: str
    content: str = ""
    images: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: For ``tool`` messages: the function whose result this is, and the call it answers.
    tool_name: str = ""
    tool_call_id: str = ""
    #: An assistant turn's reasoning, sent back with the conversation (Ollama's
    #: ``thinking``, Anthropic's thinking blocks, Responses' reasoning items).
    thinking: str = ""


@dataclass
class Sampling:
    """Sampling and length controls; ``None`` means "the model's default"."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None


@dataclass
class InferenceRequest:
    """A chat, completion or embedding request, in neither family's spelling."""

    kind: Literal["chat", "completion", "embed"]
    model: str
    messages: list[ChatMessage] = field(default_factory=list)
    prompt: str = ""
    suffix: str | None = None
    inputs: list[str] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    #: ``None`` (auto), ``"none"``, ``"required"`` or a function name.
    tool_choice: str | None = None
    #: ``None``, ``"json"`` or a JSON schema object.
    response_format: str | dict[str, Any] | None = None
    sampling: Sampling = field(default_factory=Sampling)
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    dimensions: int | None = None
    keep_alive: Any = None
    #: Family-specific fields passed through untouched when the family is the same.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Usage:
    """Token counts, and Ollama's timings when known (nanoseconds)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_duration: int | None = None
    eval_duration: int | None = None


@dataclass
class Chunk:
    """A piece of a streamed answer; the last one has ``finish_reason`` (and usage)."""

    text: str = ""
    #: Reasoning of a thinking model, apart from the answer (Ollama's ``thinking``,
    #: OpenAI-compatible servers' ``reasoning_content``).
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    error: str | None = None

    @property
    def final(self) -> bool:
        """Whether this chunk ends the answer."""
        return self.finish_reason is not None or self.error is not None
