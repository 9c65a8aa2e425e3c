"""OpenAI's Responses API wire types for the requests the gateway accepts.

Unknown fields are allowed (clients send newer ones). These models give the OpenAPI
document its schemas and catch wrong types early with a clear message; the translation
reads the raw object (``translate/responses.py``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class Reasoning(_Loose):
    """``reasoning``: ``effort`` is ``none``, ``minimal``, ``low``, ``medium``, ``high``,
    ``xhigh`` (or Ollama's ``max``)."""

    effort: str | None = None
    summary: str | None = None


class TextConfig(_Loose):
    """``text``: ``format`` is ``{"type": "text"}``, ``{"type": "json_object"}`` or
    ``{"type": "json_schema", "name", "schema", "strict"}``."""

    format: dict[str, Any] | None = None


class ResponsesRequest(_Loose):
    """``POST /v1/responses`` (stateless: no ``previous_response_id``, no ``conversation``)."""

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = None
    metadata: dict[str, Any] | None = None
    keep_alive: float | str | None = None
