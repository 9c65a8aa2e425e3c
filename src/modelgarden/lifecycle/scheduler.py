"""Which models are loaded, which runner answers a request, and when models unload.

The scheduler follows Ollama's rules: a model loads on the first request for it, stays
loaded for ``keep_alive`` after its last request (a negative value: forever, ``0``: unload
right after the answer), at most ``max_loaded_models`` are loaded at once (the least
recently used idle one makes room; models pinned with a negative keep-alive go last), and
at most ``max_queue`` requests wait; past that a request gets 503.

Each loaded model is **one** runner process, the engine with ``parallel`` slots batched
together over one copy of the weights; a semaphore of ``parallel`` hands the slots out. A
request whose load options differ from the runner's (:class:`LaunchSpec`: ``num_ctx``,
``num_gpu``, ...) waits until the model is idle and reloads it: never a second copy.
Requests arriving meanwhile wait for the reload rather than keep the old runner busy.

Memory is admitted as well (:class:`MemoryBudget`): before a runner starts, its estimated
need must fit in what is free; idle models are evicted (least recently used first) to make
room, a model waits for busy ones only when their memory would make it fit, and a model
that cannot fit even then is refused with :class:`InsufficientMemory` instead of being
left to the kernel's OOM killer.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import structlog

from modelgarden.errors import SERVER_BUSY, InsufficientMemory, Overloaded
from modelgarden.lifecycle.memory import MemoryBudget, MemoryEstimate
from modelgarden.lifecycle.process import LaunchSpec, RunnerProcess
from modelgarden.lifecycle.states import RunnerState

log = structlog.get_logger(__name__)


@dataclass
class LoadedModel:
    """A model in memory: its one runner, requests in its slots, its keep-alive deadline."""

    spec: LaunchSpec
    name: str
    info: Any
    keep_alive: float
    need: MemoryEstimate
    slots: asyncio.Semaphore
    runner: RunnerProcess | None = None
    #: The runner's start, awaited by every request that arrives while it loads.
    starting: asyncio.Task[None] | None = None
    active: int = 0
    last_used: float = field(default_factory=time.monotonic)
    expires_at: float = math.inf
    timer: asyncio.TimerHandle | None = None
    unloading: bool = False
    #: A request with other load options waits for this model to go idle, then reloads it.
    retiring: bool = False
    #: Requests that chose this model and wait for its start or a slot.
    waiting: int = 0
    #: When its runner's start began and ended (``perf_counter_ns``; 0 until it has).
    load_began: int = 0
    load_ended: int = 0

    @property
    def runners(self) -> list[RunnerProcess]:
        """The model's runner, as a list (empty while none has started)."""
        return [self.runner] if self.runner is not None else []

    @property
    def size(self) -> int:
        """Memory of the model: what its engine allocated, else the estimate."""
        if self.runner is not None and self.runner.memory.total:
            return self.runner.memory.total
        return self.need.total

    @property
    def size_vram(self) -> int:
        """The part of :attr:`size` on GPUs."""
        return self.runner.memory.vram if self.runner is not None else 0

    @property
    def held(self) -> int:
        """Estimated system memory its runner may take (0 while none has started)."""
        return self.need.ram if self.runner is not None else 0

    def expires_wall(self) -> float:
        """The wall-clock time at which the model will unload (``inf``: never)."""
        if math.isinf(self.keep_alive):
            return math.inf
        if self.active:
            return time.time() + self.keep_alive
        return time.time() + max(self.expires_at - time.monotonic(), 0.0)


@dataclass
class Lease:
    """The right to send one request to one runner slot; give it back with ``release``."""

    model: LoadedModel
    runner: RunnerProcess
    load_ns: int
    released: bool = False

    @property
    def load_window(self) -> tuple[int, int] | None:
        """When the runner this request waited for loaded (``perf_counter_ns``), if it did."""
        m = self.model
        return (m.load_began, m.load_ended) if self.load_ns and m.load_ended else None

    @property
    def base_url(self) -> str:
        """The runner's HTTP address."""
        return self.runner.base_url


class _Unloaded(Exception):
    """The model was unloaded (or reloaded with other options) while its runner started."""


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark a start's failure as seen (its waiters, if any, were told)."""
    if not task.cancelled():
        task.exception()


def _eviction_order(model: LoadedModel) -> tuple[bool, float]:
    """Models pinned with an infinite keep-alive go last; otherwise least recently used first."""
    return math.isinf(model.keep_alive), model.last_used


class Scheduler:
    """Owns the loaded models and their runners; hands out leases on runner slots."""

    def __init__(
        self,
        *,
        max_loaded: int,
        max_queue: int,
        default_keep_alive: float,
        start_timeout: float,
        budget: MemoryBudget | None = None,
        runner_factory: Callable[..., RunnerProcess] = RunnerProcess,
        call_later: Callable[[float, Callable[[], None]], asyncio.TimerHandle] | None = None,
    ) -> None:
        self.max_loaded = max_loaded
        self.max_queue = max_queue
        self.default_keep_alive = default_keep_alive
        self.start_timeout = start_timeout
        self.budget = budget
        self._factory = runner_factory
        #: Schedules keep-alive expiries (the event loop's ``call_later`` unless a test's).
        self._call_later = call_later
        self._models: dict[Hashable, LoadedModel] = {}
        self._changed = asyncio.Condition()
        self._pending = 0
        #: Requests turned away because the queue was full.
        self.rejected = 0
        self._closing = False
        self._tasks: set[asyncio.Future[Any]] = set()

    # -- inspection ------------------------------------------------------------------------

    def loaded(self) -> list[LoadedModel]:
        """Loaded models, most recently used first."""
        return sorted(self._models.values(), key=lambda m: m.last_used, reverse=True)

    @property
    def pending(self) -> int:
        """Requests waiting for a runner slot."""
        return self._pending

    def find(self, spec: LaunchSpec) -> LoadedModel | None:
        """The loaded model with this spec's weights, whatever its load options."""
        return self._models.get(spec.key)

    # -- acquiring -------------------------------------------------------------------------

    async def acquire(
        self,
        spec: LaunchSpec,
        name: str,
        info: Any,
        need: MemoryEstimate,
        keep_alive: float | None,
    ) -> Lease:
        """Wait for a slot of this model's runner, loading (or reloading) it if needed."""
        if self._closing:
            raise Overloaded("server is shutting down")
        model = self._models.get(spec.key)
        free = (
            model is not None
            and model.spec == spec
            and model.runner is not None
            and not (model.unloading or model.retiring)
            and model.active < spec.parallel
        )
        if not free and self._pending >= self.max_queue:
            self.rejected += 1
            raise Overloaded(SERVER_BUSY)
        self._pending += 1
        started = time.perf_counter_ns()
        try:
            model, loaded_now = await self._take(spec, name, info, need)
        finally:
            self._pending -= 1
        assert model.runner is not None
        model.active += 1
        model.name, model.info = name, info
        model.last_used = time.monotonic()
        if keep_alive is not None:
            model.keep_alive = keep_alive
        if model.timer is not None:
            model.timer.cancel()
            model.timer = None
        load_ns = time.perf_counter_ns() - started if loaded_now else 0
        return Lease(model=model, runner=model.runner, load_ns=load_ns)

    async def _take(
        self, spec: LaunchSpec, name: str, info: Any, need: MemoryEstimate
    ) -> tuple[LoadedModel, bool]:
        """A slot of a ready runner with exactly ``spec``; whether this call loaded it."""
        loaded_now = False
        while True:
            model = self._models.get(spec.key)
            if model is not None and (model.unloading or model.retiring):
                await self._wait_gone(model)  # no new work joins a model that will go
                continue
            if model is not None and model.spec != spec:
                await self._retire(model)
                continue
            if model is None:
                if await self._load(spec, name, info, need):
                    loaded_now = True
                continue
            model.waiting += 1
            try:
                if model.starting is not None:
                    await asyncio.shield(model.starting)  # its failure is every waiter's
                await model.slots.acquire()
            except _Unloaded:
                continue
            finally:
                model.waiting -= 1
                if model.retiring:
                    self._spawn(self._notify())
            runner = model.runner
            if (
                self._models.get(spec.key) is not model
                or model.unloading
                or runner is None
                or runner.state is not RunnerState.READY
            ):
                model.slots.release()
                continue
            return model, loaded_now

    async def _wait_gone(self, model: LoadedModel) -> None:
        """Wait until a model being unloaded or reloaded has left."""
        async with self._changed:
            while self._models.get(model.spec.key) is model:
                await self._changed.wait()

    async def _retire(self, model: LoadedModel) -> None:
        """Reload: let ``model`` serve the requests already waiting for it, then unload it."""
        model.retiring = True
        log.info("reloading model with new options", model=model.name)
        async with self._changed:
            while self._models.get(model.spec.key) is model and (model.active or model.waiting):
                await self._changed.wait()
            await self._unload_locked(model)

    async def _load(self, spec: LaunchSpec, name: str, info: Any, need: MemoryEstimate) -> bool:
        """Make room, register the model and start its runner in the background; False when
        another request registered the model first."""
        await self._make_room(spec)
        if spec.key in self._models:
            return False
        model = LoadedModel(
            spec=spec,
            name=name,
            info=info,
            keep_alive=self.default_keep_alive,
            need=need,
            slots=asyncio.Semaphore(spec.parallel),
        )
        self._models[spec.key] = model
        model.starting = asyncio.ensure_future(self._start(model))
        self._tasks.add(model.starting)
        model.starting.add_done_callback(_retrieved)
        model.starting.add_done_callback(self._tasks.discard)
        return True

    async def _start(self, model: LoadedModel) -> None:
        """Admit the model's memory and start its runner; on failure the model is forgotten
        (and every request waiting on the start gets the failure)."""
        try:
            await self._admit(model, model.need.ram)
            runner = self._factory(
                model.spec,
                start_timeout=self.start_timeout,
                on_exit=self._runner_exited,
                polite=self._spinning(model),
            )
            model.load_began = time.perf_counter_ns()
            try:
                await runner.start()
                model.load_ended = time.perf_counter_ns()
            finally:
                if self.budget is not None:
                    self.budget.reserved -= model.need.ram
        except BaseException:
            model.starting = None
            await self._forget(model)
            raise
        model.starting = None
        model.runner = runner
        if model.unloading or self._models.get(model.spec.key) is not model:
            await runner.stop()  # unloaded, or reloaded with other options, while it started
            await self._forget(model)
            raise _Unloaded
        log.info(
            "model loaded",
            model=model.name,
            pid=runner.pid,
            load_ms=round(runner.load_ms, 1),
            parallel=model.spec.parallel,
            num_ctx=model.spec.num_ctx,
        )
        if model.active == 0 and model.waiting == 0:  # whoever asked left: the clock runs
            self._arm(model)
        await self._notify()

    def _spinning(self, model: LoadedModel) -> bool:
        """Whether another loaded runner spins at full speed when idle (then this one must
        not: two spinning runners starve each other; see :data:`POLITE_SPIN`)."""
        return any(
            m.runner is not None and not m.runner.polite
            for m in self._models.values()
            if m is not model
        )

    async def _forget(self, model: LoadedModel) -> None:
        if self._models.get(model.spec.key) is model:
            del self._models[model.spec.key]
        await self._notify()

    async def _make_room(self, spec: LaunchSpec) -> None:
        async with self._changed:
            while spec.key not in self._models and len(self._models) >= self.max_loaded:
                idle = [m for m in self._models.values() if self._evictable(m)]
                if idle:
                    victim = min(idle, key=_eviction_order)
                    log.info("evicting model to make room", model=victim.name)
                    await self._unload_locked(victim)
                    continue
                await self._changed.wait()

    @staticmethod
    def _evictable(model: LoadedModel) -> bool:
        return model.active == 0 and model.starting is None and not model.unloading

    async def _admit(self, model: LoadedModel, need: int) -> None:
        """Reserve memory for ``model``'s runner, evicting idle models if need be;
        :class:`InsufficientMemory` when it could not fit even with every other model gone.
        """
        if self.budget is None:
            return
        async with self._changed:
            while True:
                free = self._free(self.budget)
                if need <= free:
                    self.budget.reserved += need
                    return
                others = [m for m in self._models.values() if m is not model and not m.unloading]
                idle = [m for m in others if self._evictable(m)]
                if idle:
                    victim = min(idle, key=_eviction_order)
                    log.info("evicting model to free memory", model=victim.name, need=need)
                    await self._unload_locked(victim)
                    continue
                if need > free + sum(m.held for m in others):
                    raise InsufficientMemory(self.budget.refusal(need, free))
                await self._changed.wait()

    def _free(self, budget: MemoryBudget) -> int:
        """What a new runner may take: the budget's free memory, less what loaded runners
        may still grow into (their estimate beyond what they hold now)."""
        loaded = [m for m in self._models.values() if m.runner is not None]
        if budget.limit is not None:
            return budget.free(sum(m.held for m in loaded))
        growth = sum(max(m.held - m.runner.rss(), 0) for m in loaded if m.runner is not None)
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
        model.slots.release()
        current = self._models.get(model.spec.key) is model
        if model.active == 0 and current and not (model.retiring or model.unloading):
            self._arm(model)
        self._spawn(self._notify())

    def _arm(self, model: LoadedModel) -> None:
        if model.timer is not None:
            model.timer.cancel()
            model.timer = None
        if math.isinf(model.keep_alive):
            model.expires_at = math.inf
            return
        model.expires_at = time.monotonic() + model.keep_alive
        if model.keep_alive <= 0:
            self._spawn(self.unload_model(model))
            return
        call_later = self._call_later or asyncio.get_running_loop().call_later
        model.timer = call_later(model.keep_alive, lambda: self._expire(model))

    def _expire(self, model: LoadedModel) -> None:
        model.timer = None
        if model.active == 0 and self._models.get(model.spec.key) is model:
            self._spawn(self.unload_model(model))

    def _runner_exited(self, runner: RunnerProcess) -> None:
        """A runner ended: its model is forgotten, so the next request starts a fresh one
        (requests still streaming from it end with an error and release into the old one)."""
        for key, model in list(self._models.items()):
            if model.runner is runner:
                del self._models[key]
                if model.timer is not None:
                    model.timer.cancel()
                    model.timer = None
                self._spawn(self._notify())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- unloading -------------------------------------------------------------------------

    def set_keep_alive(self, spec: LaunchSpec, keep_alive: float) -> LoadedModel | None:
        """Change a loaded model's keep-alive (``0`` unloads it once idle)."""
        model = self._models.get(spec.key)
        if model is None:
            return None
        model.keep_alive = keep_alive
        if model.active == 0 and model.runner is not None:
            self._arm(model)
        return model

    async def unload_model(self, model: LoadedModel) -> None:
        """Stop a model's runner (waits for none: callers unload idle models)."""
        async with self._changed:
            await self._unload_locked(model)

    async def _unload_locked(self, model: LoadedModel) -> None:
        if self._models.get(model.spec.key) is not model or model.unloading:
            return
        model.unloading = True
        if model.timer is not None:
            model.timer.cancel()
            model.timer = None
        if model.starting is not None:  # the start stops its runner as soon as it is up
            return
        if model.runner is not None:
            await model.runner.stop()
        self._models.pop(model.spec.key, None)
        log.info("model unloaded", model=model.name)
        self._changed.notify_all()

    async def shutdown(self) -> None:
        """Stop every runner (used when the gateway stops)."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        runners = [m.runner for m in self._models.values() if m.runner is not None]
        await asyncio.gather(*(r.stop(grace=3.0) for r in runners), return_exceptions=True)
        self._models.clear()

    def kill_all(self) -> None:
        """Synchronous last resort at interpreter exit."""
        for model in self._models.values():
            if model.runner is not None:
                model.runner.kill_now()
