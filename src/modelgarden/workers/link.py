"""A relay worker's ties to its primary: the proxy that passes it what the worker does not
answer itself, the record shipper, and its request to be replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from starlette.types import Receive, Scope, Send

from modelgarden.api.errors import send_error
from modelgarden.api.streaming import ClientWatch
from modelgarden.errors import BackendUnavailable
from modelgarden.memory_release import MemoryRelease, Release
from modelgarden.telemetry import Telemetry
from modelgarden.upstream_http import HOP_BY_HOP, new_session
from modelgarden.workers.records import RecordShipper

#: Not passed to the primary: the connection's own headers and the length (set again for
#: the body as sent); ``host`` is, since the primary checks it too.
TO_PRIMARY = HOP_BY_HOP - {"host"}
#: Not passed back: the connection's own headers; the length is, the body being relayed
#: byte for byte.
FROM_PRIMARY = HOP_BY_HOP - {"content-length"}
#: What aiohttp would add on its own to a forwarded request.
AIOHTTP_ADDS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
#: Request bodies up to this size are read whole before forwarding; larger ones stream.
WHOLE_BODY = 1 << 20


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client disconnected")
        more = message.get("more_body", False)
        if chunk := message.get("body", b""):
            yield chunk


class WorkerLink:
    """Owns a relay worker's ties to its primary: the :class:`PrimaryProxy`, the
    :class:`~modelgarden.workers.records.RecordShipper`, and its request to be replaced once
    it settles, idle after a burst, more than ``recycle`` above its start's resident memory.

    It is the relay worker's :class:`~modelgarden.api.state.ProcessRole`: ``create_app``
    starts it with the app, tells it when the app serves, and stops it with the app.
    """

    def __init__(self, primary_url: str, records_fd: int, recycle: float = 0.0) -> None:
        self.proxy = PrimaryProxy(primary_url)
        self.shipper = RecordShipper(records_fd)
        self.recycle = recycle
        self.retiring = False

    @property
    def forward(self) -> PrimaryProxy:
        """Where every request this worker does not answer itself goes."""
        return self.proxy

    async def start(self, telemetry: Telemetry) -> None:
        """Send this process's records to the primary; open the connections and the pipe."""
        telemetry.ship = self.shipper.put
        await self.proxy.start()
        await self.shipper.start()

    def serving(self, memory_release: MemoryRelease) -> None:
        """The app is set up: watch the memory each idle clean-up leaves, and tell the
        primary this worker is ready (it is about to accept connections)."""
        memory_release.settled = lambda done: self.settled(done, memory_release.start_rss)
        self.ready()

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

    async def stop(self, within: float) -> None:
        """Ship the last records, close everything (``within``: nothing here waits long)."""
        await self.shipper.close()
        await self.proxy.close()

    def describe(self) -> list[dict[str, Any]]:
        """No worker processes of its own (the primary's ``/status`` lists them)."""
        return []


class PrimaryProxy:
    """Owns a relay worker's connections to the primary; an ASGI app that answers each
    request with the primary's answer, passed untouched both ways (method, path, query,
    headers, body streamed)."""

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
                skip_auto_headers=AIOHTTP_ADDS,
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
