"""One runner process and its lifecycle.

A runner is llama.cpp's server engine holding one model with ``parallel`` slots: either
``python -m modelgarden.runner`` (the engine from the ``xllamacpp`` wheel) or a
``llama-server`` binary the user names. Both take the same flags and speak the same HTTP
API on a loopback port the gateway picks; the gateway waits for ``GET /health`` to answer
200, and reads the engine's own account of its buffers (weights, KV cache, compute) from
the load log on standard error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import structlog

from modelgarden.errors import RunnerFailed
from modelgarden.lifecycle.states import Lifecycle, RunnerState

log = structlog.get_logger(__name__)

#: ``CPU_Mapped model buffer size =    92.10 MiB``, ``CUDA0 KV buffer size = 360.00 MiB``.
_BUFFER = re.compile(r"(\S+)\s+(?:model|KV|compute|output|RS) buffer size\s*=\s*([\d.]+) MiB")
_PR_SET_PDEATHSIG = 1
#: llama.cpp's CPU threads wait for work at an OpenMP barrier; libgomp's default is to spin
#: there a long time, fastest alone, but two runners that both spin while they compute share
#: two cores pathologically (measured: 100 tokens each took 3.6 to 62 s instead of 2.2 s).
#: A runner started while another is loaded spins briefly instead (17% slower alone).
POLITE_SPIN = {"GOMP_SPINCOUNT": "500"}


@dataclass(frozen=True)
class LaunchSpec:
    """Everything that decides how a model's runner is started.

    Two requests whose specs differ need different runners: the scheduler reloads the
    model's one runner instead of starting a second copy (:attr:`key` names the model).
    """

    model_path: str
    #: Context of one slot (Ollama's ``num_ctx``); the engine gets ``num_ctx × parallel``.
    num_ctx: int
    parallel: int = 1
    num_batch: int = 512
    num_thread: int = 2
    #: Layers offloaded to the GPU; -1 lets the engine decide (all that fit), 0 CPU only.
    num_gpu: int = -1
    #: The one GPU to use (no split across GPUs); -1: the engine's choice.
    main_gpu: int = -1
    use_mmap: bool = True
    projector: str = ""
    embedding: bool = False
    #: Pooling of embeddings; empty: the model's own (an embedding model names one).
    pooling: str = "mean"
    #: Whether a slot that fills its context drops old tokens (Ollama's ``shift``).
    context_shift: bool = True
    nice: int = 10
    #: A ``llama-server`` binary; empty: ``python -m modelgarden.runner``.
    server: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """The model this spec loads (weights and projector), whatever the options."""
        return self.model_path, self.projector

    @property
    def batch(self) -> int:
        """The engine's batch: an embedding runner reads an input in one batch, so it may be
        as long as a slot (up to 2048 tokens, as Ollama sizes it)."""
        if self.embedding:
            return max(self.num_batch, min(self.num_ctx, 2048))
        return self.num_batch

    def argv(self, port: int) -> list[str]:
        """The command line of the runner process, serving on ``port``."""
        program = [self.server] if self.server else [sys.executable, "-m", "modelgarden.runner"]
        batch = self.batch
        args = [
            *("--model", self.model_path),
            *("--ctx-size", str(self.num_ctx * self.parallel)),
            *("--parallel", str(self.parallel)),
            *("--batch-size", str(batch), "--ubatch-size", str(batch)),
            *("--threads", str(self.num_thread)),
            *("--host", "127.0.0.1", "--port", str(port)),
            *("--cache-ram", "0", "--no-warmup"),
        ]
        if self.context_shift:
            args.append("--context-shift")
        if self.num_gpu >= 0:
            args += ["--n-gpu-layers", str(self.num_gpu)]
        if self.main_gpu >= 0:
            args += ["--split-mode", "none", "--main-gpu", str(self.main_gpu)]
        if not self.use_mmap:
            args.append("--no-mmap")
        if self.projector:
            args += ["--mmproj", self.projector]
        if self.embedding:
            args += ["--embeddings", *(["--pooling", self.pooling] if self.pooling else [])]
        if self.server:  # flags only the binary knows (our runner has these as defaults)
            args += ["--no-webui", "--offline", "--log-verbosity", "4"]
        return [*program, *args]


@dataclass
class EngineMemory:
    """What the engine reported allocating at load: in all, and on GPUs."""

    total: int = 0
    vram: int = 0

    def add(self, device: str, size: int) -> None:
        """Count one buffer of ``size`` bytes on ``device`` (``CPU``, ``CUDA0``, ...)."""
        self.total += size
        if not device.startswith("CPU") and not device.endswith("_Host"):
            self.vram += size


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child_setup(nice: int) -> Callable[[], None]:
    """What the child runs before ``exec``: lower its priority, and die with the gateway.

    Niceness lets the gateway's relay path always run first; the parent-death signal
    stops a ``llama-server`` binary (which does not watch its standard input) even when
    the gateway is killed outright.
    """

    def setup() -> None:
        if nice > 0:
            with contextlib.suppress(OSError):
                os.nice(nice)
        if sys.platform == "linux":
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return setup


async def health(port: int) -> int:
    """The status of ``GET /health`` on a loopback port (0: nothing answers within 1 s)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
    except (OSError, TimeoutError):
        return 0
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), 1)
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    except (OSError, TimeoutError):
        return 0
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class RunnerProcess:
    """Owns one runner OS process: starting it, knowing its port, stopping it for certain.

    States and transitions (:class:`RunnerState`)::

        STOPPED  --start()--------------------> STARTING   process spawned, model loading
        STARTING --GET /health answers 200----> READY      requests may be sent to base_url
        STARTING --exits / start timeout------> STOPPED    start() raises RunnerFailed (stderr tail)
        STARTING --start() cancelled----------> STOPPED    the process is killed
        READY    --stop()---------------------> STOPPING   SIGTERM; SIGKILL after the grace period
        READY    --process exits by itself----> STOPPED    a crash: on_exit() is called
        STOPPING --process exits--------------> STOPPED    on_exit() is called

    ``on_exit`` is called exactly once, whenever the process ends after it was started.
    """

    def __init__(
        self,
        spec: LaunchSpec,
        *,
        start_timeout: float = 120.0,
        on_exit: Callable[[RunnerProcess], None] | None = None,
        polite: bool = False,
    ) -> None:
        self.spec = spec
        self.start_timeout = start_timeout
        self.on_exit = on_exit
        #: Whether its compute threads spin only briefly when idle (:data:`POLITE_SPIN`).
        self.polite = polite
        self.life = Lifecycle(f"runner of {spec.model_path}")
        self.port = 0
        self.load_ms = 0.0
        self.started_at = 0.0
        self.returncode: int | None = None
        #: The engine's buffers as it logged them at load.
        self.memory = EngineMemory()
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: deque[str] = deque(maxlen=40)
        self._watch: asyncio.Task[None] | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def state(self) -> RunnerState:
        """Where the process is in its life (moves are checked: :mod:`.states`)."""
        return self.life.state

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
        self.life.move(RunnerState.STARTING)
        self.started_at = time.monotonic()
        self.port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.polite:
            env = {**POLITE_SPIN, **env}  # the user's own setting wins
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.spec.argv(self.port),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
                preexec_fn=_child_setup(self.spec.nice),
            )
        except OSError as exc:
            self.life.move(RunnerState.STOPPED)
            raise RunnerFailed(f"could not start the runner: {exc}") from None
        self._drain = asyncio.create_task(self._drain_stderr())
        try:
            await asyncio.wait_for(self._await_ready(), self.start_timeout)
        except BaseException as exc:
            await self._kill()
            self.life.move(RunnerState.STOPPED)
            if isinstance(exc, TimeoutError):
                raise RunnerFailed(
                    f"llama runner did not start within {self.start_timeout:.0f}s"
                ) from None
            raise
        self.load_ms = (time.monotonic() - self.started_at) * 1000
        self.life.move(RunnerState.READY)
        self._watch = asyncio.create_task(self._watch_exit())
        log.debug("runner ready", pid=self.pid, port=self.port, model=self.spec.model_path)

    async def _await_ready(self) -> None:
        """Poll ``/health`` (often at first: a small model loads in a few hundred ms)."""
        assert self._proc is not None
        delay = 0.005
        while True:
            if self._proc.returncode is not None or await health(self.port) == 200:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.1)
        if self._proc.returncode is not None:
            if self._drain is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._drain, 2)
            reason = self.stderr_tail() or f"exit status {self._proc.returncode}"
            raise RunnerFailed(f"llama runner process has terminated: {reason}")

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        async for raw in self._proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if self.state is RunnerState.STARTING and (found := _BUFFER.search(line)):
                self.memory.add(found[1], int(float(found[2]) * (1 << 20)))
            self._stderr.append(line)

    async def _watch_exit(self) -> None:
        assert self._proc is not None
        self.returncode = await self._proc.wait()
        crashed = self.state is RunnerState.READY
        self.life.move(RunnerState.STOPPED)
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
        self.life.move(RunnerState.STOPPING)
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
