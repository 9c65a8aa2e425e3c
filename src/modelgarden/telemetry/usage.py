"""Usage records: one row per inference request, written off the hot path in batches.

A finished request only appends its record to a bounded in-memory queue (no I/O, no
await). A background task writes the queue to the database every ``interval`` seconds, or
sooner once ``batch`` records wait, in one transaction per batch. A full queue drops the
new record and counts it: a slow or unreachable database never holds up a request. A batch
the database refused is kept and tried again (new records still queue up to the bound);
on shutdown whatever is queued is written before the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from modelgarden.db import Database, DatabaseError
from modelgarden.durations import TooFar, parse_moment, parse_offset
from modelgarden.tasks import cancel_and_wait
from modelgarden.telemetry.record import RequestRecord

log = structlog.get_logger(__name__)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS usage (
        id {id},
        request_id TEXT NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        day TEXT NOT NULL,
        api TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        backend TEXT NOT NULL,
        key_id TEXT,
        status INTEGER NOT NULL,
        stream INTEGER NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        duration_ms DOUBLE PRECISION NOT NULL,
        ttft_ms DOUBLE PRECISION,
        overhead_ms DOUBLE PRECISION NOT NULL,
        gateway TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS usage_started ON usage (started)",
)
COLUMNS = (
    "request_id", "started", "day", "api", "endpoint", "model", "backend", "key_id", "status",
    "stream", "prompt_tokens", "completion_tokens", "duration_ms", "ttft_ms", "overhead_ms",
    "gateway",
)  # fmt: skip
#: What a summary may be grouped by, and the column each one reads.
GROUPS = {"day": "day", "model": "model", "key": "key_id", "backend": "backend", "api": "api"}


def gateway_id() -> str:
    """This gateway replica, as its usage rows name it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def row(record: RequestRecord, gateway: str) -> tuple[Any, ...]:
    """A record as a ``usage`` row."""
    day = datetime.fromtimestamp(record.started, UTC).strftime("%Y-%m-%d")
    return (
        record.request_id,
        record.started,
        day,
        record.api,
        record.endpoint,
        record.model,
        record.backend,
        record.key_id,
        record.status,
        int(record.stream),
        record.prompt_tokens,
        record.completion_tokens,
        round(record.duration_ms, 3),
        None if record.ttft_ms is None else round(record.ttft_ms, 3),
        round(record.overhead_ms, 3),
        gateway,
    )


class UsageWriter:
    """Owns the bounded queue of finished requests and the task that writes it out."""

    def __init__(self, *, max_queue: int = 10_000, batch: int = 500, interval: float = 1.0):
        self.max_queue = max_queue
        self.batch = batch
        self.interval = interval
        self.db: Database | None = None
        self.gateway = gateway_id()
        self._queue: deque[RequestRecord] = deque()
        self._retry: list[Sequence[Any]] = []
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0
        self.failures = 0
        #: The last write's error, ``None`` once a write succeeds again.
        self.error: str | None = None

    @property
    def depth(self) -> int:
        """Records waiting to be written."""
        return len(self._queue) + len(self._retry)

    def put(self, record: RequestRecord) -> None:
        """Queue a record; never blocks (a full queue drops it and counts the drop)."""
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        self._queue.append(record)
        if len(self._queue) == self.batch:
            self._wake.set()

    async def start(self, db: Database) -> None:
        """Create the table and start writing."""
        self.db = db
        await db.ensure_schema(SCHEMA)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything queued so far (several batches if need be)."""
        async with self._writing:
            await self._flush()

    async def _flush(self) -> None:
        while self.db is not None and (self._retry or self._queue):
            rows = self._retry
            while self._queue and len(rows) < self.batch:
                rows.append(row(self._queue.popleft(), self.gateway))
            self._retry = rows
            try:
                await self.db.insert("usage", COLUMNS, rows)
            except DatabaseError as exc:
                self.failures += 1
                if self.error is None:
                    log.warning("usage records not written; will retry", error=str(exc))
                self.error = str(exc)
                return
            self._retry = []
            self.written += len(rows)
            self.error = None

    async def close(self) -> None:
        """Stop the task, write what is left, and close the database."""
        await cancel_and_wait(self._task)
        if self.db is not None:
            await self.flush()
            await self.db.close()


async def summary(
    db: Database, since: float, by: list[str], until: float | None = None
) -> list[dict[str, Any]]:
    """Requests, errors, tokens and mean latency per group, from ``since`` (Unix seconds)."""
    cols = [GROUPS[name] for name in by]
    keys = ", ".join(cols)
    select = f"{keys}, " if cols else ""
    where = "started >= ?" + (" AND started < ?" if until is not None else "")
    params: list[Any] = [since] + ([until] if until is not None else [])
    sql = (
        f"SELECT {select}COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), "
        "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
        f"AVG(duration_ms) FROM usage WHERE {where}"
        + (f" GROUP BY {keys} ORDER BY {keys}" if cols else "")
    )
    out = []
    for values in await db.fetch(sql, params):
        entry: dict[str, Any] = dict(zip(by, values[: len(by)], strict=True))
        requests, errors, prompt, completion, mean = values[len(by) :]
        if not requests:
            continue
        entry.update(
            requests=int(requests),
            errors=int(errors or 0),
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            mean_duration_ms=round(float(mean or 0.0), 3),
        )
        out.append(entry)
    return out


def parse_since(text: str, now: float) -> float:
    """A moment as Unix seconds: ``7d``, a Go duration (``24h``, ``90m``) back from ``now``,
    or an ISO date or date-time (UTC unless it says otherwise). Raises ``ValueError``."""
    try:
        return now - parse_offset(text)
    except TooFar:
        raise
    except ValueError:
        pass
    try:
        return parse_moment(text)
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: expected 7d, 24h, 2025-01-31 or 2025-01-31T12:00"
        ) from None
