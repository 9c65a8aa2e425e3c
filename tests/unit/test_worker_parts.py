"""The parts of ``--workers`` that live in one process: the steering program on a real
``SO_REUSEPORT`` group, the worker-to-primary messages over a real pipe, and a worker's
decision to retire."""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter
from typing import Any

from modelgarden.memory_release import MemoryRelease, Release
from modelgarden.telemetry.record import RequestRecord
from modelgarden.workers import (
    RecordReader,
    RecordShipper,
    WorkerLink,
    listen_socket,
    steer_to_workers,
)

MiB = 1 << 20


def _accepted(group: list[socket.socket], connections: int) -> Counter[int]:
    port = group[0].getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    taken: Counter[int] = Counter()
    for index, sock in enumerate(group):
        sock.setblocking(False)
        while True:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                break
            conn.close()
            taken[index] += 1
    for client in clients:
        client.close()
    return taken


def test_steering_keeps_new_connections_off_the_primary_while_workers_listen() -> None:
    primary = listen_socket("127.0.0.1", 0, shared=True)
    port = primary.getsockname()[1]
    workers = [listen_socket("127.0.0.1", port, shared=True, first=False) for _ in range(2)]
    group = [primary, *workers]
    try:
        assert _accepted(group, 40)[0] > 0  # unsteered, the kernel gives the primary a share
        assert steer_to_workers(primary, len(workers))
        taken = _accepted(group, 60)
        assert taken[0] == 0 and taken[1] > 0 and taken[2] > 0, taken
        workers.pop().close()  # a worker missing: its connections are spread over the rest
        group = [primary, *workers]
        taken = _accepted(group, 60)
        assert sum(taken.values()) == 60 and taken[1] > 0, taken
    finally:
        for sock in group:
            sock.close()


def _record(model: str) -> RequestRecord:
    fields: dict[str, Any] = dict.fromkeys(RequestRecord.__dataclass_fields__)
    return RequestRecord(**{**fields, "model": model})


async def test_records_and_messages_reach_the_primary_in_order() -> None:
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    seen: list[Any] = []
    reader = RecordReader(lambda r: seen.append(r.model), seen.append)
    await loop.connect_read_pipe(lambda: reader, os.fdopen(read_fd, "rb"))
    shipper = RecordShipper(write_fd)
    await shipper.start()
    shipper.put(_record("a"))
    shipper.tell(ready=True)  # after the record queued before it
    shipper.put(_record("b"))
    await shipper.close()
    await asyncio.wait_for(reader.closed, 5)
    assert seen == ["a", {"ready": True}, "b"] and reader.ready.is_set()


class _Told:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def tell(self, **message: Any) -> None:
        self.messages.append(message)


def _release(rss: int) -> Release:
    return Release(quiet_s=35.0, collected=0, rss_before=rss, rss_after=rss, seconds=0.01)


def test_a_worker_asks_to_retire_once_when_it_settles_above_its_start() -> None:
    link = WorkerLink("http://127.0.0.1:9", -1, recycle=0.10)
    told = _Told()
    link.shipper = told  # type: ignore[assignment]
    link.settled(_release(109 * MiB), start_rss=100 * MiB)  # +9%: stays
    assert told.messages == []
    link.settled(_release(111 * MiB), start_rss=100 * MiB)  # +11%: asks
    assert told.messages == [{"retire": {"rss_mib": 111.0, "start_mib": 100.0, "growth_pct": 11.0}}]
    link.settled(_release(150 * MiB), start_rss=100 * MiB)  # asked already: not again
    assert len(told.messages) == 1
    never = WorkerLink("http://127.0.0.1:9", -1, recycle=0.0)
    never.shipper = told  # type: ignore[assignment]
    never.settled(_release(500 * MiB), start_rss=100 * MiB)
    assert len(told.messages) == 1


async def test_memory_release_calls_settled_after_the_last_pass_only() -> None:
    keeper = MemoryRelease(set(), passes=(5.0, 35.0))
    settled: list[Release] = []
    keeper.settled = settled.append
    keeper.served(None)  # a request finished: an idle period begins at the next look
    assert await keeper.look(100.0) is None
    assert await keeper.look(104.9) is None  # quiet, but not for the first pass's 5 s yet
    first = await keeper.look(105.0)
    assert first is not None and keeper.releases == 1
    assert settled == []  # the first pass is not the last
    assert await keeper.look(134.9) is None
    last = await keeper.look(135.0)
    assert last is not None and settled == [last]
    assert await keeper.look(500.0) is None  # nothing more until requests come and go
    assert keeper.releases == 2
