"""The client's typed answers: Ollama's wire types plus the call's ``telemetry``.

Each response class here is a subclass of the matching :mod:`modelgarden.wire.ollama`
model (so code typed against those keeps working) with a ``telemetry`` property that
holds the :class:`~modelgarden.client.telemetry.CallStats` of the call that produced it.
Chunks of a stream carry ``None``; the stream object has the call's telemetry instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, PrivateAttr

from modelgarden.client.telemetry import CallStats
from modelgarden.wire import ollama as wire


class Telemetered(BaseModel):
    """Mixin that owns a response's telemetry (a private attribute, never serialised)."""

    _telemetry: CallStats | None = PrivateAttr(default=None)

    @property
    def telemetry(self) -> CallStats | None:
        """The call that produced this response (``None`` on stream chunks)."""
        return self._telemetry

    def with_telemetry(self, stats: CallStats) -> None:
        """Attach the call's telemetry (done by the client once the call ends)."""
        self._telemetry = stats


class GenerateResponse(wire.GenerateResponse, Telemetered):
    """A record of ``/api/generate`` (a chunk, or the whole answer)."""


class ChatResponse(wire.ChatResponse, Telemetered):
    """A record of ``/api/chat`` (a chunk, or the whole answer)."""


class EmbedResponse(wire.EmbedResponse, Telemetered):
    """``/api/embed``: one vector per input."""


class ListResponse(wire.ListResponse, Telemetered):
    """``/api/tags``: installed models."""


class ShowResponse(wire.ShowResponse, Telemetered):
    """``/api/show``: one model's details."""


class PsResponse(wire.PsResponse, Telemetered):
    """``/api/ps``: loaded models."""


class ProgressResponse(wire.ProgressResponse, Telemetered):
    """A progress record of pull and create (the last one says ``success``)."""


class VersionResponse(wire.VersionResponse, Telemetered):
    """``/api/version``."""


class StatusResponse(Telemetered):
    """The answer of copy and delete, as the ``ollama`` client gives it."""

    model_config = ConfigDict(extra="allow")
    status: str | None = None


@dataclass(frozen=True)
class Health:
    """The outcome of a health check (``GET /``); true when a server answered 200.

    ``base_url`` is the first base URL that answered 200 (the last one tried otherwise),
    ``error`` what went wrong when none did.
    """

    ok: bool
    base_url: str | None
    status: int | None
    latency_s: float
    error: str | None = None

    def __bool__(self) -> bool:
        return self.ok
