"""Running the gateway under uvicorn (uvloop event loop, httptools parser)."""

from __future__ import annotations

import atexit
from types import FrameType

import structlog
import uvicorn

from modelgarden.api.app import create_app
from modelgarden.config import Settings
from modelgarden.gateway import Gateway
from modelgarden.telemetry.logging import configure_logging

log = structlog.get_logger(__name__)


def serve(settings: Settings) -> None:
    """Serve until interrupted; every runner process is stopped on the way out."""
    configure_logging(settings.log_level)
    gateway = Gateway(settings)
    app = create_app(settings, gateway)
    atexit.register(gateway.local.scheduler.kill_all)
    host, port = settings.bind
    log.info(
        "modelgarden listening",
        address=f"http://{host}:{port}",
        models=str(settings.models_dir),
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    _Server(config).run()


class _Server(uvicorn.Server):
    """uvicorn's server, except that a stop asked for by SIGTERM/SIGINT exits with status 0.

    (uvicorn re-raises the signal after its graceful shutdown, which ends the process with
    -15; a service manager should see a clean exit.)
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()
