"""Running the gateway under uvicorn (uvloop event loop, httptools parser)."""

from __future__ import annotations

import asyncio
import atexit
import math
import os
import signal
import socket
from pathlib import Path
from types import FrameType

import structlog
import uvicorn

from modelgarden.api.app import create_app
from modelgarden.api.connection import GuardedProtocol, limits_of
from modelgarden.api.guard import is_loopback_bind
from modelgarden.api.state import ProcessRole
from modelgarden.api.streaming import Drain
from modelgarden.config import ConfigError, Settings
from modelgarden.db import DatabaseError
from modelgarden.gateway import Gateway
from modelgarden.security.keys import RECOVER, count_keys
from modelgarden.telemetry.logging import configure_logging
from modelgarden.workers import (
    ENV_PRIMARY,
    ENV_RECORDS_FD,
    WorkerGateway,
    WorkerLink,
    Workers,
    listen_socket,
    steer_to_workers,
)

log = structlog.get_logger(__name__)
#: Seconds after the grace period before uvicorn cancels whatever is still running.
LAST_RESORT = 5.0
#: How long a replaced relay worker lets the answers it is giving finish (its successor
#: already takes the new clients); a SIGTERM meanwhile brings back the usual grace.
RETIRE_GRACE = 900.0


def serve(
    settings: Settings, config_file: Path | None = None, env_file: Path | None = None
) -> None:
    """Serve until interrupted; every runner process is stopped on the way out.

    With ``settings.workers`` above 1 this process is the primary and starts the relay
    workers; a process started by a primary (its environment says so) is a relay worker.
    """
    configure_logging(settings.log_level)
    check_exposure(settings)
    host, port = settings.bind
    workers: Workers | None = None
    role: ProcessRole | None = None
    if primary := os.environ.get(ENV_PRIMARY):
        role = WorkerLink(primary, int(os.environ[ENV_RECORDS_FD]), settings.worker_recycle)
        app = create_app(settings, WorkerGateway(settings), role=role)
        sockets = [listen_socket(host, port, shared=True, first=False)]
    else:
        shared = settings.workers > 1
        sockets = [listen_socket(host, port, shared=shared)]
        if shared:
            steer_to_workers(sockets[0], settings.workers - 1)
            private = listen_socket("127.0.0.1", 0, shared=False)
            sockets.append(private)
            url = f"http://127.0.0.1:{private.getsockname()[1]}"
            role = workers = Workers(settings, settings.workers, url, config_file, env_file)
        gateway = Gateway(settings)
        app = create_app(settings, gateway, role=role)
        atexit.register(gateway.local.scheduler.kill_all)
        log.info(
            "modelgarden listening",
            address=f"http://{host}:{port}",
            models=str(settings.models_dir),
            workers=settings.workers,
        )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=GuardedProtocol.configured(limits_of(settings)),
        lifespan="on",
        access_log=False,
        log_level="warning",
        # No client addresses are used; X-Forwarded-* parsing would only cost time.
        proxy_headers=False,
        # uvicorn's own cancel is the last resort, after the drain has ended every answer.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace + LAST_RESORT),
        server_header=False,
    )
    server = _Server(config, app.state.drain, settings.shutdown_grace, workers)
    if primary:  # the primary replaces this worker with SIGUSR1 (see modelgarden.workers)
        signal.signal(signal.SIGUSR1, server.retire)
    server.run(sockets=sockets)


def check_exposure(settings: Settings) -> None:
    """Refuse to listen beyond loopback with no API key, unless told ``--insecure``.

    Ollama has no authentication and asks for a proxy in front; this gateway is that proxy,
    so it will not open the models, the store and any upstream keys to a network by default.
    """
    host, port = settings.bind
    if is_loopback_bind(host):
        return
    try:
        keys = asyncio.run(count_keys(settings))
        problem = None if keys else "no API key exists"
    except DatabaseError as exc:
        problem = f"API keys cannot be read ({exc})"
    if problem is None:
        return
    if settings.insecure:
        log.warning(
            "listening beyond loopback WITHOUT authentication (--insecure): anyone who can "
            "reach this address can use and manage every model",
            address=f"{host}:{port}",
        )
        return
    raise ConfigError(
        f"refusing to listen on {host}:{port}: {problem}; create an admin key first "
        f"({RECOVER}), or pass --insecure"
    )


class _Server(uvicorn.Server):
    """uvicorn's server, with a graceful stop for streams and a clean exit status.

    On SIGTERM/SIGINT uvicorn stops accepting connections and lets each open one finish
    its answer; here, once ``grace`` seconds have passed, the :class:`Drain` ends the
    answers still in flight with an error record in their API's framing (a request still
    waiting gets a 503), so that no client sees a stream just cut. Then the lifespan stops
    every runner, and the process exits with status 0 (uvicorn would re-raise the signal,
    which ends the process with -15; a service manager should see a clean exit).
    """

    def __init__(
        self, config: uvicorn.Config, drain: Drain, grace: float, workers: Workers | None = None
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.usual_grace = self.grace = grace
        self.workers = workers
        self._deadline: asyncio.TimerHandle | None = None
        self._began = 0.0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()
        if self.grace != self.usual_grace:  # after retire(): a real stop keeps its deadline
            self.grace = self.usual_grace
            if self._deadline is not None:  # the shutdown has begun: bring its deadline in
                loop = asyncio.get_event_loop()
                loop.call_soon_threadsafe(self._set_deadline, loop)
        if self.workers is not None:  # they drain alongside this process
            self.workers.signal_stop()

    def retire(self, sig: int, frame: FrameType | None) -> None:
        """SIGUSR1, a relay worker replaced by its primary: stop taking clients, let the
        answers in flight finish (up to :data:`RETIRE_GRACE`), exit."""
        super().handle_exit(signal.SIGTERM, frame)
        self.grace = RETIRE_GRACE
        self.config.timeout_graceful_shutdown = math.ceil(RETIRE_GRACE + LAST_RESORT)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        log.info("shutting down", grace_s=self.grace, in_flight=len(self.drain.watches))
        loop = asyncio.get_running_loop()
        self._began = loop.time()
        self._set_deadline(loop)
        try:
            await super().shutdown(sockets)
        finally:
            if self._deadline is not None:
                self._deadline.cancel()

    def _set_deadline(self, loop: asyncio.AbstractEventLoop) -> None:
        """End the answers still in flight ``grace`` seconds after the shutdown began."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = loop.call_at(self._began + self.grace, self._end_in_flight)

    def _end_in_flight(self) -> None:
        ended = self.drain.end_all()
        if ended:
            log.warning("grace period over: ending requests in flight", requests=ended)
