"""Records and messages from a relay worker to its primary, over a pipe.

Each request a worker answers itself leaves its record in the primary: records travel in
length-prefixed JSON batches every :data:`SHIP_EVERY` seconds, so ``/metrics``, the
console's charts and the usage table count every process's requests. A JSON object instead
of a batch is a message about the worker (``ready``, ``retire``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
from collections.abc import Callable
from dataclasses import astuple
from typing import Any

import orjson
import structlog

from modelgarden.tasks import cancel_and_wait
from modelgarden.telemetry.record import RequestRecord

log = structlog.get_logger(__name__)

#: Seconds between a worker's record batches (and its check that the primary lives).
SHIP_EVERY = 0.25
_LENGTH = struct.Struct("!I")


def _encode(record: RequestRecord) -> list[Any]:
    fields = list(astuple(record))
    fields[-1] = None  # the prompt stays in the worker's own log line
    return fields


class RecordShipper:
    """Owns a relay worker's outgoing records: kept in a list as requests end, written to
    the primary's pipe in one length-prefixed batch every :data:`SHIP_EVERY` seconds."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending: list[list[Any]] = []
        self._transport: asyncio.WriteTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._parent = os.getppid()

    def put(self, record: RequestRecord) -> None:
        """Queue one finished request's record (O(1), no I/O)."""
        self.pending.append(_encode(record))

    async def start(self) -> None:
        """Open the pipe and start shipping."""
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(self.fd, "wb", buffering=0)
        self._transport, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SHIP_EVERY)
            self.flush()
            if os.getppid() != self._parent:  # the primary is gone: stop serving
                log.warning("primary gateway process is gone; stopping")
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def flush(self) -> None:
        """Write what is queued, as one batch."""
        if self.pending:
            batch, self.pending = self.pending, []
            self._write(batch)

    def tell(self, **message: Any) -> None:
        """Send the primary a message about this worker (``ready``, ``retire``), after the
        records queued before it."""
        self.flush()
        self._write(message)

    def _write(self, frame: list[Any] | dict[str, Any]) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        data = orjson.dumps(frame)
        self._transport.write(_LENGTH.pack(len(data)) + data)

    async def close(self) -> None:
        """Ship the last records and close the pipe."""
        await cancel_and_wait(self._task)
        self.flush()
        if self._transport is not None:
            self._transport.close()


class RecordReader(asyncio.Protocol):
    """The primary's end of one worker's record pipe: each batch's records are accounted
    for as if the primary had served them (metrics, series, usage). A message (a JSON object
    instead of a batch) goes to ``told``; ``{"ready": true}`` also sets :attr:`ready`."""

    def __init__(
        self,
        account: Callable[[RequestRecord], None],
        told: Callable[[dict[str, Any]], None] = lambda _message: None,
    ) -> None:
        self.account = account
        self.told = told
        #: Set once the worker has said it is set up (about to accept connections).
        self.ready = asyncio.Event()
        self.buffer = bytearray()
        #: Done when the worker's end is closed (it exited): every batch has been read.
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self.buffer)
            if len(self.buffer) < _LENGTH.size + size:
                return
            raw = bytes(self.buffer[_LENGTH.size : _LENGTH.size + size])
            del self.buffer[: _LENGTH.size + size]
            try:
                batch = orjson.loads(raw)
                if isinstance(batch, dict):
                    if batch.get("ready"):
                        self.ready.set()
                    self.told(batch)
                    continue
                records = [RequestRecord(*fields) for fields in batch]
            except (orjson.JSONDecodeError, TypeError) as exc:
                log.error("bad record batch from a worker", error=str(exc))
                continue
            for record in records:
                self.account(record)
