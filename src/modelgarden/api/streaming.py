"""Sending a backend's answer to the client: the hot path.

:class:`ClientWatch` notices a client that goes away, from the moment the request body
is read: while the request waits for a runner slot (it leaves the queue) and while the
answer streams (the backend's answer is closed, which stops the generation).

:class:`RelayResponse` is a bare ASGI response. A streamed answer goes out chunk by chunk
exactly as the backend wrote it (no re-encoding); only the last bytes are kept, to tell
whether the stream ended with its final record. If the backend fails mid-stream, or the
stream ends without its final record, the client gets one last error record in its own
API's framing. A non-streamed answer is read whole first, so that an error inside it still
gets a real status.

:class:`Drain` ends what is still in flight when a stopping server's grace period is over:
each request's :class:`ClientWatch` is told, and a stream that has begun gets its API's
last error record, a request still waiting gets a 503 in its API's shape.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from modelgarden.api.errors import (
    anthropic_error_body,
    anthropic_status,
    ollama_error_line,
    openai_error_body,
)
from modelgarden.backends.base import BackendResponse
from modelgarden.errors import BackendUnavailable, ClientClosed, GardenError, Overloaded
from modelgarden.telemetry.meter import Meter
from modelgarden.translate.stream import DONE, sse_error
from modelgarden.translate.stream_anthropic import error_event as anthropic_error_event
from modelgarden.translate.stream_responses import FINAL as RESPONSES_FINAL
from modelgarden.translate.stream_responses import error_event as responses_error_event

T = TypeVar("T")
#: The longest final record kept for inspection (a final record of /api/generate carries
#: the whole token context, so it can be long).
TAIL = 8 << 20


def last_line(tail: bytes, chunk: bytes) -> bytes:
    """The bytes of the stream's current last line, given the previous ones and a new chunk."""
    cut = chunk.rstrip(b"\n").rfind(b"\n")
    if cut >= 0:
        return chunk[cut + 1 :]
    return (tail + chunk)[-TAIL:]


@dataclass(frozen=True)
class Framing:
    """How one API family frames answers: stream end check, error records, error bodies."""

    #: Whether the last bytes of a stream hold its final record.
    complete: Callable[[bytes], bool]
    #: The bytes of a final error record, for a stream that failed after it began.
    error_record: Callable[[str], bytes]
    #: The status a whole (non-streamed) body deserves: 200 unless it is an error.
    body_status: Callable[[bytes], int]
    #: A whole error body for a message.
    error_body: Callable[[GardenError], bytes]
    #: The status of a whole error answer (the error's own, unless the family says else).
    error_status: Callable[[GardenError], int] = lambda exc: exc.status


def _ndjson_complete(tail: bytes) -> bool:
    """Whether a stream's last line is a whole final record (``done`` true, or an error)."""
    line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(record, dict) and (record.get("done") is True or "error" in record)


NDJSON = Framing(
    complete=_ndjson_complete,
    error_record=ollama_error_line,
    body_status=lambda body: 500 if body.startswith(b'{"error"') else 200,
    error_body=lambda exc: orjson.dumps({"error": exc.message}),
)


SSE = Framing(
    complete=lambda tail: tail.rstrip().endswith(DONE.rstrip()),
    error_record=lambda message: sse_error(message) + DONE,
    body_status=lambda body: 500 if body.startswith(b'{"error"') else 200,
    error_body=lambda exc: orjson.dumps(openai_error_body(exc)),
)

_EVENT_TYPE = re.compile(rb'"type"\s*:\s*"([A-Za-z_.]+)"')


def event_type(tail: bytes) -> bytes:
    """The ``type`` of the last ``data:`` line of an SSE stream's tail (``b""`` if none)."""
    line = tail.rstrip().rsplit(b"\n", 1)[-1]
    if not line.startswith(b"data:"):
        return b""
    match = _EVENT_TYPE.search(line, 0, 256)
    return match.group(1) if match else b""


ANTHROPIC_SSE = Framing(
    complete=lambda tail: event_type(tail) in (b"message_stop", b"error"),
    error_record=anthropic_error_event,
    body_status=lambda body: 500 if body.startswith(b'{"type":"error"') else 200,
    error_body=lambda exc: orjson.dumps(anthropic_error_body(exc)),
    error_status=anthropic_status,
)

RESPONSES_SSE = Framing(
    complete=lambda tail: event_type(tail).decode() in RESPONSES_FINAL,
    error_record=responses_error_event,
    body_status=lambda body: 500 if body.startswith(b'{"error"') else 200,
    error_body=lambda exc: orjson.dumps(openai_error_body(exc)),
)


#: What a request still in flight when the server's grace period ends is told.
SHUTTING_DOWN = "server is shutting down"


class Drain:
    """Owns the set of in-flight inference requests (their :class:`ClientWatch`), so that a
    stopping server can end them all at its deadline, each in its own API's framing."""

    def __init__(self) -> None:
        self.watches: set[ClientWatch] = set()
        #: Why in-flight requests were ended (``None`` while the server runs normally).
        self.ended: str | None = None

    def end_all(self, message: str = SHUTTING_DOWN) -> int:
        """End every request in flight (and any that starts later); returns how many."""
        self.ended = message
        watches = list(self.watches)
        for watch in watches:
            watch.end(message)
        return len(watches)


#: Scope key under which a server that tells its requests of a lost connection (our
#: uvicorn protocol, ``server.py``) puts the connection's set of watchers to call.
WATCHERS = "modelgarden.watchers"


class ClientWatch:
    """Watches a request's client for disconnecting, and lets a :class:`Drain` end the
    request; either cancels the work the request is awaiting.

    Under our own server protocol the connection calls :meth:`lost` when it goes (no task
    per request); under any other ASGI server one task waits on ``receive`` for
    ``http.disconnect``.
    """

    def __init__(
        self, receive: Receive, drain: Drain | None = None, scope: Scope | None = None
    ) -> None:
        self._gone = False
        self.watchers: set[ClientWatch] | None = None if scope is None else scope.get(WATCHERS)
        self.future: asyncio.Future[None] | None = None
        if self.watchers is not None:
            self.watchers.add(self)
        else:
            self.future = asyncio.ensure_future(self._wait(receive))
            self.future.add_done_callback(self._on_disconnect)
        #: The task to cancel when the client leaves or the server ends the request.
        self.target: asyncio.Task[object] | None = None
        #: Why the server ended this request (``None`` unless it did).
        self.ended: str | None = None
        self.drain = drain
        if drain is not None:
            drain.watches.add(self)
            if drain.ended is not None:
                self.ended = drain.ended

    @staticmethod
    async def _wait(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    def _on_disconnect(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled():
            self.lost()

    def lost(self) -> None:
        """The client's connection is gone: stop what the request awaits."""
        self._gone = True
        if self.target is not None:
            self.target.cancel()

    @property
    def gone(self) -> bool:
        """Whether the client has disconnected."""
        return self._gone

    @property
    def interrupted(self) -> bool:
        """Whether the client left or the server ended the request."""
        return self.ended is not None or self.gone

    def end(self, message: str) -> None:
        """End the request (the server is stopping): cancel what it awaits."""
        self.ended = message
        if self.target is not None:
            self.target.cancel()

    def watching(self) -> asyncio.Task[object]:
        """Make the current task the one that an interruption cancels; returns it."""
        task = asyncio.current_task()
        assert task is not None
        self.target = task
        return task

    async def guard(self, work: Awaitable[T]) -> T:
        """Await ``work`` unless the client leaves first (then raise :class:`ClientClosed`)
        or the server ends the request (then :class:`Overloaded`).

        The waiting task itself is cancelled: no extra task per request.
        """
        task = self.watching()
        try:
            if self.interrupted:
                if asyncio.iscoroutine(work):
                    work.close()
                raise asyncio.CancelledError
            return await work
        except asyncio.CancelledError:
            if not self.interrupted:
                raise
            if task.cancelling():
                task.uncancel()
            if self.gone:
                raise ClientClosed("client disconnected") from None
            raise Overloaded(self.ended or SHUTTING_DOWN) from None
        finally:
            self.target = None

    def stop(self) -> None:
        """Stop watching (the response is complete)."""
        self.target = None
        if self.future is not None:
            self.future.cancel()
        if self.watchers is not None:
            self.watchers.discard(self)
        if self.drain is not None:
            self.drain.watches.discard(self)


class RelayResponse(Response):
    """ASGI response that relays a :class:`BackendResponse` to the client.

    A :class:`starlette.responses.Response` only so that frameworks pass it through; it
    sends everything itself in ``__call__``.
    """

    def __init__(
        self,
        upstream: BackendResponse,
        *,
        stream: bool,
        watch: ClientWatch,
        framing: Framing = NDJSON,
        headers: dict[str, str] | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.status_code = upstream.status
        self.background = None
        self.upstream = upstream
        self.stream = stream
        self.watch = watch
        self.framing = framing
        self.meter = meter
        self.extra_headers = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        #: The last bytes relayed, holding the final record (for usage accounting).
        self.tail = b""
        #: How the request ended, for its record: status, and the error if it failed.
        self.outcome: tuple[int, str | None] = (500, "the relay failed")
        #: Whether the response's start, and its last body message, went out.
        self.started = self.finished = False

    def _start(self, status: int, media_type: str) -> dict[str, object]:
        self.started = True
        headers = [(b"content-type", media_type.encode()), *self.extra_headers]
        if self.meter is not None:
            headers += self.meter.headers()
        return {"type": "http.response.start", "status": status, "headers": headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = self.watch
        task = watch.watching()
        try:
            if watch.interrupted:
                raise asyncio.CancelledError
            if self.stream:
                await self._relay(send)
            else:
                await self._whole(send)
        except asyncio.CancelledError:
            if not watch.interrupted:
                raise
            if task.cancelling():
                task.uncancel()
            if not watch.gone:
                await self._end(send, watch.ended or SHUTTING_DOWN)
        finally:
            watch.stop()
            await self.upstream.close()
            if self.meter is not None:
                if watch.gone:
                    self.outcome = (499, "client disconnected")
                status, error = self.outcome
                self.meter.finish(status, tail=self.tail, error=error)

    async def _end(self, send: Send, message: str) -> None:
        """Finish a response the server is ending: a 503 in the API's shape when nothing
        was sent yet, else the stream's last error record."""
        ending = Overloaded(message)
        status = self.framing.error_status(ending)
        self.outcome = (status, message)
        if not self.started:
            body = self.framing.error_body(ending)
            await send(self._start(status, "application/json"))
        elif not self.finished:
            body = self.framing.error_record(message)
        else:
            return
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _relay(self, send: Send) -> None:
        await send(self._start(self.upstream.status, self.upstream.media_type))
        tail = chunk = b""
        meter = self.meter
        try:
            async for chunk in self.upstream.body:
                if meter is not None and not meter.first_ns:
                    meter.first_ns = time.perf_counter_ns()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                tail = last_line(tail, chunk)
        except GardenError as exc:
            last = self.framing.error_record(exc.message)
            self.outcome = (exc.status, exc.message)
        else:
            if self.framing.complete(tail):
                last = b""
                self.outcome = (self.upstream.status, None)
            else:
                message = "the backend closed the stream early"
                last = self.framing.error_record(message)
                self.outcome = (BackendUnavailable.status, message)
        # The final record, and the chunk it came in: an SSE stream's usage event comes
        # just before its ``[DONE]`` line, often in the same chunk.
        self.tail = chunk if chunk.endswith(tail) else tail
        self.finished = True
        await send({"type": "http.response.body", "body": last, "more_body": False})

    async def _whole(self, send: Send) -> None:
        parts: list[bytes] = []
        reading = time.perf_counter_ns()
        try:
            async for chunk in self.upstream.body:
                parts.append(chunk)
        except GardenError as exc:
            body, status = self.framing.error_body(exc), self.framing.error_status(exc)
            self.outcome = (status, exc.message)
        else:
            body = b"".join(parts)
            status = self.upstream.status
            if status == 200:
                status = self.framing.body_status(body)
            self.tail = body
            self.outcome = (status, None if status < 400 else "error in the backend's answer")
        if self.meter is not None:
            self.meter.backend_ns += time.perf_counter_ns() - reading
        await send(self._start(status, "application/json"))
        self.finished = True
        await send({"type": "http.response.body", "body": body, "more_body": False})
