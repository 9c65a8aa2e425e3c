"""Anthropic's Messages API wire types for the requests the gateway accepts.

Unknown fields are allowed (clients send newer ones). These models give the OpenAPI
document its schemas and catch wrong types early with a clear message; the translation
reads the raw object (``translate/anthropic.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class MessageParam(_Loose):
    """One turn: ``content`` is a string or a list of blocks (``text``, ``image``,
    ``tool_use``, ``tool_result``, ``thinking``); ``system`` turns are instructions given in
    the middle of a conversation (Claude Code sends them)."""

    role: Literal["user", "assistant", "system"]
    content: str | list[dict[str, Any]]


class Tool(_Loose):
    """A custom tool: ``name``, ``description`` and the JSON schema of its ``input``."""

    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ThinkingConfig(_Loose):
    """``thinking``: ``{"type": "enabled", "budget_tokens": N}`` or ``{"type": "disabled"}``."""

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(default=None, ge=0)


class ToolChoice(_Loose):
    """``tool_choice``: ``auto``, ``any``, ``tool`` (with ``name``) or ``none``."""

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None


class CountTokensRequest(_Loose):
    """``POST /v1/messages/count_tokens``: the prompt part of a messages request."""

    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    keep_alive: float | str | None = None


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``."""

    max_tokens: int = Field(ge=1)
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    metadata: dict[str, Any] | None = None
