"""One client connection's limits: how big a request head may be, how slowly it may come,
and how many connections may be open at once.

uvicorn's httptools protocol times out idle keep-alive connections, but not a client that
sends a huge head (buffered whole, parsed at length while every other client waits), one
that trickles its head or body a byte at a time (slowloris: each holds a socket and a slot
forever), or a flood of connections. :class:`GuardedProtocol` adds, per connection:

- a head larger than ``max_header_size`` gets **431** and the connection closes, checked as
  the bytes arrive (never more than one read beyond the limit is held);
- a head must arrive whole within ``header_timeout`` of its first byte, and a body at
  ``min_body_rate`` bytes/s on average once ``read_timeout`` has passed; a client that
  sends nothing for ``read_timeout`` in mid-request is cut too: each gets **408**;
- past ``max_connections`` open connections (in this process) a new one gets **503** and
  is closed at once.

The cost on the hot path is a few counters per read; one timer per connection checks the
clock. It also tells the requests in flight on a connection when it is lost (their
:class:`~modelgarden.api.streaming.ClientWatch`), so noticing a client that leaves costs no
task per request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

import orjson
import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelgarden.api.streaming import WATCHERS, ClientWatch
from modelgarden.config import Settings

log = structlog.get_logger(__name__)
#: Seconds a refused connection stays open, its input dropped, for its answer to arrive.
LINGER = 2.0


@dataclass(frozen=True)
class Limits:
    """The limits of every connection (from the settings)."""

    read_timeout: float = 30.0
    header_timeout: float = 10.0
    max_header_size: int = 64 * 1024
    min_body_rate: float = 1024.0
    max_connections: int = 4096


def refusal(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP response that closes the connection, with an ``{"error": ...}`` body."""
    body = orjson.dumps({"error": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Count:
    """Open connections of this process (shared by every configured subclass)."""

    open = 0


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`Limits` on each connection."""

    limits: ClassVar[Limits] = Limits()

    @classmethod
    def configured(cls, limits: Limits) -> type[GuardedProtocol]:
        """A subclass with these limits (uvicorn takes a protocol class)."""
        return type(cls.__name__, (cls,), {"limits": limits})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        now = self.loop.time()
        self._reading = True  # inside a request (head or body)
        self._in_head = True
        self._head_bytes = 0
        self._head_started: float | None = None
        self._body_started = now
        self._body_bytes = 0
        self._last_read = now
        #: The requests on this connection watching for it to go (``api/streaming.py``).
        self._watchers: set[ClientWatch] = set()
        self._refused = False
        self._counted = _Count.open < self.limits.max_connections
        if not self._counted:
            log.warning("refusing a connection: too many open", limit=self.limits.max_connections)
            self._refuse(503, "Service Unavailable", "too many open connections; try again")
            self._watch: asyncio.TimerHandle | None = None
            return
        _Count.open += 1
        self._watch = self.loop.call_later(self.limits.read_timeout, self._check)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # a refused client's bytes are dropped unread while it closes
            return
        now = self._last_read = self.loop.time()
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_started is None:
                self._head_started = now
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_header_size:
            limit = self.limits.max_header_size
            self._refuse(431, "Request Header Fields Too Large",
                         f"request head too large: at most {limit} bytes")  # fmt: skip

    def on_message_begin(self) -> None:
        self._reading = True
        super().on_message_begin()
        self.scope[WATCHERS] = self._watchers  # type: ignore[literal-required]

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._body_started = self.loop.time()
        self._body_bytes = 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading = False
        self._in_head, self._head_bytes, self._head_started = True, 0, None  # the next one
        super().on_message_complete()
        # A body over uvicorn's 64 KiB buffer pauses reading until the app takes it; once
        # the request is whole, read on, or a client that leaves while its request waits
        # for a runner is never seen to go (its close is never read).
        self.flow.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._counted:
            self._counted = False
            _Count.open -= 1
        super().connection_lost(exc)
        for watcher in list(self._watchers):
            watcher.lost()

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer and close, lingering: a client still sending would get a reset that
        destroys the answer, so its bytes are dropped unread until it closes (or 2 s)."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self.transport.write(refusal(status, reason, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)

    def _too_slow(self, now: float) -> str | None:
        """Why the request being read is too slow, or ``None`` (never while we hold it)."""
        limits = self.limits
        if self.flow.read_paused:  # the app has not taken the body yet: not the client's fault
            self._last_read = self._body_started = now
            self._body_bytes = 0
            return None
        if now - self._last_read >= limits.read_timeout:
            return f"nothing sent for {limits.read_timeout:g}s in mid-request"
        if self._in_head:
            started = self._head_started
            if started is not None and now - started > limits.header_timeout:
                return f"request head not sent whole within {limits.header_timeout:g}s"
            return None
        elapsed = now - self._body_started
        if elapsed > limits.read_timeout and self._body_bytes < limits.min_body_rate * elapsed:
            return f"request body slower than {limits.min_body_rate:g} bytes/s"
        return None

    def _check(self) -> None:
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._reading and (why := self._too_slow(now)):
            log.info("closing a client too slow to send its request", reason=why)
            self._refuse(408, "Request Timeout", why)
            return
        wait = 1.0 if self._reading else self.limits.read_timeout
        self._watch = self.loop.call_later(wait, self._check)


def limits_of(settings: Settings) -> Limits:
    """The connection limits the settings ask for."""
    return Limits(
        read_timeout=settings.read_timeout,
        header_timeout=settings.header_timeout,
        max_header_size=settings.max_header_size,
        min_body_rate=settings.min_body_rate,
        max_connections=settings.max_connections,
    )
