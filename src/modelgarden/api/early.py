"""Starting slow answers early, for hosts that cut off a response that has not begun in time.

A Modal web endpoint that has not started its response within 150 s answers the client with
a redirect to a result URL instead (which ``httpx``-based clients such as ``ollama`` do not
follow). A cold GPU backend, or a long non-streamed generation, can take that long. Behind
such a host, :class:`EarlyStart` wraps the gateway: when a POST has not started its response
within ``after`` seconds, it sends ``200`` and the headers the answer will have, then a byte
that every client of that framing ignores every ``every`` seconds (a space before a JSON
document or the first NDJSON line, an SSE comment), until the real answer comes and follows.

The price: an error that comes after the early start cannot change the status; it is the
body (``{"error": ...}``, as an SSE ``data:`` event for a ``/v1`` stream), which the
``ollama`` and ``openai`` clients raise as errors. Only the Modal deployment uses it; it
costs one timer task per POST, so ``garden serve`` does without.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelgarden.tasks import cancel_and_wait


@dataclass
class _Exchange:
    """What one request's wrapper knows: its body so far, and who started the response."""

    body: list[bytes]
    started: bool = False
    early_sse: bool | None = None
    status: int = 200
    body_begun: bool = False


def _framing(path: str, body: bytes) -> tuple[bytes, bytes]:
    """The content type and filler byte of the answer a request will get."""
    try:
        data = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        data = {}
    stream = data.get("stream") if isinstance(data, dict) else None
    if path.startswith("/v1/"):
        if stream is True:
            return b"text/event-stream", b": waiting for the model\n\n"
        return b"application/json", b" "
    if stream is False or path.endswith(("/embed", "/embeddings", "/show")):
        return b"application/json", b" "
    return b"application/x-ndjson", b" "


class EarlyStart:
    """ASGI middleware that starts a POST's response by ``after`` seconds, whatever comes."""

    def __init__(self, app: ASGIApp, *, after: float = 120.0, every: float = 10.0) -> None:
        self.app = app
        self.after = after
        self.every = every

    def __getattr__(self, name: str) -> object:  # state, openapi(): the wrapped app's
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        ex = _Exchange(body=[])
        lock = asyncio.Lock()

        async def recv() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                ex.body.append(message.get("body", b""))
            return message

        async def relay(message: Message) -> None:
            async with lock:
                if message["type"] == "http.response.start":
                    ex.status = int(message["status"])
                    if ex.early_sse is None:
                        ex.started = True
                        await send(message)
                    return
                if ex.early_sse and ex.status != 200 and not ex.body_begun:
                    message = {**message, "body": b"data: " + message.get("body", b"") + b"\n\n"}
                ex.body_begun = True
                await send(message)

        timer = asyncio.create_task(self._keep_open(scope, ex, lock, send))
        try:
            await self.app(scope, recv, relay)
        finally:
            await cancel_and_wait(timer)

    async def _keep_open(self, scope: Scope, ex: _Exchange, lock: asyncio.Lock, send: Send) -> None:
        await asyncio.sleep(self.after)
        async with lock:
            if ex.started:
                return
            media, filler = _framing(scope["path"], b"".join(ex.body))
            ex.early_sse = media == b"text/event-stream"
            start = {"type": "http.response.start", "status": 200}
            await send({**start, "headers": [(b"content-type", media)]})
            await send({"type": "http.response.body", "body": filler, "more_body": True})
        while True:
            await asyncio.sleep(self.every)
            async with lock:
                if ex.body_begun:
                    return
                await send({"type": "http.response.body", "body": filler, "more_body": True})
