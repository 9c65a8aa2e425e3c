"""The scheduler's rules over fake runners: no processes, no sleeps, no real clock.

One runner per model with ``parallel`` slots, a reload (never a second copy) when load
options change, keep-alive expiry through an injected ``call_later``, eviction by recency
and memory, the queue bound, and a crashed runner replaced by a fresh one.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelgarden.errors import InsufficientMemory, Overloaded, RunnerFailed
from modelgarden.lifecycle.memory import MemoryBudget, MemoryEstimate
from modelgarden.lifecycle.process import EngineMemory, LaunchSpec
from modelgarden.lifecycle.scheduler import Lease, Scheduler
from modelgarden.lifecycle.states import RunnerState

_pids = itertools.count(1000)


class FakeRunner:
    """Stands in for a runner process: starts when its gate opens, can crash on demand."""

    def __init__(
        self,
        spec: LaunchSpec,
        *,
        start_timeout: float,
        on_exit: Callable[[Any], None],
        gate: asyncio.Event | None,
        fail: str | None,
        polite: bool = False,
    ) -> None:
        self.spec = spec
        self.polite = polite
        self.on_exit = on_exit
        self.state = RunnerState.STOPPED
        self.pid = next(_pids)
        self.port = 0
        self.load_ms = 1.0
        self.memory = EngineMemory(total=123, vram=0)
        self.gate = gate
        self.fail = fail
        self.stops = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.pid}"

    def rss(self) -> int:
        return 0

    async def start(self) -> None:
        self.state = RunnerState.STARTING
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.state = RunnerState.STOPPED
            raise RunnerFailed(self.fail)
        self.state = RunnerState.READY

    async def stop(self, grace: float = 5.0) -> None:
        self.stops += 1
        if self.state is not RunnerState.STOPPED:
            self.state = RunnerState.STOPPED
            self.on_exit(self)

    def crash(self) -> None:
        self.state = RunnerState.STOPPED
        self.on_exit(self)

    def kill_now(self) -> None:
        self.state = RunnerState.STOPPED


@dataclass
class Timers:
    """A fake ``call_later``: records callbacks; the test fires them."""

    pending: list[tuple[float, Callable[[], None], Any]] = field(default_factory=list)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        handle = _Handle()
        self.pending.append((delay, callback, handle))
        return handle

    def live(self) -> list[float]:
        """Delays of the timers not cancelled."""
        return [delay for delay, _, handle in self.pending if not handle.cancelled]

    def fire_all(self) -> None:
        pending, self.pending = self.pending, []
        for _, callback, handle in pending:
            if not handle.cancelled:
                callback()


class _Handle:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Harness:
    scheduler: Scheduler
    runners: list[FakeRunner]
    timers: Timers
    gate: asyncio.Event | None = None
    fail: str | None = None

    def started(self, i: int) -> object:
        """The ``i``-th runner started, to compare by identity with what the scheduler hands
        out: that is typed ``RunnerProcess``, which the fakes stand in for without being one."""
        return self.runners[i]


NEED = MemoryEstimate(weights=100, kv_cache=50, compute=10, process=40)


def make(**kwargs: Any) -> Harness:
    timers = Timers()
    harness = Harness(scheduler=None, runners=[], timers=timers)  # type: ignore[arg-type]

    def factory(spec: LaunchSpec, **kw: Any) -> FakeRunner:
        runner = FakeRunner(spec, gate=harness.gate, fail=harness.fail, **kw)
        harness.runners.append(runner)
        return runner

    options = {"max_loaded": 3, "max_queue": 8, "default_keep_alive": 300.0, "start_timeout": 5}
    harness.scheduler = Scheduler(
        **{**options, **kwargs},
        runner_factory=factory,  # type: ignore[arg-type]
        call_later=timers.call_later,
    )
    return harness


def spec(path: str = "/m/a.gguf", **kw: Any) -> LaunchSpec:
    return LaunchSpec(model_path=path, num_ctx=kw.pop("num_ctx", 2048), **kw)


async def acquire(h: Harness, s: LaunchSpec, keep_alive: float | None = None) -> Lease:
    return await h.scheduler.acquire(s, s.model_path, object(), NEED, keep_alive)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_one_runner_serves_every_slot_of_a_model() -> None:
    h = make()
    s = spec(parallel=4)
    leases = await asyncio.gather(*(acquire(h, s) for _ in range(4)))
    assert len(h.runners) == 1
    assert {lease.runner for lease in leases} == {h.started(0)}
    (model,) = h.scheduler.loaded()
    assert model.active == 4 and model.runners == [h.started(0)]


async def test_requests_beyond_the_slots_wait_for_one() -> None:
    h = make()
    s = spec(parallel=2)
    first, _second = await acquire(h, s), await acquire(h, s)
    third = asyncio.ensure_future(acquire(h, s))
    await settle()
    assert not third.done() and h.scheduler.pending == 1
    h.scheduler.release(first)
    assert (await third).runner is first.runner
    assert h.scheduler.pending == 0


async def test_concurrent_first_requests_start_one_runner() -> None:
    h = make()
    h.gate = asyncio.Event()
    s = spec(parallel=3)
    waiting = [asyncio.ensure_future(acquire(h, s)) for _ in range(3)]
    await settle()
    assert len(h.runners) == 1 and not any(w.done() for w in waiting)
    h.gate.set()
    leases = await asyncio.gather(*waiting)
    assert len(h.runners) == 1
    assert [lease.load_ns > 0 for lease in leases].count(True) >= 1


async def test_a_failed_start_is_every_waiters_error_and_forgotten() -> None:
    h = make()
    h.gate, h.fail = asyncio.Event(), "llama runner process has terminated: bad model"
    s = spec(parallel=2)
    waiting = [asyncio.ensure_future(acquire(h, s)) for _ in range(2)]
    await settle()
    h.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, RunnerFailed) and "bad model" in str(r) for r in results)
    assert h.scheduler.loaded() == []
    h.fail = None
    assert (await acquire(h, s)).runner is h.started(-1)


async def test_other_load_options_reload_the_one_runner_once_idle() -> None:
    h = make()
    small, big = spec(num_ctx=2048), spec(num_ctx=8192)
    busy = await acquire(h, small)
    reload = asyncio.ensure_future(acquire(h, big))
    await settle()
    assert not reload.done()  # it waits for the busy request, not beside it
    # a request with the old options arriving now waits too: no new work on the old runner
    late = asyncio.ensure_future(acquire(h, small))
    await settle()
    assert not late.done()
    h.scheduler.release(busy)
    lease = await reload
    assert h.runners[0].state is RunnerState.STOPPED
    assert lease.runner is h.started(1) and lease.runner.spec.num_ctx == 8192
    (model,) = h.scheduler.loaded()  # never two copies
    assert model.spec.num_ctx == 8192
    h.scheduler.release(lease)
    assert (await late).runner.spec.num_ctx == 2048  # and back, once idle again
    assert len(h.scheduler.loaded()) == 1


async def test_keep_alive_expiry_unloads_through_the_injected_clock() -> None:
    h = make()
    s = spec()
    lease = await acquire(h, s, keep_alive=60)
    assert h.timers.live() == []  # the clock starts when the last request ends
    h.scheduler.release(lease)
    assert h.timers.live() == [60]
    h.timers.fire_all()
    await settle()
    assert h.scheduler.loaded() == [] and h.runners[0].state is RunnerState.STOPPED


async def test_a_request_in_time_cancels_the_expiry() -> None:
    h = make()
    s = spec()
    h.scheduler.release(await acquire(h, s, keep_alive=60))
    lease = await acquire(h, s)
    h.timers.fire_all()  # the old timer was cancelled
    await settle()
    assert h.scheduler.loaded() and lease.runner.state is RunnerState.READY


async def test_keep_alive_zero_unloads_after_the_answer_and_negative_pins() -> None:
    h = make()
    h.scheduler.release(await acquire(h, spec("/m/a.gguf"), keep_alive=0))
    await settle()
    assert h.scheduler.loaded() == []
    lease = await acquire(h, spec("/m/b.gguf"), keep_alive=-math.inf)
    h.scheduler.release(lease)
    assert h.timers.live() == [] and h.scheduler.loaded()[0].expires_wall() == math.inf


async def test_least_recently_used_idle_model_makes_room() -> None:
    h = make(max_loaded=2)
    for path in ("/m/a.gguf", "/m/b.gguf"):
        h.scheduler.release(await acquire(h, spec(path)))
    h.scheduler.release(await acquire(h, spec("/m/a.gguf")))  # a is now the most recent
    await acquire(h, spec("/m/c.gguf"))
    assert sorted(m.spec.model_path for m in h.scheduler.loaded()) == ["/m/a.gguf", "/m/c.gguf"]


async def test_a_model_waits_for_room_when_every_loaded_one_is_busy() -> None:
    h = make(max_loaded=1)
    busy = await acquire(h, spec("/m/a.gguf"))
    other = asyncio.ensure_future(acquire(h, spec("/m/b.gguf")))
    await settle()
    assert not other.done()
    h.scheduler.release(busy)
    assert (await other).runner.spec.model_path == "/m/b.gguf"


async def test_full_queue_is_refused() -> None:
    h = make(max_queue=1)
    s = spec(parallel=1)
    busy = await acquire(h, s)
    queued = asyncio.ensure_future(acquire(h, s))
    await settle()
    with pytest.raises(Overloaded):
        await acquire(h, s)
    assert h.scheduler.rejected == 1
    h.scheduler.release(busy)
    await queued


async def test_a_crashed_runner_is_replaced_by_a_fresh_one() -> None:
    h = make()
    s = spec(parallel=2)
    streaming = await acquire(h, s)
    h.runners[0].crash()
    assert h.scheduler.loaded() == []  # forgotten at once, though a request still streams
    fresh = await acquire(h, s)
    assert fresh.runner is h.started(1)
    h.scheduler.release(streaming)  # releasing into the dead model harms nothing
    (model,) = h.scheduler.loaded()
    assert model.active == 1


async def test_memory_that_cannot_fit_is_refused_before_a_runner_starts() -> None:
    h = make(budget=MemoryBudget(limit=150))
    with pytest.raises(InsufficientMemory, match="more system memory"):
        await acquire(h, spec())
    assert h.runners == [] and h.scheduler.loaded() == []


async def test_idle_models_are_evicted_to_free_memory() -> None:
    h = make(budget=MemoryBudget(limit=NEED.total + 10))
    h.scheduler.release(await acquire(h, spec("/m/a.gguf")))
    await acquire(h, spec("/m/b.gguf"))
    assert [m.spec.model_path for m in h.scheduler.loaded()] == ["/m/b.gguf"]
    assert h.runners[0].state is RunnerState.STOPPED


async def test_unloading_a_model_while_it_loads_stops_its_runner_when_up() -> None:
    h = make()
    h.gate = asyncio.Event()
    s = spec()
    waiting = asyncio.ensure_future(acquire(h, s))
    await settle()
    (model,) = h.scheduler.loaded()
    await h.scheduler.unload_model(model)  # returns at once: the start stops it
    h.gate.set()
    await settle()
    assert h.runners[0].state is RunnerState.STOPPED
    h.gate = None
    lease = await waiting  # the waiter loads it again rather than fail
    assert lease.runner is h.started(1)


async def test_ps_size_is_what_the_engine_allocated_once_loaded() -> None:
    h = make()
    h.gate = asyncio.Event()
    waiting = asyncio.ensure_future(acquire(h, spec()))
    await settle()
    (model,) = h.scheduler.loaded()
    assert model.size == NEED.total  # the estimate while loading
    h.gate.set()
    await waiting
    assert model.size == 123


async def test_shutdown_stops_every_runner_and_refuses_new_work() -> None:
    h = make()
    await acquire(h, spec("/m/a.gguf"))
    await acquire(h, spec("/m/b.gguf"))
    await h.scheduler.shutdown()
    assert all(r.state is RunnerState.STOPPED for r in h.runners)
    with pytest.raises(Overloaded, match="shutting down"):
        await acquire(h, spec())


async def test_only_one_loaded_runner_spins_at_full_speed() -> None:
    h = make()
    await acquire(h, spec("/m/a.gguf"))
    await acquire(h, spec("/m/b.gguf"))
    assert [r.polite for r in h.runners] == [False, True]
    h.runners[0].crash()  # the fast one is gone: the next may spin again
    await acquire(h, spec("/m/c.gguf"))
    assert h.runners[-1].polite is False
