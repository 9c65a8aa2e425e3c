"""The idle clean-up's schedule and what one clean-up gives back, in this very process."""

from __future__ import annotations

import asyncio
import platform

import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelgarden.memory_release import MemoryRelease

MiB = 1 << 20


def test_due_only_once_quiet_after_traffic_and_once_per_pass() -> None:
    in_flight: set[object] = set()
    keeper = MemoryRelease(in_flight, passes=(5.0, 35.0))
    # Idle since start, nothing served: nothing to clean up, however long it stays so.
    assert not any(keeper.due(t) for t in (0.0, 6.0, 40.0, 1000.0))
    request = object()
    in_flight.add(request)
    assert not keeper.due(1001.0)
    assert not keeper.due(1010.0)  # in flight for longer than the quiet period: still busy
    in_flight.discard(request)
    assert not keeper.due(1014.0)  # quiet for 4 s
    assert keeper.due(1015.0)  # quiet for 5 s: the first pass
    assert not keeper.due(1016.0)  # once
    assert not keeper.due(1044.0)
    assert keeper.due(1045.0)  # quiet for 35 s: the second pass
    assert not any(keeper.due(t) for t in (1046.0, 1100.0, 5000.0))  # then none
    in_flight.add(request)  # new traffic starts a new idle period
    assert not keeper.due(5001.0)
    in_flight.discard(request)
    assert not keeper.due(5005.0)
    assert keeper.due(5006.0)


def test_a_request_between_two_looks_counts_as_traffic() -> None:
    keeper = MemoryRelease(set(), passes=(5.0,))
    assert not keeper.due(10.0)
    keeper.served(object())  # began and finished after the look at 10 s
    assert not keeper.due(11.0)  # seen at the next look: quiet from here
    assert not keeper.due(15.0)
    assert keeper.due(16.0)
    assert not keeper.due(100.0)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_returns_free_heap_pages_to_the_system() -> None:
    process = psutil.Process()
    # 64 MiB in 4 KB buffers (above Python's small-object size, so on glibc's heap); every
    # 16th stays, so what is freed lies between live buffers, below the heap's top, where
    # glibc keeps it for reuse unless asked to give it back.
    size = 4000  # a variable: a constant product would be folded into one shared object
    buffers = [b"\x01" * size for _ in range(16384)]
    keep = buffers[::16]
    del buffers
    registry = CollectorRegistry()
    keeper = MemoryRelease(set(), registry)
    before = process.memory_info().rss
    release = asyncio.run(keeper.release())
    assert release.rss_before - release.rss_after >= 32 * MiB, release
    assert before - process.memory_info().rss >= 32 * MiB
    assert len(keep) == 1024
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    assert samples["garden_memory_releases_total"] == 1
    assert samples["garden_memory_released_bytes_total"] >= 32 * MiB
    assert samples["garden_memory_allocated_blocks"] > 0
