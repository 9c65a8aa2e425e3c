"""One runner process and its lifecycle.

A runner is ``python -m modelgarden.runner`` holding one model; the gateway talks HTTP to
it on a loopback port the runner picks and announces on its standard output.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import structlog

from modelgarden.errors import RunnerFailed

log = structlog.get_logger(__name__)


class RunnerState(enum.Enum):
    """Where a runner process is in its life."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


@dataclass(frozen=True)
class LaunchSpec:
    """Everything that decides how a runner is started (and so which runners are alike)."""

    model_path: str
    num_ctx: int
    num_batch: int
    num_thread: int
    use_mmap: bool = True
    nice: int = 10

    def argv(self) -> list[str]:
        """The command line of the runner process."""
        args = [
            sys.executable,
            "-m",
            "modelgarden.runner",
            "--model",
            self.model_path,
            "--ctx",
            str(self.num_ctx),
            "--batch",
            str(self.num_batch),
            "--threads",
            str(self.num_thread),
            "--nice",
            str(self.nice),
        ]
        return [*args, "--no-mmap"] if not self.use_mmap else args


class RunnerProcess:
    """Owns one runner OS process: starting it, knowing its port, stopping it for certain.

    States and transitions (:class:`RunnerState`)::

        STOPPED  --start()------------------> STARTING   process spawned, model loading
        STARTING --"READY <port>" on stdout-> READY      requests may be sent to base_url
        STARTING --exits / start timeout----> STOPPED    start() raises RunnerFailed (stderr tail)
        STARTING --start() cancelled--------> STOPPED    the process is killed
        READY    --stop()-------------------> STOPPING   SIGTERM; SIGKILL after the grace period
        READY    --process exits by itself--> STOPPED    a crash: on_exit() is called
        STOPPING --process exits------------> STOPPED    on_exit() is called

    ``on_exit`` is called exactly once, whenever the process ends after it was started.
    """

    def __init__(
        self,
        spec: LaunchSpec,
        *,
        start_timeout: float = 120.0,
        on_exit: Callable[[RunnerProcess], None] | None = None,
    ) -> None:
        self.spec = spec
        self.start_timeout = start_timeout
        self.on_exit = on_exit
        self.state = RunnerState.STOPPED
        self.port = 0
        self.load_ms = 0.0
        self.started_at = 0.0
        self.returncode: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: deque[str] = deque(maxlen=40)
        self._watch: asyncio.Task[None] | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The OS process id, while there is a process."""
        return self._proc.pid if self._proc else None

    def rss(self) -> int:
        """Resident memory of the process now (0 when it has none or cannot be read)."""
        pid = self.pid
        if pid is None or self.returncode is not None:
            return 0
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except (psutil.Error, OSError):
            return 0

    @property
    def base_url(self) -> str:
        """Where the runner's HTTP API answers."""
        return f"http://127.0.0.1:{self.port}"

    def stderr_tail(self) -> str:
        """The last lines the runner wrote to standard error."""
        return " | ".join(line for line in self._stderr if line)[-2000:]

    async def start(self) -> None:
        """Spawn the process and wait until it is ready; raises :class:`RunnerFailed`."""
        if self.state is not RunnerState.STOPPED:
            raise RuntimeError(f"cannot start a runner that is {self.state.value}")
        self.state = RunnerState.STARTING
        self.started_at = time.monotonic()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.spec.argv(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            self.state = RunnerState.STOPPED
            raise RunnerFailed(f"could not start the runner: {exc}") from None
        self._drain = asyncio.create_task(self._drain_stderr())
        try:
            await asyncio.wait_for(self._await_ready(), self.start_timeout)
        except BaseException as exc:
            await self._kill()
            self.state = RunnerState.STOPPED
            if isinstance(exc, TimeoutError):
                raise RunnerFailed(
                    f"llama runner did not start within {self.start_timeout:.0f}s"
                ) from None
            raise
        self.state = RunnerState.READY
        self._watch = asyncio.create_task(self._watch_exit())
        log.debug("runner ready", pid=self.pid, port=self.port, model=self.spec.model_path)

    async def _await_ready(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            line = await self._proc.stdout.readline()
            if not line:
                await self._proc.wait()
                if self._drain is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._drain, 2)
                reason = self.stderr_tail() or f"exit status {self._proc.returncode}"
                raise RunnerFailed(f"llama runner process has terminated: {reason}")
            parts = line.decode(errors="replace").split()
            if len(parts) >= 2 and parts[0] == "READY":
                self.port = int(parts[1])
                self.load_ms = float(parts[2]) if len(parts) > 2 else 0.0
                return

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        async for raw in self._proc.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip())

    async def _watch_exit(self) -> None:
        assert self._proc is not None
        self.returncode = await self._proc.wait()
        crashed = self.state is RunnerState.READY
        self.state = RunnerState.STOPPED
        if crashed:
            log.warning(
                "runner exited", pid=self.pid, status=self.returncode, stderr=self.stderr_tail()
            )
        if self.on_exit is not None:
            self.on_exit(self)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the process: SIGTERM, then SIGKILL if it has not ended after ``grace``."""
        if self._proc is None or self.state is RunnerState.STOPPED:
            return
        self.state = RunnerState.STOPPING
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self._proc.wait()), grace)
        except TimeoutError:
            await self._kill()
        if self._watch is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def _kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        with contextlib.suppress(Exception):
            await self._proc.wait()
        if self._proc.stdin is not None:
            self._proc.stdin.close()

    def kill_now(self) -> None:
        """Synchronous last resort (interpreter exit): SIGKILL without waiting."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
