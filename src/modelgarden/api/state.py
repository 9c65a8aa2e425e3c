"""What one gateway app holds, typed, and the part its process plays among several.

``create_app`` builds one :class:`AppState` and every route reads it through
:func:`app_state` (never an untyped ``request.app.state.X``). A process of a gateway of
several (``garden serve --workers N``, :mod:`modelgarden.workers`) hands ``create_app`` its
:class:`ProcessRole`, which the app's lifespan starts, tells when it serves, and stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from modelgarden.api.streaming import Drain
from modelgarden.config import Settings
from modelgarden.gateway import Gateway
from modelgarden.memory_release import MemoryRelease
from modelgarden.security.keys import KeyRing
from modelgarden.store.pull import Puller
from modelgarden.telemetry import Telemetry


class ForwardToPrimary(Exception):
    """The request belongs to the primary process: pass it on as it came (raised by a relay
    worker's stand-in for the primary's local backend)."""


class Forward(Protocol):
    """An ASGI app that answers with another process's answer. ``checked``: this process's
    browser rules have already run (and add their CORS headers)."""

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, *, checked: bool = False
    ) -> None: ...


class ProcessRole(Protocol):
    """This process's part in a gateway of several processes: the primary's relay workers
    (:class:`modelgarden.workers.Workers`) or a relay worker's link to its primary
    (:class:`modelgarden.workers.WorkerLink`)."""

    @property
    def forward(self) -> Forward | None:
        """Where the requests this process does not answer itself go (``None``: none)."""

    async def start(self, telemetry: Telemetry) -> None:
        """Start with the app, once the gateway and the telemetry have started."""

    def serving(self, memory_release: MemoryRelease) -> None:
        """The app is set up and about to accept connections."""

    async def stop(self, within: float) -> None:
        """Stop, first thing on the way out; whatever still runs after ``within`` is killed."""

    def describe(self) -> list[dict[str, Any]]:
        """The worker processes, for ``/status``."""


@dataclass
class AppState:
    """Names what one gateway app holds (it owns none of it: ``create_app`` built it all):
    the settings, the gateway and its backends, the telemetry, the API keys, the answers in
    flight, and the process's role when it is one of several."""

    settings: Settings
    gateway: Gateway
    telemetry: Telemetry
    keys: KeyRing
    drain: Drain
    role: ProcessRole | None = None
    #: Pulls into the model store (made on the first pull).
    puller: Puller | None = None


#: Where ``create_app`` puts the :class:`AppState` on the framework's ``app.state``.
STATE_KEY = "garden"


def app_state(request: Request) -> AppState:
    """The app's state, for a route."""
    state = getattr(request.app.state, STATE_KEY)
    assert isinstance(state, AppState)
    return state


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives ``body`` (already read) once, then the real channel."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again
