"""The uvicorn internals the gateway builds on, exercised in-process on a loopback socket.

``GuardedProtocol`` subclasses uvicorn's ``HttpToolsProtocol`` (its parser callbacks, its
``flow`` control and ``transport``) and the server's ``_Server`` overrides ``handle_exit``
and ``shutdown`` and clears ``_captured_signals``. None of that is uvicorn's public API, so
pyproject.toml pins uvicorn to the range these tests passed on; when a new uvicorn moves
them, these fail here, naming what moved, rather than as a hung or open connection later.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelgarden.api.connection import GuardedProtocol, Limits
from modelgarden.api.streaming import Drain
from modelgarden.server import _Server

#: The methods of uvicorn's classes that the gateway overrides, with their parameters.
OVERRIDDEN = {
    HttpToolsProtocol: {
        "connection_made": ["self", "transport"],
        "data_received": ["self", "data"],
        "on_message_begin": ["self"],
        "on_headers_complete": ["self"],
        "on_body": ["self", "body"],
        "on_message_complete": ["self"],
        "connection_lost": ["self", "exc"],
    },
    uvicorn.Server: {
        "handle_exit": ["self", "sig", "frame"],
        "shutdown": ["self", "sockets"],
    },
}


def test_the_overridden_methods_are_still_there() -> None:
    for cls, methods in OVERRIDDEN.items():
        for name, params in methods.items():
            method = getattr(cls, name, None)
            assert method is not None, (
                f"uvicorn {uvicorn.__version__}: {cls.__name__}.{name} is gone"
            )
            found = list(inspect.signature(method).parameters)
            assert found == params, f"uvicorn {uvicorn.__version__}: {cls.__name__}.{name}{found}"


async def _hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-length", b"5")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello"})


@asynccontextmanager
async def _serving(limits: Limits) -> AsyncIterator[tuple[int, _Server]]:
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(_hello, loop="none", lifespan="off", log_level="error",
                            http=GuardedProtocol.configured(limits))  # fmt: skip
    server = _Server(config, Drain(), grace=1.0)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn has no event; no time passes here)
        await asyncio.sleep(0)
    try:
        yield sock.getsockname()[1], server
    finally:
        server.should_exit = True
        await task


async def _ask(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await reader.read()
    writer.close()
    return answer


async def test_the_guarded_protocol_answers_and_refuses_through_uvicorn() -> None:
    async with _serving(Limits(max_header_size=2048, max_connections=2)) as (port, _):
        ok = await _ask(port, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"hello")
        # Larger than one read, so the head is still coming when the limit is passed.
        big = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (1 << 20) + b"\r\n\r\n"
        refused = await _ask(port, big)
        assert refused.startswith(b"HTTP/1.1 431"), refused[:80]
        # Two connections held open, the third is refused at once.
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        third = await _ask(port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert third.startswith(b"HTTP/1.1 503"), third[:80]
        for _, writer in held:
            writer.close()


async def test_a_stop_signal_leaves_no_captured_signal_to_re_raise() -> None:
    async with _serving(Limits()) as (_, server):
        server._captured_signals.append(signal.SIGTERM)  # as uvicorn's own handler would
        server.handle_exit(signal.SIGTERM, None)
        assert server.should_exit
        assert server._captured_signals == []
