"""Giving memory back once a burst of traffic is over.

While the gateway serves, nothing here runs: the collector stays as ``gc.freeze()`` left it
and the allocators keep what they hold, ready for the next request. Once no inference
request has been in flight for a few seconds after some were, :class:`MemoryRelease` runs a
full garbage collection (cycles left by finished requests, CPython's free lists) and asks
glibc to return the free pages of its heaps to the system (``malloc_trim``; glibc returns
only the top of its main heap by itself). It does so once when the gateway goes quiet and
once more when the upstream pools have closed the idle keep-alive connections the burst
left (see :data:`~modelgarden.upstream_http.KEEPALIVE`), then not again until requests
have come and gone.

What no clean-up can return: CPython's object allocator gives a 1 MiB arena back to the
system only when every object in it is gone, and a burst's arenas each keep a few objects
that outlive it (a metric's current value, a pending timer, a cached header). So the
process keeps close to its high-water mark of small objects; what it holds live returns to
where it started, which ``garden_memory_allocated_blocks`` in ``/metrics`` shows
(docs/RELIABILITY.md has the figures). A relay worker that settles far above its start is
replaced instead (``settled``, :mod:`modelgarden.workers`).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import sys
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass

import psutil
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from modelgarden.tasks import cancel_and_wait
from modelgarden.upstream_http import KEEPALIVE

log = structlog.get_logger(__name__)

#: Seconds without an inference request in flight before the first clean-up.
QUIET = 5.0
#: How long the gateway has been quiet at each clean-up of an idle period: once quiet, and
#: once the connections pooled during the burst have been closed (after two keep-alive
#: periods at most).
PASSES = (QUIET, QUIET + 2 * KEEPALIVE)
#: Seconds between looks at what is in flight.
TICK = 1.0


def _malloc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)``, or ``None`` where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


@dataclass(frozen=True)
class Release:
    """One clean-up: how long the gateway had been quiet, what it found and gave back."""

    quiet_s: float
    collected: int
    rss_before: int
    rss_after: int
    seconds: float


class MemoryRelease:
    """Owns the idle clean-up of the gateway process and its memory figures in ``/metrics``.

    It looks once per ``tick`` at ``in_flight``, the live collection of the inference
    requests in flight (the app's ``Drain.watches``), and at whether :meth:`served` was
    called since its last look (a telemetry hook, once per finished request), so traffic
    that comes and goes between two looks counts too. After the last clean-up of an idle
    period it calls ``settled`` with it (a relay worker decides there whether to retire).
    """

    def __init__(
        self,
        in_flight: Sized,
        registry: CollectorRegistry | None = None,
        *,
        passes: tuple[float, ...] = PASSES,
        tick: float = TICK,
    ) -> None:
        self.in_flight = in_flight
        self.passes = passes
        self.tick = tick
        #: How many clean-ups have run, the resident bytes they gave back, the last one.
        self.releases = 0
        self.released_bytes = 0
        self.last: Release | None = None
        self._busy_at: float | None = None  # the last look that saw traffic
        self._served = False  # a request finished since the last look
        self._next = len(passes)  # the next pass of this idle period (none before traffic)
        self._trim = _malloc_trim()
        self._process = psutil.Process()
        self._task: asyncio.Task[None] | None = None
        #: Resident bytes when it started looking (the process's start, once set up).
        self.start_rss = 0
        self.settled: Callable[[Release], None] | None = None
        if registry is not None:
            registry.register(self)

    def start(self) -> MemoryRelease:
        """Start looking (in the running event loop); returns itself."""
        if self._trim is not None:  # the start without the set-up's freed heap pages
            self._trim()
        self.start_rss = self._process.memory_info().rss
        self._task = asyncio.create_task(self._run(), name="memory_release")
        return self

    def served(self, _record: object) -> None:
        """A request finished: the gateway was busy (a telemetry hook; no more than this)."""
        self._served = True

    async def close(self) -> None:
        """Stop looking."""
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick)
            await self.look(loop.time())

    async def look(self, now: float) -> Release | None:
        """One look at ``now`` (event-loop time): the clean-up, if one is due, and after the
        last one of an idle period, ``settled`` with it."""
        if not self.due(now):
            return None
        assert self._busy_at is not None
        done = await self.release(now - self._busy_at)
        if self._next == len(self.passes) and self.settled is not None:
            self.settled(done)
        return done

    def due(self, now: float) -> bool:
        """Whether a clean-up is due at ``now`` (event-loop time); notes requests in flight."""
        if self.in_flight or self._served:
            self._busy_at, self._next, self._served = now, 0, False
            return False
        if self._busy_at is None or self._next >= len(self.passes):
            return False
        if now - self._busy_at < self.passes[self._next]:
            return False
        self._next += 1
        return True

    async def release(self, quiet_s: float = 0.0) -> Release:
        """Collect garbage and return the C heap's free pages to the system."""
        began = time.perf_counter()
        before = self._process.memory_info().rss
        collected = gc.collect()
        if self._trim is not None:
            await asyncio.to_thread(self._trim)  # it can take milliseconds: not on the loop
        after = self._process.memory_info().rss
        done = Release(quiet_s, collected, before, after, time.perf_counter() - began)
        self.releases += 1
        self.released_bytes += max(0, before - after)
        self.last = done
        log.debug(
            "memory released",
            quiet_s=round(quiet_s, 1),
            collected=collected,
            rss_mib=round(after / (1 << 20), 1),
            released_mib=round((before - after) / (1 << 20), 1),
            took_ms=round(done.seconds * 1000, 1),
        )
        return done

    def collect(self) -> Iterable[Metric]:
        """The memory figures for ``/metrics`` (a Prometheus collector)."""
        yield GaugeMetricFamily(
            "garden_memory_allocated_blocks",
            "Blocks Python's object allocator has handed out and not got back (live "
            "objects and small buffers).",
            value=sys.getallocatedblocks(),
        )
        yield CounterMetricFamily(
            "garden_memory_releases",
            "Idle clean-ups run: a full garbage collection and, on glibc, malloc_trim.",
            value=self.releases,
        )
        yield CounterMetricFamily(
            "garden_memory_released_bytes",
            "Resident memory the idle clean-ups gave back to the system.",
            value=self.released_bytes,
        )
