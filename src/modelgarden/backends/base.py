"""The ``Backend`` protocol: what every kind of model backend offers the gateway.

A backend speaks one or more API families natively (:class:`Api`). The gateway hands it a
request already parsed and validated in one of those families; the backend answers with a
:class:`BackendResponse` whose body is bytes in that same family's wire format. When the
client speaks the backend's family, those bytes go to the client unchanged (the fast path);
otherwise the translation layer converts the request before and the records after.

Errors are raised as :mod:`modelgarden.errors` types before the response starts; after it
started, a failure ends the byte stream with an exception, which the edge turns into the
client's final error record.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from modelgarden.wire.ollama import ListModel, PsModel, ShowResponse

if TYPE_CHECKING:
    from modelgarden.telemetry.tracing import RequestTrace


class Api(enum.StrEnum):
    """An API family, as spoken on the wire."""

    OLLAMA = "ollama"
    #: OpenAI's Chat Completions, completions and embeddings (``/v1/chat/completions`` ...).
    OPENAI = "openai"
    #: OpenAI's Responses API (``/v1/responses``).
    RESPONSES = "responses"
    #: Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``).
    ANTHROPIC = "anthropic"


#: The family a request is translated to when the backend does not speak the client's:
#: the first of these the backend speaks (the most complete translations first).
PREFERRED = (Api.OLLAMA, Api.OPENAI, Api.ANTHROPIC, Api.RESPONSES)


@dataclass
class BackendRequest:
    """One inference request for a backend, in one API family's wire format."""

    api: Api
    #: The operation within the family: ``chat``, ``generate``, ``embed`` for Ollama.
    endpoint: str
    #: The model as the backend knows it.
    model: str
    #: The request body (a JSON object) in ``api``'s format.
    body: dict[str, Any]
    stream: bool
    #: Wall-clock nanoseconds when the gateway received the request.
    start_ns: int
    #: Parsed ``keep_alive`` in seconds, when the client sent one.
    keep_alive: float | None = None
    #: The request's trace, for the backend's queue and upstream spans; ``None``: off.
    trace: RequestTrace | None = None
    #: Client headers that belong to the family and go upstream on a native relay
    #: (``anthropic-beta``); never a credential.
    headers: dict[str, str] = field(default_factory=dict)
    #: ``think`` asked for by an API whose clients send it to every model (Anthropic's
    #: ``thinking``, Responses' ``reasoning``): dropped, not refused, on a model that
    #: cannot think, as Ollama does for Claude Code.
    relax_think: bool = False


async def _nothing() -> None:
    return None


@dataclass
class BackendResponse:
    """A backend's answer: status, media type, and the body as a byte stream."""

    status: int
    media_type: str
    body: AsyncIterator[bytes]
    api: Api
    #: Frees what the answer holds (a runner slot, a connection); safe to call twice.
    close: Callable[[], Awaitable[None]] = field(default=_nothing)
    headers: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """A source of models: local runners, an Ollama daemon, an OpenAI-compatible service."""

    name: str
    kind: str
    apis: frozenset[Api]

    async def start(self) -> None:
        """Prepare (open connections, seed models); called once when the gateway starts."""

    async def close(self) -> None:
        """Release everything; called once when the gateway stops."""

    async def list_models(self) -> list[ListModel]:
        """The models this backend serves, in ``/api/tags`` form."""

    async def has_model(self, model: str) -> bool:
        """Whether this backend serves the model."""

    async def show(self, model: str, verbose: bool = False) -> ShowResponse:
        """``/api/show`` for one model; raises ``ModelNotFound``."""

    async def running(self) -> list[PsModel]:
        """Models loaded now, in ``/api/ps`` form."""

    async def send(self, request: BackendRequest) -> BackendResponse:
        """Answer one inference request."""

    def upstream_id(self, model: str) -> str:
        """The id the backend's upstream knows a model it serves by (the name itself for a
        store of our own); ``ModelNotFound`` for a model it does not serve."""

    def describe(self) -> dict[str, Any]:
        """What the gateway knows about this backend now, read from memory without asking
        it (``/garden/backends``, ``/ready``, ``/metrics``; never its keys or headers):
        :func:`described` of it with at least ``up``, ``active``, ``waiting``, ``rejected``."""


def described(backend: Backend, **state: Any) -> dict[str, Any]:
    """A backend's description: its name, kind and API families, then ``state``."""
    return {"name": backend.name, "kind": backend.kind, "apis": sorted(backend.apis), **state}


@runtime_checkable
class PassThrough(Protocol):
    """A backend whose native Ollama API can be passed through as is (``/ollama/*``); the
    backend decides the transport (HTTP to a daemon, a call into a Modal container)."""

    name: str

    async def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> BackendResponse:
        """Send one request (``path`` with its query) and answer with the upstream's status,
        headers and body as they come; error statuses are answers, not exceptions."""
