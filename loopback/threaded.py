"""An aiohttp app served on loopback from a thread and event loop of its own, so tests on
either side (a sync test, or an async one with its own loop) can start it and reach it.

Every stand-in of a remote service (a model registry, Hugging Face, OpenRouter,
Anthropic) is one of these: it adds its routes in :meth:`ThreadedApp.routes`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Self

from aiohttp import web


class ThreadedApp:
    """Owns the thread, the event loop and the listening site of one stand-in server."""

    def __init__(self, port: int = 0) -> None:
        #: The port it listens on (0 until started, unless one was asked for).
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def routes(self, app: web.Application) -> None:
        """Add the stand-in's routes to ``app``."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Listen (on a free port unless one was given) and serve until :meth:`stop`."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    async def _listen(self) -> None:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        """Close the site and every connection, then end the thread."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
