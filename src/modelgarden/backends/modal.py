"""The ``modal`` backend: GPU classes of ``deploy/modal_app.py``, woken when a request needs one.

It is the remote twin of the ``local`` kind. Where ``local`` starts a runner process for a
model and stops it after ``keep_alive`` idle, a ``modal`` replica is a Modal class
(``modal://<app>/<class>``) whose container Modal starts on the first call and scales to
zero after ``scaledown_window`` idle. Both go through the same states
(:class:`~modelgarden.lifecycle.process.RunnerState`); for one replica::

    STOPPED  --a request arrives--------------> STARTING  one wake-up call goes out; later
                                                          requests wait on it, at most
                                                          max_waking, past that 503 + Retry-After
    STARTING --the wake-up call answers-------> READY     the waiting requests go on
    STARTING --it fails or takes wake_timeout-> STOPPED   every waiting request gets the error
    READY    --scaledown s without a request--> STOPPED   (Modal has scaled the class to zero)
    READY    --a call cannot reach it---------> STOPPED   the next request wakes it again

The catalogue is the configured ``models`` list (the remote kinds' catalogue, aliases and
filters included): listing, ``/api/show`` and ``/api/ps`` never wake a GPU. Requests go
through two methods of the class: ``proxy`` for a whole answer and the generator ``stream``
for a streamed one (the plain-data wire format is in :mod:`modelgarden.backends.modal_server`).

The seam: :attr:`ModalBackend.connect` makes the handle for a replica's URL. In production it
is :func:`connect`, whose handle calls ``modal.Cls.from_name(app, cls)()`` with
``.remote.aio`` and ``.remote_gen.aio``; tests put a handle there that runs the same class
in-process with Modal's ``.local()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import orjson

from modelgarden.backends.base import Api, BackendRequest, BackendResponse
from modelgarden.backends.remote import RemoteBackend, Replica
from modelgarden.breaker import CircuitBreaker
from modelgarden.config.backends import BackendConfig
from modelgarden.errors import BackendUnavailable, GardenError, Overloaded, UpstreamTimeout
from modelgarden.lifecycle.states import Lifecycle, RunnerState
from modelgarden.upstream_http import status_error
from modelgarden.wire.ollama import ListModel

#: What a wake-up asks: cheap, and answered only once the container's server is up.
WAKE_CALL: dict[str, Any] = {"method": "GET", "path": "/api/version", "headers": {}, "body": None}
PREFIX = {Api.OLLAMA: "/api/", Api.OPENAI: "/v1/", Api.RESPONSES: "/v1/", Api.ANTHROPIC: "/v1/"}


class ModalCalls(Protocol):
    """The two calls the gateway makes on a GPU class (see ``deploy/modal_app.py``)."""

    async def proxy(self, call: dict[str, Any]) -> dict[str, Any]:
        """One whole answer: ``{"status", "headers", "body"}``."""

    def stream(self, call: dict[str, Any]) -> AsyncIterator[Any]:
        """``{"status", "headers"}``, then the body's ``bytes`` as they come."""


class RemoteCalls:
    """Calls on a deployed Modal class: ``Cls.from_name(app, cls)()``, asynchronously."""

    def __init__(self, app: str, cls: str) -> None:
        try:
            import modal
        except ImportError:  # pragma: no cover - the extra is part of the test install
            raise BackendUnavailable(
                "the modal backend needs `pip install modelgarden[modal]`"
            ) from None
        self.obj: Any = modal.Cls.from_name(app, cls)()

    async def proxy(self, call: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.obj.proxy.remote.aio(call)
        return result

    async def stream(self, call: dict[str, Any]) -> AsyncIterator[Any]:
        async for item in self.obj.stream.remote_gen.aio(call):
            yield item


def connect(url: str) -> ModalCalls:
    """The production handle for ``modal://<app>/<class>``; nothing is contacted yet."""
    app, _, cls = url.removeprefix("modal://").partition("/")
    return RemoteCalls(app, cls)


class ModalReplica(Replica):
    """One Modal class: its handle, breaker, load, and where its container is in its life."""

    def __init__(self, url: str, breaker: CircuitBreaker, calls: ModalCalls) -> None:
        super().__init__(url, breaker)
        self.calls = calls
        self.life = Lifecycle(f"Modal class {url}")
        self.last_used = 0.0
        self.waiting = 0
        #: How long the last cold start took: what Retry-After tells an excess request.
        self.cold_start = 30.0
        self.wakes = 0
        self._wake: asyncio.Task[None] | None = None
        self._wake_began = 0.0


class ModalBackend(RemoteBackend):
    """Owns GPU classes on Modal: their wake-ups, catalogue, limits, and calls into them."""

    kind = "modal"
    apis = frozenset({Api.OLLAMA, Api.OPENAI})

    def __init__(self, config: BackendConfig, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(config, clock)
        #: The seam: URL -> handle. Swapped in tests for one backed by ``.local()``.
        self.connect: Callable[[str], ModalCalls] = connect
        self.replicas = []

    async def start(self) -> None:
        """Make the handles (no call goes out: nothing wakes) and read the catalogue."""
        self.replicas = [
            ModalReplica(url, self.breaker(), self.connect(url)) for url in self.config.urls
        ]
        await self.refresh()

    async def close(self) -> None:
        """Cancel wake-ups still under way."""
        for replica in self._modal_replicas():
            if replica._wake is not None:
                replica._wake.cancel()

    def _modal_replicas(self) -> list[ModalReplica]:
        return [r for r in self.replicas if isinstance(r, ModalReplica)]

    async def discover(self) -> list[tuple[str, ListModel | None]]:
        return [(m, None) for m in self.config.models or []]

    # -- lifecycle of a replica ------------------------------------------------------------

    def state(self, replica: ModalReplica) -> RunnerState:
        """The replica's state now (READY lapses to STOPPED after ``scaledown`` idle)."""
        idle = time.monotonic() - replica.last_used
        ready = replica.life.state is RunnerState.READY
        if ready and not replica.outstanding and idle >= self.config.scaledown:
            replica.life.move(RunnerState.STOPPED)
        return replica.life.state

    async def ready(self, replica: ModalReplica) -> None:
        """Return once the replica is warm, waking it (once for everyone) if need be."""
        if self.state(replica) is RunnerState.READY:
            return
        if replica._wake is None:
            replica.life.move(RunnerState.STARTING)
            replica._wake_began = time.monotonic()
            replica._wake = asyncio.create_task(self._wake_up(replica))
            # Retrieved here too, so that a wake-up whose waiters all left logs no warning.
            replica._wake.add_done_callback(lambda t: t.cancelled() or t.exception())
        elif replica.waiting >= self.config.max_waking:
            left = replica.cold_start - (time.monotonic() - replica._wake_began)
            raise Overloaded(
                f"backend '{self.name}' is starting; too many requests are waiting for it",
                retry_after=max(1.0, left),
            )
        replica.waiting += 1
        try:
            await asyncio.shield(replica._wake)
        finally:
            replica.waiting -= 1

    async def _wake_up(self, replica: ModalReplica) -> None:
        replica.wakes += 1
        try:
            async with asyncio.timeout(self.config.wake_timeout):
                reply = await self._guard(replica, replica.calls.proxy(dict(WAKE_CALL)))
            if reply.get("status") != 200:
                raise status_error(int(reply.get("status", 502)), bytes(reply.get("body") or b""))
        except TimeoutError:
            replica.life.move(RunnerState.STOPPED)
            raise UpstreamTimeout(
                f"backend '{self.name}' did not start within {self.config.wake_timeout:.0f}s"
            ) from None
        except BaseException:
            replica.life.move(RunnerState.STOPPED)
            raise
        else:
            replica.life.move(RunnerState.READY)
            replica.last_used = time.monotonic()
            replica.cold_start = replica.last_used - replica._wake_began
        finally:
            replica._wake = None

    async def _guard(self, replica: ModalReplica, call: Awaitable[Any]) -> Any:
        """Await a call into the container; whatever goes wrong on the way is the backend's
        failure (a typed error, the breaker told, the replica cold again)."""
        try:
            result = await call
        except (GardenError, asyncio.CancelledError):
            raise
        except Exception as exc:
            replica.breaker.failure()
            replica.life.move(RunnerState.STOPPED)
            raise BackendUnavailable(
                f"backend '{self.name}' failed: {type(exc).__name__}: {exc}"
            ) from None
        replica.breaker.success()
        return result

    # -- requests --------------------------------------------------------------------------

    def _pick(self) -> ModalReplica:
        replica = next((r for r in self._order() if r.breaker.allow()), None)
        if not isinstance(replica, ModalReplica):
            raise self._circuit_open()
        return replica

    async def send(self, request: BackendRequest) -> BackendResponse:
        """One inference request, through ``stream`` or ``proxy`` as the client asked (``think``
        relaxed as on every Ollama upstream)."""
        return await self.relaxed.send(self._send, request)

    async def _send(self, request: BackendRequest) -> BackendResponse:
        call = {
            "method": "POST",
            "path": PREFIX[request.api] + request.endpoint,
            "headers": {"content-type": "application/json"},
            "body": orjson.dumps(request.body),
        }
        response = await self._call(call, stream=request.stream, api=request.api)
        if response.status != 200:
            try:
                raw = b"".join([chunk async for chunk in response.body])
            finally:
                await response.close()
            raise status_error(response.status, raw)
        return response

    async def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> BackendResponse:
        """The passthrough: a plain ``proxy`` call, or ``stream`` for a POST that may stream."""
        call = {"method": method, "path": path, "headers": headers, "body": body}
        return await self._call(call, stream=_may_stream(method, body), api=Api.OLLAMA)

    async def _call(self, call: dict[str, Any], *, stream: bool, api: Api) -> BackendResponse:
        # Waking comes before the limiter, so that every request of a burst on a cold
        # backend waits on the one wake-up (or gets 503 past max_waking), not in the queue.
        replica = self._pick()
        await self.ready(replica)
        await self.limiter.acquire()
        replica.outstanding += 1
        try:
            async with asyncio.timeout(self.config.timeouts.first_byte):
                if stream:
                    return await self._streamed(replica, call, api)
                return await self._whole(replica, call, api)
        except BaseException as exc:
            replica.outstanding -= 1
            replica.last_used = time.monotonic()
            self.limiter.release()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(f"backend '{self.name}' did not answer in time") from None
            raise

    def _release(self, replica: ModalReplica) -> Callable[[], Awaitable[None]]:
        done = False

        async def release() -> None:
            nonlocal done
            if not done:
                done = True
                replica.outstanding -= 1
                replica.last_used = time.monotonic()
                self.limiter.release()

        return release

    async def _whole(
        self, replica: ModalReplica, call: dict[str, Any], api: Api
    ) -> BackendResponse:
        reply = await self._guard(replica, replica.calls.proxy(call))
        headers = dict(reply.get("headers") or {})
        body = bytes(reply.get("body") or b"")

        async def one() -> AsyncIterator[bytes]:
            if body:
                yield body

        media = headers.get("content-type", "application/json").split(";")[0]
        return BackendResponse(
            int(reply["status"]), media, one(), api, close=self._release(replica), headers=headers
        )

    async def _streamed(
        self, replica: ModalReplica, call: dict[str, Any], api: Api
    ) -> BackendResponse:
        items = replica.calls.stream(call)
        try:
            head = await self._guard(replica, anext(items))
        except BaseException:
            with contextlib.suppress(Exception):
                await items.aclose()  # type: ignore[attr-defined]
            raise
        headers = dict(head.get("headers") or {})
        release = self._release(replica)
        closing = asyncio.Event()

        async def close() -> None:
            closing.set()  # what breaks from here on is our doing, not the container's
            with contextlib.suppress(Exception):
                await items.aclose()  # type: ignore[attr-defined]
            await release()

        media = headers.get("content-type", "application/json").split(";")[0]
        body = self._body(replica, items, closing)
        return BackendResponse(int(head["status"]), media, body, api, close=close, headers=headers)

    async def _body(
        self, replica: ModalReplica, items: AsyncIterator[Any], closing: asyncio.Event
    ) -> AsyncIterator[bytes]:
        """The stream's chunks; one that breaks off or stays silent for ``idle`` raises."""
        idle = self.config.timeouts.idle
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as scope:
                while True:
                    scope.reschedule(loop.time() + idle)
                    try:
                        chunk = await anext(items)
                    except StopAsyncIteration:
                        return
                    scope.reschedule(None)
                    yield bytes(chunk)
        except TimeoutError:
            raise BackendUnavailable(
                f"backend '{self.name}' sent nothing for {idle:.0f}s mid-response"
            ) from None
        except (GardenError, GeneratorExit, asyncio.CancelledError):
            raise
        except Exception as exc:
            if not closing.is_set():  # the client leaving is no sign of a cold container
                replica.life.move(RunnerState.STOPPED)
            raise BackendUnavailable(
                f"backend '{self.name}' stopped answering mid-response: {exc}"
            ) from None

    def describe(self) -> dict[str, Any]:
        """A remote backend's description, with each replica's :meth:`lifecycle`."""
        return {**super().describe(), "lifecycle": self.lifecycle()}

    def lifecycle(self) -> list[dict[str, Any]]:
        """Each replica's lifecycle state, for ``/garden/backends``."""
        return [
            {"url": r.url, "state": self.state(r).value, "waiting": r.waiting, "wakes": r.wakes}
            for r in self._modal_replicas()
        ]


def _may_stream(method: str, body: bytes | None) -> bool:
    """Whether a passthrough request may get a streamed answer: a POST or PUT whose JSON body
    does not say ``"stream": false`` (Ollama streams by default)."""
    if method not in ("POST", "PUT"):
        return False
    try:
        data = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        return True
    return not (isinstance(data, dict) and data.get("stream") is False)
