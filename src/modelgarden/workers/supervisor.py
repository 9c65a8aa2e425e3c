"""The primary's supervision of its relay workers: start, restart, replace, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import structlog

from modelgarden.config import Settings
from modelgarden.memory_release import MemoryRelease
from modelgarden.tasks import cancel_and_wait
from modelgarden.telemetry import Telemetry
from modelgarden.telemetry.record import RequestRecord
from modelgarden.workers.records import RecordReader

log = structlog.get_logger(__name__)

#: Environment of a relay worker: the primary's private URL, the record pipe, its number.
ENV_PRIMARY = "GARDEN_WORKER_PRIMARY"
ENV_RECORDS_FD = "GARDEN_WORKER_RECORDS_FD"
#: The longest pause before a worker that keeps dying is started again.
MAX_RESTART_PAUSE = 30.0
#: A worker that lived this long before dying is restarted at once.
STABLE_AFTER = 10.0
#: How long a worker's successor may take to be ready before the old one is kept instead.
READY_WITHIN = 60.0
#: The pause before a worker that died is started again, the first time.
FIRST_PAUSE = 0.5


def restart_pause(previous: float, lived: float) -> float:
    """The pause before starting again a worker that died after ``lived`` seconds: short
    for one that had been up a while, doubling (up to :data:`MAX_RESTART_PAUSE`) while it
    keeps dying at once."""
    return FIRST_PAUSE if lived > STABLE_AFTER else min(previous * 2, MAX_RESTART_PAUSE)


class Workers:
    """Owns the primary's relay worker processes: starts them, starts again one that dies,
    replaces one that asks to retire, stops them all; reads each one's record pipe.

    It is the primary's :class:`~modelgarden.api.state.ProcessRole`: ``create_app`` starts
    it with the app (each worker's records are accounted for by the app's telemetry) and
    stops it first on the way out. The timing seams (``clock``, ``sleep``, ``ready_within``)
    and :meth:`_spawn` let a test drive the supervision with fake processes.
    """

    #: The primary answers every request itself.
    forward = None

    def __init__(
        self,
        settings: Settings,
        count: int,
        primary_url: str,
        config_file: Path | None = None,
        env_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.count = count
        self.primary_url = primary_url
        #: Where each worker's records are counted (the telemetry's, once started).
        self.account: Callable[[RequestRecord], None] = lambda _record: None
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.ready_within = READY_WITHIN
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

    def _env(self, fd: int) -> dict[str, str]:
        env = dict(os.environ)
        s = self.settings
        env.update(
            {
                "GARDEN_HOST": s.host,
                "GARDEN_MODELS": str(s.models_dir),
                "GARDEN_WORKERS": "1",
                ENV_PRIMARY: self.primary_url,
                ENV_RECORDS_FD: str(fd),
            }
        )
        if s.insecure:
            env["GARDEN_INSECURE"] = "1"
        if self.config_file is not None:
            env["GARDEN_CONFIG"] = str(self.config_file.resolve())
        if self.env_file is not None:
            env["GARDEN_ENV_FILE"] = str(self.env_file.resolve())
        return env

    async def start(self, telemetry: Telemetry) -> None:
        """Start every worker, each watched by its own task; their records count in
        ``telemetry`` as if this process had served them."""
        self.account = telemetry.account
        for index in range(1, self.count):
            self._retire[index] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._keep(index)))

    async def _spawn(self, index: int) -> tuple[asyncio.subprocess.Process, RecordReader]:
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "modelgarden", "serve", env=self._env(write_fd),
                pass_fds=(write_fd,), stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            os.close(write_fd)
        reader = RecordReader(self.account, lambda message: self._on_message(index, message))
        self._readers.add(reader)
        reader.closed.add_done_callback(lambda _: self._readers.discard(reader))
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: reader, os.fdopen(read_fd, "rb"))
        log.info("worker started", worker=index, pid=proc.pid)
        return proc, reader

    def _on_message(self, index: int, message: dict[str, Any]) -> None:
        if message.get("ready"):
            log.info("worker ready", worker=index)
        elif "retire" in message:
            log.info("worker asks to be replaced", worker=index, **message["retire"])
            self._retire[index].set()

    async def _keep(self, index: int) -> None:
        pause = FIRST_PAUSE
        proc, _ = await self._spawn(index)
        while not self.stopping:
            self.procs[index] = proc
            began = self.clock()
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
            pause = restart_pause(pause, self.clock() - began)
            log.error(
                "worker exited; starting it again", worker=index, code=exited.result(),
                pause_s=pause,
            )  # fmt: skip
            await self.sleep(pause)
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
            {ready, exited}, timeout=self.ready_within, return_when=asyncio.FIRST_COMPLETED
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

    def serving(self, memory_release: MemoryRelease) -> None:
        """Nothing to do once the app serves: the workers were started with it."""

    def describe(self) -> list[dict[str, Any]]:
        """Each worker process, for ``/status``: its pid, whether it runs, its resident
        memory and how many times it was replaced."""
        out: list[dict[str, Any]] = []
        for index, proc in sorted(self.procs.items()):
            rss = None
            if proc.returncode is None:
                with contextlib.suppress(psutil.Error):
                    rss = psutil.Process(proc.pid).memory_info().rss
            out.append({"index": index, "pid": proc.pid, "running": proc.returncode is None,
                        "rss": rss, "replaced": self.replaced.get(index, 0)})  # fmt: skip
        return out

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
        await cancel_and_wait(*self._tasks)
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
