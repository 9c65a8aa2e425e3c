"""The test side of the ``modal`` backend's seam: Modal's ``.local()`` instead of ``.remote``.

Modal cannot be reached from here, so the GPU class of ``deploy/modal_app.py`` runs
in-process: :class:`LocalCalls` has the shape of the production handle
(``modelgarden.backends.modal.RemoteCalls``) but calls ``OllamaBackend().proxy.local(...)``
and iterates ``OllamaBackend().stream.local(...)``. Modal's ``.local()`` runs the class's
``@modal.enter`` hook once, on the first call (so the real model server starts and the real
pulls happen), and returns the generator as a generator. Those are blocking calls, so they
run on threads, as Modal runs a synchronous method's inputs in its container.

Also here: importing the deployment module, and serving an ASGI app with uvicorn on a free
loopback port in a thread (the Modal gateway's app, the seam swapped, real clients in front).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import uvicorn

from tests.conftest import free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
_END = object()


def import_modal_app() -> ModuleType:
    """``deploy/modal_app.py`` imported as Modal imports it (``modal_app``), offline."""
    if str(DEPLOY) not in sys.path:
        sys.path.insert(0, str(DEPLOY))
    import modal_app

    return modal_app


class LocalCalls:
    """A handle on one in-process instance of the GPU class; counts what it was asked."""

    def __init__(self, instance: Any) -> None:
        self.instance = instance
        self.calls: list[dict[str, Any]] = []

    async def proxy(self, call: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(call)
        result: dict[str, Any] = await asyncio.to_thread(self.instance.proxy.local, call)
        return result

    async def stream(self, call: dict[str, Any]) -> AsyncIterator[Any]:
        self.calls.append(call)
        # the class's stream method is a generator function: a generator, which close() ends
        items: Generator[Any, None, None] = await asyncio.to_thread(
            self.instance.stream.local, call
        )
        try:
            while (item := await asyncio.to_thread(next, items, _END)) is not _END:
                yield item
        finally:
            await asyncio.to_thread(items.close)

    def wakes(self) -> int:
        """How many wake-up calls (``GET /api/version``) reached the class."""
        return sum(1 for c in self.calls if c["path"] == "/api/version")

    def stop(self) -> None:
        """What the class's ``@modal.exit`` hook does: stop its model server."""
        user = self.instance._cached_user_cls_instance()
        if hasattr(user, "server"):
            user.server.stop()


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app on a free loopback port until the block ends; yields its URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
