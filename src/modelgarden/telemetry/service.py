"""The telemetry of one gateway: metrics, the request log line, and usage records.

:class:`Telemetry` hands each inference request a :class:`Meter` and consumes the
:class:`RequestRecord` it becomes, once: one observation in the metrics and in the
console's per-minute series, one log line, one entry in the usage queue. It also owns the
database connection the usage writer uses (opened at start, re-tried in the background
while it cannot be reached).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client.core import Metric
from starlette.types import Scope

from modelgarden.config import Settings
from modelgarden.db import Database, DatabaseError, connect, redact
from modelgarden.tasks import cancel_and_wait
from modelgarden.telemetry.logging import request_line
from modelgarden.telemetry.meter import Meter
from modelgarden.telemetry.metrics import Metrics, state_metrics
from modelgarden.telemetry.record import RequestRecord, request_id_of
from modelgarden.telemetry.series import Series
from modelgarden.telemetry.tracing import Tracing
from modelgarden.telemetry.usage import UsageWriter

log = structlog.get_logger("modelgarden.requests")
#: Seconds between attempts to reach a database that could not be opened.
RECONNECT = 5.0
#: Where a hot route puts the moment it received the request (``perf_counter_ns``).
START_KEY = "garden.start"
METER_KEY = "garden.meter"


class Telemetry:
    """Owns the metrics registry, the chart series, the per-request log line, the usage
    writer and the process's tracing (when on)."""

    def __init__(
        self,
        settings: Settings,
        backends: Callable[[], list[dict[str, Any]]],
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        #: Spans for each inference request (``None``: tracing is off; telemetry/tracing.py).
        self.tracing = tracing
        #: Each backend's description, read at scrape time (``Gateway.describe``).
        self.backends = backends
        self.log_prompts = settings.log_prompts
        self.usage = UsageWriter()
        self.metrics = Metrics(self._state)
        #: The last hour per minute and model, for the console's charts.
        self.series = Series()
        self.db: Database | None = None
        #: Why the database cannot be used now (``None`` when it can).
        self.db_error: str | None = "not connected yet"
        self._connector: asyncio.Task[None] | None = None
        #: Set once the database is open.
        self.connected = asyncio.Event()
        #: Further consumers of each finished request's record (API key token limits).
        self.hooks: list[Callable[[RequestRecord], None]] = []
        #: In a relay worker: where records go instead of this process's metrics, series
        #: and usage queue (the primary accounts for them; :mod:`modelgarden.workers`).
        self.ship: Callable[[RequestRecord], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database and start the usage writer (or keep trying in the background)."""
        if not await self._connect():
            self._connector = asyncio.create_task(self._reconnect())

    async def _connect(self) -> bool:
        url = self.settings.database_url
        try:
            db = await connect(url, self.settings.models_dir)
            await self.usage.start(db)
        except DatabaseError as exc:
            if self.db_error != str(exc):
                log.error("usage database unavailable", error=str(exc))
            self.db_error = str(exc)
            return False
        self.db, self.db_error = db, None
        self.connected.set()
        log.info("usage database ready", database=redact(db.where), dialect=db.dialect)
        return True

    async def _reconnect(self) -> None:
        while True:
            await asyncio.sleep(RECONNECT)
            if await self._connect():
                return

    async def close(self) -> None:
        """Write the queued usage records and close the database."""
        await cancel_and_wait(self._connector)
        await self.usage.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # the last spans go out

    # -- requests ----------------------------------------------------------------------------

    def meter(self, scope: Scope) -> Meter:
        """The request's meter, started when the gateway received it (made on first use)."""
        meter: Meter | None = scope.get(METER_KEY)
        if meter is None:
            start = scope.get(START_KEY) or time.perf_counter_ns()
            meter = scope[METER_KEY] = Meter(self, request_id_of(scope["headers"]), start)
            if self.tracing is not None:
                meter.trace = self.tracing.start(
                    scope["headers"], start, meter.request_id, scope["path"]
                )
        return meter

    def account(self, r: RequestRecord) -> None:
        """Count a finished request (this process's or a relay worker's): metrics, chart
        series, one usage record."""
        self.metrics.observe(r)
        self.series.observe(r)
        self.usage.put(r)

    def record(self, r: RequestRecord) -> None:
        """Consume a finished request: :meth:`account` for it (or ship it to the primary),
        one log line, the hooks."""
        if self.ship is None:
            self.account(r)
        else:
            self.ship(r)
        fields: dict[str, Any] = {
            "request_id": r.request_id,
            "api": r.api,
            "endpoint": r.endpoint,
            "model": r.model,
            "backend": r.backend,
            "status": r.status,
            "stream": r.stream,
            "duration_ms": round(r.duration_ms, 3),
            "ttft_ms": None if r.ttft_ms is None else round(r.ttft_ms, 3),
            "overhead_ms": round(r.overhead_ms, 3),
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "tokens_per_s": None if r.tokens_per_s is None else round(r.tokens_per_s, 1),
        }
        if r.key_id is not None:
            fields["key_id"] = r.key_id
        if r.error is not None:
            fields["error"] = r.error
        if self.log_prompts and r.prompt is not None:
            fields["prompt"] = r.prompt
        request_line(log, fields)
        for hook in self.hooks:
            hook(r)

    # -- state -------------------------------------------------------------------------------

    def usage_state(self) -> dict[str, Any]:
        """The usage writer's counters and the database's state."""
        u = self.usage
        return {
            "database": None if self.db is None else redact(self.db.where),
            "ok": self.db is not None and self.db_error is None and u.error is None,
            "error": self.db_error or u.error,
            "queued": u.depth,
            "written": u.written,
            "dropped": u.dropped,
            "failures": u.failures,
        }

    def _state(self) -> list[Metric]:
        return state_metrics(self.backends(), self.usage_state())
