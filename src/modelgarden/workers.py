"""Several gateway processes on one port: ``garden serve --workers N``.

One event loop tops out at one core. With ``--workers N`` the process started is the
**primary**: it owns everything that must exist once (the model store, the runner processes
and their scheduler, the usage database writer, the metrics and console series) and starts
``N - 1`` **relay workers**. Every process listens on the same address (``SO_REUSEPORT``:
the kernel spreads connections over them), so any of them can take a client.

A relay worker answers the hot inference routes for models of remote backends itself (the
byte relay, translation, fallbacks, limits, keys: the same code as the primary). Anything
else, the local runners' models and every other route (store, catalogue, console, metrics,
deploy), it passes untouched to the primary over a private loopback listener
(:mod:`modelgarden.api.forward`). Each request it answers itself leaves its log line in the
worker and its record in the primary: records travel in batches over a pipe, so
``/metrics``, the console's charts and the usage table count every process's requests.

While its workers are up, the primary takes no client connection itself: a small BPF
program on the shared address hands each new connection to a worker's socket (the primary's
is the group's first; should a worker be missing, the kernel's own spread applies, primary
included). So the primary's memory carries no relay burst, and a worker's can be given back
whole: a worker that settles, idle after a burst, more than ``worker_recycle`` above its
resident memory at start asks to be replaced; the primary starts its successor, waits for
it to be ready, then retires the old one (SIGUSR1: it stops taking clients and exits once
the answers it is giving are done). CPython keeps most of a burst's small-object memory
for good (docs/RELIABILITY.md), so this is how the gateway returns to its start.

The primary watches its workers: one that dies is started again (after a pause that grows
while it keeps dying); a worker whose primary is gone stops itself. On SIGTERM the primary
tells its workers at once, so all drain together.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path
from typing import Any

import orjson
import structlog

from modelgarden.config import ConfigError, Settings
from modelgarden.telemetry.record import RequestRecord

log = structlog.get_logger(__name__)

#: Environment of a relay worker: the primary's private URL, the record pipe, its number.
ENV_PRIMARY = "GARDEN_WORKER_PRIMARY"
ENV_RECORDS_FD = "GARDEN_WORKER_RECORDS_FD"
ENV_INDEX = "GARDEN_WORKER_INDEX"
#: Seconds between a worker's record batches (and its check that the primary lives).
SHIP_EVERY = 0.25
#: The longest pause before a worker that keeps dying is started again.
MAX_RESTART_PAUSE = 30.0
#: A worker that lived this long before dying is restarted at once.
STABLE_AFTER = 10.0
#: How long a worker's successor may take to be ready before the old one is kept instead.
READY_WITHIN = 60.0
_LENGTH = struct.Struct("!I")
#: Linux's SO_ATTACH_REUSEPORT_CBPF and the classic BPF opcodes the steering program uses.
_SO_ATTACH_REUSEPORT_CBPF = 51
_BPF_LD_W_ABS, _BPF_ALU_MOD_K, _BPF_ALU_ADD_K, _BPF_RET_A = 0x20, 0x94, 0x04, 0x16
_SKF_AD_RANDOM = (-0x1000 + 56) & 0xFFFFFFFF  # the "random number" ancillary load


def listen_socket(host: str, port: int, *, shared: bool, first: bool = True) -> socket.socket:
    """A listening TCP socket; ``shared`` ones let the other gateway processes bind the same
    address (``SO_REUSEPORT``).

    The ``first`` to share an address tries it without ``SO_REUSEPORT`` beforehand, so that a
    port held by another program (or another gateway) is refused as usual rather than
    quietly split; a relay worker joins its primary's address (``first=False``).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if shared and first:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    return sock


def steer_to_workers(sock: socket.socket, workers: int) -> bool:
    """Hand the new connections of ``sock``'s ``SO_REUSEPORT`` group to its members after the
    first (the primary's), at random: ``1 + random % workers``. An index past the group's
    end (a worker missing) falls back to the kernel's hash over every member. Returns
    whether the kernel took the program (Linux only; elsewhere every process takes its
    share, as without it).
    """
    program = [
        (_BPF_LD_W_ABS, 0, 0, _SKF_AD_RANDOM),
        (_BPF_ALU_MOD_K, 0, 0, workers),
        (_BPF_ALU_ADD_K, 0, 0, 1),
        (_BPF_RET_A, 0, 0, 0),
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        log.warning("cannot steer connections to the workers", error=str(exc))
        return False
    return True


# -- records: worker -> primary -------------------------------------------------------------


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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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


# -- the primary's supervision of its workers ---------------------------------------------


class Workers:
    """Owns the primary's relay worker processes: starts them, starts again one that dies,
    replaces one that asks to retire, stops them all; reads each one's record pipe."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        primary_url: str,
        account: Callable[[RequestRecord], None],
        config_file: Path | None = None,
        env_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.count = count
        self.primary_url = primary_url
        self.account = account
        self.config_file = config_file
        #: The primary's ``.env`` file: each worker reads it again, ranking it as the primary did.
        self.env_file = env_file
        #: The current process of each worker number.
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        #: How many times each worker number has been replaced at its process's request.
        self.replaced: dict[int, int] = {}
        self.stopping = False
        self._readers: set[RecordReader] = set()
        #: Workers that are not their number's current process: a successor starting, a
        #: replaced one finishing its answers (with the tasks that wait for those to exit).
        self._others: set[asyncio.subprocess.Process] = set()
        self._reaping: set[asyncio.Task[None]] = set()
        self._retire: dict[int, asyncio.Event] = {}  # by worker number
        self._tasks: list[asyncio.Task[None]] = []

    def _env(self, index: int, fd: int) -> dict[str, str]:
        env = dict(os.environ)
        s = self.settings
        env.update(
            {
                "GARDEN_HOST": s.host,
                "GARDEN_MODELS": str(s.models_dir),
                "GARDEN_WORKERS": "1",
                ENV_PRIMARY: self.primary_url,
                ENV_RECORDS_FD: str(fd),
                ENV_INDEX: str(index),
            }
        )
        if s.insecure:
            env["GARDEN_INSECURE"] = "1"
        if self.config_file is not None:
            env["GARDEN_CONFIG"] = str(self.config_file.resolve())
        if self.env_file is not None:
            env["GARDEN_ENV_FILE"] = str(self.env_file.resolve())
        return env

    async def start(self) -> None:
        """Start every worker, each watched by its own task."""
        for index in range(1, self.count):
            self._retire[index] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._keep(index)))

    async def _spawn(self, index: int) -> tuple[asyncio.subprocess.Process, RecordReader]:
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "modelgarden", "serve", env=self._env(index, write_fd),
                pass_fds=(write_fd,), stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            os.close(write_fd)
        reader = RecordReader(self.account, lambda message: self._told(index, message))
        self._readers.add(reader)
        reader.closed.add_done_callback(lambda _: self._readers.discard(reader))
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: reader, os.fdopen(read_fd, "rb"))
        log.info("worker started", worker=index, pid=proc.pid)
        return proc, reader

    def _told(self, index: int, message: dict[str, Any]) -> None:
        if message.get("ready"):
            log.info("worker ready", worker=index)
        elif "retire" in message:
            log.info("worker asks to be replaced", worker=index, **message["retire"])
            self._retire[index].set()

    async def _keep(self, index: int) -> None:
        pause = 0.5
        proc, _ = await self._spawn(index)
        while not self.stopping:
            self.procs[index] = proc
            began = time.monotonic()
            retire = asyncio.ensure_future(self._retire[index].wait())
            exited = asyncio.ensure_future(proc.wait())
            await asyncio.wait({retire, exited}, return_when=asyncio.FIRST_COMPLETED)
            retire.cancel()
            self._retire[index].clear()
            if self.stopping:
                return
            if not exited.done():  # it asked to retire: its successor first, then it goes
                exited.cancel()
                proc = await self._succeed(index, proc)
                continue
            lived = time.monotonic() - began
            pause = 0.5 if lived > STABLE_AFTER else min(pause * 2, MAX_RESTART_PAUSE)
            log.error(
                "worker exited; starting it again", worker=index, code=exited.result(),
                pause_s=pause,
            )  # fmt: skip
            await asyncio.sleep(pause)
            proc, _ = await self._spawn(index)

    async def _succeed(
        self, index: int, old: asyncio.subprocess.Process
    ) -> asyncio.subprocess.Process:
        """Start worker ``index``'s successor; once it is ready, stop ``old``. Returns the
        process that is now worker ``index`` (``old`` if its successor failed)."""
        new, reader = await self._spawn(index)
        self._others.add(new)  # stopped with the rest should the gateway stop meanwhile
        ready = asyncio.ensure_future(reader.ready.wait())
        exited = asyncio.ensure_future(new.wait())
        await asyncio.wait(
            {ready, exited}, timeout=READY_WITHIN, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        exited.cancel()
        if not reader.ready.is_set():
            log.error("a worker's successor did not start; keeping it", worker=index)
            with contextlib.suppress(ProcessLookupError):
                new.kill()
            await new.wait()
            self._others.discard(new)
            return old
        self.procs[index] = new
        self._others.discard(new)
        self._others.add(old)
        with contextlib.suppress(ProcessLookupError):  # it lets its answers finish, exits;
            old.send_signal(signal.SIGUSR1)  # its records still count
        reaper = asyncio.create_task(self._reap(old))
        self._reaping.add(reaper)
        reaper.add_done_callback(self._reaping.discard)
        self.replaced[index] = self.replaced.get(index, 0) + 1
        log.info("worker replaced", worker=index, old_pid=old.pid, pid=new.pid)
        return new

    def signal_stop(self) -> None:
        """Tell every worker to stop (SIGTERM: each drains like the primary). Safe to call
        from a signal handler and more than once."""
        self.stopping = True
        for proc in self._all():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

    async def stop(self, within: float) -> None:
        """Stop every worker and wait for it (and its last records); one still running after
        ``within`` seconds is killed."""
        self.signal_stop()
        for task in self._tasks:
            task.cancel()
        waits = [p.wait() for p in self._all() if p.returncode is None]
        try:
            async with asyncio.timeout(within):
                await asyncio.gather(*waits)
                await asyncio.gather(*(r.closed for r in list(self._readers)))
        except TimeoutError:
            for proc in self._all():
                if proc.returncode is None:
                    log.error("worker did not stop in time; killing it", pid=proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        self._others.discard(proc)

    def _all(self) -> list[asyncio.subprocess.Process]:
        return [*self.procs.values(), *self._others]
