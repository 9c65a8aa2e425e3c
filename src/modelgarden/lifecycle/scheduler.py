"""Which models are loaded, which runner answers a request, and when models unload.

The scheduler follows Ollama's rules: a model loads on the first request for it, stays
loaded for ``keep_alive`` after its last request (a negative value: forever, ``0``: unload
right after the answer), at most ``max_loaded_models`` are loaded at once (the least
recently used idle one makes room; models pinned with a negative keep-alive go last), each
model answers ``num_parallel`` requests at once (one runner process per slot, started when
needed; the weights are shared through mmap), and at most ``max_queue`` requests wait; past
that a request gets 503.

Memory is admitted as well (:class:`MemoryBudget`): before a runner starts, its estimated
need must fit in what is free; idle models are evicted (least recently used first) to make
room, a model waits for busy ones only when their memory would make it fit, and a model
that cannot fit even then is refused with :class:`InsufficientMemory` instead of being
left to the kernel's OOM killer. A further runner of a loaded model that does not fit is
not started: the request waits for one of the model's own runners.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from modelgarden.errors import SERVER_BUSY, InsufficientMemory, Overloaded
from modelgarden.lifecycle.memory import MemoryBudget, MemoryEstimate
from modelgarden.lifecycle.process import LaunchSpec, RunnerProcess, RunnerState

log = structlog.get_logger(__name__)


@dataclass
class LoadedModel:
    """A model in memory: its runner processes, active requests and keep-alive deadline."""

    spec: LaunchSpec
    name: str
    info: Any
    keep_alive: float
    need: MemoryEstimate
    slots: asyncio.Semaphore
    runners: list[RunnerProcess] = field(default_factory=list)
    idle: list[RunnerProcess] = field(default_factory=list)
    active: int = 0
    last_used: float = field(default_factory=time.monotonic)
    expires_at: float = math.inf
    timer: asyncio.TimerHandle | None = None
    unloading: bool = False

    @property
    def size(self) -> int:
        """Estimated memory of the model with the runners it has (at least one)."""
        return self.need.total(len(self.runners))

    @property
    def held(self) -> int:
        """Estimated memory its running processes may take (0 while none has started)."""
        return self.need.total(len(self.runners)) if self.runners else 0

    def expires_wall(self) -> float:
        """The wall-clock time at which the model will unload (``inf``: never)."""
        if math.isinf(self.keep_alive):
            return math.inf
        if self.active:
            return time.time() + self.keep_alive
        return time.time() + max(self.expires_at - time.monotonic(), 0.0)


@dataclass
class Lease:
    """The right to send one request to one runner; give it back with ``release``."""

    model: LoadedModel
    runner: RunnerProcess
    load_ns: int
    released: bool = False

    @property
    def base_url(self) -> str:
        """The runner's HTTP address."""
        return self.runner.base_url


def _eviction_order(model: LoadedModel) -> tuple[bool, float]:
    """Models pinned with an infinite keep-alive go last; otherwise least recently used first."""
    return math.isinf(model.keep_alive), model.last_used


class Scheduler:
    """Owns the loaded models and their runners; hands out leases on runner slots."""

    def __init__(
        self,
        *,
        max_loaded: int,
        num_parallel: int,
        max_queue: int,
        default_keep_alive: float,
        start_timeout: float,
        budget: MemoryBudget | None = None,
        runner_factory: Callable[..., RunnerProcess] = RunnerProcess,
    ) -> None:
        self.max_loaded = max_loaded
        self.num_parallel = num_parallel
        self.max_queue = max_queue
        self.default_keep_alive = default_keep_alive
        self.start_timeout = start_timeout
        self.budget = budget
        self._factory = runner_factory
        self._models: dict[LaunchSpec, LoadedModel] = {}
        self._changed = asyncio.Condition()
        self._pending = 0
        #: Requests turned away because the queue was full.
        self.rejected = 0
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- inspection ------------------------------------------------------------------------

    def loaded(self) -> list[LoadedModel]:
        """Loaded models, most recently used first."""
        return sorted(self._models.values(), key=lambda m: m.last_used, reverse=True)

    @property
    def pending(self) -> int:
        """Requests waiting for a runner slot."""
        return self._pending

    def find(self, spec: LaunchSpec) -> LoadedModel | None:
        """The loaded model for a launch spec, if any."""
        return self._models.get(spec)

    # -- acquiring -------------------------------------------------------------------------

    async def acquire(
        self,
        spec: LaunchSpec,
        name: str,
        info: Any,
        need: MemoryEstimate,
        keep_alive: float | None,
    ) -> Lease:
        """Wait for a runner slot of this model, loading it if needed."""
        if self._closing:
            raise Overloaded("server is shutting down")
        model = self._models.get(spec)
        free = model is not None and not model.unloading and model.active < self.num_parallel
        if not free and self._pending >= self.max_queue:
            self.rejected += 1
            raise Overloaded(SERVER_BUSY)
        self._pending += 1
        started = time.perf_counter_ns()
        try:
            model, runner, loaded_now = await self._take(spec, name, info, need)
        finally:
            self._pending -= 1
        model.active += 1
        model.name, model.info = name, info
        model.last_used = time.monotonic()
        if keep_alive is not None:
            model.keep_alive = keep_alive
        if model.timer is not None:
            model.timer.cancel()
            model.timer = None
        load_ns = time.perf_counter_ns() - started if loaded_now else 0
        return Lease(model=model, runner=runner, load_ns=load_ns)

    async def _take(
        self, spec: LaunchSpec, name: str, info: Any, need: MemoryEstimate
    ) -> tuple[LoadedModel, RunnerProcess, bool]:
        while True:
            model = self._models.get(spec)
            if model is None or model.unloading:
                await self._make_room(spec)
                model = self._models.get(spec)
                if model is None:
                    model = LoadedModel(
                        spec=spec,
                        name=name,
                        info=info,
                        keep_alive=self.default_keep_alive,
                        need=need,
                        slots=asyncio.Semaphore(self.num_parallel),
                    )
                    self._models[spec] = model
            await model.slots.acquire()
            if self._models.get(spec) is not model or model.unloading:  # unloaded meanwhile
                model.slots.release()
                continue
            try:
                runner, fresh = await self._runner_for(model)
            except BaseException:
                model.slots.release()
                if not model.runners and self._models.get(spec) is model:
                    del self._models[spec]
                    await self._notify()
                raise
            return model, runner, fresh

    async def _runner_for(self, model: LoadedModel) -> tuple[RunnerProcess, bool]:
        while True:
            while model.idle:
                runner = model.idle.pop()
                if runner.state is RunnerState.READY:
                    return runner, False
            need = model.need.per_runner if model.runners else model.need.total(1)
            if await self._admit(model, need):
                break
            async with self._changed:  # no memory for another runner: wait for one of ours
                while not model.idle and model.runners:
                    await self._changed.wait()
        runner = self._factory(
            model.spec, start_timeout=self.start_timeout, on_exit=self._runner_exited
        )
        model.runners.append(runner)
        try:
            await runner.start()
        except BaseException:
            model.runners.remove(runner)
            raise
        finally:
            if self.budget is not None:
                self.budget.reserved -= need
        log.info(
            "model loaded",
            model=model.name,
            pid=runner.pid,
            load_ms=round(runner.load_ms, 1),
            runners=len(model.runners),
        )
        return runner, True

    async def _make_room(self, spec: LaunchSpec) -> None:
        async with self._changed:
            while spec not in self._models and len(self._models) >= self.max_loaded:
                idle = [m for m in self._models.values() if m.active == 0 and not m.unloading]
                if idle:
                    victim = min(idle, key=_eviction_order)
                    log.info("evicting model to make room", model=victim.name)
                    await self._unload_locked(victim)
                    continue
                await self._changed.wait()

    async def _admit(self, model: LoadedModel, need: int) -> bool:
        """Reserve memory for a new runner of ``model``, evicting idle models if need be.

        False when the model already has runners and no more fit (use one of those);
        :class:`InsufficientMemory` when it could not fit even with every other model gone.
        """
        if self.budget is None:
            return True
        async with self._changed:
            while True:
                free = self._free(self.budget)
                if need <= free:
                    self.budget.reserved += need
                    return True
                others = [m for m in self._models.values() if m is not model and not m.unloading]
                idle = [m for m in others if m.active == 0]
                if idle:
                    victim = min(idle, key=_eviction_order)
                    log.info("evicting model to free memory", model=victim.name, need=need)
                    await self._unload_locked(victim)
                    continue
                if model.runners:
                    return False
                if need > free + sum(m.held for m in others):
                    raise InsufficientMemory(self.budget.refusal(need, free))
                await self._changed.wait()

    def _free(self, budget: MemoryBudget) -> int:
        """What a new runner may take: the budget's free memory, less what loaded runners
        may still grow into (their estimate beyond what they hold now)."""
        loaded = [m for m in self._models.values() if m.runners]
        if budget.limit is not None:
            return budget.free(sum(m.held for m in loaded))
        growth = sum(max(m.held - sum(r.rss() for r in m.runners), 0) for m in loaded)
        return budget.free(0) - growth

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- releasing -------------------------------------------------------------------------

    def release(self, lease: Lease) -> None:
        """Give a slot back; the model's keep-alive clock starts when its last request ends."""
        if lease.released:
            return
        lease.released = True
        model = lease.model
        model.active -= 1
        model.last_used = time.monotonic()
        if lease.runner.state is RunnerState.READY:
            model.idle.append(lease.runner)
        model.slots.release()
        if model.active == 0:
            if not model.runners and self._models.get(model.spec) is model:
                del self._models[model.spec]  # its runner died: the next request starts anew
            else:
                self._arm(model)
        self._spawn(self._notify())

    def _arm(self, model: LoadedModel) -> None:
        if math.isinf(model.keep_alive):
            model.expires_at = math.inf
            return
        model.expires_at = time.monotonic() + model.keep_alive
        if model.keep_alive <= 0:
            self._spawn(self.unload_model(model))
            return
        loop = asyncio.get_running_loop()
        model.timer = loop.call_later(model.keep_alive, self._expire, model)

    def _expire(self, model: LoadedModel) -> None:
        model.timer = None
        if model.active == 0 and self._models.get(model.spec) is model:
            self._spawn(self.unload_model(model))

    def _runner_exited(self, runner: RunnerProcess) -> None:
        for spec, model in list(self._models.items()):
            if runner in model.runners:
                model.runners.remove(runner)
                if runner in model.idle:
                    model.idle.remove(runner)
                if not model.runners and model.active == 0:
                    del self._models[spec]
                    if model.timer is not None:
                        model.timer.cancel()
                self._spawn(self._notify())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- unloading -------------------------------------------------------------------------

    def set_keep_alive(self, spec: LaunchSpec, keep_alive: float) -> LoadedModel | None:
        """Change a loaded model's keep-alive (``0`` unloads it once idle)."""
        model = self._models.get(spec)
        if model is None:
            return None
        model.keep_alive = keep_alive
        if model.active == 0:
            if model.timer is not None:
                model.timer.cancel()
                model.timer = None
            self._arm(model)
        return model

    async def unload_model(self, model: LoadedModel) -> None:
        """Stop a model's runners (waits for none: callers unload idle models)."""
        async with self._changed:
            await self._unload_locked(model)

    async def _unload_locked(self, model: LoadedModel) -> None:
        if self._models.get(model.spec) is not model or model.unloading:
            return
        model.unloading = True
        if model.timer is not None:
            model.timer.cancel()
            model.timer = None
        await asyncio.gather(*(r.stop() for r in list(model.runners)), return_exceptions=True)
        self._models.pop(model.spec, None)
        log.info("model unloaded", model=model.name)
        self._changed.notify_all()

    async def shutdown(self) -> None:
        """Stop every runner (used when the gateway stops)."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        runners = [r for m in self._models.values() for r in m.runners]
        await asyncio.gather(*(r.stop(grace=3.0) for r in runners), return_exceptions=True)
        self._models.clear()

    def kill_all(self) -> None:
        """Synchronous last resort at interpreter exit."""
        for model in self._models.values():
            for runner in model.runners:
                runner.kill_now()
