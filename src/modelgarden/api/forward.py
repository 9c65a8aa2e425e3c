"""A relay worker's way to the primary gateway process (see :mod:`modelgarden.workers`).

:class:`Forwarder` passes a request to the primary untouched (method, path, query,
headers, body streamed in both directions) and relays its answer as it comes. A worker
uses it for every route but the hot inference ones, and for inference requests whose model
the primary's local runners serve: :class:`PrimaryLocal` stands where the local backend
stands in the routing order, and sending to it raises :class:`ForwardToPrimary`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from starlette.types import Message, Receive, Scope, Send

from modelgarden.api.errors import send_error
from modelgarden.api.streaming import ClientWatch
from modelgarden.backends.base import Api, BackendRequest, BackendResponse, described
from modelgarden.config import Settings
from modelgarden.errors import BackendUnavailable, ModelNotFound
from modelgarden.gateway import Gateway, Route, build_backends
from modelgarden.housekeeping import Release
from modelgarden.store.names import normalize
from modelgarden.store.store import ModelStore
from modelgarden.upstream_http import HOP_BY_HOP, new_session
from modelgarden.wire.ollama import ListModel, PsModel, ShowResponse
from modelgarden.workers import RecordShipper

#: Not passed to the primary: the connection's own headers and the length (set again for
#: the body as sent); ``host`` is, since the primary checks it too.
TO_PRIMARY = HOP_BY_HOP - {"host"}
#: Not passed back: the connection's own headers; the length is, the body being relayed
#: byte for byte.
FROM_PRIMARY = HOP_BY_HOP - {"content-length"}
#: What aiohttp would add on its own to a forwarded request.
NO_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
#: Seconds a model found missing from the store is believed missing (the primary may pull it).
MISSING_FOR = 2.0
#: Request bodies up to this size are read whole before forwarding; larger ones stream.
WHOLE_BODY = 1 << 20


class ForwardToPrimary(Exception):
    """The request belongs to the primary process: pass it on as it came."""


class PrimaryLocal:
    """In a relay worker, the primary's local backend: it reads the shared model store to
    tell which models are local (so routing agrees with the primary's), and hands their
    requests to the primary."""

    kind = "local"
    apis = frozenset({Api.OLLAMA})

    def __init__(self, settings: Settings, name: str = "local") -> None:
        self.name = name
        self.store = ModelStore(settings.models_dir)
        self._missing: dict[str, float] = {}

    async def start(self) -> None:
        """Nothing to start: the primary owns the runners."""

    async def close(self) -> None:
        """Nothing to stop."""

    async def list_models(self) -> list[ListModel]:
        return []  # catalogue routes are the primary's

    async def has_model(self, model: str) -> bool:
        if self.store.peek(model) is not None:
            return True
        now = time.monotonic()
        if self._missing.get(model, 0.0) > now:
            return False
        try:
            await asyncio.to_thread(self.store.get, model)
        except ModelNotFound:
            if len(self._missing) > 4096:
                self._missing.clear()
            self._missing[model] = now + MISSING_FOR
            return False
        return True

    async def show(self, model: str, verbose: bool = False) -> ShowResponse:
        raise ForwardToPrimary

    async def running(self) -> list[PsModel]:
        return []

    async def send(self, request: BackendRequest) -> BackendResponse:
        raise ForwardToPrimary

    def upstream_id(self, model: str) -> str:
        return model

    def describe(self) -> dict[str, Any]:
        """Nothing known here: the primary's own ``/garden/backends`` has the runners."""
        return described(self, up=True, active=0, waiting=0, rejected=0)


class WorkerGateway(Gateway):
    """A relay worker's gateway: the configured remote backends, :class:`PrimaryLocal` in
    the local backend's place, and the primary as the answer for any model no backend
    here knows (it may have been pulled a moment ago; the primary answers 404 if not)."""

    def __init__(self, settings: Settings) -> None:
        self.primary_local = PrimaryLocal(settings)
        super().__init__(settings, build_backends(settings, self.primary_local))

    async def routes(self, model: str) -> list[Route]:
        try:
            return await super().routes(model)
        except ModelNotFound:
            return [Route(self.primary_local, normalize(model))]


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client disconnected")
        more = message.get("more_body", False)
        if chunk := message.get("body", b""):
            yield chunk


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


class WorkerLink:
    """Owns a relay worker's ties to its primary: the :class:`Forwarder`, the
    :class:`~modelgarden.workers.RecordShipper`, and its request to be replaced once it
    settles, idle after a burst, more than ``recycle`` above its start's resident memory."""

    def __init__(self, primary_url: str, records_fd: int, recycle: float = 0.0) -> None:
        self.forwarder = Forwarder(primary_url)
        self.shipper = RecordShipper(records_fd)
        self.recycle = recycle
        self.retiring = False

    async def start(self) -> None:
        """Open the connections and the record pipe."""
        await self.forwarder.start()
        await self.shipper.start()

    def ready(self) -> None:
        """Tell the primary this worker is set up (it is about to accept connections)."""
        self.shipper.tell(ready=True)

    def settled(self, release: Release, start_rss: int) -> None:
        """The worker is idle and cleaned up after a burst: if it stays more than
        ``recycle`` above its start, ask the primary for a successor (once)."""
        if self.retiring or not self.recycle or start_rss <= 0:
            return
        growth = release.rss_after / start_rss - 1
        if growth > self.recycle:
            self.retiring = True
            self.shipper.tell(
                retire={"rss_mib": round(release.rss_after / (1 << 20), 1),
                        "start_mib": round(start_rss / (1 << 20), 1),
                        "growth_pct": round(growth * 100, 1)}
            )  # fmt: skip

    async def close(self) -> None:
        """Ship the last records, close everything."""
        await self.shipper.close()
        await self.forwarder.close()


class Forwarder:
    """Owns a relay worker's connections to the primary; an ASGI app that answers each
    request with the primary's answer."""

    def __init__(self, primary_url: str) -> None:
        self.url = primary_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool."""
        self._session = new_session(connect_timeout=5.0)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, *, checked: bool = False
    ) -> None:
        """Answer with the primary's answer. ``checked``: this worker's browser rules have
        already run (and add their CORS headers), so the primary does not see the origin."""
        assert self._session is not None
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        length = next((int(v) for k, v in headers if k == "content-length" and v.isdigit()), -1)
        drop = TO_PRIMARY | {"origin"} if checked else TO_PRIMARY
        headers = [(k, v) for k, v in headers if k not in drop]
        data: bytes | AsyncIterator[bytes]
        if 0 <= length <= WHOLE_BODY:
            data = b"".join([chunk async for chunk in _body(receive)])
        else:
            data = _body(receive)
        url = self.url + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        try:
            response = await self._session.request(
                scope["method"], url, headers=headers, data=data, allow_redirects=False,
                skip_auto_headers=NO_AUTO,
            )  # fmt: skip
        except (aiohttp.ClientError, OSError):  # a client that left mid-body lands here too
            await send_error(scope, receive, send, BackendUnavailable(
                "the primary gateway process cannot be reached"))  # fmt: skip
            return
        await self._relay(scope, receive, send, response)

    async def _relay(
        self, scope: Scope, receive: Receive, send: Send, response: aiohttp.ClientResponse
    ) -> None:
        watch = ClientWatch(receive, None, scope)
        task = watch.watching()
        try:
            out = [(k.lower(), v) for k, v in response.raw_headers
                   if k.lower().decode("latin-1") not in FROM_PRIMARY]  # fmt: skip
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            if task.cancelling():
                task.uncancel()
        except (aiohttp.ClientError, OSError):
            pass  # the primary broke off: the client's stream ends here, cut like the primary's
        finally:
            watch.stop()
            response.close()
