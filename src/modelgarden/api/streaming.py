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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from modelgarden.api.errors import ollama_error_line, openai_error_body
from modelgarden.backends.base import BackendResponse
from modelgarden.errors import BackendUnavailable, ClientClosed, GardenError
from modelgarden.telemetry.record import Meter
from modelgarden.translate.stream import DONE, sse_error

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


class ClientWatch:
    """Watches a request's ASGI receive channel for the client disconnecting."""

    def __init__(self, receive: Receive) -> None:
        self.future: asyncio.Future[None] = asyncio.ensure_future(self._wait(receive))

    @staticmethod
    async def _wait(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    @property
    def gone(self) -> bool:
        """Whether the client has disconnected."""
        return self.future.done() and not self.future.cancelled()

    async def guard(self, work: Awaitable[T]) -> T:
        """Await ``work`` unless the client leaves first (then raise :class:`ClientClosed`).

        The waiting task itself is cancelled when the client goes: no extra task per request.
        """
        task = asyncio.current_task()
        assert task is not None

        def on_disconnect(_: asyncio.Future[None]) -> None:
            if self.gone:
                task.cancel()

        self.future.add_done_callback(on_disconnect)
        try:
            return await work
        except asyncio.CancelledError:
            if not self.gone:
                raise
            task.uncancel()
            raise ClientClosed("client disconnected") from None
        finally:
            self.future.remove_done_callback(on_disconnect)

    def stop(self) -> None:
        """Stop watching (the response is complete)."""
        self.future.cancel()


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

    def _start(self, status: int, media_type: str) -> dict[str, object]:
        headers = [(b"content-type", media_type.encode()), *self.extra_headers]
        if self.meter is not None:
            headers += self.meter.headers()
        return {"type": "http.response.start", "status": status, "headers": headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None

        def on_disconnect(_: asyncio.Future[None]) -> None:
            if self.watch.gone:
                task.cancel()

        self.watch.future.add_done_callback(on_disconnect)
        try:
            if self.stream:
                await self._relay(send)
            else:
                await self._whole(send)
        except asyncio.CancelledError:
            if not self.watch.gone:
                raise
            task.uncancel()
        finally:
            self.watch.future.remove_done_callback(on_disconnect)
            self.watch.stop()
            await self.upstream.close()
            if self.meter is not None:
                if self.watch.gone:
                    self.outcome = (499, "client disconnected")
                status, error = self.outcome
                self.meter.finish(status, tail=self.tail, error=error)

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
        await send({"type": "http.response.body", "body": last, "more_body": False})

    async def _whole(self, send: Send) -> None:
        parts: list[bytes] = []
        reading = time.perf_counter_ns()
        try:
            async for chunk in self.upstream.body:
                parts.append(chunk)
        except GardenError as exc:
            body, status = self.framing.error_body(exc), exc.status
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
        await send({"type": "http.response.body", "body": body, "more_body": False})
