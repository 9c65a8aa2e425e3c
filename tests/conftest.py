"""Shared fixtures: real ``garden serve`` processes on free loopback ports.

Every server gets its own models folder (seeded with the real default model) and is
stopped with SIGTERM at the end; afterwards no runner process of that folder may remain.
The server itself and what is asked of it live in :mod:`loopback.gateway` (the benchmarks
use them too); they are named here as well, where the tests have always found them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from loopback.gateway import (
    DEFAULT_MODEL,
    GREEDY,
    GardenServer,
    Samples,
    clean_env,
    free_port,
    runner_processes,
    scrape,
    start_server,
    stop_and_check,
    value,
    wait_until,
)

__all__ = [
    "DEFAULT_MODEL",
    "GREEDY",
    "GardenServer",
    "Samples",
    "clean_env",
    "free_port",
    "present",
    "runner_processes",
    "scrape",
    "start_server",
    "stop_and_check",
    "value",
    "wait_until",
]

T = TypeVar("T")


def present(items: Iterable[T | None]) -> list[T]:
    """Fields a client's types call optional (a listing's names, a stream's pieces) that the
    test expects every one of to be there."""
    found: list[T] = []
    for item in items:
        assert item is not None
        found.append(item)
    return found


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model of other weights than the default one (see :mod:`tests.tiny_models`)."""
    from tests.tiny_models import THINK_ANSWER, write_successor_model

    return write_successor_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf", THINK_ANSWER)


@pytest.fixture(scope="session")
def garden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GardenServer]:
    """One gateway shared by the tests that do not change its settings."""
    server = start_server(tmp_path_factory.mktemp("garden"))
    yield server
    stop_and_check(server)


@pytest.fixture
def make_garden(tmp_path: Path) -> Iterator[Callable[..., GardenServer]]:
    """Start gateways with custom settings; each is stopped and checked afterwards."""
    servers: list[GardenServer] = []

    def make(**settings: str) -> GardenServer:
        server = start_server(tmp_path / f"s{len(servers)}", **settings)
        servers.append(server)
        return server

    yield make
    for server in servers:
        stop_and_check(server)


# CI runs hypothesis with a fixed seed so that a run can be reproduced exactly.
with contextlib.suppress(ImportError):
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
    if os.environ.get("CI"):
        _hypothesis_settings.load_profile("ci")
